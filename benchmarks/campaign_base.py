"""The campaign benchmark's base state: database ``campaign_base_<corpus>_<N|all>``
on the benchmark's embedded PostgreSQL, its table ``<corpus>`` holding the corpus
under a MiniLM vectorizer embedded by autoembed's own pipeline, reused while its
manifest and contents are current (campaign.py's docstring says when), and the
fresh copy of it each run works in.

Building, reuse checks, manifests and cache seeding are latency_corpus.py's (the
latency benchmark keeps its table the same way); what is the campaign's own: a
base per corpus and limit, the rows' sha256 and the single MiniLM version among
the reuse checks, and the active version's tables in the layout compared.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import latency_corpus as lc
import psycopg
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.evaluation import beir
from autoembed.evaluation.store import DIGEST_SQL
from autoembed.worker.embedders import CachingEmbedder, load_embedder

Conn = psycopg.Connection[Any]

REPO = lc.REPO
DATA_DIR = lc.CAMPAIGN_DIR
MODEL = lc.MODEL  # all-MiniLM-L6-v2, the base's (and the latency table's) model
RUN_DB = "campaign_run"
MARK = "autoembed campaign benchmark: "


def say(message: str) -> None:
    print(message, flush=True)


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


def version_tables(conn: Conn, name: str) -> list[str]:
    """The tables of the vectorizer (inbox, the embeddings view) and of its
    active version (queue, embeddings, postings, statistics), schema autoembed."""
    return sorted(lc.tables(conn, name, versions=True).values())


def stale_reason(conn: Conn, table: str, wanted: dict[str, Any], digest: str) -> str | None:
    """Why the base table cannot be reused as it is, or None."""
    reason = lc.stale_reason(conn, table, wanted, mark=MARK, versions=True)
    if reason is not None:
        return reason
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
            found += lc.seed(cache, pg.url_for(name))
    found += lc.seed_from(cache, [lc.EVALUATE_PG, lc.DATA_DIR / "pg"], say)
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
    started = time.monotonic()
    cache = load_embedder(MODEL, None, lc.CACHE)
    assert isinstance(cache, CachingEmbedder)
    seed_cache(cache, pg, database)
    misses = cache.misses
    rows = ((d.id, d.title or None, d.text) for d in docs)
    lc.create(conn, table, {**wanted, "state": "loading"}, rows, MARK)
    say(f"{table}: {len(docs)} rows loaded; embedding them with {MODEL} (autoembed worker --once)")
    drain_s = lc.drain(url, say, table)
    for name in [table, *version_tables(conn, table)]:
        schema = "public" if name == table else "autoembed"
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
            (sql.Identifier(schema, name).as_string(conn),),
        ).fetchone()
        if kind and kind[0] == "r":
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, name)))
    s = lc.status(conn, table)
    if int(s["pending"]) + int(s["in_flight"]) + int(s["failed"]):
        raise RuntimeError(f"{table}: the build left work outstanding: {s}")
    manifest = {
        **wanted,
        "state": "complete",
        "chunks": lc.chunk_count(conn, table),
        "model_version": s["model_version"],
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "build_s": round(time.monotonic() - started, 1),
        "drain_s": round(drain_s, 1),
        "chunks_embedded_by_model": cache.misses - misses,
    }
    lc.write_manifest(conn, table, manifest, MARK)
    return manifest


def ensure_base(
    pg: EmbeddedPostgres, collection: beir.Collection, limit: int | None, rebuild: bool
) -> Base:
    """The base state of the corpus (its first ``limit`` documents), reused
    when it is complete and current, else built."""
    docs = collection.corpus
    database = f"campaign_base_{slug(collection.name)}_{limit if limit else 'all'}"
    table = slug(collection.name)
    url = lc.database(pg, say, database)
    digest = beir.corpus_digest(docs)
    with connect(url) as conn:
        wanted = {
            "corpus": collection.name,
            "limit": limit,
            "rows": len(docs),
            "corpus_digest": digest,
            "model": MODEL,
            "write_path": lc.write_path_digest(conn),
        }
        reason = "--rebuild" if rebuild else stale_reason(conn, table, wanted, digest)
        if reason is None:
            manifest = lc.read_manifest(conn, table, MARK)
            assert manifest is not None
            say(
                f"{database}.{table}: reusing {manifest['rows']:,} rows, {manifest['chunks']:,} "
                f"chunks (built {manifest['built_at']} in {manifest['build_s']:.0f}s)"
            )
        else:
            say(f"{database}.{table}: building ({reason})")
            manifest = build_base(conn, url, pg, database, table, docs, wanted)
            say(f"{database}.{table}: built in {manifest['build_s']:.0f}s")
    return Base(
        database=database,
        url=url,
        table=table,
        rows=int(manifest["rows"]),
        chunks=int(manifest["chunks"]),
        model_version=str(manifest["model_version"]),
        reused=reason is None,
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
