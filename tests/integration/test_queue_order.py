"""The queue's claim order (claim_batch in 050_queue.sql): rows queued
within the claim's fresh window make a batch of their own, most recent
first; otherwise a claim takes the rows waiting longest. Both are index
scans of queued_at, so a change made during a long backfill is claimed next
and the backlog still drains."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.pipeline import BatchResult
from tests.integration.helpers import active_version, create_vectorizer, vectorizer

Conn = psycopg.Connection[Any]
LEASE = 30.0
WINDOW = 60.0  # seconds: rows queued within it are fresh


def backlog(conn: Conn, n: int, one_transaction: bool = True) -> int:
    """Table docs with rows 1..n queued under vectorizer 'docs' (hash:16)
    an hour ago: by its backfill, all in one transaction, or each row in a
    transaction of its own (so row i is the i-th longest waiting). Returns
    the active version's id."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    if one_transaction:
        conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, %s) i", (n,))
        create_vectorizer(conn, "docs", ["body"])
    else:
        create_vectorizer(conn, "docs", ["body"])
        for i in range(1, n + 1):
            insert(conn, i)
    merge(conn)
    conn.execute(
        sql.SQL("UPDATE {} SET queued_at = queued_at - interval '1 hour'").format(
            vectorizer(conn, "docs").queue
        )
    )
    return int(active_version(conn, "docs")["id"])


def merge(conn: Conn) -> None:
    """Move the inbox into the queue now (each claim does it first)."""
    conn.execute("SELECT autoembed._merge_inbox(v) FROM autoembed.vectorizer AS v")


def insert(conn: Conn, doc_id: int) -> None:
    conn.execute("INSERT INTO docs VALUES (%s, %s)", (doc_id, f"text {doc_id}"))  # autocommit


def claim(w: Conn, vid: int, size: int, window: float | None) -> tuple[list[int], bool]:
    """The ids claimed, sorted, and whether it was a fresh batch."""
    claimed = queue.claim(w, vid, size, LEASE, uuid.uuid4(), window)
    return sorted(json.loads(c.key)["id"] for c in claimed), any(c.fresh for c in claimed)


def test_a_row_inserted_behind_a_500_row_backlog_is_claimed_next_on_its_own(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 500)
    w = worker()
    assert claim(w, vid, 4, WINDOW) == ([1, 2, 3, 4], False)  # the batch in flight
    insert(conn, 1001)

    assert claim(w, vid, 4, WINDOW) == ([1001], True)  # not padded with the backlog
    assert claim(w, vid, 4, WINDOW) == ([5, 6, 7, 8], False)


