"""The queue's contract, driven through its SQL functions the way a worker
calls them (worker/queue.py): claims never overlap, an expired or superseded
claim cannot write, changes during a claim are not lost, failures retry with
a limit, and pause, release and lease extension do what they say."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import pipeline_for
from autoembed.worker.embedders import HashingEmbedder
from autoembed.worker.pipeline import VectorizerUnavailable
from tests.conftest import drain
from tests.integration.helpers import (
    active_version,
    chunks,
    create_vectorizer,
    queued_keys,
    status,
    vectorizer,
)
from tests.integration.security_helpers import connect_as, roles

Conn = psycopg.Connection[Any]
DIMS = 16
EMBEDDER = HashingEmbedder(DIMS)
LEASE = 30.0  # long enough never to expire during a test
SHORT_LEASE = 0.2


def make_docs(conn: Conn, texts: dict[int, str], **options: Any) -> int:
    """Table docs(id, body) holding ``texts``, with vectorizer 'docs' on it;
    returns the id of its (active) version, whose queue the tests drive."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s)", list(texts.items()))
    create_vectorizer(conn, "docs", ["body"], model=f"hash:{DIMS}", **options)
    return int(active_version(conn, "docs")["id"])


def hash_version(conn: Conn) -> int:
    return queue.register_version(conn, EMBEDDER.version())


def ids(claimed: list[queue.Claimed]) -> list[int]:
    return sorted(json.loads(c.key)["id"] for c in claimed)


def finish(
    conn: Conn,
    vid: int,
    token: uuid.UUID,
    claimed: list[queue.Claimed],
    version_id: int,
    label: str = "",
) -> queue.Completion:
    """Complete a claim the way a worker would: one chunk per non-empty
    document, its text prefixed with ``label`` so tests can tell writers apart."""
    item = [i for i, c in enumerate(claimed) if c.document]
    texts = [label + str(claimed[i].document) for i in item]
    vectors = list(EMBEDDER.embed(texts)) if texts else []
    keys = [c.key for c in claimed]
    return queue.complete(conn, vid, token, version_id, keys, item, [0] * len(item), texts, vectors)


def queue_row(conn: Conn, doc_id: int) -> dict[str, Any] | None:
    cur = conn.execute(
        sql.SQL(
            "SELECT attempts, claim_token, lease_until, next_attempt_at, failed_at, last_error "
            "FROM {} WHERE id = %s"
        ).format(vectorizer(conn, "docs").queue),
        (doc_id,),
    )
    row = cur.fetchone()
    assert cur.description is not None
    return None if row is None else dict(zip([c.name for c in cur.description], row, strict=True))


