"""Faults 10-12: a worker killed mid-batch, with the DEFAULT lease (300 s).

A claim lives as long as its claimant's database session (050_queue.sql):
once a killed worker's session is gone, the rows it held are claimable, the
dispatcher notices within a poll, and the rows are embedded again within
seconds, not after the lease.

10. kill -9 a worker mid-batch: every row is embedded <= 10 s after the
    kill, whether the other worker was busy (its drain picks them up) or idle
    (the dispatcher signals it: a dispatcher of its own, which sees the dead
    worker's session go, or the other worker's, which may first have to take
    over from the killed one).
11. ``autoembed worker --once`` started right after such a crash finishes the
    dead worker's rows: nothing is left pending or in flight.
12. A live but slow worker (SIGSTOPped mid-batch, well inside its lease) keeps
    its claim: ``worker --once`` leaves its rows alone, and its write counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoembed.embedded import EmbeddedRedis
from autoembed.settings import Settings
from tests.e2e.conftest import StartWorker, Worker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, status
from tests.integration.security_helpers import roles, url_as

pytestmark = pytest.mark.faults

Conn = psycopg.Connection[Any]
RECOVERY_LIMIT = 10.0  # seconds from the kill until every row is embedded
# The defaults a deployment has (lease 300 s, sweep 5 s, redelivery 60 s),
# but for the test embedder's delay and a small batch. The delay is per embed
# call, not per row: batches sized by seconds per row would shrink to one row
# (a real model's time grows with the rows), so they take BATCH_SIZE rows.
ENV = {
    "AUTOEMBED_SWEEP_SECONDS": "5",
    "AUTOEMBED_BATCH_SIZE": "8",
    "AUTOEMBED_BATCH_SECONDS": "60",
    "AUTOEMBED_HASH_DELAY_MS": "1000",
}


def wait_for(what: str, check: Any, timeout: float, describe: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s\n{describe()}"
        time.sleep(0.02)


def held_by(conn: Conn, tokens: set[Any]) -> int:
    q = helpers.tables(conn, "docs")[2]
    row = conn.execute(
        f"SELECT count(*) FROM autoembed.{q} WHERE claim_token = ANY(%s)", (list(tokens),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def claim_tokens(conn: Conn) -> set[Any]:
    q = helpers.tables(conn, "docs")[2]
    return {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT claim_token FROM autoembed.{q} WHERE claim_token IS NOT NULL"
        )
    }


@contextmanager
def dispatcher_process(db_url: str, broker_url: str, log_path: Path) -> Iterator[None]:
    """``autoembed dispatcher`` in its own process (workers run without one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    env.update(AUTOEMBED_SWEEP_SECONDS=ENV["AUTOEMBED_SWEEP_SECONDS"], PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [cli(), "dispatcher", "--db", db_url, "--broker", broker_url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            "active dispatcher",
            lambda: "dispatcher active" in log_path.read_text(errors="replace"),
            60,
            lambda: log_path.read_text(errors="replace"),
        )
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(
    ("rows", "survivor", "dispatcher"),
    [
        pytest.param(8, "idle", "in the workers", marks=pytest.mark.faults_full),
        (8, "idle", "its own process"),
        (32, "busy", "in the workers"),
    ],
)
def test_kill_9_mid_batch_rows_embedded_within_seconds_with_the_default_lease(
    conn: Conn,
    db_url: str,
    start_worker: StartWorker,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    rows: int,
    survivor: str,
    dispatcher: str,
) -> None:
    assert Settings().lease_seconds == 300
    own = dispatcher == "its own process"
    with (
        roles(conn, "crash_a", "crash_b") as names,
        dispatcher_process(db_url, redis_server.url, tmp_path / "dispatcher.log")
        if own
        else nullcontext(),
    ):
        workers: dict[str, Worker] = {}

        def describe() -> str:
            return "\n".join(w.describe()[-3000:] for w in workers.values())

        for role in names:
            conn.execute("SELECT autoembed.grant_worker(%s)", (role,))
            env = {**ENV, "AUTOEMBED_DISPATCHER": "0"} if own else ENV
            workers[role] = start_worker(url_as(db_url, role), **env)
        make_docs(conn, rows)
        # one batch held by one worker (idle survivor), or one by each (busy)
        wanted = 1 if survivor == "idle" else 2
        wait_for("claims", lambda: len(helpers.claim_holders(conn, "docs")) == wanted, 30, describe)
        victim_role = sorted(helpers.claim_holders(conn, "docs"))[0]
        victim = workers[victim_role]
        # the first worker started runs the dispatcher, unless it has its own
        leader = not own and victim_role == names[0]
        # Frozen first, so it cannot finish its batch between the look and the kill.
        helpers.signal_group(victim.proc.pid, signal.SIGSTOP)
        held = helpers.claim_holders(conn, "docs").get(victim_role, 0)
        assert held > 0, describe()
        killed_at = time.monotonic()
        helpers.signal_group(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)

        start = time.monotonic()
        took = (start - killed_at) + helpers.wait_quiescent(
            conn, "docs", timeout=60, describe=describe, stable_for=0.5
        )
        assert status(conn, "docs")["embedded"] == rows
        for role in names:
            if role != victim_role:
                assert workers[role].proc.poll() is None, workers[role].describe()
                workers[role].stop()
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            f"10 kill -9, default lease ({survivor} survivor, dispatcher {dispatcher})",
            rows,
            1,
            "kill -9 of a worker mid-batch" + (" (the dispatcher's)" if leader else ""),
            took,
            result.missing,
            result.stale,
            result.duplicated,
            {"rows the dead worker held": held, "lease s": 300},
        )
    )
    assert took <= RECOVERY_LIMIT, f"every row embedded {took:.1f} s after the kill"
    assert result.ok, result


