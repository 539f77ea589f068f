"""``autoembed search`` (the real console script) has the query embedded
through SQL by a running worker's query service (a real ``autoembed
query-server`` process) when one answers, and otherwise embeds it in its own
process, saying so in one line on stderr: with no query service, with one
that does not answer in time (stopped), and for a role the loopback does not
serve. The results are the same either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.worker.query_service import APPLICATION_NAME
from tests.conftest import drain
from tests.e2e.conftest import StartQueryServer
from tests.integration.helpers import make_texts
from tests.integration.security_helpers import roles, url_as

pytestmark = pytest.mark.e2e

AUTOEMBED = str(Path(sys.executable).with_name("autoembed"))
TEXTS = [
    "red apples and green pears in a wooden basket",
    "fast cars racing on a mountain road",
    "some words about how to reset a forgotten password",
    "the history of the roman empire and its emperors",
]
IN_PROCESS = "; embedding the query in this process (loads the model)"


def search(db_url: str, query: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    return subprocess.run(
        [AUTOEMBED, "search", "--db", db_url, "-k", "3", "docs", query],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def ranked(done: subprocess.CompletedProcess[str]) -> list[list[str]]:
    """rank, pk and snippet of each result line (scores aside)."""
    assert done.returncode == 0, done.stderr
    return [[line.split()[0], *line.split()[2:]] for line in done.stdout.splitlines()]


def cached(conn: psycopg.Connection[Any], query: str) -> bool:
    row = conn.execute("SELECT count(*) FROM autoembed.query_cache WHERE query = %s", (query,))
    return row.fetchone() == (1,)


def wait_connected(conn: psycopg.Connection[Any], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "query service ready" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = %s AND datname = current_database()",
        (APPLICATION_NAME,),
    ).fetchone()
    assert row == (1,)


def test_search_asks_a_running_worker_and_else_embeds_in_process(
    conn: psycopg.Connection[Any], db_url: str, query_server: StartQueryServer, tmp_path: Path
) -> None:
    make_texts(conn, TEXTS, model="hash:64")
    drain(db_url)

    # No worker: embedded here, with a note.
    alone = search(db_url, "reset my password")
    assert alone.stderr.splitlines() == [
        "note: no worker's query service is connected to this database" + IN_PROCESS
    ]
    assert ranked(alone)[0][1] == '{"id":'
    assert ranked(alone)[0][2] == "3}"
    assert not cached(conn, "reset my password")

    # A worker answers: the query goes through SQL (the worker caches its
    # embedding), no note, the same results.
    proc = query_server(db_url)
    wait_connected(conn, tmp_path / "query_server0.log")
    answered = search(db_url, "reset my password")
    assert answered.stderr == ""
    assert ranked(answered) == ranked(alone)
    assert cached(conn, "reset my password")

    # A role the loopback does not serve (no autoembed_loopback server):
    # embedded here, saying why.
    with roles(conn, "reader") as (role,):
        conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(role)))
        conn.execute("SELECT autoembed.grant_search('docs', %s)", (role,))
        as_reader = search(url_as(db_url, role), "roman emperors")
        assert as_reader.stderr.startswith(
            "note: text queries from SQL need a loopback connection, and none is configured"
        )
        assert as_reader.stderr.rstrip().endswith(IN_PROCESS)
        assert ranked(as_reader)[0][2] == "4}"

    # A worker that is connected but does not answer (stopped): after the
    # short wait, embedded here.
    proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        stuck = search(db_url, "fast cars")
        elapsed = time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGCONT)
    assert stuck.stderr.splitlines() == [
        'note: no worker answered within 2 s to embed the query for vectorizer "docs" '
        f"(model version {_tag(conn)})" + IN_PROCESS
    ]
    assert ranked(stuck)[0][2] == "2}"
    assert elapsed < 30


def _tag(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT tag FROM autoembed.model_version").fetchone()
    assert row is not None
    return str(row[0])
