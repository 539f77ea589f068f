"""A model change in the state users live in: a re-embedding campaign from
all-MiniLM-L6-v2 to all-mpnet-base-v2 (768-d) run by a real Celery worker,
while searches and fresh inserts go on.

    .venv/bin/python benchmarks/campaign.py               # SciFact's 5,183 abstracts (~75 min)
    .venv/bin/python benchmarks/campaign.py --limit 200   # its first 200: a smoke run, ~5 min
    .venv/bin/python benchmarks/campaign.py [--dataset ../shared/datasets/scifact] [--json PATH]

Prints a table and writes every figure, sample and timing, with the machine
and the versions, to --json (benchmarks/results/campaign.json; with --limit N,
campaign_limit<N>.json unless --json says otherwise). Times on this 2-core
VM when nothing else runs: the base state ~25 s per 200 documents the first
time (12-13 min for the whole corpus), the campaign ~0.6 s per document,
the idle phase 120 s (60 with --limit), the raw encode ~1.5 s per sampled
document (300; 60 with --limit).

Setup. An embedded PostgreSQL kept in .autoembed/campaign/pg (shared_buffers
--shared-buffers, 512MB). The base state: database
``campaign_base_<corpus>_<N|all>``, table ``<corpus>`` (id, title, text)
holding the corpus (its first N documents with --limit N) under a vectorizer
on title and text with the default model (MiniLM), embedded by autoembed's
own pipeline (``run_once``, as ``autoembed worker --once``; its embedding
cache is seeded with vectors this model version already made in
.autoembed/evaluate, .autoembed/latency or another base here). Reruns reuse
it when its manifest (the table's comment) names the same corpus (sha256 and
size), model and write path (a digest of the functions that write chunks),
the table still holds exactly that corpus (sha256 of its rows), nothing is
pending or failed, its only version is the MiniLM one, and its tables have
the layout a vectorizer created now would get; a change to autoembed's
run-once SQL recreates the database (--rebuild forces a build). Each run
works on a fresh copy, ``CREATE DATABASE campaign_run TEMPLATE <base>`` (kept
after the run for inspection, dropped by the next), so the base is never
changed and the versions are always 1 (MiniLM) and 2 (mpnet).

What runs. An embedded Redis and a real worker, ``autoembed worker --db URL
--broker URL`` (one prefork pool process on the CPU, the dispatcher and the
query service with it, every AUTOEMBED_* setting at its default unless
--worker-env sets it; its log: .autoembed/campaign/worker.log). This
process only measures; it records the CPU time of the worker's processes,
of PostgreSQL, of itself and of everything else on the machine in each
phase (other people's jobs on a shared machine show up there).

1. Idle (--idle-seconds, the worker running with nothing to do): one search
   every --search-interval seconds (search(vector) = semantic, bm25_search
   and hybrid_search in turn, k = 10, the split's test queries in a shuffled
   order, the same order in both phases, MiniLM query vectors computed here
   beforehand, version => '1' named so the switch cannot change what is
   searched), timed around the SQL call (execute + fetch) on a connection of
   its own; and an INSERT of a new row every --insert-interval seconds (a
   distinct text: a corpus abstract with a unique marker word) on another
   connection, timed from the INSERT until the active version's embeddings
   table holds its chunks (polled every --poll-ms; chunks, postings and
   statistics are written in one transaction), then checked with
   bm25_search (it must find the marker) and deleted again (so the campaign
   never embeds a probe).
2. The campaign: ``set_model(name, <mpnet folder>, dimensions => 768)``, the
   same searches and inserts until the new version becomes active, and its
   progress every --progress-seconds (autoembed.version_progress: rows done,
   rows/s, ETA). Campaign rows/s = the table's rows when set_model ran /
   (activated_at - created_at) of the new version (the database's clock,
   from set_model's transaction to the switch). Samples taken after the
   switch are kept in the JSON but not summarized.
3. After the switch: nDCG@10, Recall@100 and MRR@10 of both versions
   (semantic: search(vector) with version => '1' and MiniLM query vectors,
   version => '2' and mpnet query vectors, both computed here; with --limit
   only the test queries with a relevant document among the N, judged on
   those N), version_health of both, and compare_versions' mean overlap of
   their top 10 (text queries: the worker's query service embeds them).
4. The worker stopped (the two would share 2 cores): the raw
   ``SentenceTransformer.encode`` rate of mpnet (batch 32) over the chunk
   texts version 2 holds for a fixed random sample of --raw-sample documents
   (all of them when there are fewer); campaign rows/s over its rows/s is
   the figure. Then the same texts through autoembed's own embedder, one
   document per call (what the worker runs), to tell the model's share from
   the pipeline's; both also per CPU second.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from models import mpnet_model_path
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres, EmbeddedRedis
from autoembed.evaluation import beir, metrics
from autoembed.evaluation.runner import Method, MethodResult, embed_queries, run_method
from autoembed.evaluation.store import DIGEST_SQL
from autoembed.install import install
from autoembed.settings import Settings
from autoembed.worker.embedders import (
    CachingEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
)

Conn = psycopg.Connection[Any]
Vector = npt.NDArray[np.float32]
Say = Callable[[str], None]

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / ".autoembed" / "campaign"
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "campaign.json"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NEW_DIMENSIONS = 768
COLUMNS = ["title", "text"]
RUN_DB = "campaign_run"
MARK = "autoembed campaign benchmark: "
CACHE = 50_000  # distinct chunk texts the base build's worker remembers
BUILD_BATCH = 64  # rows per claim while building the base (the CPU default is 16)
# Functions whose code decides what is written for a chunk (a change rebuilds the base).
WRITE_PATH = ("_insert_chunks", "_delete_chunks", "%impact%")
K = 10
METHODS = ("semantic", "bm25", "hybrid")
WARMUP_QUERIES = 3


def say(message: str) -> None:
    print(message, flush=True)


# -- the server and the base state --------------------------------------------------------------


@contextlib.contextmanager
def server(data_dir: Path, shared_buffers: str) -> Iterator[EmbeddedPostgres]:
    """The benchmark's embedded PostgreSQL (one run at a time per data
    directory), with shared_buffers as asked."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another campaign run to finish (lock {data_dir / 'lock'}) ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        pg = EmbeddedPostgres(data_dir / "pg")
        say(f"PostgreSQL (embedded) in {pg.data_dir} ...")
        pg.start()
        try:
            with psycopg.connect(pg.url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes(%s)",
                    (shared_buffers,),
                ).fetchone()
                restart = not (row and row[0])
                if restart:
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(
                            sql.Literal(shared_buffers)
                        )
                    )
            if restart:
                say(f"restarting PostgreSQL with shared_buffers = {shared_buffers}")
                pg.stop()
                pg.start()
            yield pg
        finally:
            pg.stop()


@dataclass(frozen=True)
class Base:
    database: str
    url: str
    table: str
    rows: int
    chunks: int
    model_version: str
    reused: bool
    manifest: dict[str, Any]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:30] or "corpus"


