"""What a user waits for right after starting things, with the default model
(all-MiniLM-L6-v2, offline):

  first change   insert -> embedded for the first change after a Celery
                 worker starts (inserted --idle seconds after it says it is
                 ready), and for the change after it
  search         `autoembed search` (the console script, wall time, a new
                 query each time) with a worker's query service answering,
                 and with none (it embeds the query in its own process)

    .venv/bin/python benchmarks/first_use_latency.py [--runs 3] [--idle 15]
        [--python OTHER/.venv/bin/python] [--json PATH]

Starts a private embedded PostgreSQL and Redis, embeds --rows SciFact
abstracts in-process, then starts and stops one worker per run. --python runs
the worker, the query service and the console script of another checkout
(e.g. the revision before a change) against the same database. Prints the
figures and writes benchmarks/results/first_use_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from bench_run_info import machine, run_info
from bench_server import embedded_database

from autoembed.db import connect
from autoembed.embedded import EmbeddedRedis
from autoembed.quickstart import demo_rows
from autoembed.settings import Settings
from autoembed.worker.once import run_once

RESULTS = Path(__file__).parent / "results" / "first_use_latency.json"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    return env | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"} | extra


def _start(args: list[str], log: Path, env: dict[str, str], ready: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"{args[2:4]} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _embedded_after_insert(conn: psycopg.Connection[Any], key: int, text: str) -> float:
    """Insert a row; seconds until its embedding is there."""
    start = time.perf_counter()
    conn.execute("INSERT INTO papers VALUES (%s, %s)", (key, text))
    deadline = time.monotonic() + 120
    while conn.execute(
        "SELECT NOT EXISTS (SELECT FROM autoembed.papers_embeddings WHERE id = %s)", (key,)
    ).fetchone() == (True,):
        if time.monotonic() > deadline:
            raise RuntimeError(f"row {key} not embedded within 120 s")
        time.sleep(0.005)
    return time.perf_counter() - start


def first_changes(
    url: str, broker: str, python: str, runs: int, idle: float, logs: Path
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"first": [], "next": []}
    worker_args = [
        python, "-m", "celery", "-A", "autoembed.worker.app", "worker", "--concurrency", "1",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    env = _env(AUTOEMBED_DATABASE_URL=url, AUTOEMBED_BROKER_URL=broker, AUTOEMBED_QUERY_SERVICE="0")
    with connect(url) as conn:
        for run in range(runs):
            proc = _start(worker_args, logs / f"worker{run}.log", env, " ready.")
            try:
                time.sleep(idle)
                for i, which in enumerate(("first", "next")):
                    key = 1_000_000 + 10 * run + i
                    seconds = _embedded_after_insert(conn, key, f"change {key} after a start")
                    out[which].append(round(seconds, 3))
                    print(f"  run {run + 1}: {which} change {seconds:.3f} s", flush=True)
            finally:
                _stop(proc)
    return out


def searches(url: str, python: str, runs: int, logs: Path) -> dict[str, list[float]]:
    cli = str(Path(python).with_name("autoembed"))
    queries = iter(f"{word} and its role in disease number {i}" for i, word in enumerate(
        ["protein", "cell", "gene", "virus", "tumor", "drug", "brain", "blood"] * 4))  # fmt: skip

    def timed() -> float:
        start = time.perf_counter()
        done = subprocess.run(
            [cli, "search", "--db", url, "-k", "5", "papers", next(queries)],
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return round(time.perf_counter() - start, 3)

    out: dict[str, list[float]] = {"no worker": [timed() for _ in range(runs)]}
    server = _start(
        [python, "-m", "autoembed.cli", "query-server", "--db", url],
        logs / "query_server.log",
        _env(),
        "query service ready",
    )
    try:
        out["worker answering"] = [timed() for _ in range(runs)]
    finally:
        _stop(server)
    for name, values in out.items():
        print(f"  autoembed search, {name}: {values} s", flush=True)
    return out


def _revision(python: str) -> str:
    """``git describe`` of the checkout whose interpreter ran the worker and CLI."""
    done = subprocess.run(
        [python, "-c", "import autoembed, os; print(os.path.dirname(autoembed.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    where = Path(os.path.realpath(Path(done.stdout.strip()) / "__init__.py")).parent
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds between ready and insert")
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--python", default=sys.executable, help="the checkout's interpreter")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = os.getloadavg()
    with (
        embedded_database() as url,
        tempfile.TemporaryDirectory(prefix="autoembed-first-use-") as tmp,
    ):
        with connect(url) as conn:
            conn.execute("CREATE TABLE papers (id int PRIMARY KEY, body text)")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO papers VALUES (%s, %s)",
                    [(i, r["text"]) for i, r in enumerate(demo_rows(args.rows))],
                )
            conn.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['body'])")
        run_once(Settings(database_url=url), show_progress=False)
        redis = EmbeddedRedis(Path(tmp) / "redis")
        redis.start()
        try:
            print("first change after a worker start:", flush=True)
            changes = first_changes(url, redis.url, args.python, args.runs, args.idle, Path(tmp))
        finally:
            redis.stop()
        print("autoembed search:", flush=True)
        search = searches(url, args.python, args.runs, Path(tmp))

    def medians(d: dict[str, list[float]]) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in d.items()}

    result = run_info("first_use_latency") | {
        "python": args.python,
        "python_checkout_revision": _revision(args.python),
        "idle_seconds": args.idle,
        "change_seconds": changes,
        "change_median_seconds": medians(changes),
        "search_seconds": search,
        "search_median_seconds": medians(search),
        "machine": machine(load_start),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("change_median_seconds", "search_median_seconds")}))


if __name__ == "__main__":
    main()
