"""The dispatcher against a real database, and ``autoembed worker --once``.

The Dispatcher runs in a thread with a counting ``send`` callback (exact and
fast): a burst of changes becomes at most ``parallelism`` signals, and a
signal that is lost is sent again by the sweep.
"""

from __future__ import annotations

import os
import queue as stdlib_queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.dispatcher import Coalescer, Dispatcher
from autoembed.worker.drain import drain_vectorizer
from tests.e2e.conftest import StartWorker, status, wait_embedded

pytestmark = pytest.mark.e2e


class SweepAwareDispatcher(Dispatcher):
    """A Dispatcher that tells when its first sweep (made after LISTEN) is done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listening = threading.Event()

    def dispatch(self, conn: psycopg.Connection[Any], only: set[int] | None) -> int:
        n = super().dispatch(conn, only)
        self.listening.set()
        return n


@contextmanager
def running(dispatcher: SweepAwareDispatcher) -> Iterator[SweepAwareDispatcher]:
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert dispatcher.listening.wait(10), "the dispatcher did not start"
        yield dispatcher
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the dispatcher did not stop"


class Recorder:
    """A send callback that records (monotonic time, vectorizer id)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def __call__(self, vectorizer_id: int) -> None:
        with self._lock:
            self.sent.append((time.monotonic(), vectorizer_id))

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent) < n and time.monotonic() < deadline:
            time.sleep(0.01)


