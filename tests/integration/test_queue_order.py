"""The queue's claim order (claim_batch in 050_queue.sql): a claim takes its
``newest`` rows from the fresh lane (the newest by seq) and the rest from the
backlog (the oldest), both through the queue's seq index, so a change made
during a long backfill is claimed next and the backlog still drains."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.worker import queue
from tests.integration.helpers import active_version, create_vectorizer, vectorizer
from tests.integration.test_queue import finish, hash_version

Conn = psycopg.Connection[Any]
LEASE = 30.0


@pytest.fixture
def worker(db_url: str) -> Iterator[Callable[[], Conn]]:
    opened: list[Conn] = []

    def open_worker() -> Conn:
        c = connect(db_url)
        queue.prepare(c)
        opened.append(c)
        return c

    yield open_worker
    for c in opened:
        c.close()


def backlog(conn: Conn, n: int, one_transaction: bool = True) -> int:
    """Table docs with rows 1..n queued under vectorizer 'docs' (hash:16):
    by its backfill, all in one transaction, or each row in a transaction of
    its own (so row i is the i-th oldest). Returns the active version's id."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    if one_transaction:
        conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, %s) i", (n,))
        create_vectorizer(conn, "docs", ["body"])
    else:
        create_vectorizer(conn, "docs", ["body"])
        for i in range(1, n + 1):
            insert(conn, i)
        merge(conn)
    return int(active_version(conn, "docs")["id"])


def merge(conn: Conn) -> None:
    """Move the inbox into the queue now (each claim does it first)."""
    conn.execute("SELECT autoembed._merge_inbox(v) FROM autoembed.vectorizer AS v")


def insert(conn: Conn, doc_id: int) -> None:
    conn.execute("INSERT INTO docs VALUES (%s, %s)", (doc_id, f"text {doc_id}"))  # autocommit


def claim(w: Conn, vid: int, size: int, newest: int) -> list[int]:
    return [json.loads(c.key)["id"] for c in queue.claim(w, vid, size, LEASE, uuid.uuid4(), newest)]


def test_a_row_inserted_behind_a_500_row_backlog_is_in_the_next_claim(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 500)
    w = worker()
    assert len(claim(w, vid, 4, 2)) == 4  # the batch in flight
    insert(conn, 1001)

    claimed = claim(w, vid, 4, 2)

    assert 1001 in claimed
    assert len(claimed) == 4  # the rest from the backlog


def test_without_a_fresh_lane_the_backlog_goes_oldest_first(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 10, one_transaction=False)
    insert(conn, 11)
    w = worker()

    assert claim(w, vid, 3, 0) == [1, 2, 3]
    # the claim of earlier releases' workers: the same, oldest first
    rows = w.execute(
        "SELECT pk FROM autoembed.claim_batch(%s, 2, '30 seconds', gen_random_uuid())", (vid,)
    ).fetchall()
    assert sorted(json.loads(r[0])["id"] for r in rows) == [4, 5]


def test_a_claim_takes_its_newest_rows_and_then_the_oldest(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 10, one_transaction=False)
    w = worker()

    assert sorted(claim(w, vid, 3, 1)) == [1, 2, 10]
    assert sorted(claim(w, vid, 4, 2)) == [3, 4, 8, 9]
    assert sorted(claim(w, vid, 5, 5)) == [5, 6, 7]  # never a row twice
    assert claim(w, vid, 5, 5) == []


def test_a_changed_row_moves_to_the_fresh_lane(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = backlog(conn, 10, one_transaction=False)
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 5")
    w = worker()

    assert claim(w, vid, 1, 1) == [5]
    assert claim(w, vid, 1, 0) == [1]


def test_the_backlog_drains_under_a_steady_stream_of_fresh_rows(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """One new row per batch, each claimed by the next batch; the backlog
    still gets the other half of every batch, oldest first."""
    vid = backlog(conn, 20, one_transaction=False)
    w = worker()
    model_version = hash_version(w)
    served: list[int] = []
    for n in range(20):
        insert(conn, 100 + n)
        token = uuid.uuid4()
        batch = queue.claim(w, vid, 2, LEASE, token, 1)
        claimed = [json.loads(c.key)["id"] for c in batch]
        assert 100 + n in claimed
        served += [i for i in claimed if i < 100]
        assert finish(w, vid, token, batch, model_version).written == 2
    assert served == list(range(1, 21))
    assert claim(w, vid, 10, 5) == []


def test_a_claim_skips_newest_rows_another_claim_holds_uncommitted(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = backlog(conn, 10, one_transaction=False)
    a = connect(db_url, autocommit=False)  # its claim merges nothing: the rows are queued
    queue.prepare(a)
    b = worker()
    b.execute("SET statement_timeout = '10s'")
    try:
        a_claimed = claim(a, vid, 2, 2)  # uncommitted: locked, not yet claimed
        b_claimed = claim(b, vid, 3, 1)
        a.commit()
    finally:
        a.close()
    assert sorted(a_claimed) == [9, 10]
    assert sorted(b_claimed) == [1, 2, 8]  # the next newest, without waiting


def test_concurrent_claimers_with_a_fresh_lane_never_get_the_same_key(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 60, one_transaction=False)
    conns = [worker() for _ in range(4)]
    got: list[list[int]] = [[] for _ in conns]
    start = threading.Barrier(len(conns) + 1)

    def claim_all(n: int) -> None:
        start.wait()
        while claimed := claim(conns[n], vid, 3, n % 3):
            got[n].extend(claimed)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(len(conns))]
    for t in threads:
        t.start()
    start.wait()
    for i in range(61, 121):
        insert(conn, i)  # fresh rows while they claim
    for t in threads:
        t.join(15)
    leftover = claim(worker(), vid, 200, 0)
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
        assert len(claim(w, vid, 4, 2)) == 4
        row = w.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", index).fetchone()
    assert row is not None
    assert row[0] >= 2  # the newest end and the oldest end


def test_failed_rows_and_rows_in_backoff_are_in_neither_lane(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = backlog(conn, 6, one_transaction=False)
    q = vectorizer(conn, "docs").queue
    conn.execute(sql.SQL("UPDATE {} SET failed_at = now() WHERE id IN (1, 6)").format(q))
    later = "UPDATE {} SET next_attempt_at = now() + interval '1 hour' WHERE id IN (2, 5)"
    conn.execute(sql.SQL(later).format(q))
    w = worker()

    assert sorted(claim(w, vid, 10, 1)) == [3, 4]


def test_newest_must_be_zero_or_more(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = backlog(conn, 3)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="newest"):
        claim(worker(), vid, 2, -1)