def wait_until_blocked(conn: Conn, pid: int) -> None:
    """Wait until backend ``pid`` is waiting for a lock (its claim got that far)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def chunk_texts(conn: Conn) -> dict[int, list[str]]:
    return {key[0]: [c.chunk for c in cs] for key, cs in chunks(conn, "docs").items()}


# ---------------------------------------------------------------- claims


def test_claim_returns_the_current_text_batch_by_batch(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "one", 2: "two", 3: "three"})
    conn.execute("UPDATE docs SET body = 'two, edited' WHERE id = 2")
    w = worker()

    first = queue.claim(w, vid, 2, LEASE, uuid.uuid4())
    second = queue.claim(w, vid, 2, LEASE, uuid.uuid4())
    claimed = first + second

    assert {json.loads(c.key)["id"]: c.document for c in claimed} == {
        1: "one",
        2: "two, edited",
        3: "three",
    }
    assert (len(first), len(second)) == (2, 1)  # at most batch_size, none twice
    assert queue.claim(w, vid, 2, LEASE, uuid.uuid4()) == []


def test_claim_returns_null_text_for_a_row_gone_or_all_null(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """claim_batch documents: 'NULL when the row is gone or all its columns are NULL'."""
    vid = make_docs(conn, {1: "one", 2: "two", 3: ""})
    conn.execute("UPDATE docs SET body = NULL WHERE id = 1")
    conn.execute("DELETE FROM docs WHERE id = 2")

    claimed = queue.claim(worker(), vid, 10, LEASE, uuid.uuid4())

    assert {json.loads(c.key)["id"]: c.document for c in claimed} == {1: None, 2: None, 3: ""}


def test_a_claim_skips_rows_locked_by_an_uncommitted_claim(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = make_docs(conn, {i: f"text {i}" for i in range(1, 11)})
    a = connect(db_url, autocommit=False)
    queue.prepare(a)
    b = worker()
    b.execute("SET statement_timeout = '10s'")
    try:
        # A's claim is still uncommitted: to B its rows look unclaimed, but
        # locked. B takes the others at once, without waiting for A (not even
        # for the vectorizer row both claims note their activity in).
        a_claimed = queue.claim(a, vid, 5, LEASE, uuid.uuid4())
        b_claimed = queue.claim(b, vid, 10, LEASE, uuid.uuid4())
        a.commit()
    finally:
        a.close()
    assert len(a_claimed) == 5
    assert set(ids(a_claimed)).isdisjoint(ids(b_claimed))
    assert sorted(ids(a_claimed) + ids(b_claimed)) == list(range(1, 11))


def test_concurrent_claimers_never_get_the_same_key(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = make_docs(conn, {i: f"text {i}" for i in range(1, 121)})
    conns = [worker() for _ in range(4)]
    got: list[list[int]] = [[] for _ in conns]
    start = threading.Barrier(len(conns))

    def claim_all(n: int) -> None:
        start.wait()
        while claimed := queue.claim(conns[n], vid, 3, LEASE, uuid.uuid4()):
            got[n].extend(ids(claimed))

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    everything = [k for keys in got for k in keys]
    assert sorted(everything) == list(range(1, 121))  # each key exactly once


def test_queue_functions_reject_bad_arguments(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = make_docs(conn, {1: "one"})
    w = worker()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch_size"):
        queue.claim(w, vid, 0, LEASE, uuid.uuid4())
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="lease"):
        queue.claim(w, vid, 1, 0, uuid.uuid4())
    with pytest.raises(psycopg.errors.UndefinedObject, match="no vectorizer version with id"):
        queue.claim(w, vid + 100, 1, LEASE, uuid.uuid4())
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="one error per item"):
        queue.fail(w, vid, token, [c.key for c in claimed], ["a", "b"])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="equal lengths"):
        queue.complete(w, vid, token, hash_version(conn), [claimed[0].key], [0], [0], [], [])


# ---------------------------------------------------------- lease fencing


def test_a_late_completion_after_takeover_is_rejected(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    a, b = worker(), worker()
    version = hash_version(conn)
    token_a, token_b = uuid.uuid4(), uuid.uuid4()
    claimed_a = queue.claim(a, vid, 10, SHORT_LEASE, token_a)
    time.sleep(SHORT_LEASE + 0.1)

    claimed_b = queue.claim(b, vid, 10, LEASE, token_b)
    assert ids(claimed_b) == ids(claimed_a) == [1, 2]
    done_b = finish(b, vid, token_b, claimed_b, version, label="B: ")
    done_a = finish(a, vid, token_a, claimed_a, version, label="A: ")

    assert (done_b.written, done_b.rejected) == (2, 0)
    assert (done_a.written, done_a.rejected) == (0, 2)
    assert chunk_texts(conn) == {1: ["B: apples"], 2: ["B: pears"]}
    assert queued_keys(conn, "docs") == []


def test_a_claim_no_longer_held_cannot_write_even_if_nobody_took_over(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    w = worker()
    version = hash_version(conn)
    expired, held = uuid.uuid4(), uuid.uuid4()
    claimed_expired = queue.claim(w, vid, 1, SHORT_LEASE, expired)
    claimed_held = queue.claim(w, vid, 1, LEASE, held)
    time.sleep(SHORT_LEASE + 0.1)

    late = finish(w, vid, expired, claimed_expired, version)
    impostor = finish(w, vid, uuid.uuid4(), claimed_held, version)

    assert (late.written, late.rejected) == (0, 1)
    assert (impostor.written, impostor.rejected) == (0, 1)
    assert chunk_texts(conn) == {}
    assert queued_keys(conn, "docs") == [(1,), (2,)]  # still to do


def test_a_row_changed_after_its_claim_is_embedded_again(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = make_docs(conn, {1: "old text", 2: "untouched"})
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    conn.execute("UPDATE docs SET body = 'new text' WHERE id = 1")

    finish(w, vid, token, claimed, hash_version(conn))

    assert queued_keys(conn, "docs") == [(1,)]
    assert status(conn, "docs")["pending"] == 1
    drain(db_url)
    assert chunk_texts(conn) == {1: ["new text"], 2: ["untouched"]}
    assert status(conn, "docs")["pending"] == 0


def test_a_change_merged_during_a_claim_requeues_the_row_at_completion(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "old text", 2: "other"})
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 1, LEASE, token)
    (doc_id,) = ids(claimed)
    conn.execute("UPDATE docs SET body = 'new text' WHERE id = %s", (doc_id,))
    # Another worker's claim merges the change into the queue meanwhile.
    queue.claim(worker(), vid, 10, LEASE, uuid.uuid4())

    done = finish(w, vid, token, claimed, hash_version(conn))

    assert (done.written, done.requeued, done.rejected) == (1, 1, 0)
    row = queue_row(conn, doc_id)
    assert row is not None
    assert row["claim_token"] is None
    assert row["failed_at"] is None
    assert row["attempts"] == 0


def test_completion_reports_a_row_changed_after_its_claim_as_requeued(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """complete_batch documents 'requeued: rows that changed meanwhile'; a
    change still waiting in the inbox is such a change too."""
    vid = make_docs(conn, {1: "old text"})
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    conn.execute("UPDATE docs SET body = 'new text' WHERE id = 1")

    done = finish(w, vid, token, claimed, hash_version(conn))

    assert (done.written, done.requeued) == (1, 1)
    row = queue_row(conn, 1)
    assert row is not None, "the queue row should remain, pending"
    assert row["claim_token"] is None


def test_a_row_deleted_after_its_claim_leaves_no_embeddings(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "doomed", 2: "kept"})
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    conn.execute("DELETE FROM docs WHERE id = 1")

    done = finish(w, vid, token, claimed, hash_version(conn))

    assert done.rejected == 0
    assert chunk_texts(conn) == {2: ["kept"]}
    assert queued_keys(conn, "docs") == []


def test_a_row_deleted_before_its_claim_is_completed_with_no_chunks(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "doomed", 2: "kept"})
    conn.execute("DELETE FROM docs WHERE id = 1")
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    assert ids(claimed) == [1, 2]
    assert [c.document for c in claimed if c.key == '{"id": 2}'] == ["kept"]

    done = finish(w, vid, token, claimed, hash_version(conn))

    assert (done.written, done.rejected) == (2, 0)
    assert chunk_texts(conn) == {2: ["kept"]}
    assert queued_keys(conn, "docs") == []


# ------------------------------------------------------ failures, retries


def test_a_poison_row_fails_after_max_attempts_and_spares_its_neighbours(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_docs(
        conn,
        {1: "good apples", 2: "bad POISON pears", 3: "good plums"},
        max_attempts=3,
        retry_delay="0 seconds",
    )
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", "POISON")

    stats = drain(db_url)

    assert chunk_texts(conn) == {1: ["good apples"], 3: ["good plums"]}
    assert stats.failed == 3  # one failure per attempt
    row = queue_row(conn, 2)
    assert row is not None
    assert row["attempts"] == 3
    assert row["failed_at"] is not None
    assert "failure marker 'POISON'" in row["last_error"]
    st = status(conn, "docs")
    assert (st["failed"], st["pending"], st["embedded_rows"]) == (1, 0, 2)

    assert conn.execute("SELECT autoembed.retry_failed('docs')").fetchone() == (1,)
    assert status(conn, "docs")["pending"] == 1
    monkeypatch.delenv("AUTOEMBED_HASH_FAIL_ON")
    drain(db_url)

    assert chunk_texts(conn)[2] == ["bad POISON pears"]
    st = status(conn, "docs")
    assert (st["failed"], st["pending"], st["embedded_rows"]) == (0, 0, 3)
    assert queue_row(conn, 2) is None


def test_a_failed_item_waits_out_its_backoff(conn: Conn, worker: Callable[[], Conn]) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"}, max_attempts=5, retry_delay="1 hour")
    w = worker()
    token = uuid.uuid4()
    claimed = queue.claim(w, vid, 10, LEASE, token)
    keys = {json.loads(c.key)["id"]: c.key for c in claimed}

    assert queue.fail(w, vid, token, [keys[1]], ["boom"]) == 1
    assert queue.fail(w, vid, uuid.uuid4(), [keys[2]], ["not my claim"]) == 0

    row = queue_row(conn, 1)
    assert row is not None
    assert (row["attempts"], row["last_error"], row["failed_at"]) == (1, "boom", None)
    assert row["claim_token"] is None
    assert row["next_attempt_at"] is not None
    other = queue_row(conn, 2)
    assert other is not None
    assert (other["claim_token"], other["last_error"]) == (token, None)
    assert queue.claim(w, vid, 10, LEASE, uuid.uuid4()) == []
    st = status(conn, "docs")
    assert (st["pending"], st["failed"], st["in_flight"]) == (1, 0, 1)


def test_a_lease_that_expires_max_attempts_times_fails_the_row(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "hangs the worker"}, max_attempts=3)
    w = worker()
    for attempt in (1, 2, 3):  # a worker that crashes every time
        assert ids(queue.claim(w, vid, 10, SHORT_LEASE, uuid.uuid4())) == [1]
        row = queue_row(conn, 1)
        assert row is not None
        assert row["attempts"] == attempt
        time.sleep(SHORT_LEASE + 0.05)

    assert queue.claim(w, vid, 10, LEASE, uuid.uuid4()) == []

    row = queue_row(conn, 1)
    assert row is not None
    assert row["failed_at"] is not None
    assert row["claim_token"] is None
    assert "lease expired" in row["last_error"]
    assert status(conn, "docs")["failed"] == 1


def test_a_claim_whose_session_ended_is_claimable_at_once_and_counts_an_attempt(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """The claimant's session dies (a worker killed mid-batch): its rows do
    not wait out the lease, and its late completion could not write."""
    vid = make_docs(conn, {1: "apples", 2: "pears", 3: "plums"})
    dead, b = worker(), worker()
    token = queue.new_token()
    assert ids(queue.claim(dead, vid, 2, LEASE, token)) == [1, 2]
    assert status(conn, "docs")["in_flight"] == 2
    conn.execute("SELECT pg_terminate_backend(%s)", (dead.info.backend_pid,))
    wait_gone(conn, dead.info.backend_pid)

    assert status(conn, "docs")["in_flight"] == 0
    assert status(conn, "docs")["pending"] == 3
    again = queue.new_token()
    claimed = queue.claim(b, vid, 10, LEASE, again)
    assert ids(claimed) == [1, 2, 3]
    row = queue_row(conn, 1)
    assert row is not None
    assert (row["attempts"], row["claim_token"]) == (2, again)
    done = finish(b, vid, again, claimed, hash_version(conn))
    assert (done.written, done.rejected) == (3, 0)


def test_a_live_claimants_rows_are_not_taken_whatever_its_pace(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    slow, b = worker(), worker()
    token = queue.new_token()
    claimed = queue.claim(slow, vid, 1, LEASE, token)
    time.sleep(0.5)  # a slow batch, well inside its lease

    assert ids(queue.claim(b, vid, 10, LEASE, queue.new_token())) == [2]
    assert queue.claim(b, vid, 10, LEASE, queue.new_token()) == []
    assert status(conn, "docs")["in_flight"] == 2
    done = finish(slow, vid, token, claimed, hash_version(conn))
    assert (done.written, done.rejected) == (1, 0)


def test_end_claim_lets_the_rows_a_claim_still_holds_go(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    a, b = worker(), worker()
    token = queue.new_token()
    claimed = queue.claim(a, vid, 10, LEASE, token)
    finish(a, vid, token, claimed[:1], hash_version(conn))  # one row written, one still held
    assert queue.claim(b, vid, 10, LEASE, queue.new_token()) == []

    assert queue.end_claim(b, token) is False  # not b's claim: nothing happens
    assert queue.claim(b, vid, 10, LEASE, queue.new_token()) == []
    assert queue.end_claim(a, token) is True
    assert queue.end_claim(a, token) is False
    assert ids(queue.claim(b, vid, 10, LEASE, queue.new_token())) == ids(claimed[1:])


def test_a_claimant_whose_session_keeps_dying_fails_the_row_after_max_attempts(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "crashes the worker"}, max_attempts=2)
    for _ in range(2):
        w = worker()
        pid = w.info.backend_pid
        assert ids(queue.claim(w, vid, 10, LEASE, queue.new_token())) == [1]
        w.close()
        wait_gone(conn, pid)

    assert queue.claim(worker(), vid, 10, LEASE, queue.new_token()) == []
    row = queue_row(conn, 1)
    assert row is not None
    assert row["failed_at"] is not None
    assert "database session ended" in row["last_error"]


def test_a_worker_role_tells_a_live_claim_of_another_role_from_a_dead_one(
    conn: Conn, db_url: str, worker: Callable[[], Conn]
) -> None:
    """Liveness needs no privilege: a grant_worker() role, not a superuser,
    leaves another role's live claim alone and takes over a dead one."""
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    with roles(conn, "worker") as (role,):
        conn.execute("SELECT autoembed.grant_worker(%s)", (role,))
        other = worker()  # the tests' superuser
        pid = other.info.backend_pid
        assert ids(queue.claim(other, vid, 1, LEASE, queue.new_token())) == [1]
        with connect_as(db_url, role) as w:
            queue.prepare(w)
            mine = queue.new_token()
            assert ids(queue.claim(w, vid, 10, LEASE, mine)) == [2]
            assert w.execute(
                "SELECT in_flight FROM autoembed.vectorizer_status WHERE name = 'docs'"
            ).fetchone() == (2,)
            other.close()
            wait_gone(conn, pid)
            assert ids(queue.claim(w, vid, 10, LEASE, queue.new_token())) == [1]
            assert queue.end_claim(w, mine) is True  # its own claim's lock, let go
            assert ids(queue.claim(w, vid, 10, LEASE, queue.new_token())) == [2]