def schema_digest() -> str:
    """sha256 of autoembed's run-once SQL: the catalog a database was made with."""
    files = resources.files("autoembed.extension_sql").joinpath("incremental")
    h = hashlib.sha256()
    for f in sorted((f for f in files.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def write_path_digest(conn: Conn) -> str:
    row = conn.execute(
        "SELECT string_agg(p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' "
        "|| p.prosrc, E'\\n' ORDER BY p.proname, p.oid) FROM pg_proc AS p "
        "WHERE p.pronamespace = 'autoembed'::regnamespace AND p.proname LIKE ANY (%s)",
        (list(WRITE_PATH),),
    ).fetchone()
    return hashlib.sha256(str(row[0] if row else "").encode()).hexdigest()


def seed(cache: CachingEmbedder, url: str) -> int:
    """Remember every chunk vector of the cache's model version stored at url."""
    before = len(cache)
    with connect(url) as conn:
        if conn.execute(
            "SELECT to_regclass('autoembed.vectorizer_version') IS NULL"
        ).fetchone() == (True,):
            return 0
        tables = conn.execute(
            "SELECT x.embeddings_table, mv.id FROM autoembed.vectorizer_version AS x "
            "JOIN autoembed.model_version AS mv ON mv.id = x.model_version_id WHERE mv.tag = %s",
            (cache.version().tag,),
        ).fetchall()
        for name, version_id in tables:
            query = sql.SQL(
                "SELECT DISTINCT ON (chunk) chunk, embedding FROM {} WHERE model_version_id = %s"
            ).format(sql.Identifier("autoembed", name))
            rows = conn.execute(query, (version_id,)).fetchall()
            if rows:
                vectors = np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])
                cache.remember([str(r[0]) for r in rows], vectors)
    return len(cache) - before


def base_database(pg: EmbeddedPostgres, name: str) -> str:
    """The URL of database ``name`` with autoembed installed, recreated when
    autoembed's run-once SQL changed since it was made (or will not install)."""
    digest = schema_digest()
    ident = sql.Identifier(name)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
            "WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[0] != digest:
            say(f"{name}: autoembed's run-once SQL changed since it was made; recreating it")
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
            row = None
        if row is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        url = pg.url_for(name)
        try:
            install(url)
        except Exception as e:
            say(f"{name}: installing autoembed failed ({e}); recreating it")
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
            install(url)
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(digest)))
    return url


def version_row(conn: Conn, name: str, ordinal: int | None = None) -> dict[str, Any]:
    """autoembed.vectorizer_version's row of version ``ordinal`` (the active one by default)."""
    row = conn.execute(
        "SELECT to_jsonb(x) FROM autoembed.vectorizer_version AS x "
        "JOIN autoembed.vectorizer AS v ON v.id = x.vectorizer_id "
        "WHERE v.name = %s AND CASE WHEN %s::int IS NULL THEN x.state = 'active' "
        "ELSE x.ordinal = %s::int END",
        (name, ordinal, ordinal),
    ).fetchone()
    if row is None:
        raise RuntimeError(f"vectorizer {name!r} has no version {ordinal or 'active'}")
    return dict(row[0])


def version_tables(conn: Conn, name: str, ordinal: int | None = None) -> list[str]:
    """The tables of the vectorizer (inbox, the embeddings view) and of one
    version (queue, embeddings, postings, statistics), schema autoembed."""
    row = conn.execute(
        "SELECT to_jsonb(v) FROM autoembed.vectorizer AS v WHERE v.name = %s", (name,)
    ).fetchone()
    assert row is not None
    found = {f"v.{k}": str(t) for k, t in row[0].items() if k.endswith("_table") and t}
    ver = version_row(conn, name, ordinal)
    found |= {f"version.{k}": str(t) for k, t in ver.items() if k.endswith("_table") and t}
    return [found[k] for k in sorted(found)]


def layout(conn: Conn, name: str) -> list[Any]:
    """Columns and indexes of the vectorizer's tables and its active
    version's, the vectorizer's name replaced by V (so two compare equal)."""
    out: list[Any] = []
    for table in version_tables(conn, name):
        ident = sql.Identifier("autoembed", table).as_string(conn)
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (ident,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass",
            (ident,),
        ).fetchall()
        out.append(
            [
                table.replace(name, "V"),
                [list(c) for c in columns],
                sorted(str(i[0]).replace(name, "V") for i in indexes),
            ]
        )
    return out


def create_vectorizer(conn: Conn, table: str) -> None:
    conn.execute(
        "SELECT autoembed.create_vectorizer(%s::regclass, %s, name => %s, model => %s)",
        (sql.Identifier(table).as_string(conn), COLUMNS, table, MODEL),
    )


def probe_layout(conn: Conn) -> list[Any]:
    """The layout a vectorizer created now gets (made and rolled back)."""
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TABLE campaign_probe (id text PRIMARY KEY, title text, text text)")
        create_vectorizer(conn, "campaign_probe")
        return layout(conn, "campaign_probe")


def read_manifest(conn: Conn, table: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class')",
        (sql.Identifier(table).as_string(conn),),
    ).fetchone()
    if row is None or row[0] is None or not str(row[0]).startswith(MARK):
        return None
    try:
        manifest = json.loads(str(row[0])[len(MARK) :])
    except json.JSONDecodeError:
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(conn: Conn, table: str, manifest: dict[str, Any]) -> None:
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(table), sql.Literal(MARK + json.dumps(manifest, sort_keys=True))
        )
    )


def status(conn: Conn, name: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.vectorizer_status WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None or cur.description is None:
        return {}
    return dict(zip([c.name for c in cur.description], row, strict=True))


def chunk_count(conn: Conn, name: str, ordinal: int | None = None) -> int:
    table = version_row(conn, name, ordinal)["embeddings_table"]
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("autoembed", table))
    ).fetchone()
    return int(row[0]) if row else 0


def stale_reason(conn: Conn, table: str, wanted: dict[str, Any], digest: str) -> str | None:
    """Why the base table cannot be reused as it is, or None."""
    manifest = read_manifest(conn, table)
    if manifest is None:
        return "not built yet"
    if manifest.get("state") != "complete":
        return "an earlier build did not finish"
    changed = [k for k, v in wanted.items() if manifest.get(k) != v]
    if changed:
        return "changed since the build: " + ", ".join(changed)
    row = conn.execute(sql.SQL(DIGEST_SQL).format(sql.Identifier(table))).fetchone()
    if row is None or int(row[0]) != wanted["rows"] or row[1] != digest:
        return "the table no longer holds exactly the corpus (sha256 of its rows)"
    versions = conn.execute(
        "SELECT x.model, x.state FROM autoembed.vectorizer_version AS x "
        "JOIN autoembed.vectorizer AS v ON v.id = x.vectorizer_id WHERE v.name = %s",
        (table,),
    ).fetchall()
    if [tuple(v) for v in versions] != [(MODEL, "active")]:
        return f"the vectorizer has other versions than its MiniLM one: {versions}"
    s = status(conn, table)
    if not s or int(s["pending"]) + int(s["in_flight"]) + int(s["failed"]):
        return "the vectorizer has work outstanding"
    if int(s["embedded_rows"]) != manifest["rows"] or s["model_version"] != manifest.get(
        "model_version"
    ):
        return "the embeddings differ from the manifest"
    if layout(conn, table) != probe_layout(conn):
        return "autoembed's table layout (columns or indexes) changed since the build"
    return None


