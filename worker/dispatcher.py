"""The dispatcher: turns NOTIFY into Celery tasks, and sweeps.

Triggers send ``NOTIFY autoembed, '<vectorizer id>'`` (Postgres folds repeats
within a transaction into one; the UPDATE trigger sends at most one per
session per 250 ms, so every ``POLL_SECONDS`` the dispatcher also looks for
vectorizers with unmerged changes). The dispatcher LISTENs, and for each
vectorizer with claimable work sends enough drain tasks to keep up to
``parallelism`` claims running — coalesced, so a burst of 10,000 inserts
becomes a handful of messages. Every ``sweep_seconds`` it checks every
vectorizer the same way, so work whose message was lost (broker flushed,
worker killed) is signalled again; and at once when a worker's database
session ends, since its claims are then claimable. Only one dispatcher per
database is active, chosen by a session advisory lock; the others wait as
standbys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.connection import (
    SCHEMA_WAIT_SECONDS,
    WORKER_APPLICATION,
    SchemaWatch,
    secure_session,
)

log = logging.getLogger("autoembed.dispatcher")

LEADER_LOCK_KEY = 0x6165_6469_7370_0001  # "aedisp" + 1
CHANNEL = "autoembed"
POLL_SECONDS = 0.5
# How long the broker must hold fewer messages than the signals presumed
# waiting in it before they count as lost (more than a drain task's retry
# countdown, tasks.DB_RETRY_SECONDS, during which its message is out of the
# queue but its drain has not started).
LOST_AFTER_SECONDS = 3.0


@dataclass
class _Signals:
    sent: int = 0  # signals this dispatcher sent
    base: int = 0  # drains_started when it began counting
    started: int = 0  # drains_started last seen
    clock: float = 0.0  # when a signalled drain last started (or signals began waiting)
    last_sent_at: float = -math.inf
    short: bool = False  # the last decision found fewer drains than wanted
    live: int | None = None  # live claims at the last decision


class Coalescer:
    """Decides how many drain tasks to send; pure, so it can be tested alone.

    Each signal starts one drain task, which records its start in the
    database (``drains_started``). Signals sent but not yet started are still
    waiting in the broker, so a vectorizer gets
    ``min(parallelism, ceil(claimable / batch_size)) - live claims - waiting``
    more, at most once per ``debounce`` seconds (a shortfall that comes from
    fewer live claims than last time only when the next look finds it too).
    Signals that wait
    ``redeliver_after`` seconds with no drain starting meanwhile are presumed
    lost (broker flushed, message dropped) and are sent again. Sooner when the
    broker can be asked how many messages it holds: if it has held fewer than
    the signals presumed waiting for ``lost_after`` seconds (a delivered
    message starts its drain at once), the difference was lost and is sent
    again; while it holds them, nothing is sent twice.
    """

    def __init__(
        self,
        parallelism: int,
        batch_size: int,
        debounce: float = 0.25,
        redeliver_after: float = 60.0,
        lost_after: float = LOST_AFTER_SECONDS,
    ) -> None:
        self.parallelism = max(1, parallelism)
        self.batch_size = max(1, batch_size)
        self.debounce = debounce
        self.redeliver_after = redeliver_after
        self.lost_after = lost_after
        self._signals: dict[int, _Signals] = {}
        self._missing_since: float | None = None  # the broker held fewer than waiting

    def waiting(self, vectorizer_id: int) -> int:
        s = self._signals.get(vectorizer_id)
        return 0 if s is None else s.sent - (s.started - s.base)

    def _observe(self, w: queue.Work, now: float) -> _Signals:
        s = self._signals.get(w.vectorizer_id)
        if s is None:
            s = self._signals[w.vectorizer_id] = _Signals(
                base=w.drains_started, started=w.drains_started, clock=now
            )
        if w.drains_started != s.started:
            s.started = w.drains_started
            s.clock = now
        # Drains started by someone else's signals (a continuation, an earlier
        # dispatcher) do not make this one's signals negative.
        s.base = max(s.base, s.started - s.sent)
        if self.waiting(w.vectorizer_id) == 0:
            s.clock = now
        elif now - s.clock >= self.redeliver_after:
            s.sent = s.started - s.base  # presumed lost: forget them
            s.clock = now
        return s

    def total_waiting(self) -> int:
        return sum(self.waiting(vid) for vid in self._signals)

    @property
    def suspects_loss(self) -> bool:
        """The broker holds fewer messages than signals presumed waiting: the
        next look (``lost_after`` later) decides whether they were lost."""
        return self._missing_since is not None

    def _reconcile(self, in_broker: int, now: float) -> None:
        missing = self.total_waiting() - in_broker
        if missing <= 0:
            self._missing_since = None
            return
        if self._missing_since is None:
            self._missing_since = now
            return
        if now - self._missing_since < self.lost_after:
            return
        # lost with the broker's contents: forget them, longest waiting first
        for s in sorted(self._signals.values(), key=lambda s: s.clock):
            forget = min(missing, s.sent - (s.started - s.base))
            if forget > 0:
                s.sent -= forget
                s.clock = now
                missing -= forget
        self._missing_since = None

    def unsent(self, vectorizer_id: int, n: int) -> None:
        """``n`` of the signals just decided for the vectorizer could not be sent."""
        s = self._signals[vectorizer_id]
        s.sent -= n

    def decide(
        self, work: list[queue.Work], now: float, in_broker: int | None = None
    ) -> dict[int, int]:
        """The signals to send now. ``in_broker``: how many messages the
        broker's queue holds (None: not known), for a look at every vectorizer."""
        observed = [(w, self._observe(w, now)) for w in work]
        if in_broker is not None:
            self._reconcile(in_broker, now)
        out: dict[int, int] = {}
        for w, s in observed:
            # A shortfall made by fewer live claims than at the last look is
            # topped up only if the next look finds it too: a claimant between
            # two batches holds no claim for a moment (the dispatcher counts a
            # marked drain as live throughout, queue.running_drains).
            dipped = s.live is not None and w.live_claims < s.live
            s.live = w.live_claims
            if w.claimable <= 0:
                s.short = False
                continue
            if now - s.last_sent_at < self.debounce:
                continue
            wanted = min(self.parallelism, math.ceil(w.claimable / self.batch_size))
            n = wanted - w.live_claims - self.waiting(w.vectorizer_id)
            if n > 0 and (not dipped or s.short):
                out[w.vectorizer_id] = n
                s.sent += n
                s.last_sent_at = now
            s.short = n > 0 and w.vectorizer_id not in out
        return out

    def unconfirmed(self) -> set[int]:
        """Vectorizers whose last look found a shortfall not yet believed
        (a dip in live claims): the dispatcher looks again soon."""
        return {vid for vid, s in self._signals.items() if s.short}


