"""A private PostgreSQL for a benchmark: the embedded server with its default,
durable settings, autoembed installed, a LISTEN session standing in for the
dispatcher, and the server process's CPU clock."""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

from autoembed.embedded import EmbeddedPostgres
from autoembed.install import install

SETTINGS = (
    "server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level",
    "data_checksums", "wal_sync_method", "shared_buffers", "work_mem", "max_wal_size",
    "checkpoint_timeout",
)  # fmt: skip


@contextmanager
def embedded_database(parent: Path | None = None, apply: Sequence[Path] = ()) -> Iterator[str]:
    """A fresh PostgreSQL in a temporary directory under parent, with autoembed
    installed and then the SQL files in apply run (to try a change to an
    idempotent file, say); its URL. Everything is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="autoembed-bench-", dir=parent) as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data", delete_on_stop=True)
        url = server.start()
        try:
            install(url)
            with psycopg.connect(url, autocommit=True) as conn:
                for path in apply:
                    conn.execute(path.read_text())
            yield url
        finally:
            server.stop()


def server_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings WHERE name = ANY(%s)",
        (list(SETTINGS),),
    ).fetchall()
    return {str(name): str(value) for name, value in rows}


def _listen(url: str, channel: str, ready: Event, stop: Event, out: Pipe) -> None:
    received = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        ready.set()
        while not stop.is_set():
            received += sum(1 for _ in conn.notifies(timeout=0.2))
    out.send(received)


class Listener:
    """A session LISTENing on channel in another process, as a running
    dispatcher holds one (a thread would compete with the benchmark for the
    GIL). Counts what it receives; does nothing when not enabled."""

    def __init__(self, url: str, channel: str = "autoembed", *, enabled: bool = True) -> None:
        self.enabled = enabled
        ctx = mp.get_context("spawn")
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._result, sender = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_listen, args=(url, channel, self._ready, self._stop, sender)
        )
        self.received: int | None = None

    def __enter__(self) -> Listener:
        if not self.enabled:
            return self
        self._proc.start()
        deadline = time.monotonic() + 60
        while not self._ready.wait(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the LISTEN process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._result.poll(10):
            self.received = self._result.recv()
        self._proc.join(10)


class ServerClock:
    """The on-CPU time of the server process behind a connection (user +
    system, from /proc/PID/schedstat, in seconds), or NaN when the server
    runs elsewhere."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        path = Path(f"/proc/{conn.info.backend_pid}/schedstat")
        self._fd = os.open(path, os.O_RDONLY) if path.exists() else None

    def cpu(self) -> float:
        if self._fd is None:
            return float("nan")
        return int(os.pread(self._fd, 128, 0).split()[0]) / 1e9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
