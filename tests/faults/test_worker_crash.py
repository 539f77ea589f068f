"""Fault 1, worker crash: a backfill with two Celery worker processes, one of
them killed with SIGKILL again and again (its whole process group, or only
the pool process running the task) and restarted each time. At quiescence
every row has exactly the chunks a fresh embedding of it gives."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import psycopg
import pytest

from autoembed.settings import Settings
from tests.e2e.conftest import StartWorker, Worker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, status

pytestmark = pytest.mark.faults

ROWS = size(1000, 10_000)
KILLS = size(3, 20)
# The default lease (300 s): the rows a killed worker held are claimable as
# soon as its database session ends, not when the lease runs out.
LEASE = str(int(Settings().lease_seconds))


def test_kill_9_workers_during_a_backfill(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    rng = random.Random(1)
    env = {
        "AUTOEMBED_LEASE_SECONDS": LEASE,
        "AUTOEMBED_BATCH_SIZE": "16",
        # 0.2 s per batch of 16: the backfill outlasts the kills even though
        # a killed worker's rows come back within seconds.
        "AUTOEMBED_HASH_DELAY_MS": "200",
        "AUTOEMBED_REDELIVER_SECONDS": "5",
    }
    workers: list[Worker] = [start_worker(db_url, **env) for _ in range(2)]

    def describe() -> str:
        return "\n".join(w.describe()[-3000:] for w in workers)

    make_docs(conn, ROWS)
    start = time.monotonic()
    kills = child_kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.5, 1.5))
        st = status(conn, "docs")
        assert st["pending"] + st["in_flight"] > 0, (
            f"the backfill ended after {kills} of {KILLS} kills: {st}\n{describe()}"
        )
        i = rng.randrange(len(workers))
        victim = workers[i]
        children = helpers.pool_children(victim.proc.pid)
        if children and rng.random() < 0.5:
            # only the pool process running the task: Celery forks a new one
            helpers.os.kill(rng.choice(children), signal.SIGKILL)
            child_kills += 1
        else:
            helpers.signal_group(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(10)
            workers[i] = start_worker(db_url, wait=False, **env)
        kills += 1
    took = helpers.wait_quiescent(conn, "docs", timeout=size(120, 600), describe=describe)
    total = time.monotonic() - start
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()

    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "1 worker crash",
            ROWS,
            KILLS,
            f"kill -9 ({child_kills} pool process only)",
            total,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "chunks": result.expected_chunks,
                "after last kill s": round(took, 1),
                "lease s": LEASE,
            },
        )
    )
    assert result.rows == ROWS
    assert result.ok, result
