"""A collection in the database: table ``beir_<name>`` (id, title, text), a
vectorizer on it, and its embeddings, made by the real pipeline (the insert
trigger queues the rows, the worker's drain loop embeds them).

A table and vectorizer already holding exactly this corpus with nothing left
to embed are reused, so a re-run does not embed the corpus again."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from autoembed.evaluation.beir import Collection
from autoembed.settings import Settings

Conn = psycopg.Connection[Any]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
COLUMNS = ["title", "text"]
MARK = "autoembed evaluate:"  # table comments start with it: tables we may drop

# The corpus digest a table holds, as beir.corpus_digest computes it.
DIGEST_SQL = """
SELECT count(*), encode(sha256(convert_to(coalesce(string_agg(
    id || E'\\x1f' || coalesce(title, '') || E'\\x1f' || coalesce(text, ''),
    E'\\x1e' ORDER BY id COLLATE "C"), ''), 'UTF8')), 'hex')
FROM {}
"""


class EvaluationError(RuntimeError):
    """The collection cannot be loaded, embedded or searched."""


@dataclass(frozen=True)
class Loaded:
    table: str
    vectorizer: str
    model: str
    model_version: str | None
    documents: int
    reused: bool  # the corpus was already loaded and embedded
    load_seconds: float
    embed_seconds: float
    rows_embedded: int  # by this run


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"
    if len(slug) <= limit:
        return slug
    import hashlib

    return slug[: limit - 7] + "_" + hashlib.sha256(text.encode()).hexdigest()[:6]


def table_name(collection: Collection) -> str:
    """beir_<name> (e.g. beir_scifact)."""
    slug = _slug(collection.name, 40)
    return slug if slug.startswith("beir_") else f"beir_{slug}"


def vectorizer_name(table: str, model: str) -> str:
    """The table's name for the default model, else table__<model>: each
    model embedded once, side by side."""
    return table if model == DEFAULT_MODEL else f"{table}__{_slug(model, 20)}"


def _comment(conn: Conn, table: str) -> str | None:
    row = conn.execute(
        "SELECT coalesce(obj_description(c.oid, 'pg_class'), '') FROM pg_class AS c "
        "WHERE c.oid = to_regclass(%s)",
        (sql.Identifier(table).as_string(conn),),
    ).fetchone()
    return None if row is None else str(row[0])


def _holds(conn: Conn, table: str, collection: Collection) -> bool:
    try:
        with conn.transaction():
            row = conn.execute(sql.SQL(DIGEST_SQL).format(sql.Identifier(table))).fetchone()
    except psycopg.errors.UndefinedColumn:
        return False
    assert row is not None
    return int(row[0]) == len(collection.corpus) and row[1] == collection.corpus_digest()


def _drop(conn: Conn, table: str) -> None:
    ident = sql.Identifier(table).as_string(conn)
    names = conn.execute(
        "SELECT name FROM autoembed.vectorizer WHERE source = to_regclass(%s)", (ident,)
    ).fetchall()
    for (name,) in names:
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (name,))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def _create(conn: Conn, table: str, vectorizer: str, model: str, collection: Collection) -> None:
    """Table, vectorizer, then COPY: the insert trigger queues every row."""
    ident = sql.Identifier(table)
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, text text)").format(ident)
        )
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                ident,
                sql.Literal(
                    f"{MARK} BEIR collection {collection.name} from {collection.path.resolve()}"
                ),
            )
        )
        _create_vectorizer(conn, table, vectorizer, model)
        with (
            conn.cursor() as cur,
            cur.copy(sql.SQL("COPY {} (id, title, text) FROM STDIN").format(ident)) as copy,
        ):
            for d in collection.corpus:
                copy.write_row((d.id, d.title or None, d.text))


def _create_vectorizer(conn: Conn, table: str, vectorizer: str, model: str) -> None:
    conn.execute(
        "SELECT autoembed.create_vectorizer(%s::regclass, %s, name => %s, model => %s)",
        (sql.Identifier(table).as_string(conn), COLUMNS, vectorizer, model),
    )


def _status(conn: Conn, vectorizer: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.vectorizer_status WHERE name = %s", (vectorizer,))
    row = cur.fetchone()
    if row is None or cur.description is None:
        raise EvaluationError(f"vectorizer {vectorizer!r} has no status row")
    return dict(zip([c.name for c in cur.description], row, strict=True))


def _outstanding(status: dict[str, Any]) -> int:
    return int(status["pending"]) + int(status["in_flight"]) + int(status["failed"])


Say = Callable[[str], None]


def ensure(
    conn: Conn,
    url: str,
    collection: Collection,
    model: str = DEFAULT_MODEL,
    *,
    rebuild: bool = False,
    say: Say = print,
    show_progress: bool | None = None,
) -> Loaded:
    """Load ``collection`` (unless the table already holds exactly it) and
    embed whatever is not embedded yet, in this process, by the worker's code."""
    table = table_name(collection)
    vectorizer = vectorizer_name(table, model)
    comment = _comment(conn, table)
    if comment is not None and not comment.startswith(MARK):
        raise EvaluationError(
            f"table {table} exists and was not made by autoembed evaluate; "
            "drop or rename it, or evaluate in another database"
        )
    t0 = time.monotonic()
    loaded_now = False
    if comment is not None and (rebuild or not _holds(conn, table, collection)):
        say(f"{table}: " + ("--rebuild" if rebuild else "differs from the corpus") + "; reloading")
        _drop(conn, table)
        comment = None
    if comment is None:
        say(f"loading {len(collection.corpus)} documents into {table} (COPY) ...")
        _create(conn, table, vectorizer, model, collection)
        loaded_now = True
    elif not conn.execute(
        "SELECT 1 FROM autoembed.vectorizer WHERE name = %s", (vectorizer,)
    ).fetchone():
        say(f"{table}: creating vectorizer {vectorizer} for model {model}")
        _create_vectorizer(conn, table, vectorizer, model)
    load_seconds = time.monotonic() - t0

    status = _status(conn, vectorizer)
    if int(status["failed"]):
        conn.execute("SELECT autoembed.retry_failed(%s)", (vectorizer,))
    reused = not loaded_now and _outstanding(status) == 0 and status["model_version"] is not None
    t1 = time.monotonic()
    written = 0
    if not reused:
        from autoembed.worker.once import run_once

        pending = int(_status(conn, vectorizer)["pending"])
        say(f"embedding {pending} documents with {model} (vectorizer {vectorizer}) ...")
        written = run_once(Settings(database_url=url), show_progress=show_progress).written
    embed_seconds = time.monotonic() - t1
    status = _status(conn, vectorizer)
    if _outstanding(status):
        raise EvaluationError(
            f"vectorizer {vectorizer}: {status['pending']} rows pending, {status['in_flight']} "
            f"in flight, {status['failed']} failed after draining"
            + (f" (last error: {status['error']})" if status["error"] else "")
            + "; see autoembed status"
        )
    if reused:
        say(f"{table}: reusing {status['embedded_rows']} embedded documents ({vectorizer})")
    else:
        say(f"embedded {written} documents in {embed_seconds:.1f}s")
    return Loaded(
        table,
        vectorizer,
        model,
        status["model_version"],
        len(collection.corpus),
        reused,
        load_seconds,
        embed_seconds,
        written,
    )


def check_versions(conn: Conn, vectorizer: str, versions: tuple[str, ...]) -> None:
    """Each named version of the vectorizer exists and is complete (not a
    campaign still embedding)."""
    for version in versions:
        try:
            row = conn.execute(
                "SELECT ver.ordinal, ver.model, ver.state "
                "FROM autoembed._version(autoembed._vectorizer(%s), %s) AS ver",
                (vectorizer, version),
            ).fetchone()
        except psycopg.errors.UndefinedObject as e:
            raise EvaluationError(e.diag.message_primary or str(e)) from None
        assert row is not None
        if row[2] == "building":
            raise EvaluationError(
                f"version {row[0]} ({row[1]}) of {vectorizer} is still being embedded: "
                f"evaluate it when `autoembed versions {vectorizer}` says ready or active"
            )