class Dispatcher:
    def __init__(
        self,
        url: str,
        send: Callable[[int], bool | None],
        settings: Settings,
        coalescer: Coalescer | None = None,
        queued: Callable[[], int | None] | None = None,
    ) -> None:
        """``send(vectorizer_id)`` signals a drain (False: the broker is
        unavailable); ``queued()`` says how many messages the broker holds
        (None: it cannot tell)."""
        self.url = url
        self.send = send
        self.queued = queued
        self.settings = settings
        self.coalescer = coalescer or Coalescer(
            settings.parallelism,
            settings.batch_size or 16,
            redeliver_after=settings.redeliver_seconds,
        )
        self.signals_sent = 0

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, reconnecting whenever the database goes away."""
        schema = SchemaWatch(log, "dispatcher")
        while not stop.is_set():
            wait = 1.0
            try:
                with connect(self.url, application_name="autoembed dispatcher") as conn:
                    secure_session(conn, self.settings.statement_timeout)
                    if not schema.ready(conn):
                        wait = SCHEMA_WAIT_SECONDS
                    elif not self._lead(conn, stop):
                        return
                    else:
                        self._listen(conn, stop)
            except psycopg.OperationalError as e:
                log.warning("dispatcher lost the database (%s); reconnecting", e)
            except Exception as e:
                if schema.missing(e):
                    wait = SCHEMA_WAIT_SECONDS
                else:
                    log.exception("dispatcher error; restarting")
            stop.wait(wait)

    def _lead(self, conn: psycopg.Connection[Any], stop: threading.Event) -> bool:
        """Become the active dispatcher, waiting as a standby while another is."""
        announced = False
        while not stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
            if row and row[0]:
                log.info("dispatcher active")
                return True
            if not announced:
                log.info("another dispatcher is active; standing by")
                announced = True
            # one cheap try per poll: a dispatcher killed with its worker is
            # replaced within a poll, so its sweeps are not missed for long
            stop.wait(POLL_SECONDS)
        return False

    def _listen(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        debounce = self.coalescer.debounce
        next_sweep = next_poll = 0.0
        dirty: set[int] = set()
        last_dispatch = 0.0
        sessions: set[int] | None = None
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                # Triggers throttle their NOTIFYs: look for unmerged changes too.
                dirty |= queue.vectorizers_with_changes(conn)
                # A worker session that ended (killed, say) may leave claims
                # behind, claimable at once (050_queue.sql): sweep now.
                current = queue.worker_sessions(conn, WORKER_APPLICATION)
                if sessions is not None and sessions - current:
                    next_sweep = now
                sessions = current
                next_poll = now + POLL_SECONDS
            if now >= next_sweep:
                self.dispatch(conn, None)
                dirty.clear()
                next_sweep = now + self.settings.sweep_seconds
                if self.coalescer.suspects_loss:  # signals gone with the broker?
                    next_sweep = now + min(self.coalescer.lost_after, self.settings.sweep_seconds)
                last_dispatch = now
            elif dirty and now - last_dispatch >= debounce:
                self.dispatch(conn, dirty)
                dirty = set()
                last_dispatch = now
            # a dip in live claims is believed (or not) at the next look
            dirty |= self.coalescer.unconfirmed()
            wait = debounce if dirty else min(POLL_SECONDS, next_sweep - now)
            for note in conn.notifies(timeout=max(0.01, wait), stop_after=1):
                if note.payload.isdigit():
                    dirty.add(int(note.payload))
            # whatever else already arrived, without blocking
            for note in conn.notifies(timeout=0, stop_after=10000):
                if note.payload.isdigit():
                    dirty.add(int(note.payload))

    def dispatch(self, conn: psycopg.Connection[Any], only: set[int] | None) -> int:
        """Send the signals the coalescer asks for; returns how many."""
        # A drain between two batches holds no claim, but is still running.
        drains = queue.running_drains(conn)
        work = [
            dataclasses.replace(w, live_claims=max(w.live_claims, drains.get(w.vectorizer_id, 0)))
            for w in queue.work_summary(conn, only)
        ]
        in_broker = None
        if only is None and self.queued is not None and self.coalescer.total_waiting() > 0:
            in_broker = self.queued()
        sent = 0
        broker_away = False
        decided = self.coalescer.decide(work, time.monotonic(), in_broker)
        for w in work:
            if w.vectorizer_id in decided:
                log.info(
                    "vectorizer %s: %d drain signals (claimable %d, live claims %d, "
                    "waiting %d, in broker %s)",
                    w.vectorizer_id,
                    decided[w.vectorizer_id],
                    w.claimable,
                    w.live_claims,
                    self.coalescer.waiting(w.vectorizer_id) - decided[w.vectorizer_id],
                    in_broker,
                )
        for vid, n in decided.items():
            done = 0
            while not broker_away and done < n:
                if self.send(vid) is False:
                    broker_away = True  # not waiting in it: a later sweep signals again
                else:
                    done += 1
            if done < n:
                self.coalescer.unsent(vid, n - done)
            sent += done
        self.signals_sent += sent
        return sent
