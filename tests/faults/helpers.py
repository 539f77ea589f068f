"""Shared pieces of the fault suite: the size switch, the source table, the
from-scratch comparison that counts missing / stale / duplicated chunks, the
wait for quiescence, process signals, and the report.

Sizes: the fast subset (the default, run by ./scripts/test) uses small
tables and few faults; ``AUTOEMBED_FAULTS_FULL=1`` (``scripts/faults``) runs
the sizes of issue 5 and writes benchmarks/results/faults.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer, pipeline_for
from autoembed.worker.pipeline import Pipeline

Conn = psycopg.Connection[Any]

FULL = os.environ.get("AUTOEMBED_FAULTS_FULL", "") not in ("", "0")
MODEL = "hash:16"
REPORT_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "faults.json"


def size(fast: int, full: int) -> int:
    return full if FULL else fast


# ------------------------------------------------------------------ report


@dataclass
class Figures:
    scenario: str
    rows: int
    faults: int  # kills, stops, restarts, flushes, duplicate deliveries ...
    fault_kind: str
    seconds_to_quiescence: float
    missing: int
    stale: int
    duplicated: int
    extra: dict[str, Any] = field(default_factory=dict)


RESULTS: list[Figures] = []


def record(fig: Figures) -> None:
    RESULTS.append(fig)
    print(f"\n[faults] {json.dumps(asdict(fig))}")


def table() -> str:
    lines = [
        "| scenario | rows | faults | to quiescence | missing | stale | duplicated | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(RESULTS, key=lambda f: f.scenario):
        notes = ", ".join(f"{k} {v}" for k, v in f.extra.items())
        lines.append(
            f"| {f.scenario} | {f.rows:,} | {f.faults} {f.fault_kind} | "
            f"{f.seconds_to_quiescence:.1f} s | {f.missing} | {f.stale} | {f.duplicated} "
            f"| {notes} |"
        )
    return "\n".join(lines)


def write_report() -> Path:
    """Write this run's figures to the report, keeping the other scenarios'
    figures from earlier runs (scripts/faults -k poison updates one row)."""
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    scenarios: dict[str, dict[str, Any]] = {}
    if REPORT_PATH.exists():
        for old in json.loads(REPORT_PATH.read_text()).get("scenarios", []):
            scenarios[old["scenario"]] = old
    for f in RESULTS:
        scenarios[f.scenario] = {
            **asdict(f),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    REPORT_PATH.write_text(
        json.dumps(
            {
                "command": "scripts/faults",
                "cpus": os.cpu_count(),
                "scenarios": [scenarios[k] for k in sorted(scenarios)],
            },
            indent=2,
        )
        + "\n"
    )
    return REPORT_PATH


# ------------------------------------------------------------------ source

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def text(rng: random.Random, long: bool = False) -> str:
    """A short text, or (long) one of several hash-embedder chunks (128 tokens each)."""
    n = rng.randint(200, 420) if long else rng.randint(3, 25)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_docs(
    conn: Conn,
    rows: int,
    seed: int = 0,
    long_every: int = 10,
    append: dict[int, str] | None = None,
    **options: Any,
) -> int:
    """docs(id, title, body, views) with ``rows`` rows (every ``long_every``-th
    long enough for several chunks; ``append[id]`` added to a body) and
    vectorizer 'docs' on title and body."""
    rng = random.Random(seed)
    append = append or {}
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text, views int)")
    with conn.cursor().copy("COPY docs (id, title, body, views) FROM STDIN") as copy:
        for i in range(1, rows + 1):
            body = text(rng, long=i % long_every == 0) + append.get(i, "")
            copy.write_row((i, f"doc {i}", body, 0))
    return create_vectorizer(conn, "docs", ["title", "body"], **options)


def create_vectorizer(conn: Conn, table: str, columns: list[str], **options: Any) -> int:
    opts = "".join(f", {k} => %s" for k in options)
    row = conn.execute(
        f"SELECT autoembed.create_vectorizer(%s::regclass, %s::text[], model => %s{opts})",
        (table, columns, MODEL, *options.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------ quiescence


def status(conn: Conn, name: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT embedded_rows, chunks, pending, in_flight, failed, error "
        "FROM autoembed.vectorizer_status WHERE name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    keys = ("embedded", "chunks", "pending", "in_flight", "failed", "error")
    return dict(zip(keys, row, strict=True))


def queue_rows(conn: Conn, name: str) -> int:
    """Rows in the vectorizer's inbox plus queue (failed ones included)."""
    inbox, q = tables(conn, name)[1:3]
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM autoembed.{inbox}) + (SELECT count(*) FROM autoembed.{q})"
    ).fetchone()
    assert row is not None
    return int(row[0])


