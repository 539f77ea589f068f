"""``autoembed quickstart``: the whole thing on the embedded default.

Starts PostgreSQL 18 + pgvector and a Redis broker from pip packages,
installs autoembed, loads a demo table of scientific abstracts, starts a real
Celery worker process with the bundled all-MiniLM-L6-v2 model, shows the
backfill draining, shows an UPDATE being re-embedded within a second or two,
and runs example searches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from tqdm import tqdm

from autoembed.db import connect
from autoembed.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    default_data_dir,
    sigterm_as_interrupt,
)
from autoembed.install import install

TABLE = "papers"


def _say(msg: str) -> None:
    print(msg, flush=True)


def demo_rows(limit: int) -> list[dict[str, str]]:
    text = resources.files("autoembed.examples").joinpath("scifact_demo.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[:limit]


def demo_queries() -> list[dict[str, str]]:
    text = resources.files("autoembed.examples").joinpath("demo_queries.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_demo_table(conn: psycopg.Connection[Any], rows: list[dict[str, str]]) -> None:
    if conn.execute("SELECT 1 FROM autoembed.vectorizer WHERE name = %s", (TABLE,)).fetchone():
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (TABLE,))
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id text PRIMARY KEY, title text NOT NULL, abstract text)")
    with conn.cursor() as cur, cur.copy(f"COPY {TABLE} (id, title, abstract) FROM STDIN") as copy:
        for r in rows:
            copy.write_row((r["id"], r["title"], r["text"]))


def start_worker(db_url: str, broker_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        AUTOEMBED_DATABASE_URL=db_url,
        AUTOEMBED_BROKER_URL=broker_url,
        AUTOEMBED_SWEEP_SECONDS="2",
        HF_HUB_OFFLINE="1",
    )
    with open(log_path, "wb") as log:  # the child process keeps its own copy
        return subprocess.Popen(
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
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status(conn: psycopg.Connection[Any]) -> tuple[int, int, int, str | None]:
    row = conn.execute(
        "SELECT embedded_rows, pending + in_flight, failed, error "
        "FROM autoembed.vectorizer_status WHERE name = %s",
        (TABLE,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), row[3]


def wait_for_backfill(
    conn: psycopg.Connection[Any],
    total: int,
    worker: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    tty = sys.stdout.isatty()
    next_line = 0.0
    with tqdm(total=total, unit="row", desc="embedding", file=sys.stdout, disable=not tty) as bar:
        while True:
            embedded, left, failed, error = _status(conn)
            bar.update(embedded - bar.n)
            if not tty and time.monotonic() >= next_line:
                _say(f"  embedded {embedded}/{total}, pending {left}")
                next_line = time.monotonic() + 10
            if left == 0:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited early; its log:\n{log_path.read_text()}")
            if error:
                raise RuntimeError(f"the vectorizer reports an error: {error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill not done after {timeout:.0f}s; see {log_path}")
            time.sleep(0.5)
    if failed:
        raise RuntimeError(f"{failed} rows failed to embed; see autoembed status and {log_path}")


def show_update(conn: psycopg.Connection[Any], row_id: str) -> None:
    before = conn.execute(
        "SELECT max(embedded_at) FROM autoembed.papers_embeddings WHERE id = %s", (row_id,)
    ).fetchone()
    t = time.monotonic()
    conn.execute(f"UPDATE {TABLE} SET title = title || ' (revised)' WHERE id = %s", (row_id,))
    while time.monotonic() - t < 30:
        after = conn.execute(
            "SELECT max(embedded_at) FROM autoembed.papers_embeddings WHERE id = %s", (row_id,)
        ).fetchone()
        if after and before and after[0] and after[0] != before[0]:
            _say(f"UPDATE of paper {row_id}'s title: re-embedded {time.monotonic() - t:.2f}s later")
            return
        time.sleep(0.05)
    _say(f"UPDATE of paper {row_id}: not re-embedded within 30s (see autoembed status)")


def show_searches(conn: psycopg.Connection[Any]) -> int:
    from autoembed.search import search

    right = 0
    queries = demo_queries()
    for q in queries:
        hits = search(conn, TABLE, q["query"], k=3)
        _say(f"\nSELECT * FROM autoembed.search('{TABLE}', <embedding of \"{q['query']}\">, 3)")
        for h in hits:
            title = conn.execute(
                f"SELECT title FROM {TABLE} WHERE id = %s", (h.pk["id"],)
            ).fetchone()
            mark = "*" if h.pk["id"] == q["expected_id"] else " "
            _say(f"  {mark}{h.rank}. {h.score:.3f}  [{h.pk['id']}] {title[0] if title else '?'}")
        right += bool(hits) and hits[0].pk["id"] == q["expected_id"]
    _say(f"\nthe expected paper (*) ranked first for {right} of {len(queries)} queries")
    return right


def wait_until_interrupted(url: str, broker: str) -> None:
    # The message is inside the try: a SIGTERM sent as soon as its first line
    # shows is the expected way to stop, not an interruption of the demo.
    try:
        _say(
            "\nPostgreSQL, Redis and the worker keep running; Ctrl-C (or SIGTERM) stops them.\n"
            f"  psql '{url}'\n"
            f"  broker: {broker}\n"
            f"  autoembed status --db '{url}'\n"
            f"  autoembed search --db '{url}' {TABLE} 'your question'"
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("stopping")


def run(data_dir: str | None, rows: int, keep: bool = False) -> int:
    """The whole demo; PostgreSQL, Redis and the worker are stopped at the
    end, on Ctrl-C and on SIGTERM alike."""
    try:
        with sigterm_as_interrupt():
            return _run(data_dir, rows, keep)
    except KeyboardInterrupt:
        _say("interrupted; PostgreSQL, Redis and the worker were stopped")
        return 130


def _run(data_dir: str | None, rows: int, keep: bool) -> int:
    base = Path(data_dir) if data_dir else default_data_dir()
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pg = EmbeddedPostgres(base / "pg")
    redis = EmbeddedRedis(base / "redis")
    worker: subprocess.Popen[bytes] | None = None
    try:
        _say(f"PostgreSQL 18 + pgvector (embedded) in {base / 'pg'} ...")
        url = pg.start()
        _say("Redis broker (embedded) ...")
        broker = redis.start()
        _say(f"autoembed install: schema revision {install(url)}")
        data = demo_rows(rows)
        with connect(url) as conn:
            load_demo_table(conn, data)
            conn.execute(
                f"SELECT autoembed.create_vectorizer('{TABLE}', ARRAY['title', 'abstract'])"
            )
            _say(
                f"created table {TABLE} ({len(data)} SciFact abstracts) and its vectorizer:\n"
                f"  SELECT autoembed.create_vectorizer('{TABLE}', ARRAY['title', 'abstract']);"
            )
            log_path = base / "worker.log"
            _say(f"starting a Celery worker with all-MiniLM-L6-v2 (log: {log_path}) ...")
            worker = start_worker(url, broker, log_path)
            t = time.monotonic()
            wait_for_backfill(conn, len(data), worker, log_path, timeout=1800)
            _say(f"backfill done: {len(data)} rows in {time.monotonic() - t:.1f}s")
            show_update(conn, data[-1]["id"])
            right = show_searches(conn)
            _say(f"\nquickstart finished in {time.monotonic() - started:.0f}s")
        if keep:
            wait_until_interrupted(url, broker)
        return 0 if right == len(demo_queries()) else 1
    finally:
        if worker is not None:
            stop_worker(worker)
        redis.stop()
        pg.stop()