def test_fresh_rows_go_most_recent_first(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = backlog(conn, 10)
    for i in (1001, 1002, 1003):
        insert(conn, i)
    w = worker()

    assert claim(w, vid, 2, WINDOW) == ([1002, 1003], True)
    assert claim(w, vid, 2, WINDOW) == ([1001], True)


def test_without_a_window_the_backlog_goes_longest_waiting_first(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 10, one_transaction=False)
    insert(conn, 11)
    q = vectorizer(conn, "docs").queue
    conn.execute(sql.SQL("UPDATE {} SET queued_at = '2000-01-01' WHERE id = 9").format(q))
    w = worker()

    assert claim(w, vid, 3, None) == ([1, 2, 9], False)
    # the claim of earlier releases' workers: the same
    rows = w.execute(
        "SELECT pk FROM autoembed.claim_batch(%s, 2, '30 seconds', gen_random_uuid())", (vid,)
    ).fetchall()
    assert sorted(json.loads(r[0])["id"] for r in rows) == [3, 4]


def test_a_change_to_a_row_waiting_in_the_backlog_keeps_its_place(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """queued_at is when a row started waiting: a change does not move it
    to the fresh lane, nor to the back of the backlog."""
    vid = backlog(conn, 5, one_transaction=False)
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 1")
    w = worker()

    assert claim(w, vid, 2, WINDOW) == ([1, 2], False)


def test_a_drain_embeds_each_new_row_within_two_batches_while_the_backlog_drains(
    conn: Conn, db_url: str
) -> None:
    """A new row after each of the first 30 batches: the drain alternates
    fresh batches (the new rows alone) with backlog batches, and the backlog
    still finishes."""
    backlog(conn, 400)
    emb = vectorizer(conn, "docs").embeddings
    batches: list[tuple[bool, int]] = []
    waiting: dict[int, int] = {}  # new row -> batches since it was inserted

    def progress(_vid: int, result: BatchResult) -> None:
        batches.append((result.fresh, result.written))
        for i in list(waiting):
            done = conn.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(emb), (i,))
            if done.fetchone():
                del waiting[i]
            else:
                waiting[i] += 1
                assert waiting[i] < 2, f"row {i} not embedded in the 2 batches after its insert"
        if len(batches) < 30:
            insert(conn, 1000 + len(batches))
            waiting[1000 + len(batches)] = 0

    with connect(db_url) as w:
        queue.prepare(w)
        settings = Settings(database_url=db_url, batch_size=16)
        stats = drain_vectorizer(w, vectorizer(conn, "docs").id, settings, progress=progress)
    assert stats.written == 400 + 29
    assert not waiting
    # the new rows, and nothing else, came in fresh batches, never two in a row
    assert sum(written for fresh, written in batches if fresh) == 29
    assert not any(a and b for (a, _), (b, _) in itertools.pairwise(batches))


def test_a_claim_skips_fresh_rows_another_claim_holds_uncommitted(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = backlog(conn, 10)
    for i in (1001, 1002, 1003):
        insert(conn, i)
    merge(conn)
    a = connect(db_url, autocommit=False)  # its claim merges nothing: the rows are queued
    queue.prepare(a)
    b = worker()
    b.execute("SET statement_timeout = '10s'")
    try:
        a_claimed = claim(a, vid, 2, WINDOW)  # uncommitted: locked, not yet claimed
        b_claimed = claim(b, vid, 2, WINDOW)
        a.commit()
    finally:
        a.close()
    assert a_claimed == ([1002, 1003], True)
    assert b_claimed == ([1001], True)  # the next fresh one, without waiting


def test_concurrent_claimers_with_fresh_windows_never_get_the_same_key(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 60, one_transaction=False)
    conns = [worker() for _ in range(4)]
    got: list[list[int]] = [[] for _ in conns]
    start = threading.Barrier(len(conns) + 1)

    def claim_all(n: int) -> None:
        start.wait()
        while claimed := claim(conns[n], vid, 3, WINDOW if n % 2 else None)[0]:
            got[n].extend(claimed)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(len(conns))]
    for t in threads:
        t.start()
    start.wait()
    for i in range(61, 121):
        insert(conn, i)  # fresh rows while they claim
    for t in threads:
        t.join(15)
    leftover = claim(worker(), vid, 200, None)[0]
    everything = sorted([k for keys in got for k in keys] + leftover)
    assert everything == list(range(1, 121))  # each key exactly once


def test_both_lanes_are_index_scans_of_the_queue(conn: Conn, db_url: str) -> None:
    vid = backlog(conn, 2000)
    v = vectorizer(conn, "docs")
    conn.execute(sql.SQL("ANALYZE {}").format(v.queue))
    index = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index "
        "WHERE indrelid = %s::regclass AND NOT indisprimary",
        (v.queue.as_string(conn),),
    ).fetchone()
    assert index is not None
    with connect(db_url, autocommit=False) as w:
        queue.prepare(w)
        assert claim(w, vid, 4, WINDOW) == ([1, 2, 3, 4], False)  # looked for fresh rows first
        row = w.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", index).fetchone()
    assert row is not None
    assert row[0] >= 2  # the fresh end and the waiting end


def test_failed_rows_and_rows_in_backoff_are_in_neither_lane(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 4, one_transaction=False)
    for i in (11, 12, 13):
        insert(conn, i)
    merge(conn)
    q = vectorizer(conn, "docs").queue
    conn.execute(sql.SQL("UPDATE {} SET failed_at = now() WHERE id IN (1, 11)").format(q))
    later = "UPDATE {} SET next_attempt_at = now() + interval '1 hour' WHERE id IN (2, 12)"
    conn.execute(sql.SQL(later).format(q))
    w = worker()

    assert claim(w, vid, 10, WINDOW) == ([13], True)
    assert claim(w, vid, 10, WINDOW) == ([3, 4], False)


def test_a_negative_window_is_refused(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = backlog(conn, 3)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="fresh_within"):
        claim(worker(), vid, 2, -1.0)
