"""Fault 3, lease fencing: a worker stopped mid-batch past its lease, whose
rows another worker then finishes, must not write when it resumes.

Two loops. In-process (100 repetitions): worker A claims rows and embeds
them; the rows are then updated, deleted or re-keyed (or left alone); A's
lease runs out; B claims and completes them — before or after A's late
completion, or never — and A's completion must write nothing. With real
Celery worker processes: SIGSTOP worker A while it embeds a claimed batch,
update the rows, let worker B embed them, SIGCONT A: its write is rejected
(its log says so) and the rows keep B's chunks.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
import uuid
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.pipeline import Pipeline
from tests.e2e.conftest import StartWorker, Worker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, text

pytestmark = pytest.mark.faults

Conn = psycopg.Connection[Any]
REPETITIONS = 100
PROCESS_REPETITIONS = size(2, 20)
SHORT_LEASE = 0.05


def snapshot(conn: Conn, emb: str, ids: list[int]) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT id, chunk_no, chunk, embedding::text, source_seq::text, embedded_at "
        f"FROM autoembed.{emb} WHERE id = ANY(%s) ORDER BY id, chunk_no",
        (ids,),
    ).fetchall()


def complete(
    pipe: Pipeline, conn: Conn, token: uuid.UUID, claimed: list[queue.Claimed]
) -> queue.Completion:
    """Chunk, embed and complete a claim the way Pipeline.run_batch does."""
    keys, item, no, chunks = [], [], [], []
    for c in claimed:
        keys.append(c.key)
        for n, piece in enumerate(pipe.chunk(c.document)):
            item.append(len(keys) - 1)
            no.append(n)
            chunks.append(piece)
    vectors = list(pipe.embedder.embed(chunks)) if chunks else []
    return queue.complete(
        conn, pipe.version.id, token, pipe.model_version_id, keys, item, no, chunks, vectors
    )


def test_100_late_completions_after_the_lease_write_nothing(db_url: str) -> None:
    rng = random.Random(3)
    settings = Settings(database_url=db_url, lease_seconds=30)
    with connect(db_url) as conn, connect(db_url) as wa, connect(db_url) as wb:
        queue.prepare(wa)
        queue.prepare(wb)
        vid = make_docs(conn, 30, long_every=4)
        drain_vectorizer(wb, vid, settings)
        emb = helpers.tables(conn, "docs")[0]
        pipe_a = helpers.active_pipeline(wa, vid, settings)
        pipe_b = helpers.active_pipeline(wb, vid, settings)
        assert pipe_a is not None
        assert pipe_b is not None
        next_id = 1000
        start = time.monotonic()
        stale_writes = 0
        orders: dict[str, int] = {}
        for _ in range(REPETITIONS):
            ids = [r[0] for r in conn.execute("SELECT id FROM docs ORDER BY id").fetchall()]
            if len(ids) < 10:  # deletes thin the table out: top it up
                for _ in range(10):
                    next_id += 1
                    conn.execute("INSERT INTO docs VALUES (%s, 'new', %s, 0)", (next_id, text(rng)))
                    ids.append(next_id)
                drain_vectorizer(wb, vid, settings)
            picked = rng.sample(ids, rng.randint(1, 4))
            for i in picked:
                conn.execute(
                    "UPDATE docs SET body = %s WHERE id = %s",
                    (text(rng, long=rng.random() < 0.3), i),
                )
            token_a = uuid.uuid4()
            claimed_a = queue.claim(wa, pipe_a.version.id, 10, SHORT_LEASE, token_a)
            assert sorted(json.loads(c.key)["id"] for c in claimed_a) == sorted(picked)
            # while A embeds (or is stopped), the rows change
            for i in picked:
                change = rng.choice(["update", "update", "delete", "rekey", "none"])
                if change == "update":
                    conn.execute("UPDATE docs SET body = %s WHERE id = %s", (text(rng), i))
                elif change == "delete":
                    conn.execute("DELETE FROM docs WHERE id = %s", (i,))
                elif change == "rekey":
                    next_id += 1
                    conn.execute("UPDATE docs SET id = %s WHERE id = %s", (next_id, i))
            time.sleep(SHORT_LEASE + 0.01)  # A's lease runs out
            order = rng.choice(["B then A", "A between B's claim and write", "A alone"])
            orders[order] = orders.get(order, 0) + 1
            affected = picked + list(range(next_id - 4, next_id + 1))
            if order == "A alone":
                before = snapshot(conn, emb, affected)
                late = complete(pipe_a, wa, token_a, claimed_a)
                stale_writes += before != snapshot(conn, emb, affected)
                drain_vectorizer(wb, vid, settings)
            else:
                token_b = uuid.uuid4()
                claimed_b = queue.claim(wb, pipe_b.version.id, 10, 30, token_b)
                if order == "B then A":
                    complete(pipe_b, wb, token_b, claimed_b)
                before = snapshot(conn, emb, affected)
                late = complete(pipe_a, wa, token_a, claimed_a)
                stale_writes += before != snapshot(conn, emb, affected)
                if order != "B then A":
                    complete(pipe_b, wb, token_b, claimed_b)
                drain_vectorizer(wb, vid, settings)
            assert (late.written, late.rejected) == (0, len(claimed_a)), (order, late)
        seconds = time.monotonic() - start
        assert helpers.queue_rows(conn, "docs") == 0
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "3 lease fencing (in-process)",
            result.rows,
            REPETITIONS,
            "late completions",
            seconds,
            result.missing,
            result.stale,
            result.duplicated,
            {"stale writes": stale_writes, **orders},
        )
    )
    assert stale_writes == 0
    assert result.ok, result


def _claimed(conn: Conn, q: str, ids: list[int]) -> bool:
    row = conn.execute(
        f"SELECT count(*) FROM autoembed.{q} WHERE id = ANY(%s) AND claim_token IS NOT NULL",
        (ids,),
    ).fetchone()
    return row is not None and row[0] == len(ids)


def _expired(conn: Conn, q: str, ids: list[int]) -> bool:
    row = conn.execute(
        f"SELECT bool_and(lease_until < now()) FROM autoembed.{q} WHERE id = ANY(%s)", (ids,)
    ).fetchone()
    return bool(row and row[0])


def _rejections(worker: Worker) -> int:
    return sum(
        int(m)
        for m in re.findall(r"docs v\d+: (\d+) rows not written: their claim expired", worker.log())
    )


def _wait(cond: Any, what: str, timeout: float, describe: Any) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{describe()}"
        time.sleep(0.005)


def test_sigstopped_worker_cannot_write_after_another_finished_its_rows(
    conn: Conn, db_url: str, start_worker: StartWorker, redis_server: Any
) -> None:
    """A is a Celery worker process; B, which takes over, drains in this
    process (a second Celery worker would race A for the task messages)."""
    rng = random.Random(4)
    lease = 2.0
    a = start_worker(
        db_url,
        AUTOEMBED_DISPATCHER="0",
        AUTOEMBED_LEASE_SECONDS=str(lease),
        AUTOEMBED_HASH_DELAY_MS="700",
        # one batch holds the 3 changed rows: its size not cut down to one
        # row by the delay, which is per embed call, not per row
        AUTOEMBED_BATCH_SECONDS="60",
    )

    def describe() -> str:
        return f"A: {a.describe()[-6000:]}"

    client = helpers.celery_client(redis_server.url)
    vid = make_docs(conn, 20)
    helpers.send_drain(client, vid)
    helpers.wait_quiescent(conn, "docs", timeout=60, describe=describe, stable_for=0.2)
    emb, _, q, _ = helpers.tables(conn, "docs")
    settings_b = Settings(database_url=db_url, lease_seconds=lease)
    stale_writes = 0
    start = time.monotonic()
    with connect(db_url) as wb:
        queue.prepare(wb)
        for rep in range(PROCESS_REPETITIONS):
            ids = rng.sample(range(1, 21), 3)
            for i in ids:
                conn.execute("UPDATE docs SET body = %s WHERE id = %s", (f"first {rep} {i}", i))
            helpers.send_drain(client, vid)
            _wait(lambda: _claimed(conn, q, ids), "A to claim", 30, describe)  # noqa: B023
            helpers.signal_group(a.proc.pid, signal.SIGSTOP)  # mid-batch: A sleeps in embed()
            for i in ids:
                conn.execute("UPDATE docs SET body = %s WHERE id = %s", (f"second {rep} {i}", i))
            _wait(lambda: _expired(conn, q, ids), "A's lease to expire", lease + 5, describe)  # noqa: B023
            assert drain_vectorizer(wb, vid, settings_b).written == len(ids)
            helpers.wait_quiescent(conn, "docs", timeout=30, describe=describe, stable_for=0.1)
            before = snapshot(conn, emb, ids)
            assert [r[2] for r in before] == [f"doc {i}\n\nsecond {rep} {i}" for i in sorted(ids)]
            rejected_before = _rejections(a)
            helpers.signal_group(a.proc.pid, signal.SIGCONT)
            _wait(lambda: _rejections(a) > rejected_before, "A's late write", 30, describe)  # noqa: B023
            assert _rejections(a) - rejected_before == len(ids), describe()
            stale_writes += before != snapshot(conn, emb, ids)
    seconds = time.monotonic() - start
    assert a.proc.poll() is None, a.describe()
    a.stop()
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "3 lease fencing (SIGSTOP, real workers)",
            result.rows,
            PROCESS_REPETITIONS,
            "SIGSTOP past the lease",
            seconds,
            result.missing,
            result.stale,
            result.duplicated,
            {"stale writes": stale_writes},
        )
    )
    assert stale_writes == 0
    assert result.ok, result