def tables(conn: Conn, name: str) -> tuple[str, str, str, str]:
    """(embeddings, inbox, queue, pk column) table names, already quoted."""
    row = conn.execute(
        "SELECT quote_ident(ver.embeddings_table), quote_ident(v.inbox_table), "
        "quote_ident(ver.queue_table), quote_ident(v.pk_columns[1]) "
        "FROM autoembed.vectorizer AS v JOIN autoembed.vectorizer_version AS ver "
        "ON ver.vectorizer_id = v.id AND ver.state = 'active' WHERE v.name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    return row[0], row[1], row[2], row[3]


def wait_quiescent(
    conn: Conn,
    name: str,
    timeout: float,
    failed: int = 0,
    describe: Callable[[], str] = lambda: "",
    stable_for: float = 1.0,
) -> float:
    """Wait until the vectorizer has nothing pending or in flight (and exactly
    ``failed`` failed rows) for ``stable_for`` seconds; returns the seconds
    from the call until quiescence was first seen."""
    start = time.monotonic()
    deadline = start + timeout
    quiet_since: float | None = None
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(conn, name)
        quiet = last["pending"] == 0 and last["in_flight"] == 0 and last["failed"] == failed
        if quiet and queue_rows(conn, name) == failed:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= stable_for:
                return quiet_since - start
        else:
            quiet_since = None
        time.sleep(0.1)
    pytest.fail(f"{name!r} not quiescent within {timeout:.0f}s: {last}\n{describe()}")


def claim_holders(conn: Conn, name: str) -> dict[str, int]:
    """Role -> rows of the vectorizer's active queue claimed by a live
    session of that role (the claim's advisory lock, 050_queue.sql)."""
    q = tables(conn, name)[2]
    rows = conn.execute(
        f"""
        SELECT a.usename, count(*)
        FROM autoembed.{q} AS q
        CROSS JOIN LATERAL (SELECT autoembed._claim_key(q.claim_token) AS k) AS x
        JOIN pg_locks AS l ON l.locktype = 'advisory' AND l.objsubid = 1
            AND l.mode = 'ExclusiveLock' AND l.granted
            AND l.classid = ((x.k >> 32) & 4294967295)::oid AND l.objid = (x.k & 4294967295)::oid
        JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE q.claim_token IS NOT NULL AND q.lease_until > now()
        GROUP BY a.usename
        """
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


# ------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Comparison:
    rows: int  # source rows
    expected_chunks: int
    missing: int  # expected chunks absent
    stale: int  # chunks present with other text or vector than a fresh embedding
    duplicated: int  # chunks beyond the fresh embedding's (extra chunk numbers, gone rows)
    other_versions: int  # chunks of another model version

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.duplicated or self.other_versions)


def compare_with_fresh(url: str, table: str, name: str, columns: list[str]) -> Comparison:
    """Embed a copy of ``table`` from scratch (vectorizer '<name>_fresh',
    drained in this process) and compare the vectorizer's chunks with it."""
    fresh = f"{table}_fresh"
    with connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {fresh}")
        conn.execute(f"CREATE TABLE {fresh} (LIKE {table} INCLUDING ALL)")
        conn.execute(f"INSERT INTO {fresh} SELECT * FROM {table}")
        row = conn.execute(
            "SELECT chunk_tokens, chunk_overlap FROM autoembed.vectorizer WHERE name = %s",
            (name,),
        ).fetchone()
        assert row is not None
        vid = create_vectorizer(
            conn, fresh, columns, name=f"{name}_fresh", chunk_tokens=row[0], chunk_overlap=row[1]
        )
    with connect(url) as wconn:
        queue.prepare(wconn)
        drain_vectorizer(wconn, vid, Settings(database_url=url, lease_seconds=300))
    with connect(url) as conn:
        got_t, _, _, pk = tables(conn, name)
        want_t = tables(conn, f"{name}_fresh")[0]
        active = (
            "(SELECT ver.model_version_id FROM autoembed.vectorizer_version AS ver "
            "JOIN autoembed.vectorizer AS v ON v.id = ver.vectorizer_id "
            f"WHERE v.name = {name!r} AND ver.state = 'active')"
        )
        q = f"""
            WITH got AS (SELECT {pk} AS k, chunk_no, chunk, embedding FROM autoembed.{got_t}
                         WHERE model_version_id = {active}),
                 want AS (SELECT {pk} AS k, chunk_no, chunk, embedding FROM autoembed.{want_t})
            SELECT
              (SELECT count(*) FROM {table}),
              (SELECT count(*) FROM want),
              (SELECT count(*) FROM want w WHERE NOT EXISTS
                 (SELECT 1 FROM got g WHERE g.k = w.k AND g.chunk_no = w.chunk_no)),
              (SELECT count(*) FROM want w JOIN got g USING (k, chunk_no)
                 WHERE g.chunk <> w.chunk OR g.embedding <> w.embedding),
              (SELECT count(*) FROM got g WHERE NOT EXISTS
                 (SELECT 1 FROM want w WHERE g.k = w.k AND g.chunk_no = w.chunk_no)),
              (SELECT count(*) FROM autoembed.{got_t} WHERE model_version_id <> {active})
        """
        out = conn.execute(q).fetchone()
        assert out is not None
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (f"{name}_fresh",))
        conn.execute(f"DROP TABLE {fresh}")
    return Comparison(*(int(x) for x in out))


# ---------------------------------------------------------------- processes


def pool_children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a worker's whole process group (main process and pool)."""
    os.killpg(pid, sig)


def celery_client(broker_url: str) -> Any:
    from celery import Celery

    app = Celery("autoembed-faults", broker=broker_url)
    app.conf.update(task_default_queue="autoembed", broker_connection_retry_on_startup=True)
    return app


def send_drain(client: Any, vectorizer_id: int, times: int = 1) -> None:
    for _ in range(times):
        client.send_task("autoembed.drain", args=(vectorizer_id,), queue="autoembed")


def active_pipeline(conn: Conn, vectorizer_id: int, settings: Settings) -> Pipeline:
    """The worker's pipeline for the vectorizer's active version (tests that
    drive claims and completions by hand use its version's queue)."""
    config = queue.vectorizer(conn, vectorizer_id)
    assert config is not None
    active = queue.versions(conn, vectorizer_id)[0]
    assert active.state == "active"
    return pipeline_for(conn, config, active, settings)
