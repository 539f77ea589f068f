"""Fault 4, poison rows: 1% of the rows make the embedder raise (the hash
embedder's AUTOEMBED_HASH_FAIL_ON marker). After max_attempts tries with
backoff exactly those rows are failed, each with its error, and
vectorizer_status shows them; every other row is embedded. Once the fault
is gone (workers restarted without it), autoembed.retry_failed requeues
them and they are embedded too."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import StartWorker, Worker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, status

pytestmark = pytest.mark.faults

ROWS = size(1000, 10_000)
WORKERS = size(1, 2)
POISON = ROWS // 100
MAX_ATTEMPTS = 3
RETRY_DELAY = 0.5  # seconds; the backoffs are 0.5 s and 1 s
MARKER = "POISONPILL"


def test_poison_rows_fail_alone_and_succeed_after_retry_failed(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    env = {"AUTOEMBED_BATCH_SIZE": "16", "AUTOEMBED_HASH_FAIL_ON": MARKER}
    workers: list[Worker] = [start_worker(db_url, **env) for _ in range(WORKERS)]

    def describe() -> str:
        return "\n".join(w.describe()[-3000:] for w in workers)

    poison_ids = list(range(7, ROWS + 1, 100))
    assert len(poison_ids) == POISON
    start = time.monotonic()
    make_docs(
        conn,
        ROWS,
        append={i: f" {MARKER}" for i in poison_ids},
        max_attempts=MAX_ATTEMPTS,
        retry_delay=f"{RETRY_DELAY} seconds",
    )
    took = helpers.wait_quiescent(
        conn, "docs", timeout=size(120, 600), failed=POISON, describe=describe
    )
    first_pass = time.monotonic() - start

    st = status(conn, "docs")
    assert (st["embedded"], st["failed"], st["pending"]) == (ROWS - POISON, POISON, 0), st
    assert st["error"] is not None, st
    assert f"{POISON} rows failed" in st["error"], st
    assert MARKER in st["error"], st
    failed = conn.execute(
        "SELECT (pk ->> 'id')::int, attempts, error FROM autoembed.failed_rows('docs') ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in failed] == poison_ids
    assert {r[1] for r in failed} == {MAX_ATTEMPTS}
    assert all(f"failure marker '{MARKER}'" in r[2] for r in failed), failed[:3]
    # Each poison row was tried max_attempts times, waiting out both backoffs.
    assert first_pass >= RETRY_DELAY * (1 + 2)

    # The fault goes away: workers without it, then retry_failed.
    for w in workers:
        w.stop()
    workers[:] = [start_worker(db_url, AUTOEMBED_BATCH_SIZE="16") for _ in range(WORKERS)]
    row = conn.execute("SELECT autoembed.retry_failed('docs')").fetchone()
    assert row == (POISON,)
    retry_start = time.monotonic()
    helpers.wait_quiescent(conn, "docs", timeout=120, describe=describe)
    retry_s = time.monotonic() - retry_start
    st = status(conn, "docs")
    assert (st["embedded"], st["failed"], st["error"]) == (ROWS, 0, None), st
    assert conn.execute("SELECT count(*) FROM autoembed.failed_rows('docs')").fetchone() == (0,)
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "4 poison rows",
            ROWS,
            POISON,
            f"poison rows, max_attempts {MAX_ATTEMPTS}",
            first_pass,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "failed after attempts": len(failed),
                "after retry_failed s": round(retry_s, 1),
                "last change to quiescence s": round(took, 1),
            },
        )
    )
    assert result.ok, result
