"""The latency benchmark's table: a BEIR corpus replicated with distinct keys
until it holds at least --chunks chunks, embedded by autoembed's own pipeline,
and kept between runs.

Where it lives: an embedded PostgreSQL in .autoembed/latency/pg, database
``latency``, table ``latency_<corpus>`` (or ``latency_<corpus>_x<N>`` for an
explicit replica count), whose comment holds a manifest of what it holds.

How it is built: the table is created under a vectorizer (title and text,
MiniLM, as ``autoembed evaluate`` does), replica 0 is COPYed in and drained by
``run_once`` (the insert trigger queues the rows; the worker's pipeline claims,
chunks, embeds and writes chunks, postings and statistics), the chunk count
fixes how many replicas reach --chunks, and the rest are COPYed and drained the
same way. Replicas have identical text, hence identical chunks: the worker's
embedding cache (``AUTOEMBED_EMBED_CACHE``, here 50,000 texts) embeds each
distinct chunk once. The cache is seeded with vectors this model version
already made, read from the other tables of this database and from the one
``autoembed evaluate`` keeps in .autoembed/evaluate/pg (read only), so on this
machine no chunk is embedded at all when SciFact was evaluated before.

When it is reused: the manifest must name the same corpus (sha256), model
version, request and write path, the vectorizer must have nothing pending or
failed, and its tables must have the layout a vectorizer created now would get
(so a new column or index in autoembed's SQL forces a rebuild). A change to the
run-once (incremental) SQL recreates the whole database.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.evaluation import beir
from autoembed.evaluation.beir import Collection
from autoembed.install import install
from autoembed.settings import Settings
from autoembed.worker.embedders import CachingEmbedder, load_embedder

Conn = psycopg.Connection[Any]
Say = Callable[[str], None]

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / ".autoembed" / "latency"
EVALUATE_PG = REPO / ".autoembed" / "evaluate" / "pg"
CAMPAIGN_DIR = REPO / ".autoembed" / "campaign"  # campaign.py's base state (SciFact, MiniLM)
DATABASE = "latency"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
COLUMNS = ["title", "text"]
MARK = "autoembed latency benchmark: "
CACHE = 50_000  # distinct chunk texts the build's worker remembers
BUILD_BATCH = 64  # rows per claim while building (the CPU default is 16)
# Functions whose code decides what is written for a chunk.
WRITE_PATH = ("_insert_chunks", "_delete_chunks", "%impact%")


@dataclass(frozen=True)
class Corpus:
    table: str
    vectorizer: str
    replicas: int
    rows: int
    chunks: int
    model_version: str
    reused: bool
    manifest: dict[str, Any]


# -- the server and the database --------------------------------------------------------------


@contextmanager
def exclusive(data_dir: Path, say: Say, run: str = "latency") -> Iterator[None]:
    """One run at a time per data directory: a run may recreate the database
    or rebuild a table under another (``run`` names the benchmark waited for)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another {run} run to finish (lock {data_dir / 'lock'}) ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _set_shared_buffers(pg: EmbeddedPostgres, value: str) -> bool:
    """ALTER SYSTEM SET shared_buffers = value; True when a restart is needed."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes(%s)",
            (value,),
        ).fetchone()
        if row and row[0]:
            return False
        conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(value)))
        return True


@contextmanager
def server(
    data_dir: Path, shared_buffers: str, say: Say, run: str = "latency"
) -> Iterator[EmbeddedPostgres]:
    """The benchmark's embedded PostgreSQL, with shared_buffers as asked."""
    with exclusive(data_dir, say, run):
        pg = EmbeddedPostgres(data_dir / "pg")
        say(f"PostgreSQL (embedded) in {pg.data_dir} ...")
        pg.start()
        try:
            if _set_shared_buffers(pg, shared_buffers):
                say(f"restarting PostgreSQL with shared_buffers = {shared_buffers}")
                pg.stop()
                pg.start()
            yield pg
        finally:
            pg.stop()


def schema_digest() -> str:
    """sha256 of autoembed's run-once SQL: the catalog a database was made with."""
    files = resources.files("autoembed.extension_sql").joinpath("incremental")
    h = hashlib.sha256()
    for f in sorted((f for f in files.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def database(pg: EmbeddedPostgres, say: Say, name: str = DATABASE) -> str:
    """The URL of database ``name`` with autoembed installed, recreated when
    autoembed's run-once SQL changed since it was made (or will not install)."""
    digest, ident = schema_digest(), sql.Identifier(name)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
            "WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[0] != digest:
            say("autoembed's run-once SQL changed since the database was made: recreating it")
            _recreate(conn, ident)
        elif row is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        url = pg.url_for(name)
        try:
            install(url)
        except Exception as e:
            say(f"installing autoembed into the existing database failed ({e}); recreating it")
            _recreate(conn, ident)
            install(url)
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(digest)))
    return url