def _vectorizer(conn: psycopg.Connection[Any], table: str, model: str = "hash:16") -> int:
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
    row = conn.execute(
        "SELECT autoembed.create_vectorizer(%s, ARRAY['body'], model => %s)", (table, model)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_one_insert_of_10000_rows_sends_at_most_parallelism_signals(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    vid = _vectorizer(conn, "burst")
    # No sweep during the test: every signal must come from the NOTIFY.
    settings = Settings(database_url=db_url, sweep_seconds=600, parallelism=4, batch_size=16)
    sent = Recorder()
    with running(SweepAwareDispatcher(db_url, sent, settings)):
        assert sent.sent == [], "nothing to do yet"
        t = time.monotonic()
        conn.execute("INSERT INTO burst SELECT g, 'row ' || g FROM generate_series(1, 10000) AS g")
        sent.wait_for(1, timeout=5)
        assert sent.sent, "the INSERT's NOTIFY was not turned into a signal"
        latency = sent.sent[0][0] - t
        time.sleep(1.5)  # many debounce periods: nothing more may be sent
    print(f"\n[dispatch] 10,000-row INSERT: {len(sent.sent)} signals, first after {latency:.2f}s")
    assert latency < 2
    assert {v for _, v in sent.sent} == {vid}
    assert 1 <= len(sent.sent) <= settings.parallelism, sent.sent
    assert status(conn, "burst")["pending"] == 10000, "the work itself waits in Postgres"


def test_one_insert_of_10000_rows_is_a_few_messages_to_a_real_worker(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker, broker: redis.Redis
) -> None:
    """The same burst with a real Celery worker (one process): the messages it
    receives, not just the dispatcher's first decision, stay within
    ``parallelism`` while the worker drains."""
    _vectorizer(conn, "burst")
    worker = start_worker(db_url, AUTOEMBED_PARALLELISM="4", AUTOEMBED_BATCH_SIZE="64")
    conn.execute("INSERT INTO burst SELECT g, 'row ' || g FROM generate_series(1, 10000) AS g")
    took = wait_embedded(conn, "burst", 10000, worker, timeout=120)
    time.sleep(1.5)  # let any further signals arrive
    received = len(re.findall(r"Task autoembed\.drain\[[^]]+\] received", worker.log()))
    print(
        f"\n[dispatch] 10,000 rows drained by one worker in {took:.1f}s: "
        f"{received} drain messages received, {broker.llen('autoembed')} still queued"
    )
    worker.assert_clean_log()
    decisions = "\n".join(re.findall(r".*drain signals.*", worker.log()))
    assert 1 <= received <= 4, (
        f"{received} drain messages for one 10,000-row INSERT (parallelism 4); the "
        "dispatcher keeps topping up while one worker is busy, so the extra messages "
        f"pile up in the broker in proportion to the drain time. Its decisions:\n{decisions}"
    )


def test_a_drain_between_two_batches_still_counts_as_running(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """Between two batches a drain holds no claim; its session's mark still
    tells the dispatcher it runs, so a look at that moment does not take the
    pause for a free slot and send one more message."""
    vid = _vectorizer(conn, "gaps")
    conn.execute("INSERT INTO gaps SELECT g, 'row ' || g FROM generate_series(1, 64) g")
    seen: list[tuple[int, dict[int, int]]] = []

    def between_batches(vectorizer_id: int, result: object) -> None:
        claims = next(w.live_claims for w in queue.work_summary(conn) if w.vectorizer_id == vid)
        seen.append((claims, queue.running_drains(conn)))

    with connect(db_url, application_name="autoembed worker") as worker_conn:
        queue.prepare(worker_conn)
        settings = Settings(database_url=db_url, batch_size=16)
        stats = drain_vectorizer(worker_conn, vid, settings, progress=between_batches)
        name = worker_conn.execute("SHOW application_name").fetchone()
    assert stats.written == 64, stats
    assert len(seen) == 4, seen
    assert seen == [(0, {vid: 1})] * 4, "no claim held, the drain seen running"
    assert name == ("autoembed worker",), "the mark is taken off when the drain ends"
    assert queue.running_drains(conn) == {}


def test_a_change_without_a_notify_is_still_signalled_within_a_second(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """The UPDATE trigger throttles its NOTIFYs; the dispatcher's poll for
    unmerged changes still signals the change promptly."""
    vid = _vectorizer(conn, "edits")
    conn.execute("INSERT INTO edits VALUES (1, 'first')")
    with connect(db_url) as worker_conn:
        queue.prepare(worker_conn)
        drain_vectorizer(worker_conn, vid, Settings(database_url=db_url))
    # This session "just notified": its next UPDATE sends no NOTIFY.
    conn.execute(
        "SELECT set_config(%s, "
        "(extract(epoch FROM clock_timestamp()) * 1000 + 60000)::text, false)",
        (f"autoembed.notified_{vid}",),
    )
    settings = Settings(database_url=db_url, sweep_seconds=600, parallelism=1, batch_size=16)
    sent = Recorder()
    with connect(db_url) as listener, running(SweepAwareDispatcher(db_url, sent, settings)):
        listener.execute("LISTEN autoembed")
        t = time.monotonic()
        conn.execute("UPDATE edits SET body = 'second' WHERE id = 1")
        sent.wait_for(1, timeout=5)
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == [], "it was throttled"
    assert sent.sent, "the throttled change was never signalled"
    latency = sent.sent[0][0] - t
    print(f"\n[dispatch] UPDATE without NOTIFY signalled after {latency:.2f}s")
    assert sent.sent[0][1] == vid
    assert latency < 1.5


def test_many_small_transactions_are_coalesced(conn: psycopg.Connection[Any], db_url: str) -> None:
    vid = _vectorizer(conn, "trickle")
    settings = Settings(database_url=db_url, sweep_seconds=600, parallelism=3, batch_size=16)
    sent = Recorder()
    with running(SweepAwareDispatcher(db_url, sent, settings)):
        for i in range(1000):  # 1,000 commits, 1,000 NOTIFYs
            conn.execute("INSERT INTO trickle VALUES (%s, %s)", (i, f"row {i}"))
        time.sleep(1.0)
    print(f"\n[dispatch] 1,000 single-row transactions: {len(sent.sent)} signals")
    assert {v for _, v in sent.sent} == {vid}
    assert 1 <= len(sent.sent) <= settings.parallelism, sent.sent
    assert status(conn, "trickle")["pending"] == 1000


def test_lost_signals_are_sent_again_by_the_sweep(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """The first signals vanish (a flushed broker); the sweep re-signals after
    ``redeliver_after``, and a worker answering those drains everything."""
    vid = _vectorizer(conn, "lossy")
    settings = Settings(database_url=db_url, sweep_seconds=0.2, parallelism=2, batch_size=16)
    coalescer = Coalescer(parallelism=2, batch_size=16, debounce=0.05, redeliver_after=1.0)
    dropped: list[float] = []
    delivered: stdlib_queue.Queue[tuple[float, int]] = stdlib_queue.Queue()

    def send(vectorizer_id: int) -> None:
        if len(dropped) < 2:
            dropped.append(time.monotonic())
        else:
            delivered.put((time.monotonic(), vectorizer_id))

    with (
        running(SweepAwareDispatcher(db_url, send, settings, coalescer)),
        connect(db_url) as worker_conn,
    ):
        queue.prepare(worker_conn)
        conn.execute("INSERT INTO lossy SELECT g, 'row ' || g FROM generate_series(1, 100) AS g")
        try:
            at, got = delivered.get(timeout=10)
        except stdlib_queue.Empty:
            pytest.fail(f"no signal after the lost ones (dropped at {dropped})")
        assert len(dropped) == 2, "both first signals were lost"
        assert got == vid
        redelivered = at - dropped[-1]
        print(f"\n[dispatch] lost signals re-sent by the sweep {redelivered:.2f}s later")
        assert 0.9 <= redelivered <= 5, redelivered
        assert status(conn, "lossy")["pending"] == 100, "nothing was lost or done meanwhile"
        stats = drain_vectorizer(worker_conn, got, settings)
    assert stats.written == 100
    assert status(conn, "lossy")["embedded"] == 100


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("autoembed")
    return [str(script)] if script.exists() else [sys.executable, "-m", "autoembed.cli"]


def test_worker_once_cli_drains_everything_and_exits(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    _vectorizer(conn, "one", model="hash:32")
    conn.execute("INSERT INTO one SELECT g, 'first table row ' || g FROM generate_series(1, 300) g")
    _vectorizer(conn, "two", model="hash:8")
    conn.execute("INSERT INTO two SELECT g, 'second table row ' || g FROM generate_series(1, 50) g")
    conn.execute("INSERT INTO two VALUES (51, NULL), (52, '')")  # nothing to embed, still done
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    t = time.monotonic()
    proc = subprocess.run(
        [*_cli(), "worker", "--once", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    took = time.monotonic() - t
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, out
    m = re.search(r"done: (\d+) rows embedded \((\d+) chunks\), (\d+) failed", proc.stdout)
    assert m, out
    print(f"\n[cli] autoembed worker --once: {m.group(0)} in {took:.1f}s")
    row = conn.execute(
        "SELECT (SELECT count(*) FROM autoembed.one_embeddings)"
        " + (SELECT count(*) FROM autoembed.two_embeddings)"
    ).fetchone()
    assert row is not None
    chunks = int(row[0])
    assert (int(m.group(2)), int(m.group(3))) == (chunks, 0), out
    assert chunks == 350
    assert int(m.group(1)) == 352, out  # the rows without text count as done
    for name, embedded in (("one", 300), ("two", 50)):
        s = status(conn, name)
        assert (s["embedded"], s["pending"], s["in_flight"], s["failed"]) == (embedded, 0, 0, 0)


def test_signals_the_broker_refuses_are_not_counted_as_waiting(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """The broker is down: the first refusal stops this round, and nothing
    refused counts as waiting in the broker (which would hold back the next
    signals until they were presumed lost)."""
    for table in ("a", "b"):
        _vectorizer(conn, table)
        conn.execute(f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 100) g")
    settings = Settings(database_url=db_url, parallelism=2, batch_size=16)
    refused: list[int] = []

    def refuse(vectorizer_id: int) -> bool:
        refused.append(vectorizer_id)
        return False

    dispatcher = Dispatcher(db_url, refuse, settings)
    with connect(db_url) as c:
        assert dispatcher.dispatch(c, None) == 0
        assert len(refused) == 1
        assert dispatcher.coalescer.total_waiting() == 0
        sent = Recorder()
        dispatcher.send = sent
        time.sleep(0.3)  # the debounce
        assert dispatcher.dispatch(c, None) == 4  # 2 per vectorizer, none held back


def test_the_broker_tells_how_many_signals_it_holds(
    redis_server: Any, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the dispatcher compares its waiting signals with (a real Redis):
    an empty queue (Redis drops the key) is 0, then every message counts."""
    from autoembed.worker.tasks import app, queued_signals
    from tests.faults.helpers import celery_client, send_drain

    monkeypatch.setitem(app.conf, "broker_url", redis_server.url)
    broker.flushall()
    assert queued_signals() == 0
    send_drain(celery_client(redis_server.url), 7, times=3)
    assert queued_signals() == 3
    broker.flushall()
    assert queued_signals() == 0
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing there
    assert queued_signals() is None
