"""The model lifecycle from the command line: autoembed versions, set-model
(--wait), activate, rollback, cancel-campaign, drop-version, gc-versions,
compare and health; status shows a running campaign; mistakes give one
line and a hint, never a traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from autoembed.cli import main
from tests.conftest import drain
from tests.integration.helpers import Conn, QueryServiceThread, make_texts

TEXTS = [
    "red apples and green pears in a basket",
    "fast cars racing on the road",
    "how to reset a forgotten password",
    "the history of the roman empire",
    "apples grow in orchards in autumn",
]


def cli(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, [args[0], "--db", db_url, *args[1:]])


def ok(db_url: str, *args: str) -> str:
    result = cli(db_url, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    make_texts(conn, TEXTS, model="hash:16")
    drain(db_url)
    return conn


def test_a_model_change_from_the_command_line(docs: Conn, db_url: str) -> None:
    table = ok(db_url, "versions", "docs")
    assert table.splitlines()[1].split()[:3] == ["1", "hash:16", "active"]

    started = ok(db_url, "set-model", "docs", "hash:32")
    assert "docs: version 2 (hash:32) is building" in started
    assert "5 rows queued" in started
    status = ok(db_url, "status")
    assert "docs: re-embedding with hash:32 (version 2): 0.0%" in status

    refused = cli(db_url, "set-model", "docs", "hash:64")
    assert refused.exit_code == 1
    assert refused.output.startswith('Error: autoembed: vectorizer "docs" is already re-embedding')
    assert "hint: " in refused.output
    assert "cancel_campaign" in refused.output
    assert "Traceback" not in refused.output

    drain(db_url)
    listed = json.loads(ok(db_url, "versions", "docs", "--json"))
    assert [(v["version"], v["state"], v["percent"]) for v in listed] == [
        (1, "retired", 100.0),
        (2, "active", 100.0),
    ]
    assert ok(db_url, "rollback", "docs").strip() == "docs: version 1 active"
    assert ok(db_url, "activate", "docs", "hash:32").strip() == "docs: version 2 active"
    assert ok(db_url, "cancel-campaign", "docs").strip() == "docs: nothing to do"
    assert ok(db_url, "gc-versions", "docs").strip() == "docs: 1 retired versions dropped"
    dropped = cli(db_url, "drop-version", "docs", "2")
    assert dropped.exit_code == 1
    assert "is the active version" in dropped.output

    health = ok(db_url, "health", "docs")
    assert "docs version 2 (hash:32): 5 chunks, 5 sampled" in health
    assert "mean vector norm:            1.0000" in health


def test_set_model_wait_follows_the_campaign_to_the_switch(docs: Conn, db_url: str) -> None:
    stop = threading.Event()

    def worker() -> None:
        while not stop.wait(0.2):
            drain(db_url)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        output = ok(db_url, "set-model", "docs", "hash:32", "--wait")
    finally:
        stop.set()
        thread.join(10)
    assert "docs: version 2 is active" in output
    assert "5/5 rows (100.0%), active" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("versions", "nope"), 'Error: autoembed: no vectorizer named "nope"'),
        (("set-model", "nope", "hash:8"), 'Error: autoembed: no vectorizer named "nope"'),
        (("set-model", "docs", "no-such-model"), 'Error: autoembed: unknown model "no-such-model"'),
        (("activate", "docs", "9"), 'Error: autoembed: vectorizer "docs" has no version "9"'),
        (("rollback", "docs"), 'Error: autoembed: vectorizer "docs" has no earlier version'),
    ],
)
def test_mistakes_are_one_line_and_a_hint(
    docs: Conn, db_url: str, args: tuple[str, ...], message: str
) -> None:
    result = cli(db_url, *args)
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output


@pytest.fixture
def service(db_url: str) -> Iterator[QueryServiceThread]:
    s = QueryServiceThread(db_url)
    yield s
    s.stop()


def test_compare_two_versions(
    docs: Conn, db_url: str, superuser_url: str, tmp_path: Path, service: QueryServiceThread
) -> None:
    # compare embeds the queries with text queries from SQL, which need the
    # loopback set up (autoembed setup-queries) for roles that are not superusers
    ok(db_url, "set-model", "docs", "hash:32", "--activate", "manual")
    drain(db_url)
    queries = tmp_path / "queries.txt"
    queries.write_text("apples\nfast cars\n\nroman history\n")
    output = ok(superuser_url, "compare", "docs", "--queries", str(queries), "-k", "3")
    lines = output.strip().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("3 queries, k=3, semantic: version 1 (hash:16) vs 2 (hash:32)")
    as_json = [
        json.loads(line)
        for line in ok(
            superuser_url, "compare", "docs", "--queries", str(queries), "-k", "3", "--json"
        ).splitlines()
    ]
    assert [r["query"] for r in as_json] == ["apples", "fast cars", "roman history", None]
    for record in as_json[:-1]:
        assert 0 <= record["overlap"] <= 1
        assert len(record["a"]) == len(record["b"]) == 3
    same = ok(superuser_url, "compare", "docs", "--queries", str(queries), "--a", "2", "--b", "2")
    assert "mean overlap 1.000, mean tau 1.000" in same