def _recreate(conn: Conn, name: sql.Identifier) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


# -- what a table holds -----------------------------------------------------------------------


def table_name(collection: Collection, replicas: int | None) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in collection.name.lower())[:40]
    return f"latency_{slug}" + ("" if replicas is None else f"_x{replicas}")


def tables(conn: Conn, vectorizer: str, *, versions: bool = False) -> dict[str, str]:
    """The vectorizer's tables (schema autoembed) by role: the inbox and the
    embeddings view; with ``versions``, also its active version's (queue,
    embeddings, postings, statistics) as ``version.<role>``."""
    row = conn.execute(
        "SELECT to_jsonb(v), (SELECT to_jsonb(x) FROM autoembed.vectorizer_version AS x "
        "WHERE x.vectorizer_id = v.id AND x.state = 'active') "
        "FROM autoembed.vectorizer AS v WHERE v.name = %s",
        (vectorizer,),
    ).fetchone()
    assert row is not None
    found = {k: str(t) for k, t in row[0].items() if k.endswith("_table") and t}
    if versions:
        found |= {f"version.{k}": str(t) for k, t in row[1].items() if k.endswith("_table") and t}
    return found


def layout(conn: Conn, vectorizer: str, *, versions: bool = False) -> list[Any]:
    """Columns and indexes of every per-vectorizer table (and, with
    ``versions``, of its active version's), the vectorizer's name replaced by
    V (so two vectorizers' layouts compare equal)."""
    out: list[Any] = []
    for role, name in sorted(tables(conn, vectorizer, versions=versions).items()):
        ident = sql.Identifier("autoembed", name).as_string(conn)
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (ident,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass",
            (ident,),
        ).fetchall()
        defs = sorted(str(i[0]).replace(vectorizer, "V") for i in indexes)
        out.append([role, [list(c) for c in columns], defs])
    return out


def probe_layout(conn: Conn, *, versions: bool = False) -> list[Any]:
    """The layout a vectorizer created now gets (made and rolled back)."""
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TABLE latency_probe (id text PRIMARY KEY, title text, text text)")
        create_vectorizer(conn, "latency_probe")
        return layout(conn, "latency_probe", versions=versions)


def write_path_digest(conn: Conn) -> str:
    row = conn.execute(
        "SELECT string_agg(p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' "
        "|| p.prosrc, E'\\n' ORDER BY p.proname, p.oid) FROM pg_proc AS p "
        "WHERE p.pronamespace = 'autoembed'::regnamespace AND p.proname LIKE ANY (%s)",
        (list(WRITE_PATH),),
    ).fetchone()
    return hashlib.sha256(str(row[0] if row else "").encode()).hexdigest()


def read_manifest(conn: Conn, table: str, mark: str = MARK) -> dict[str, Any] | None:
    """The manifest in the table's comment (``mark`` and JSON), or None."""
    row = conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class')",
        (sql.Identifier(table).as_string(conn),),
    ).fetchone()
    if row is None or row[0] is None or not str(row[0]).startswith(mark):
        return None
    try:
        manifest = json.loads(str(row[0])[len(mark) :])
    except json.JSONDecodeError:
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(conn: Conn, table: str, manifest: dict[str, Any], mark: str = MARK) -> None:
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(table), sql.Literal(mark + json.dumps(manifest, sort_keys=True))
        )
    )


