"""End-to-end fixtures: a real Redis server and real Celery worker processes.

``redis_server`` is one embedded Redis per test session (flushed before every
worker starts). ``start_worker(db_url, **env)`` starts
``python -m celery -A autoembed.worker.app worker --concurrency 1`` as a
subprocess against it, waits until Celery reports it ready, and always stops
it (and its pool children) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from autoembed.db import connect
from autoembed.embedded import EmbeddedRedis

READY_TIMEOUT = 60.0


class Worker:
    """A Celery worker subprocess and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no log>"

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"worker pid {self.proc.pid} ({state}); its log:\n{self.log()}"

    def assert_clean_log(self) -> None:
        """No tracebacks or errors in the worker's log."""
        log = self.log()
        assert "Traceback" not in log, self.describe()
        assert "ERROR/" not in log, self.describe()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the Celery worker exited during startup\n{self.describe()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        pytest.fail(f"the Celery worker was not ready within {timeout:.0f}s\n{self.describe()}")

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its whole process group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        # Pool children share the worker's process group (start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the test Redis, flushed so no earlier test's messages remain."""
    client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    client.flushall()
    yield client
    client.close()


StartWorker = Callable[..., Worker]


@pytest.fixture
def start_worker(
    redis_server: EmbeddedRedis, broker: redis.Redis, tmp_path: Path
) -> Iterator[StartWorker]:
    """start_worker(db_url, **env) -> a ready Worker; stopped at teardown."""
    started: list[Worker] = []

    def start(db_url: str, wait: bool = True, **env: str) -> Worker:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        full_env.update(
            AUTOEMBED_DATABASE_URL=db_url,
            AUTOEMBED_BROKER_URL=redis_server.url,
            AUTOEMBED_SWEEP_SECONDS="1",
            # The query service (text queries from SQL) would load the model a
            # second time, beside the tests' timings; tests that need it pass
            # AUTOEMBED_QUERY_SERVICE="1".
            AUTOEMBED_QUERY_SERVICE="0",
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        full_env.update(env)
        n = len(started)
        log_path = tmp_path / f"worker{n}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "autoembed.worker.app",
                    "worker",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "INFO",
                    "--hostname",
                    f"e2e{os.getpid()}_{n}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, log_path)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


StartQueryServer = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def query_server(tmp_path: Path) -> Iterator[StartQueryServer]:
    """query_server(db_url) -> the ``autoembed query-server`` process (its
    log: tmp_path / query_server<n>.log); stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(db_url: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        with open(tmp_path / f"query_server{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "autoembed.cli", "query-server", "--db", db_url],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def status(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT embedded_rows, pending, in_flight, failed, error "
        "FROM autoembed.vectorizer_status WHERE name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    return dict(zip(("embedded", "pending", "in_flight", "failed", "error"), row, strict=True))


def wait_embedded(
    conn: psycopg.Connection[Any], name: str, rows: int, worker: Worker, timeout: float
) -> float:
    """Wait until vectorizer ``name`` has ``rows`` rows embedded and nothing
    pending; returns the seconds it took. Fails with the worker's log."""
    start = time.monotonic()
    deadline = start + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(conn, name)
        if last["failed"] or last["error"]:
            pytest.fail(f"vectorizer {name!r} reports failures: {last}\n{worker.describe()}")
        if last["embedded"] == rows and last["pending"] == 0 and last["in_flight"] == 0:
            return time.monotonic() - start
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker died; status {last}\n{worker.describe()}")
        time.sleep(0.1)
    pytest.fail(
        f"vectorizer {name!r} not embedded within {timeout:.0f}s (wanted {rows} rows); "
        f"status {last}\n{worker.describe()}"
    )


class DevWorker(Worker):
    """``autoembed dev --db URL``: a worker with its own broker."""

    def broker_socket(self) -> Path:
        for line in self.log().splitlines():
            if line.startswith("broker: redis+socket://"):
                return Path(line.split("redis+socket://", 1)[1].split()[0])
        raise AssertionError(f"no broker line\n{self.describe()}")


@pytest.fixture
def start_dev_worker(tmp_path: Path) -> Iterator[Callable[..., DevWorker]]:
    """start_dev_worker(db_url, **env) -> a ready ``autoembed dev`` worker
    (the query service on); stopped at teardown."""
    started: list[DevWorker] = []

    def start(db_url: str, **env: str) -> DevWorker:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        full_env.update(
            AUTOEMBED_SWEEP_SECONDS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env
        )
        log_path = tmp_path / f"dev{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("autoembed")), "dev", "--db", db_url],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        worker = DevWorker(proc, log_path)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def empty_db(pg_server: Any) -> Iterator[str]:
    """A fresh database without autoembed, dropped afterwards."""
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with connect(pg_server.url) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg_server.url_for(name)
    with connect(pg_server.url) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