def test_a_claim_not_tied_to_its_session_is_held_for_its_lease(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    """A worker of an earlier release claims with a version 4 token and never
    ends its claims: its session's end does not free its rows (nor does a
    claim of it hold a lock), only its lease does."""
    vid = make_docs(conn, {1: "apples"})
    old, b = worker(), worker()
    pid = old.info.backend_pid
    token = uuid.uuid4()
    assert ids(queue.claim(old, vid, 10, SHORT_LEASE * 5, token)) == [1]
    assert old.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone() == (0,)
    old.close()
    wait_gone(conn, pid)
    assert queue.claim(b, vid, 10, LEASE, queue.new_token()) == []
    assert status(conn, "docs")["in_flight"] == 1
    time.sleep(SHORT_LEASE * 5 + 0.05)
    assert ids(queue.claim(b, vid, 10, LEASE, queue.new_token())) == [1]


def test_a_worker_ends_each_claim_with_its_batch(
    conn: Conn, db_url: str, worker: Callable[[], Conn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's claims are tied to its session (one lock while a batch
    runs) and each is ended after its batch: no lock is left behind."""
    make_docs(conn, {1: "apples", 2: "pears", 3: "plums"})
    w = worker()
    config = queue.vectorizer(w, vectorizer(conn, "docs").id)
    assert config is not None
    pipe = pipeline_for(w, config, queue.versions(w, config.id)[0], Settings(database_url=db_url))
    own_locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"
    tokens: list[uuid.UUID] = []
    real_claim = queue.claim

    def claim(*args: Any) -> list[queue.Claimed]:
        tokens.append(args[4])
        claimed = real_claim(*args)
        assert conn.execute(own_locks, (w.info.backend_pid,)).fetchone() == (1,)
        return claimed

    monkeypatch.setattr(queue, "claim", claim)
    assert pipe.run_batch(2).written == 2
    assert pipe.run_batch(2).written == 1
    assert [t.version for t in tokens] == [8, 8]
    assert conn.execute(own_locks, (w.info.backend_pid,)).fetchone() == (0,)


def wait_gone(conn: Conn, pid: int) -> None:
    """Wait until backend ``pid`` has exited (and released its locks)."""
    deadline = time.monotonic() + 10
    while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} still there"
        time.sleep(0.01)


# ------------------------------------------------- release, extend, pause


def test_release_gives_rows_back_without_spending_an_attempt(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    w = worker()
    token = uuid.uuid4()
    assert len(queue.claim(w, vid, 10, LEASE, token)) == 2

    assert queue.release(w, vid, token) == 2

    for doc_id in (1, 2):
        row = queue_row(conn, doc_id)
        assert row is not None
        assert (row["attempts"], row["claim_token"]) == (0, None)
    again = queue.claim(w, vid, 10, LEASE, uuid.uuid4())
    assert ids(again) == [1, 2]
    row = queue_row(conn, 1)
    assert row is not None
    assert row["attempts"] == 1


def test_extend_lease_keeps_a_claim_alive_past_its_first_expiry(
    conn: Conn, worker: Callable[[], Conn]
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    a, b = worker(), worker()
    extended, lapsed = uuid.uuid4(), uuid.uuid4()
    claimed = queue.claim(a, vid, 1, 0.6, extended)
    lapsed_ids = ids(queue.claim(a, vid, 1, SHORT_LEASE, lapsed))

    assert queue.extend_lease(a, vid, extended, LEASE) == 1
    time.sleep(0.7)
    assert queue.extend_lease(a, vid, lapsed, LEASE) == 0  # too late: no revival

    assert ids(queue.claim(b, vid, 10, LEASE, uuid.uuid4())) == lapsed_ids
    done = finish(a, vid, extended, claimed, hash_version(conn))
    assert (done.written, done.rejected) == (1, 0)
    assert list(chunk_texts(conn)) == ids(claimed)


def test_a_paused_vectorizer_keeps_its_work_until_resumed(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    conn.execute("SELECT autoembed.pause('docs')")

    assert queue.claim(worker(), vid, 10, LEASE, uuid.uuid4()) == []
    drain(db_url)
    st = status(conn, "docs")
    assert (st["paused"], st["pending"], st["embedded_rows"]) == (True, 2, 0)

    conn.execute("SELECT autoembed.resume('docs')")
    drain(db_url)
    st = status(conn, "docs")
    assert (st["paused"], st["pending"], st["embedded_rows"]) == (False, 0, 2)


# -------------------------------------------------------- model versions


def _register_other_version(conn: Conn) -> int:
    row = conn.execute(
        "SELECT autoembed.register_model_version(%s, %s, %s, 'mean', true, 'fp32', 128, %s)",
        (f"hash:{DIMS}", "f" * 64, DIMS, "other-version-tag"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_with_another_model_version_is_refused_and_reported(
    conn: Conn, worker: Callable[[], Conn], db_url: str
) -> None:
    vid = make_docs(conn, {1: "apples", 2: "pears"})
    w = worker()
    other = _register_other_version(conn)
    token = uuid.uuid4()
    first = queue.claim(w, vid, 1, LEASE, token)
    assert finish(w, vid, token, first, other).written == 1  # the first writer sets it

    token = uuid.uuid4()
    second = queue.claim(w, vid, 1, LEASE, token)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="model version"):
        finish(w, vid, token, second, hash_version(conn))
    assert len(chunk_texts(conn)) == 1
    queue.release(w, vid, token)

    # The worker's own check refuses before claiming, and says why in the status.
    version = queue.versions(w, vectorizer(conn, "docs").id)[0]
    config = queue.vectorizer(w, vectorizer(conn, "docs").id)
    assert config is not None
    with pytest.raises(VectorizerUnavailable, match="model version"):
        pipeline_for(w, config, version, Settings(database_url=db_url))
    st = status(conn, "docs")
    assert st["error"] is not None
    assert "model version" in st["error"]
    assert (st["pending"], st["in_flight"]) == (1, 0)