def status(conn: Conn, vectorizer: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.vectorizer_status WHERE name = %s", (vectorizer,))
    row = cur.fetchone()
    if row is None or cur.description is None:
        return {}
    return dict(zip([c.name for c in cur.description], row, strict=True))


def chunk_count(conn: Conn, vectorizer: str) -> int:
    v = conn.execute(
        "SELECT ver.embeddings_table, ver.model_version_id FROM autoembed.vectorizer AS v "
        "JOIN autoembed.vectorizer_version AS ver ON ver.vectorizer_id = v.id "
        "AND ver.state = 'active' WHERE v.name = %s",
        (vectorizer,),
    ).fetchone()
    assert v is not None
    query = sql.SQL("SELECT count(*) FROM {} WHERE model_version_id = %s")
    row = conn.execute(query.format(sql.Identifier("autoembed", v[0])), (v[1],)).fetchone()
    return int(row[0]) if row else 0


def stale_reason(
    conn: Conn, table: str, wanted: dict[str, Any], *, mark: str = MARK, versions: bool = False
) -> str | None:
    """Why the table cannot be reused as it is, or None."""
    manifest = read_manifest(conn, table, mark)
    if manifest is None:
        return "not built yet"
    if manifest.get("state") != "complete":
        return "an earlier build did not finish"
    changed = [k for k, v in wanted.items() if manifest.get(k) != v]
    if changed:
        return "changed since the build: " + ", ".join(changed)
    s = status(conn, table)
    if not s or int(s["pending"]) + int(s["in_flight"]) + int(s["failed"]):
        return "the vectorizer has work outstanding"
    if (
        int(s["embedded_rows"]) != manifest["rows"]
        or s["model_version"] != manifest["model_version"]
    ):
        return "the embeddings differ from the manifest"
    if layout(conn, table, versions=versions) != probe_layout(conn, versions=versions):
        return "autoembed's table layout (columns or indexes) changed since the build"
    return None


# -- building ---------------------------------------------------------------------------------


def create_vectorizer(conn: Conn, table: str) -> None:
    conn.execute(
        "SELECT autoembed.create_vectorizer(%s::regclass, %s, name => %s, model => %s)",
        (sql.Identifier(table).as_string(conn), COLUMNS, table, MODEL),
    )


Row = tuple[str, str | None, str]  # id, title, text


def create(
    conn: Conn, table: str, manifest: dict[str, Any], rows: Iterable[Row], mark: str = MARK
) -> None:
    """(Re)create the table (id, title, text) under a MiniLM vectorizer,
    holding rows, its comment the manifest (in one transaction)."""
    if conn.execute("SELECT 1 FROM autoembed.vectorizer WHERE name = %s", (table,)).fetchone():
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (table,))
    ident = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, text text)").format(ident)
        )
        write_manifest(conn, table, manifest, mark)
        create_vectorizer(conn, table)
        copy_rows(conn, table, rows)


def copy_rows(conn: Conn, table: str, rows: Iterable[Row]) -> None:
    statement = sql.SQL("COPY {} (id, title, text) FROM STDIN").format(sql.Identifier(table))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _replicas(collection: Collection, first: int, stop: int) -> Iterator[Row]:
    """Replicas first..stop-1 of the corpus, keys <doc id>#<replica>."""
    for r in range(first, stop):
        for d in collection.corpus:
            yield (f"{d.id}#{r}", d.title or None, d.text)


def seed(cache: CachingEmbedder, url: str) -> int:
    """Remember every chunk vector of this model version stored at url."""
    tag = cache.version().tag
    before = len(cache)
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass('autoembed.vectorizer') IS NULL").fetchone() == (True,):
            return 0
        tables = conn.execute(
            "SELECT ver.embeddings_table, ver.model_version_id "
            "FROM autoembed.vectorizer_version AS ver "
            "JOIN autoembed.model_version AS mv ON mv.id = ver.model_version_id WHERE mv.tag = %s",
            (tag,),
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


def seed_from(cache: CachingEmbedder, data_dirs: Iterable[Path], say: Say) -> int:
    """seed from every database of the embedded servers in data_dirs (other
    benchmarks'), where they exist."""
    found = 0
    for data_dir in data_dirs:
        if not data_dir.joinpath("PG_VERSION").exists():
            continue
        other = EmbeddedPostgres(data_dir)  # shared: stopped only by its last user
        try:
            with connect(other.start()) as conn:
                names = conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
                ).fetchall()
            for (name,) in names:  # every database there (campaign.py keeps several)
                found += seed(cache, other.url_for(name))
        except Exception as e:  # only an optimization
            say(f"could not read embeddings from {data_dir}: {e}")
        finally:
            other.stop()
    return found


def seed_all(cache: CachingEmbedder, url: str, say: Say) -> None:
    found = seed(cache, url) + seed_from(cache, [EVALUATE_PG, CAMPAIGN_DIR / "pg"], say)
    say(f"embedding cache seeded with {found} chunk vectors of {cache.version().tag}")


def drain(url: str, say: Say, what: str) -> float:
    from autoembed.worker.once import run_once

    t = time.monotonic()
    stats = run_once(Settings(database_url=url, batch_size=BUILD_BATCH, embed_cache=CACHE))
    seconds = time.monotonic() - t
    say(f"{what}: {stats.written} rows, {stats.chunks} chunks written in {seconds:.0f}s")
    return seconds