def seed_cache(cache: CachingEmbedder, pg: EmbeddedPostgres, skip: str) -> None:
    """Chunk vectors of this model version already made: in the other
    databases of this server, and in the evaluate and latency benchmarks'."""
    found = 0
    with psycopg.connect(pg.url, autocommit=True) as conn:
        others = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'campaign_base_%%' "
                "AND datname <> %s",
                (skip,),
            )
        ]
    for name in others:
        with contextlib.suppress(Exception):  # only an optimization
            found += seed(cache, pg.url_for(name))
    for other in (REPO / ".autoembed" / "evaluate" / "pg", REPO / ".autoembed" / "latency" / "pg"):
        if not other.joinpath("PG_VERSION").exists():
            continue
        server = EmbeddedPostgres(other)  # shared: stopped only by its last user
        try:
            found += seed(cache, server.start())
        except Exception as e:  # only an optimization
            say(f"could not read embeddings from {other}: {e}")
        finally:
            server.stop()
    say(f"embedding cache seeded with {found} chunk vectors of {cache.version().tag}")


def build_base(
    conn: Conn,
    url: str,
    pg: EmbeddedPostgres,
    database: str,
    table: str,
    docs: list[beir.Document],
    wanted: dict[str, Any],
) -> dict[str, Any]:
    """(Re)create the table under a MiniLM vectorizer and let the pipeline
    embed it; returns the manifest."""
    from autoembed.worker.once import run_once

    started = time.monotonic()
    cache = load_embedder(MODEL, None, CACHE)
    assert isinstance(cache, CachingEmbedder)
    seed_cache(cache, pg, database)
    misses = cache.misses
    if conn.execute("SELECT 1 FROM autoembed.vectorizer WHERE name = %s", (table,)).fetchone():
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (table,))
    ident = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, text text)").format(ident)
        )
        write_manifest(conn, table, {**wanted, "state": "loading"})
        create_vectorizer(conn, table)
        with (
            conn.cursor() as cur,
            cur.copy(sql.SQL("COPY {} (id, title, text) FROM STDIN").format(ident)) as copy,
        ):
            for d in docs:
                copy.write_row((d.id, d.title or None, d.text))
    say(f"{table}: {len(docs)} rows loaded; embedding them with {MODEL} (autoembed worker --once)")
    t = time.monotonic()
    stats = run_once(Settings(database_url=url, batch_size=BUILD_BATCH, embed_cache=CACHE))
    drain_s = time.monotonic() - t
    say(f"{table}: {stats.written} rows, {stats.chunks} chunks written in {drain_s:.0f}s")
    for name in [table, *version_tables(conn, table)]:
        schema = "public" if name == table else "autoembed"
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
            (sql.Identifier(schema, name).as_string(conn),),
        ).fetchone()
        if kind and kind[0] == "r":
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, name)))
    s = status(conn, table)
    if int(s["pending"]) + int(s["in_flight"]) + int(s["failed"]):
        raise RuntimeError(f"{table}: the build left work outstanding: {s}")
    manifest = {
        **wanted,
        "state": "complete",
        "chunks": chunk_count(conn, table),
        "model_version": s["model_version"],
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "build_s": round(time.monotonic() - started, 1),
        "drain_s": round(drain_s, 1),
        "chunks_embedded_by_model": cache.misses - misses,
    }
    write_manifest(conn, table, manifest)
    return manifest


def ensure_base(
    pg: EmbeddedPostgres, collection: beir.Collection, limit: int | None, rebuild: bool
) -> Base:
    docs = collection.corpus
    database = f"campaign_base_{slug(collection.name)}_{limit if limit else 'all'}"
    table = slug(collection.name)
    url = base_database(pg, database)
    digest = beir.corpus_digest(docs)
    with connect(url) as conn:
        wanted = {
            "corpus": collection.name,
            "limit": limit,
            "rows": len(docs),
            "corpus_digest": digest,
            "model": MODEL,
            "write_path": write_path_digest(conn),
        }
        reason = "--rebuild" if rebuild else stale_reason(conn, table, wanted, digest)
        if reason is None:
            manifest = read_manifest(conn, table)
            assert manifest is not None
            say(
                f"{database}.{table}: reusing {manifest['rows']:,} rows, {manifest['chunks']:,} "
                f"chunks (built {manifest['built_at']} in {manifest['build_s']:.0f}s)"
            )
            reused = True
        else:
            say(f"{database}.{table}: building ({reason})")
            manifest = build_base(conn, url, pg, database, table, docs, wanted)
            say(f"{database}.{table}: built in {manifest['build_s']:.0f}s")
            reused = False
    return Base(
        database=database,
        url=url,
        table=table,
        rows=int(manifest["rows"]),
        chunks=int(manifest["chunks"]),
        model_version=str(manifest["model_version"]),
        reused=reused,
        manifest=manifest,
    )


def fresh_copy(pg: EmbeddedPostgres, base: Base) -> tuple[str, float]:
    """A copy of the base database to run in (the previous run's dropped); its URL."""
    t = time.monotonic()
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(RUN_DB))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(RUN_DB), sql.Identifier(base.database)
            )
        )
    return pg.url_for(RUN_DB), time.monotonic() - t


def prewarm(conn: Conn, name: str, table: str) -> int:
    """The source table and the active version's tables with their indexes
    into shared_buffers; blocks read."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    tables = [sql.Identifier(table).as_string(conn)] + [
        sql.Identifier("autoembed", t).as_string(conn) for t in version_tables(conn, name)
    ]
    relations = [
        str(r[0])
        for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.relkind IN ('r', 'm') "
            "AND c.oid = ANY (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t) "
            "UNION ALL SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = ANY (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t)",
            (tables, tables),
        )
    ]
    blocks = 0
    for rel in relations:
        row = conn.execute("SELECT pg_prewarm(%s::regclass)", (rel,)).fetchone()
        blocks += int(row[0]) if row else 0
    return blocks


# -- the worker ---------------------------------------------------------------------------------


TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, int, int, float]]:
    """(pid, ppid, process group, CPU seconds incl. reaped children) of every process."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        out.append((int(entry.name), int(fields[1]), int(fields[2]), ticks / TICK))
    return out