def cli() -> str:
    return str(Path(sys.executable).with_name("autoembed"))


def run_once(db_url: str) -> subprocess.CompletedProcess[str]:
    """``autoembed worker --once`` as a user runs it: its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    env["AUTOEMBED_DATABASE_URL"] = db_url
    return subprocess.run(
        [cli(), "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
    )


def test_worker_once_right_after_a_crash_finishes_the_dead_workers_rows(
    conn: Conn, db_url: str, start_worker: StartWorker
) -> None:
    rows = 24
    worker = start_worker(db_url, **{**ENV, "AUTOEMBED_HASH_DELAY_MS": "3000"})
    make_docs(conn, rows)
    wait_for("claim", lambda: status(conn, "docs")["in_flight"] > 0, 30, worker.describe)
    helpers.signal_group(worker.proc.pid, signal.SIGSTOP)
    held = status(conn, "docs")["in_flight"]
    helpers.signal_group(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    start = time.monotonic()

    once = run_once(db_url)
    took = time.monotonic() - start
    assert once.returncode == 0, once.stdout + once.stderr
    after = status(conn, "docs")
    assert (after["pending"], after["in_flight"], after["failed"]) == (0, 0, 0), once.stdout
    assert after["embedded"] == rows
    assert f"done: {rows} rows embedded" in once.stdout, once.stdout
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "11 worker --once after a crash",
            rows,
            1,
            "kill -9 mid-batch, then `autoembed worker --once`",
            took,
            result.missing,
            result.stale,
            result.duplicated,
            {"rows the dead worker held": held, "lease s": 300},
        )
    )
    assert result.ok, result


def test_a_live_slow_workers_claim_is_not_taken_by_worker_once(
    conn: Conn, db_url: str, start_worker: StartWorker
) -> None:
    rows = 24
    worker = start_worker(db_url, **{**ENV, "AUTOEMBED_HASH_DELAY_MS": "3000"})
    make_docs(conn, rows)
    wait_for("claim", lambda: status(conn, "docs")["in_flight"] > 0, 30, worker.describe)
    helpers.signal_group(worker.proc.pid, signal.SIGSTOP)  # alive, but not moving
    tokens = claim_tokens(conn)
    held = held_by(conn, tokens)
    assert held > 0
    try:
        once = run_once(db_url)
        assert once.returncode == 0, once.stdout + once.stderr
        assert f"done: {rows - held} rows embedded" in once.stdout, once.stdout
        # the slow worker's rows are still its own, under the same claim
        assert claim_tokens(conn) == tokens
        assert held_by(conn, tokens) == held
        assert status(conn, "docs")["in_flight"] == held
    finally:
        helpers.signal_group(worker.proc.pid, signal.SIGCONT)
    took = helpers.wait_quiescent(conn, "docs", timeout=60, describe=worker.describe)
    assert worker.proc.poll() is None, worker.describe()
    worker.stop()
    assert "not written" not in worker.log(), worker.describe()  # its write counted
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "12 slow live worker",
            rows,
            1,
            "SIGSTOP mid-batch, `autoembed worker --once`, SIGCONT",
            took,
            result.missing,
            result.stale,
            result.duplicated,
            {"rows it held, kept": held},
        )
    )
    assert result.ok, result
