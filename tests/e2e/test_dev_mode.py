"""The development loop without a broker to install: ``autoembed dev`` (a
worker that starts and stops its own Redis) waits quietly while autoembed's
schema is absent and starts working once it is installed; ``quickstart
--keep`` prints its broker and stops everything on SIGTERM as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autoembed.db import connect
from autoembed.install import install
from tests.e2e.conftest import DevWorker

CLI = str(Path(sys.executable).with_name("autoembed"))


def _wait_for(worker: DevWorker, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log():
        assert worker.proc.poll() is None, worker.describe()
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s\n{worker.describe()}"
        time.sleep(0.1)


def test_a_dev_worker_waits_quietly_for_the_schema_then_embeds(
    empty_db: str, start_dev_worker: Callable[..., DevWorker]
) -> None:
    worker = start_dev_worker(empty_db, AUTOEMBED_QUERY_SERVICE="1")
    _wait_for(worker, "dispatcher: autoembed's schema is missing")
    _wait_for(worker, "query service: autoembed's schema is missing")
    time.sleep(6)  # more than one check (every 5 s): still one line each, no traceback
    log = worker.log()
    assert log.count("autoembed's schema is missing") == 2, log
    assert "Traceback" not in log, log

    install(empty_db)
    with connect(empty_db) as c:
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        c.execute("SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:16')")
        c.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) AS g")
        deadline = time.monotonic() + 60
        while c.execute("SELECT count(DISTINCT id) FROM autoembed.notes_embeddings").fetchone() != (
            50,
        ):
            assert time.monotonic() < deadline, worker.describe()
            time.sleep(0.2)
    _wait_for(worker, "dispatcher: autoembed's schema is installed; resuming")

    broker = worker.broker_socket()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.describe()
    assert not broker.exists()
    worker.assert_clean_log()


def test_embedded_broker_goes_with_neither_broker_nor_once(db_url: str) -> None:
    for extra in (["--broker", "redis://localhost:1/0"], ["--once"]):
        done = subprocess.run(
            [CLI, "worker", "--db", db_url, "--embedded-broker", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert "--embedded-broker goes with neither --broker nor --once" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.model
def test_quickstart_keep_prints_its_broker_and_stops_everything_on_sigterm(
    tmp_path: Path,
) -> None:
    data = tmp_path / "qs"
    proc = subprocess.Popen(
        [CLI, "quickstart", "--rows", "30", "--keep", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            out.append(line)
            if "Ctrl-C (or SIGTERM) stops them" in line:
                break
        else:
            pytest.fail("".join(out))
        out += [proc.stdout.readline() for _ in range(2)]
        assert any("broker: redis+socket://" in line for line in out), "".join(out)
        assert _processes_using(data), "PostgreSQL, Redis and the worker run"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(out) + rest
    assert _processes_using(data) == [], "everything it started is stopped"


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that name ``path`` (PostgreSQL's -D,
    Redis's socket, the worker's --db)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if str(path) in args:
            found.append(args)
    return found