class CpuMeter:
    """CPU seconds used, cumulative: the whole machine (busy, from
    /proc/stat), the worker's process group (main process, pool, query
    service), the PostgreSQL server (postmaster and its children), this
    process, and everything else (other users of the machine)."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg_data = pg.data_dir
        self.worker_group: int | None = None

    def _postmaster(self) -> int | None:
        try:
            return int((self.pg_data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def snapshot(self) -> dict[str, float]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        total = sum(ticks[:8]) / TICK  # user nice system idle iowait irq softirq steal
        idle = (ticks[3] + ticks[4]) / TICK
        procs = _proc_stats()
        postmaster = self._postmaster()
        me = os.getpid()
        return {
            "wall": time.monotonic(),
            "machine_total": total,
            "machine_busy": total - idle,
            "worker": sum(c for _p, _pp, g, c in procs if g == self.worker_group),
            "postgres": sum(c for p, pp, _g, c in procs if postmaster in (p, pp)),
            "this_process": sum(c for p, _pp, _g, c in procs if p == me),
        }

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """Seconds of CPU each used since ``before``, and the wall seconds;
        "cores": each as the average number of cores it kept busy."""
        now = self.snapshot()
        d = {k: now[k] - before[k] for k in now}
        d["others"] = d["machine_busy"] - d["worker"] - d["postgres"] - d["this_process"]
        wall = d.pop("wall")
        out = {k: round(v, 2) for k, v in d.items()}
        out["wall"] = round(wall, 2)
        cores = {k: round(d[k] / wall, 2) for k in ("worker", "postgres", "this_process", "others")}
        return out | {f"{k}_cores": v for k, v in cores.items()}


class Worker:
    """``autoembed worker --db URL --broker URL`` in a process group of its own."""

    def __init__(self, url: str, broker: str, log_path: Path, extra_env: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        env.update(HF_HUB_OFFLINE="1", **extra_env)
        self.log_path = log_path
        self.env = {k: v for k, v in env.items() if k.startswith("AUTOEMBED_")}
        with log_path.open("wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autoembed.cli",
                    "worker",
                    "--db",
                    url,
                    "--broker",
                    broker,
                    "--loglevel",
                    "INFO",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def problems(self) -> list[str]:
        return [
            line
            for line in self.log().splitlines()
            if "Traceback" in line or " ERROR " in line or "ERROR/" in line
        ]

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its process group (the
        pool and the query service)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


def wait_for_queries(conn: Conn, name: str, worker: Worker, timeout_s: float = 300) -> float:
    """Until the worker's query service answers a text query (it loads the
    model first); seconds waited."""
    t = time.monotonic()
    conn.execute("SET autoembed.query_timeout = '30s'")
    while True:
        try:
            conn.execute("SELECT count(*) FROM autoembed.search(%s, %s, 1)", (name, "warm-up"))
            return time.monotonic() - t
        except psycopg.Error as e:
            error = str(e).strip()
        if not worker.alive():
            raise RuntimeError(f"the worker exited; see {worker.log_path}")
        if time.monotonic() - t > timeout_s:
            raise RuntimeError(f"no worker answered a text query in {timeout_s:.0f}s: {error}")
        time.sleep(1)


# -- searches and inserts while something happens ----------------------------------------------


@dataclass(frozen=True)
class SearchSample:
    method: str
    query_id: str
    t: float  # seconds since the phase started
    ms: float
    error: str | None = None


@dataclass(frozen=True)
class Probe:
    id: str
    t: float  # seconds since the phase started, at the INSERT
    ms: float | None  # INSERT issued -> its chunks in the active version's table (None: timeout)
    polls: int
    found_by_bm25: bool
    error: str | None = None


@dataclass
class Target:
    """What the phases search and insert into."""

    url: str
    name: str  # vectorizer and table
    version: str  # the version searched ('1'), named explicitly: it is the active one
    embeddings_table: str  # its embeddings table, polled for new rows
    queries: list[beir.Query]
    vectors: dict[str, Vector]  # MiniLM query vectors by query id
    probe_docs: list[beir.Document]
    run_tag: str


def statement(method: str) -> sql.Composed:
    fn, args = {
        "semantic": ("search", "%s, %s, %s"),
        "bm25": ("bm25_search", "%s, %s, %s"),
        "hybrid": ("hybrid_search", "%s, %s, %s, %s"),
    }[method]
    return sql.SQL(
        "SELECT s.pk, s.chunk_no, s.score FROM autoembed.{}(" + args + ", version => %s) AS s"
    ).format(sql.Identifier(fn))


def params(target: Target, method: str, q: beir.Query) -> tuple[Any, ...]:
    if method == "semantic":
        return (target.name, target.vectors[q.id], K, target.version)
    if method == "bm25":
        return (target.name, q.text, K, target.version)
    return (target.name, q.text, target.vectors[q.id], K, target.version)


def schedule(target: Target, seed: int) -> Iterator[tuple[str, beir.Query]]:
    """Queries in a shuffled order, each through the three methods in a
    shuffled order; the same sequence in every phase."""
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(target.queries)).tolist():
            for j in rng.permutation(len(METHODS)).tolist():
                yield METHODS[j], target.queries[i]


def warm_up(conn: Conn, target: Target) -> None:
    for q in target.queries[:WARMUP_QUERIES]:
        for m in METHODS:
            conn.execute(statement(m), params(target, m, q)).fetchall()


def searcher(
    target: Target,
    interval: float,
    seed: int,
    start: float,
    stop: threading.Event,
    out: list[SearchSample],
) -> None:
    """One search every ``interval`` seconds until stop is set."""
    statements = {m: statement(m) for m in METHODS}
    with connect(target.url, application_name="campaign benchmark: searches") as conn:
        for n, (method, q) in enumerate(schedule(target, seed)):
            due = start + n * interval
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            args = params(target, method, q)
            t = time.perf_counter()
            try:
                conn.execute(statements[method], args).fetchall()
                error = None
            except psycopg.Error as e:
                error = str(e).strip()
            ms = (time.perf_counter() - t) * 1000
            out.append(SearchSample(method, q.id, round(due - start, 3), ms, error))


def marker(target: Target, n: int) -> str:
    return f"zq{target.run_tag}x{n}"


def prober(
    target: Target,
    phase: str,
    interval: float,
    poll_s: float,
    timeout_s: float,
    start: float,
    stop: threading.Event,
    out: list[Probe],
) -> None:
    """An INSERT every ``interval`` seconds, each polled until searchable."""
    table = sql.Identifier(target.name)
    seen = sql.SQL("SELECT 1 FROM {} WHERE id = %s LIMIT 1").format(
        sql.Identifier("autoembed", target.embeddings_table)
    )
    insert = sql.SQL("INSERT INTO {} (id, title, text) VALUES (%s, %s, %s)").format(table)
    delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(table)
    bm25 = "SELECT s.pk ->> 'id' FROM autoembed.bm25_search(%s, %s, 5, version => %s) AS s"
    n = 0
    with connect(target.url, application_name="campaign benchmark: inserts") as conn:
        due = start + interval / 2  # between two searches
        while not stop.wait(max(0.0, due - time.monotonic())):
            doc = target.probe_docs[n % len(target.probe_docs)]
            n += 1
            word = marker(target, n)
            pk = f"probe-{phase}-{n}"
            polls, ms, error, found = 0, None, None, False
            at = time.monotonic() - start
            t0 = time.perf_counter()
            try:
                conn.execute(insert, (pk, f"{word}: {doc.title}", f"{doc.text} ({word})"))
                while (time.perf_counter() - t0) < timeout_s:
                    polls += 1
                    if conn.execute(seen, (pk,)).fetchone():
                        ms = (time.perf_counter() - t0) * 1000
                        break
                    time.sleep(poll_s)
                hits = conn.execute(bm25, (target.name, word, target.version)).fetchall()
                found = any(h[0] == pk for h in hits)
                # gone again, so that the campaign's version never embeds it (a delete
                # is fresh work too, but costs no embedding)
                conn.execute(delete, (pk,))
            except psycopg.Error as e:
                error = str(e).strip()
            out.append(Probe(pk, round(at, 3), ms, polls, found, error))
            due = max(due + interval, time.monotonic() + 0.2)


@dataclass
class Phase:
    name: str
    start: float = 0.0  # time.monotonic() when it started
    wall_start: float = 0.0  # time.time() then (to read the worker's log alongside)
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # samples after this many seconds (the campaign's switch) are not summarized
    cutoff: float | None = None
    searches: list[SearchSample] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)


def run_phase(
    target: Target,
    name: str,
    args: argparse.Namespace,
    until: Callable[[Phase], bool],
    every_s: float,
    cpu: CpuMeter,
) -> Phase:
    """Searches and inserts in two threads, each on its own connection,
    until ``until(phase)`` (called every ``every_s`` seconds) says done."""
    start = time.monotonic() + 0.05
    phase = Phase(name, start)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=searcher,
            args=(target, args.search_interval, args.seed, start, stop, phase.searches),
            name="searches",
        ),
        threading.Thread(
            target=prober,
            args=(
                target,
                name,
                args.insert_interval,
                args.poll_ms / 1000,
                args.probe_timeout,
                start,
                stop,
                phase.probes,
            ),
            name="inserts",
        ),
    ]
    before = cpu.snapshot()
    phase.wall_start = time.time()
    for t in threads:
        t.start()
    try:
        ticks = 0
        while not until(phase):
            ticks += 1
            time.sleep(max(0.0, start + ticks * every_s - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join()
    phase.seconds = time.monotonic() - start
    phase.cpu = cpu.since(before)
    return phase


# -- the campaign ---------------------------------------------------------------------------------


def versions_view(conn: Conn, name: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT * FROM autoembed.vectorizer_versions WHERE vectorizer = %s ORDER BY version",
        (name,),
    )
    assert cur.description is not None
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def progress(conn: Conn, name: str, ordinal: int) -> dict[str, Any]:
    """A version's state and progress: autoembed.version_progress (a cheap poll), or
    the vectorizer_versions view where this autoembed has no version_progress."""
    row = conn.execute(
        "SELECT to_regprocedure('autoembed.version_progress(text, text)') IS NOT NULL"
    ).fetchone()
    if row and row[0]:
        cur = conn.execute("SELECT * FROM autoembed.version_progress(%s, %s)", (name, str(ordinal)))
        assert cur.description is not None
        found = cur.fetchone()
        if found is None:
            raise RuntimeError(f"version {ordinal} of {name} is gone")
        return dict(zip([c.name for c in cur.description], found, strict=True))
    for r in versions_view(conn, name):
        if r["version"] == ordinal:
            return r
    raise RuntimeError(f"version {ordinal} of {name} is gone")


class CampaignWatch:
    """Polls the campaign's progress; prints and keeps it (rows done, rows/s
    since set_model and over the last minute, ETA at the pace since
    set_model); done when its version is no longer building."""

    def __init__(
        self, conn: Conn, name: str, ordinal: int, worker: Worker, started: float, stall_s: float
    ) -> None:
        self.conn, self.name, self.ordinal, self.worker = conn, name, ordinal, worker
        self.started, self.stall_s = started, stall_s
        self.state = "building"
        self.last_done, self.last_change = -1, time.monotonic()

    def __call__(self, phase: Phase) -> bool:
        mine = progress(self.conn, self.name, self.ordinal)
        elapsed = time.monotonic() - self.started
        done, total = int(mine["rows_done"]), int(mine["rows_total"] or 0)
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (total - done) / rate if rate > 0 else None
        minute_ago = next((p for p in phase.progress if p["t"] >= elapsed - 60), None)
        recent = (
            (done - minute_ago["rows_done"]) / (elapsed - minute_ago["t"])
            if minute_ago is not None and elapsed - minute_ago["t"] >= 1
            else float("nan")
        )
        snapshot = {
            "t": round(elapsed, 1),
            "state": mine["state"],
            "rows_done": done,
            "rows_total": total,
            "pending": int(mine["pending"]),
            "in_flight": int(mine["in_flight"]),
            "percent": float(mine["percent"] or 0),
            "rows_per_second": rate,
            "rows_per_second_last_minute": recent,
            "eta_s": eta,
            "searches": len(phase.searches),
            "probes": len(phase.probes),
            "loadavg": os.getloadavg()[0],
        }
        phase.progress.append(snapshot)
        self.state = str(mine["state"])
        say(
            f"  {fmt_duration(elapsed):>9}  v{self.ordinal} {self.state:<8} "
            f"rows {done:,}/{total:,} ({snapshot['percent']:.1f}%)  "
            f"{rate:.2f} rows/s since set_model, {fmt(recent)} over the last minute  "
            f"ETA {fmt_duration(eta) if self.state == 'building' else '-'}  "
            f"[{len(phase.searches)} searches, {len(phase.probes)} inserts; "
            f"load {snapshot['loadavg']:.1f}]"
        )
        if self.state != "building":
            return True
        if not self.worker.alive():
            raise RuntimeError(f"the worker exited during the campaign; see {self.worker.log_path}")
        if done != self.last_done:
            self.last_done, self.last_change = done, time.monotonic()
        elif time.monotonic() - self.last_change > self.stall_s:
            raise RuntimeError(
                f"no progress for {self.stall_s:.0f}s (rows_done {done}); "
                f"see {self.worker.log_path}"
            )
        return False


def delete_probes(conn: Conn, name: str, timeout_s: float = 120) -> None:
    """Remove the idle phase's probe rows and wait until the worker has
    removed their chunks (nothing pending)."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id LIKE 'probe-%%'").format(sql.Identifier(name)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = status(conn, name)
        if int(s["pending"]) + int(s["in_flight"]) == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the probe rows' deletion was not processed in {timeout_s:.0f}s")


# -- after the campaign --------------------------------------------------------------------------


def judged_subset(collection: beir.Collection, docs: list[beir.Document]) -> beir.Collection:
    """The collection restricted to docs: judgments on them only, and the
    queries with at least one relevant document among them."""
    ids = {d.id for d in docs}
    qrels = {
        qid: {d: g for d, g in judged.items() if d in ids}
        for qid, judged in collection.qrels.items()
    }
    queries = [q for q in collection.queries if any(g > 0 for g in qrels[q.id].values())]
    return replace(collection, corpus=docs, queries=queries, qrels=qrels)


def quality(
    conn: Conn, name: str, judged: beir.Collection, ordinal: int, vectors: dict[str, Vector]
) -> dict[str, Any]:
    result: MethodResult = run_method(
        conn, name, judged, vectors, Method("semantic", {"version": str(ordinal)})
    )
    mean = result.mean
    return {
        "version": ordinal,
        "queries": len(result.queries),
        **mean.as_json(),
        "latency_p50_ms_k100": result.latency_ms(50),
        "per_query": [
            {"query_id": q.query_id, **q.scores.as_json(), "top10": [h.doc_id for h in q.hits[:10]]}
            for q in result.queries
        ],
    }


def version_health(conn: Conn, name: str, ordinal: int) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.version_health(%s, %s)", (name, str(ordinal)))
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def compare(conn: Conn, name: str, queries: list[str], a: int, b: int) -> dict[str, Any]:
    """compare_versions over the queries (semantic, k = 10); the worker's
    query service embeds each with both models."""
    conn.execute("SET autoembed.query_timeout = '300s'")
    conn.execute("SET statement_timeout = 0")
    t = time.monotonic()
    try:
        rows = conn.execute(
            "SELECT query, overlap, rank_correlation, shared FROM autoembed.compare_versions("
            "%s, %s::text[], %s, %s, %s, 'semantic')",
            (name, queries, K, str(a), str(b)),
        ).fetchall()
    except psycopg.Error as e:
        return {"error": str(e).strip(), "seconds": round(time.monotonic() - t, 1)}
    summary = next(r for r in rows if r[0] is None)
    return {
        "queries": len(rows) - 1,
        "mean_overlap": summary[1],
        "mean_rank_correlation": summary[2],
        "seconds": round(time.monotonic() - t, 1),
        "per_query": [
            {"query": r[0], "overlap": r[1], "rank_correlation": r[2], "shared": r[3]}
            for r in rows
            if r[0] is not None
        ],
    }


def raw_encode(
    conn: Conn,
    name: str,
    ordinal: int,
    model_path: str,
    docs: list[beir.Document],
    sample: int,
    seed: int,
) -> dict[str, Any]:
    """SentenceTransformer.encode (batch 32, its own length sorting) over
    every chunk text version ``ordinal`` holds for a fixed random sample of
    the documents, timed in this process with no worker running; then the
    same texts through autoembed's embedder (what the worker calls: texts of
    equal token count batched, none padded), one document's chunks per call
    (the campaign's batches hold a few rows), to tell the model's cost from
    the pipeline's."""
    import torch

    embedder = load_embedder(model_path)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    model = embedder.model
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(docs), size=min(sample, len(docs)), replace=False).tolist())
    ids = [docs[i].id for i in picks]
    table = version_row(conn, name, ordinal)["embeddings_table"]
    rows = conn.execute(
        sql.SQL("SELECT id, chunk FROM {} WHERE id = ANY (%s) ORDER BY id, chunk_no").format(
            sql.Identifier("autoembed", table)
        ),
        (ids,),
    ).fetchall()
    texts = [str(r[1]) for r in rows]
    per_doc: dict[str, list[str]] = {}
    for r in rows:
        per_doc.setdefault(str(r[0]), []).append(str(r[1]))
    model.encode(texts[:4], batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    embedder.embed(texts[:4])
    t, cpu_t = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    seconds, cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    t, cpu_t = time.perf_counter(), time.process_time()
    for chunks in per_doc.values():
        embedder.embed(chunks)
    path_s, path_cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    return {
        "documents": len(ids),
        "documents_with_chunks": len({r[0] for r in rows}),
        "chunks": len(texts),
        "seconds": seconds,
        "rows_per_second": len(ids) / seconds,
        "chunks_per_second": len(texts) / seconds,
        "cpu_s": cpu_s,
        "rows_per_cpu_s": len(ids) / cpu_s,
        "batch_size": 32,
        "embed_path": {
            "seconds": path_s,
            "rows_per_second": len(ids) / path_s,
            "chunks_per_second": len(texts) / path_s,
            "cpu_s": path_cpu_s,
            "rows_per_cpu_s": len(ids) / path_cpu_s,
        },
        "torch_threads": torch.get_num_threads(),
        "sample_of_all": len(ids) == len(docs),
    }


# -- the report -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    return metrics.percentile(list(values), p)


def search_stats(samples: list[SearchSample], method: str) -> dict[str, Any]:
    ok = [s.ms for s in samples if s.method == method and s.error is None]
    errors = [s.error for s in samples if s.method == method and s.error is not None]
    return {
        "n": len(ok),
        "p50": percentile(ok, 50),
        "p95": percentile(ok, 95),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def probe_stats(probes: list[Probe]) -> dict[str, Any]:
    ok = [p.ms for p in probes if p.ms is not None and p.error is None]
    return {
        "n": len(ok),
        "p50": percentile(ok, 50),
        "p95": percentile(ok, 95),
        "max": max(ok) if ok else float("nan"),
        "timeouts": sum(1 for p in probes if p.ms is None and p.error is None),
        "errors": sum(1 for p in probes if p.error is not None),
        "not_found_by_bm25": sum(1 for p in probes if p.ms is not None and not p.found_by_bm25),
    }


def ratio(a: float, b: float) -> float:
    return b / a if a and a == a and b == b else float("nan")


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def table_lines(r: dict[str, Any]) -> list[str]:
    idle, during = r["phases"]["idle"]["summary"], r["phases"]["campaign"]["summary"]
    c, raw, q = r["campaign"], r["raw_encode"], r["quality"]
    w = 60
    lines = [f"{'metric':<{w}}{'idle':>10}{'campaign':>12}{'ratio':>9}"]
    labels = {"semantic": "search(vector)", "bm25": "bm25_search", "hybrid": "hybrid_search"}
    for m in METHODS:
        for p in ("p50", "p95"):
            a, b = idle["search"][m][p], during["search"][m][p]
            n = f"n {idle['search'][m]['n']}/{during['search'][m]['n']}"
            title = f"{m} {p} ms ({labels[m]}, k={K}; {n})"
            lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}{fmt(ratio(a, b)):>8}x")
    for p in ("p50", "p95"):
        a, b = idle["insert"][p], during["insert"][p]
        n = f"n {idle['insert']['n']}/{during['insert']['n']}"
        title = f"INSERT -> searchable {p} ms ({n})"
        lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}{fmt(ratio(a, b)):>8}x")
    cpu_idle, cpu_during = r["phases"]["idle"]["cpu"], r["phases"]["campaign"]["cpu"]
    for key, label in (
        ("worker", "the worker's processes"),
        ("postgres", "PostgreSQL"),
        ("this_process", "this process (searches, inserts, polls)"),
        ("others", "everything else on the machine"),
    ):
        title = f"CPU cores busy: {label}"
        a, b = cpu_idle[f"{key}_cores"], cpu_during[f"{key}_cores"]
        lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}")
    lines.append("")
    lines.append(f"{'campaign ' + c['from'] + ' -> ' + c['to']:<{w}}{'value':>10}")
    sample = (
        f"all {raw['documents']} documents"
        if raw["sample_of_all"]
        else f"random sample of {raw['documents']} of {c['rows_total']:,} documents"
    )
    rows = [
        ("rows (the table when set_model ran)", fmt(c["rows_total"])),
        ("chunks written to the new version", fmt(c["chunks"])),
        ("seconds, set_model -> active", fmt(c["seconds"], 1)),
        ("campaign rows/s (rows / seconds)", fmt(c["rows_per_second"])),
        ("raw SentenceTransformer.encode rows/s (batch 32)", fmt(raw["rows_per_second"])),
        (f"  over {sample}, {raw['chunks']} chunks", ""),
        ("campaign / raw encode", fmt(c["efficiency"])),
        (
            "autoembed's embedder in-process, a document a call: rows/s",
            fmt(raw["embed_path"]["rows_per_second"]),
        ),
        ("campaign / that", fmt(c["efficiency_embed_path"])),
        (
            "rows per CPU second: worker | raw encode",
            f"{fmt(c['rows_per_worker_cpu_s'])} | {fmt(raw['rows_per_cpu_s'])}",
        ),
        ("campaign / raw encode, per CPU second", fmt(c["efficiency_per_cpu_s"])),
        (
            "campaign chunks/s | raw encode chunks/s",
            f"{fmt(c['chunks_per_second'])} | {fmt(raw['chunks_per_second'])}",
        ),
    ]
    lines += [f"{label:<{w}}{value:>10}" for label, value in rows]
    lines.append("")
    v1, v2 = q["versions"]
    title = f"quality: semantic, {q['queries']} {q['split']} queries"
    lines.append(f"{title:<{w}}{'v1 MiniLM':>10}{'v2 mpnet':>12}{'v2-v1':>9}")
    for key, label in (("ndcg@10", "nDCG@10"), ("recall@100", "Recall@100"), ("mrr@10", "MRR@10")):
        lines.append(
            f"{label:<{w}}{fmt(v1[key], 3):>10}{fmt(v2[key], 3):>12}{v2[key] - v1[key]:>+9.3f}"
        )
    h1, h2 = r["version_health"]
    for key in ("mean_pair_cosine", "mean_norm"):
        lines.append(f"{'version_health ' + key:<{w}}{fmt(h1[key], 3):>10}{fmt(h2[key], 3):>12}")
    cmp_ = r["compare_versions"]
    overlap = cmp_.get("mean_overlap")
    title = f"compare_versions mean overlap@{K} ({cmp_.get('queries', 0)} queries)"
    error = f"   error: {cmp_['error']}" if "error" in cmp_ else ""
    lines.append(f"{title:<{w}}{fmt(overlap, 3):>10}{error}")
    return lines


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    import sentence_transformers
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sentence_transformers": sentence_transformers.__version__,
        "psycopg": psycopg.__version__,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


