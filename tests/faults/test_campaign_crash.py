"""Fault 9, crash during a model change: a table embedded with hash:16 is
re-embedded with hash:32 (``set_model``) by two Celery worker processes, one
of them killed with SIGKILL again and again during the campaign (its whole
process group, or only the pool process running the task) and restarted.
The kills only delay the campaign: it completes and switches by itself, and
at quiescence version 2 has exactly the chunks a fresh hash:32 embedding of
the table gives (none missing, stale or duplicated); version 1, retired, is
still complete."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import StartWorker, Worker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, status

pytestmark = pytest.mark.faults

ROWS = size(2000, 10_000)
KILLS = size(3, 20)
LEASE = "3"  # seconds: how long the rows a killed worker held stay claimed
NEW_MODEL = "hash:32"


def versions(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(version, state, pending, in_flight, failed, embedded_rows) of docs."""
    return conn.execute(
        "SELECT version, state, pending, in_flight, failed, embedded_rows "
        "FROM autoembed.vectorizer_versions WHERE vectorizer = 'docs' ORDER BY version"
    ).fetchall()


def test_kill_9_workers_during_a_campaign(
    conn: psycopg.Connection[Any],
    db_url: str,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(9)
    env = {
        "AUTOEMBED_LEASE_SECONDS": LEASE,
        "AUTOEMBED_BATCH_SIZE": "16",
        "AUTOEMBED_HASH_DELAY_MS": "50",
        "AUTOEMBED_REDELIVER_SECONDS": "5",
    }
    workers: list[Worker] = [start_worker(db_url, **env) for _ in range(2)]

    def describe() -> str:
        return f"{versions(conn)}\n" + "\n".join(w.describe()[-3000:] for w in workers)

    make_docs(conn, ROWS)
    helpers.wait_quiescent(conn, "docs", timeout=size(120, 600), describe=describe)
    assert status(conn, "docs")["embedded"] == ROWS

    assert conn.execute("SELECT autoembed.set_model('docs', %s)", (NEW_MODEL,)).fetchone() == (2,)
    start = time.monotonic()
    kills = child_kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.5, 1.5))
        campaign = versions(conn)[1]
        left = campaign[2] + campaign[3] if campaign[1] == "building" else 0
        assert left > 0, f"the campaign ended after {kills} of {KILLS} kills\n{describe()}"
        i = rng.randrange(len(workers))
        victim = workers[i]
        children = helpers.pool_children(victim.proc.pid)
        if children and kills % 2 == 1:
            # only the pool process running the task: Celery forks a new one
            os.kill(rng.choice(children), signal.SIGKILL)
            child_kills += 1
        else:
            helpers.signal_group(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(10)
            workers[i] = start_worker(db_url, wait=False, **env)
        kills += 1
    last_kill = time.monotonic()

    # The campaign finishes by itself: version 2 becomes active ...
    deadline = last_kill + size(120, 600)
    while versions(conn)[1][1] != "active":
        assert time.monotonic() < deadline, f"the campaign did not finish\n{describe()}"
        time.sleep(0.1)
    switched = time.monotonic()
    # ... and then nothing is left to do in either version.
    took = helpers.wait_quiescent(conn, "docs", timeout=60, describe=describe)
    total = switched + took - start
    final = versions(conn)
    assert [(v[1], v[2], v[3], v[4]) for v in final] == [
        ("retired", 0, 0, 0),
        ("active", 0, 0, 0),
    ], describe()
    assert final[0][5] == final[1][5] == ROWS, "both versions hold every row"
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()

    # A fresh embedding of the table with the new model, compared with version 2.
    monkeypatch.setattr(helpers, "MODEL", NEW_MODEL)
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "9 campaign crash",
            ROWS,
            KILLS,
            f"kill -9 during a hash:16 → hash:32 campaign ({child_kills} pool process only)",
            total,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "chunks": result.expected_chunks,
                "switched s": round(switched - start, 1),
                "switched after last kill s": round(switched - last_kill, 1),
            },
        )
    )
    assert result.rows == ROWS
    assert result.expected_chunks > ROWS  # some rows have several chunks
    assert result.ok, result