def build(
    conn: Conn,
    url: str,
    collection: Collection,
    table: str,
    wanted: dict[str, Any],
    say: Say,
) -> dict[str, Any]:
    """(Re)create the table and let the pipeline embed it; returns the manifest."""
    started = time.monotonic()
    cache = load_embedder(MODEL, None, CACHE)
    assert isinstance(cache, CachingEmbedder)
    seed_all(cache, url, say)
    misses_before = cache.misses
    create(conn, table, {**wanted, "state": "loading"}, _replicas(collection, 0, 1))
    drain_s = drain(url, say, "replica 0")
    per_replica = chunk_count(conn, table)
    replicas = wanted["replicas"] or max(1, math.ceil(wanted["min_chunks"] / per_replica))
    if replicas > 1:
        say(f"{per_replica} chunks per replica: loading {replicas - 1} more (COPY) ...")
        with conn.transaction():
            copy_rows(conn, table, _replicas(collection, 1, replicas))
        drain_s += drain(url, say, f"replicas 1-{replicas - 1}")
    t = time.monotonic()
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    for name in sorted(tables(conn, table).values()):
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("autoembed", name)))
    vacuum_s = time.monotonic() - t
    s = status(conn, table)
    manifest = {
        **wanted,
        "state": "complete",
        "replicas": replicas,
        "rows": int(s["embedded_rows"]),
        "chunks": chunk_count(conn, table),
        "chunks_per_replica": per_replica,
        "model_version": s["model_version"],
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "build_s": round(time.monotonic() - started, 1),
        "drain_s": round(drain_s, 1),
        "vacuum_s": round(vacuum_s, 1),
        "chunks_embedded_by_model": cache.misses - misses_before,
    }
    write_manifest(conn, table, manifest)
    return manifest


def ensure(
    url: str,
    collection: Collection,
    *,
    min_chunks: int,
    replicas: int | None,
    rebuild: bool,
    say: Say,
) -> Corpus:
    """The replicated table, reused when it is complete and current, else built."""
    table = table_name(collection, replicas)
    with connect(url) as conn:
        wanted = {
            "corpus": collection.name,
            "corpus_digest": collection.corpus_digest(),
            "model": MODEL,
            "min_chunks": None if replicas else min_chunks,
            "replicas": replicas,
            "write_path": write_path_digest(conn),
        }
        if replicas is None:  # the count the build settles on is not asked for
            wanted.pop("replicas")
        reason = "--rebuild" if rebuild else stale_reason(conn, table, wanted)
        if reason is None:
            manifest = read_manifest(conn, table)
            assert manifest is not None
            say(
                f"{table}: reusing {manifest['rows']:,} rows, {manifest['chunks']:,} chunks "
                f"(built {manifest['built_at']} in {manifest['build_s']:.0f}s)"
            )
            return _corpus(table, manifest, reused=True)
        say(f"{table}: building ({reason})")
        manifest = build(conn, url, collection, table, {"replicas": replicas, **wanted}, say)
        say(f"{table}: built {manifest['chunks']:,} chunks in {manifest['build_s']:.0f}s")
        return _corpus(table, manifest, reused=False)


def add_table_arguments(p: argparse.ArgumentParser, default_dataset: Path) -> None:
    """The options that say which replicated table a benchmark runs on."""
    p.add_argument("dataset", type=Path, nargs="?", default=default_dataset, help="BEIR collection")
    p.add_argument("--split", default="test")
    p.add_argument("--chunks", type=int, default=100_000, help="replicate to at least this many")
    p.add_argument("--replicas", type=int, help="replicate exactly this many times instead")
    p.add_argument("--shared-buffers", default="2GB")
    p.add_argument("--rebuild", action="store_true", help="build the table again")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)


def load_collection(args: argparse.Namespace) -> Collection:
    """The collection add_table_arguments' options name, its queries cut to
    --queries (all when None)."""
    collection = beir.load(args.dataset, args.split)
    return replace(collection, queries=collection.queries[: args.queries])


@contextmanager
def opened(
    args: argparse.Namespace, collection: Collection, say: Say
) -> Iterator[tuple[str, Corpus, float]]:
    """The server, the database and the table add_table_arguments' options
    name (built or reused): its URL, the corpus and the seconds ensuring it took."""
    with server(args.data_dir, args.shared_buffers, say) as pg:
        url = database(pg, say)
        t = time.monotonic()
        corpus = ensure(
            url, collection, min_chunks=args.chunks, replicas=args.replicas,
            rebuild=args.rebuild, say=say,
        )  # fmt: skip
        yield url, corpus, time.monotonic() - t


def _corpus(table: str, manifest: dict[str, Any], *, reused: bool) -> Corpus:
    return Corpus(
        table=table,
        vectorizer=table,
        replicas=int(manifest["replicas"]),
        rows=int(manifest["rows"]),
        chunks=int(manifest["chunks"]),
        model_version=str(manifest["model_version"]),
        reused=reused,
        manifest=manifest,
    )