def git_revision() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


# -- the run ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR collection")
    p.add_argument("--split", default="test", help="queries and judgments")
    p.add_argument("--limit", type=int, help="only the corpus's first N documents")
    p.add_argument("--json", type=Path, help="where to write the results")
    p.add_argument(
        "--idle-seconds", type=float, help="length of the idle phase (120; 60 with --limit)"
    )
    p.add_argument("--search-interval", type=float, default=0.5, help="seconds between searches")
    p.add_argument("--insert-interval", type=float, default=3.0, help="seconds between inserts")
    p.add_argument("--poll-ms", type=float, default=20.0, help="poll for an insert's chunks")
    p.add_argument("--probe-timeout", type=float, default=120.0, help="give an insert up after")
    p.add_argument("--progress-seconds", type=float, default=5.0, help="progress line every")
    p.add_argument("--stall-seconds", type=float, default=600.0, help="abort after no progress")
    p.add_argument(
        "--raw-sample", type=int, help="documents for the raw encode (300; 60 with --limit)"
    )
    p.add_argument("--shared-buffers", default="512MB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rebuild", action="store_true", help="build the base state again")
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an AUTOEMBED_* setting for the worker (default: none, every setting its default)",
    )
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = p.parse_args(argv)
    if args.json is None:
        args.json = (
            DEFAULT_JSON
            if args.limit is None
            else DEFAULT_JSON.with_name(f"campaign_limit{args.limit}.json")
        )
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    quick = args.limit is not None
    if args.idle_seconds is None:
        args.idle_seconds = 60.0 if quick else 120.0
    if args.raw_sample is None:
        args.raw_sample = 60 if quick else 300
    for item in args.worker_env:
        if "=" not in item or not item.startswith("AUTOEMBED_"):
            p.error(f"--worker-env takes AUTOEMBED_KEY=VALUE, got {item!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()
    timings: dict[str, float] = {}
    full = beir.load(args.dataset, args.split)
    docs = full.corpus[: args.limit] if args.limit else full.corpus
    collection = replace(full, corpus=docs)
    judged = judged_subset(full, docs)
    say(f"mpnet: {(mpnet_path := mpnet_model_path(REPO / '.autoembed' / 'models'))}")
    extra_env = dict(item.split("=", 1) for item in args.worker_env)
    result: dict[str, Any] = {}
    with server(args.data_dir, args.shared_buffers) as pg:
        t = time.monotonic()
        base = ensure_base(pg, collection, args.limit, args.rebuild)
        timings["base"] = time.monotonic() - t
        url, timings["copy"] = fresh_copy(pg, base)
        say(f"working in a copy of {base.database}: database {RUN_DB} ({timings['copy']:.1f}s)")
        result = measure(pg, url, base, full, judged, mpnet_path, extra_env, args, timings)
    mach = machine(load_start)
    total = time.monotonic() - started
    report = {
        "benchmark": "campaign",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "autoembed_revision": git_revision(),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": mach,
        "base": {**asdict(base), "url": None},
        "duration_s": {**{k: round(v, 1) for k, v in timings.items()}, "total": round(total, 1)},
        **result,
    }
    lines = table_lines(report)
    header = (
        f"campaign benchmark: {full.name} ({base.rows:,} documents"
        f"{', --limit' if args.limit else ''}), {mach['cpu_count']} CPUs ({mach['cpu']}), "
        f"{mach['gpu'] or 'no GPU'}; load average {load_start[0]:.2f} at the start, "
        f"{mach['loadavg_end'][0]:.2f} at the end"
    )
    report["table"] = [header, *lines]
    print()
    print(header)
    for line in lines:
        print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")
    problems = result["worker"]["log_problems"]
    if problems:
        print(f"\nthe worker's log has {len(problems)} error lines, e.g. {problems[0]!r}")
    base_note = "reused the base" if base.reused else f"built the base in {timings['base']:.0f}s"
    print(f"\n{total:.0f}s in all ({base_note}); {args.json}")
    return 0


def measure(
    pg: EmbeddedPostgres,
    url: str,
    base: Base,
    full: beir.Collection,
    judged: beir.Collection,
    mpnet_path: str,
    extra_env: dict[str, str],
    args: argparse.Namespace,
    timings: dict[str, float],
) -> dict[str, Any]:
    name = base.table
    conn = connect(url, application_name="campaign benchmark")
    redis = EmbeddedRedis(args.data_dir / "redis")
    worker: Worker | None = None
    cpu = CpuMeter(pg)
    try:
        old = version_row(conn, name)
        blocks = prewarm(conn, name, name)
        t = time.monotonic()
        vectors_v1 = embed_queries(conn, name, full, version=str(old["ordinal"]))
        timings["queries_minilm"] = time.monotonic() - t
        rest = [d for d in full.corpus if d.id not in {x.id for x in judged.corpus}]
        target = Target(
            url=url,
            name=name,
            version=str(old["ordinal"]),
            embeddings_table=str(old["embeddings_table"]),
            queries=full.queries,
            vectors=vectors_v1,
            probe_docs=rest or judged.corpus,
            run_tag=hashlib.sha256(str(time.time()).encode()).hexdigest()[:6],
        )
        warm_up(conn, target)

        say("Redis (embedded) and a worker: autoembed worker --db ... --broker ...")
        broker = redis.start()
        worker = Worker(url, broker, args.data_dir / "worker.log", extra_env)
        cpu.worker_group = worker.proc.pid
        timings["worker_queries_ready"] = wait_for_queries(conn, name, worker)
        say(f"  the worker answers text queries ({timings['worker_queries_ready']:.0f}s)")
        warm = run_phase(target, "warmup", args, lambda p: len(p.probes) >= 2, 0.5, cpu)
        say(f"  warm-up inserts searchable after {[round(p.ms or -1) for p in warm.probes]} ms")
        delete_probes(conn, name)

        say(
            f"idle: {args.idle_seconds:.0f}s of searches (one per {args.search_interval}s) and "
            f"inserts (one per {args.insert_interval}s) with the worker idle"
        )
        deadline = time.monotonic() + args.idle_seconds
        idle = run_phase(target, "idle", args, lambda p: time.monotonic() >= deadline, 1.0, cpu)
        delete_probes(conn, name)

        say(f"campaign: set_model({name!r}, {mpnet_path!r}, dimensions => {NEW_DIMENSIONS})")
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
        ).fetchone()
        assert count is not None
        rows_total = int(count[0])
        t_set = time.monotonic()
        row = conn.execute(
            "SELECT autoembed.set_model(%s, %s, dimensions => %s)",
            (name, mpnet_path, NEW_DIMENSIONS),
        ).fetchone()
        assert row is not None
        ordinal = int(row[0])
        watch = CampaignWatch(conn, name, ordinal, worker, t_set, args.stall_seconds)
        during = run_phase(target, "campaign", args, watch, args.progress_seconds, cpu)
        timings["campaign_wall"] = time.monotonic() - t_set
        new = version_row(conn, name, ordinal)
        if watch.state != "active":
            raise RuntimeError(f"the campaign ended {watch.state}: {new.get('last_error')}")
        campaign = campaign_figures(conn, name, old, new, base, rows_total)
        campaign["vectorizer_versions"] = versions_view(conn, name)
        # the searches and inserts after the switch (seen up to --progress-seconds late) are
        # kept in the JSON but not summarized: the database's clock says when it came
        during.cutoff = campaign["seconds"] - (during.start - t_set)
        say(
            f"campaign done: {campaign['rows_total']:,} rows in {campaign['seconds']:.0f}s, "
            f"{campaign['rows_per_second']:.2f} rows/s"
        )

        say(f"quality: {len(judged.queries)} queries, semantic, both versions ...")
        t = time.monotonic()
        vectors_v2 = embed_queries(conn, name, judged, version=str(ordinal))
        timings["queries_mpnet"] = time.monotonic() - t
        by_id = {q.id: vectors_v1[q.id] for q in judged.queries}
        versions = [
            quality(conn, name, judged, int(old["ordinal"]), by_id),
            quality(conn, name, judged, ordinal, vectors_v2),
        ]
        health = [
            version_health(conn, name, int(old["ordinal"])),
            version_health(conn, name, ordinal),
        ]
        say(f"compare_versions over {len(judged.queries)} queries (the worker embeds them) ...")
        compared = compare(
            conn, name, [q.text for q in judged.queries], int(old["ordinal"]), ordinal
        )
        problems = worker.problems()
        worker_env = worker.env
        worker.stop()
        worker = None

        say(
            f"raw SentenceTransformer.encode with mpnet, no worker running "
            f"({min(args.raw_sample, len(judged.corpus))} documents) ..."
        )
        raw = raw_encode(conn, name, ordinal, mpnet_path, judged.corpus, args.raw_sample, args.seed)
        campaign["efficiency"] = campaign["rows_per_second"] / raw["rows_per_second"]
        campaign["efficiency_embed_path"] = (
            campaign["rows_per_second"] / raw["embed_path"]["rows_per_second"]
        )
        # the same per CPU second (the worker's whole process group during the campaign
        # phase; this process during the encode): what it costs, whatever else ran
        campaign["worker_cpu_s"] = during.cpu["worker"]
        campaign["rows_per_worker_cpu_s"] = campaign["rows_total"] / during.cpu["worker"]
        campaign["efficiency_per_cpu_s"] = campaign["rows_per_worker_cpu_s"] / raw["rows_per_cpu_s"]
        pg_version = conn.execute("SHOW server_version").fetchone()
        pgvector = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()
        conn.close()
    phases = {p.name: phase_json(p) for p in (idle, during)}
    return {
        "environment": {
            "postgres": pg_version[0] if pg_version else None,
            "pgvector": pgvector[0] if pgvector else None,
            "shared_buffers": shared_buffers[0] if shared_buffers else None,
            "prewarmed_blocks": blocks,
            "worker_defaults": {
                k: v
                for k, v in asdict(Settings()).items()
                if k not in ("database_url", "broker_url")
            },
            "worker_env": worker_env,
        },
        "worker": {"log": str(args.data_dir / "worker.log"), "log_problems": problems[:20]},
        "phases": phases,
        "campaign": campaign,
        "raw_encode": raw,
        "quality": {
            "split": judged.split,
            "queries": len(judged.queries),
            "note": None
            if len(judged.corpus) == len(full.corpus)
            else (
                f"--limit: the {len(judged.queries)} queries with a relevant document among the "
                f"first {len(judged.corpus)}, judged on those documents only"
            ),
            "versions": versions,
        },
        "version_health": health,
        "compare_versions": compared,
    }


