"""The dispatcher: turns NOTIFY into Celery tasks, and sweeps.

Triggers send ``NOTIFY autoembed, '<vectorizer id>'`` (Postgres folds repeats
within a transaction into one). The dispatcher LISTENs, and for each
vectorizer with claimable work sends enough drain tasks to keep up to
``parallelism`` claims running — coalesced, so a burst of 10,000 inserts
becomes a handful of messages. Every ``sweep_seconds`` it checks every
vectorizer the same way, so work whose message was lost (broker flushed,
worker killed) is signalled again. Only one dispatcher per database is
active, chosen by a session advisory lock; the others wait as standbys.
"""

from __future__ import annotations

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

log = logging.getLogger("autoembed.dispatcher")

LEADER_LOCK_KEY = 0x6165_6469_7370_0001  # "aedisp" + 1
CHANNEL = "autoembed"


@dataclass
class _Sent:
    at: float  # monotonic time of the last signal
    claim_at: Any  # the vectorizer's last_claim_at when it was sent


class Coalescer:
    """Decides how many drain tasks to send; pure, so it can be tested alone.

    A vectorizer gets signals when it has claimable work and fewer live
    claims than wanted, at most once per ``debounce`` seconds, and only once
    its previous signals were picked up (a claim happened since) — or after
    ``redeliver_after`` seconds, when they are presumed lost.
    """

    def __init__(
        self,
        parallelism: int,
        batch_size: int,
        debounce: float = 0.25,
        redeliver_after: float = 30.0,
    ) -> None:
        self.parallelism = max(1, parallelism)
        self.batch_size = max(1, batch_size)
        self.debounce = debounce
        self.redeliver_after = redeliver_after
        self._sent: dict[int, _Sent] = {}

    def decide(self, work: list[queue.Work], now: float) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in work:
            if w.claimable <= 0:
                continue
            wanted = min(self.parallelism, math.ceil(w.claimable / self.batch_size))
            n = wanted - w.live_claims
            if n <= 0:
                continue
            sent = self._sent.get(w.vectorizer_id)
            if sent is not None:
                if now - sent.at < self.debounce:
                    continue
                picked_up = w.last_claim_at != sent.claim_at
                if not picked_up and now - sent.at < self.redeliver_after:
                    continue
            out[w.vectorizer_id] = n
            self._sent[w.vectorizer_id] = _Sent(now, w.last_claim_at)
        return out


class Dispatcher:
    def __init__(
        self,
        url: str,
        send: Callable[[int], None],
        settings: Settings,
        coalescer: Coalescer | None = None,
    ) -> None:
        self.url = url
        self.send = send
        self.settings = settings
        self.coalescer = coalescer or Coalescer(settings.parallelism, settings.batch_size or 16)
        self.signals_sent = 0

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, reconnecting whenever the database goes away."""
        while not stop.is_set():
            try:
                with connect(self.url, application_name="autoembed dispatcher") as conn:
                    if not self._lead(conn, stop):
                        return
                    self._listen(conn, stop)
            except psycopg.OperationalError as e:
                log.warning("dispatcher lost the database (%s); reconnecting", e)
            except Exception:
                log.exception("dispatcher error; restarting")
            stop.wait(1.0)

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
            stop.wait(self.settings.sweep_seconds)
        return False

    def _listen(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        next_sweep = 0.0
        dirty: set[int] = set()
        last_dispatch = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_sweep:
                self.dispatch(conn, None)
                dirty.clear()
                next_sweep = now + self.settings.sweep_seconds
                last_dispatch = now
            elif dirty and now - last_dispatch >= self.coalescer.debounce:
                self.dispatch(conn, dirty)
                dirty = set()
                last_dispatch = now
            wait = self.coalescer.debounce if dirty else min(1.0, next_sweep - now)
            for note in conn.notifies(timeout=max(0.01, wait), stop_after=1):
                if note.payload.isdigit():
                    dirty.add(int(note.payload))
            # drain whatever else already arrived without blocking
            for note in conn.notifies(timeout=0, stop_after=10000):
                if note.payload.isdigit():
                    dirty.add(int(note.payload))

    def dispatch(self, conn: psycopg.Connection[Any], only: set[int] | None) -> int:
        """Send the signals the coalescer asks for; returns how many."""
        work = [w for w in queue.work_summary(conn) if only is None or w.vectorizer_id in only]
        sent = 0
        for vid, n in self.coalescer.decide(work, time.monotonic()).items():
            for _ in range(n):
                self.send(vid)
            sent += n
        self.signals_sent += sent
        return sent
