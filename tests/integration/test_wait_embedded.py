"""autoembed.wait_embedded(name, key, timeout, version): read-your-writes.
It returns true at once when nothing is pending, waits while a real worker
(another process) embeds the change, returns false at its timeout, raises a
failed row's error, refuses REPEATABLE READ, and answers a searcher (grant
search + SELECT on the source) without it reading the queue; rows hidden by
row-level security are missing to it."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import drain
from tests.integration.helpers import make_texts
from tests.integration.security_helpers import connect_as

Conn = psycopg.Connection[Any]


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    make_texts(
        conn,
        ["apples", "pears", "plums"],
        categories=["a", "b", "a"],
        model="hash:16",
        max_attempts=1,
    )
    drain(db_url)
    return conn


def wait(conn: Conn, *args: Any, **named: Any) -> Any:
    params = [sql.Placeholder() for _ in args]
    params += [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in named]
    query = sql.SQL("SELECT autoembed.wait_embedded({})").format(sql.SQL(", ").join(params))
    row = conn.execute(query, [*args, *named.values()]).fetchone()
    assert row is not None
    return row[0]


def test_returns_at_once_when_nothing_is_pending_and_false_at_its_timeout(docs: Conn) -> None:
    assert wait(docs, "docs", '{"id": 1}') is True
    assert wait(docs, "docs") is True
    docs.execute("UPDATE docs SET body = 'green apples' WHERE id = 1")
    started = time.monotonic()
    assert wait(docs, "docs", '{"id": 1}', timeout="300 milliseconds") is False
    assert 0.25 < time.monotonic() - started < 2
    assert wait(docs, "docs", '{"id": 2}', timeout="0") is True  # another row: not pending
    assert wait(docs, "docs", timeout="0") is False


def test_waits_while_a_worker_process_embeds_the_change(docs: Conn, db_url: str) -> None:
    docs.execute("INSERT INTO docs VALUES (4, 'a fresh quince', 'a')")
    worker = subprocess.Popen(
        [sys.executable, "-m", "autoembed.cli", "worker", "--once", "--db", db_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert wait(docs, "docs", '{"id": 4}', timeout="60 seconds") is True
    hits = docs.execute("SELECT pk ->> 'id' FROM autoembed.bm25_search('docs', 'quince', 5)")
    assert hits.fetchall() == [("4",)]  # searchable the moment wait_embedded returned
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err


def test_every_change_committed_before_the_call(docs: Conn, db_url: str) -> None:
    docs.execute("INSERT INTO docs VALUES (5, 'damsons', 'b'), (6, 'sloes', 'a')")
    docs.execute("UPDATE docs SET body = 'yellow plums' WHERE id = 3")
    assert wait(docs, "docs", timeout="0") is False
    drain(db_url)
    assert wait(docs, "docs", timeout="0") is True
    # a DELETE takes the chunks with it: nothing to wait for
    docs.execute("DELETE FROM docs WHERE id = 3")
    assert wait(docs, "docs", timeout="0") is True
    gone = docs.execute("SELECT count(*) FROM autoembed.docs_embeddings WHERE id = 3")
    assert gone.fetchone() == (0,)


def test_failed_rows_bad_arguments_and_isolation(
    docs: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", "poison")
    docs.execute("UPDATE docs SET body = 'poison apple' WHERE id = 2")
    drain(db_url)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="failed to embed") as e:
        wait(docs, "docs", "2")
    assert "retry_failed" in (e.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.NoDataFound, match="has no row"):
        wait(docs, "docs", "99")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="timeout"):
        wait(docs, "docs", timeout="-1 second")
    with pytest.raises(psycopg.errors.UndefinedObject):
        wait(docs, "nope")
    docs.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
        wait(docs, "docs")
    docs.execute("ROLLBACK")


def test_a_searcher_waits_without_reading_the_queue(docs: Conn, db_url: str, searcher: str) -> None:
    role = sql.Identifier(searcher)
    docs.execute(sql.SQL("ALTER ROLE {} LOGIN").format(role))
    docs.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    docs.execute(sql.SQL("CREATE POLICY only_a ON docs TO {} USING (category = 'a')").format(role))
    docs.execute(sql.SQL("GRANT SELECT, UPDATE ON docs TO {}").format(role))
    with connect_as(db_url, searcher) as reader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="grant_search"):
            wait(reader, "docs")
        docs.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
        reader.execute("UPDATE docs SET body = 'red apples' WHERE id = 1")
        assert wait(reader, "docs", "1", timeout="0") is False
        with pytest.raises(psycopg.errors.NoDataFound, match="or you may not see it"):
            wait(reader, "docs", "2")  # hidden by row-level security
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("SELECT count(*) FROM autoembed.docs_queue_v1")
        drain(db_url)
        assert wait(reader, "docs", "1", timeout="0") is True