def campaign_figures(
    conn: Conn, name: str, old: dict[str, Any], new: dict[str, Any], base: Base, rows_total: int
) -> dict[str, Any]:
    """rows_total: the table's rows when set_model ran (the campaign's backfill)."""
    times = conn.execute(
        "SELECT extract(epoch FROM activated_at - created_at)::float8, "
        "extract(epoch FROM completed_at - created_at)::float8, created_at, activated_at "
        "FROM autoembed.vectorizer_version WHERE id = %s",
        (new["id"],),
    ).fetchone()
    assert times is not None
    seconds = float(times[0])
    chunks = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE id NOT LIKE 'probe-%%'").format(
            sql.Identifier("autoembed", new["embeddings_table"])
        )
    ).fetchone()
    n_chunks = int(chunks[0]) if chunks else 0
    return {
        "from": "v{} {}".format(old["ordinal"], old["model"].rsplit("/", 1)[-1]),
        "to": "v{} {}".format(new["ordinal"], Path(new["model"]).name),
        "version": new["ordinal"],
        "model": new["model"],
        "dimensions": new["dimensions"],
        "rows_total": rows_total,
        "chunks": n_chunks,
        "base_chunks": base.chunks,
        "seconds": seconds,
        "seconds_to_complete": float(times[1]),
        "created_at": times[2],
        "activated_at": times[3],
        "rows_per_second": rows_total / seconds,
        "chunks_per_second": n_chunks / seconds,
    }


def phase_json(p: Phase) -> dict[str, Any]:
    """The phase's samples, summarized up to its cutoff."""
    end = p.seconds if p.cutoff is None else p.cutoff
    searches = [s for s in p.searches if s.t <= end]
    probes = [x for x in p.probes if x.t <= end]
    return {
        "seconds": round(p.seconds, 1),
        "started_at": datetime.fromtimestamp(p.wall_start, UTC).isoformat(timespec="milliseconds"),
        "cpu": p.cpu,
        "summarized_until_s": round(end, 1),
        "after_cutoff": {
            "searches": len(p.searches) - len(searches),
            "inserts": len(p.probes) - len(probes),
        },
        "summary": {
            "search": {m: search_stats(searches, m) for m in METHODS},
            "insert": probe_stats(probes),
        },
        "progress": p.progress,
        "searches": [asdict(s) for s in p.searches],
        "probes": [asdict(x) for x in p.probes],
    }


if __name__ == "__main__":
    sys.exit(main())
