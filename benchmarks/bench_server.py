"""A private PostgreSQL for a benchmark: the embedded server with its default,
durable settings, autoembed installed, a LISTEN session standing in for the
dispatcher, and the server process's CPU clock; and a real worker process
with a broker of its own."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

from autoembed.embedded import EmbeddedPostgres, EmbeddedRedis
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


class WorkerProcess:
    """``autoembed worker`` (its defaults) with a Redis broker of its own,
    both in ``directory``: started by ``with``, stopped (and Redis with it)
    when the block ends; its output in ``log``."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url, self.log = url, directory / "worker.log"
        self._redis = EmbeddedRedis(directory / "redis")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        broker = self._redis.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        env |= {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        cli = str(Path(sys.executable).with_name("autoembed"))
        try:
            with open(self.log, "wb") as out:
                self.proc = subprocess.Popen(
                    [cli, "worker", "--db", self.url, "--broker", broker],
                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            self._redis.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_for(self, *texts: str, timeout: float = 300) -> float:
        """Until every text is in the log; seconds waited."""
        assert self.proc is not None
        started = time.monotonic()
        while not all(t in self.log.read_text(errors="replace") for t in texts):
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"worker: no {texts} in its log:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        return time.monotonic() - started

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        finally:
            self._redis.stop()
