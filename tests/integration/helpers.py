"""Helpers shared by the SQL-level integration tests: create a vectorizer,
look inside its inbox, queue and embeddings tables, and snapshot the catalog."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from tests.conftest import TEMPLATE

Conn = psycopg.Connection[Any]
Key = tuple[Any, ...]


def create_vectorizer(
    conn: Conn,
    source: str | None,
    columns: list[Any] | None,
    *,
    model: str = "hash:16",
    **options: Any,
) -> int:
    """autoembed.create_vectorizer(source, columns, model => ..., option => value, ...)."""
    args = [sql.SQL("model => {}").format(sql.Placeholder())]
    args += [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in options]
    query = sql.SQL("SELECT autoembed.create_vectorizer({}::regclass, {}::text[], {})").format(
        sql.Placeholder(), sql.Placeholder(), sql.SQL(", ").join(args)
    )
    row = conn.execute(query, [source, columns, model, *options.values()]).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Vectorizer:
    id: int
    pk: list[str]
    inbox: sql.Composable
    queue: sql.Composable
    embeddings: sql.Composable

    @property
    def pk_list(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.pk))


def vectorizer(conn: Conn, name: str) -> Vectorizer:
    row = conn.execute(
        "SELECT id, pk_columns, inbox_table, queue_table, embeddings_table "
        "FROM autoembed.vectorizer WHERE name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    vid, pk, inbox, queue, embeddings = row
    return Vectorizer(
        vid, pk, *(sql.Identifier("autoembed", t) for t in (inbox, queue, embeddings))
    )


def count(conn: Conn, table: sql.Composable) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def queued_keys(conn: Conn, name: str) -> list[Key]:
    """Every key waiting in the inbox or the queue, sorted, repeats kept."""
    v = vectorizer(conn, name)
    unnest = sql.SQL(", ").join(sql.SQL("i.{}").format(sql.Identifier(c)) for c in v.pk)
    inbox = conn.execute(
        sql.SQL("SELECT u.* FROM {} AS i CROSS JOIN LATERAL unnest({}) AS u").format(
            v.inbox, unnest
        )
    ).fetchall()
    queue = conn.execute(sql.SQL("SELECT {} FROM {}").format(v.pk_list, v.queue)).fetchall()
    return sorted(tuple(r) for r in inbox + queue)


class Chunk(NamedTuple):
    chunk_no: int
    chunk: str
    embedded_at: dt.datetime
    model_version_id: int


def chunks(conn: Conn, name: str) -> dict[Key, list[Chunk]]:
    """Key -> its chunks in order, for every row in the embeddings table."""
    v = vectorizer(conn, name)
    rows = conn.execute(
        sql.SQL(
            "SELECT {pk}, chunk_no, chunk, embedded_at, model_version_id FROM {t} "
            "ORDER BY {pk}, chunk_no"
        ).format(pk=v.pk_list, t=v.embeddings)
    ).fetchall()
    out: dict[Key, list[Chunk]] = {}
    n = len(v.pk)
    for r in rows:
        out.setdefault(tuple(r[:n]), []).append(Chunk(*r[n:]))
    return out


def status(conn: Conn, name: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.vectorizer_status WHERE name = %s", (name,))
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def catalog_snapshot(conn: Conn, *, oids: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """autoembed's relations and functions, every user trigger, and the vectorizers.
    With ``oids``, an object dropped and created again counts as a change."""
    oid = "oid::int8" if oids else "0"
    queries = {
        "relations": f"SELECT {oid}, relname::text, relkind::text FROM pg_class "
        "WHERE relnamespace = 'autoembed'::regnamespace ORDER BY relname",
        "functions": f"SELECT {oid}, proname::text, pg_get_function_identity_arguments(oid), "
        "pg_get_function_result(oid), md5(prosrc) FROM pg_proc "
        "WHERE pronamespace = 'autoembed'::regnamespace ORDER BY 2, 3",
        "triggers": "SELECT tgrelid::regclass::text, tgname::text, tgfoid::regproc::text "
        "FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
        "vectorizers": "SELECT id, name FROM autoembed.vectorizer ORDER BY id",
    }
    return {k: [tuple(r) for r in conn.execute(q).fetchall()] for k, q in queries.items()}


DOCS_DDL = (
    "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, views int NOT NULL DEFAULT 0)"
)
DOCS_ROWS = (
    "INSERT INTO docs (id, title, body) "
    "SELECT i, 'Title ' || i, 'Body of document ' || i || ' about '"
    " || (ARRAY['apples', 'rivers', 'engines', 'poems', 'stars'])[i %% 5 + 1] "
    "FROM generate_series(%s::int, %s::int) AS i"
)


def make_docs(conn: Conn, n: int = 0) -> None:
    """Table ``docs`` (id, title, body, views) holding rows 1..n."""
    conn.execute(DOCS_DDL)
    add_docs(conn, 1, n)


def add_docs(conn: Conn, first: int, last: int) -> None:
    """Insert docs rows first..last in one statement."""
    conn.execute(DOCS_ROWS, (first, last))


@contextmanager
def scratch_database(pg_server: EmbeddedPostgres, label: str) -> Iterator[str]:
    """A database cloned from the template, for a module's shared fixtures;
    dropped on exit."""
    name = f"t{os.getpid()}_{label}_{uuid.uuid4().hex[:8]}"
    with connect(pg_server.url) as c:
        c.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    try:
        yield pg_server.url_for(name)
    finally:
        with connect(pg_server.url) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_texts(
    conn: Conn,
    texts: Sequence[str],
    name: str = "docs",
    *,
    categories: Sequence[str | None] | None = None,
    model: str = "hash:32",
    **options: Any,
) -> None:
    """Table ``name`` (id int PRIMARY KEY, body text, category text) holding
    ``texts`` as ids 1..n (with ``categories``), and a vectorizer of the same
    name on body."""
    table = sql.Identifier(name)
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text, category text)").format(table)
    )
    cats = list(categories) if categories is not None else [None] * len(texts)
    assert len(cats) == len(texts)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(table),
            [(i, t, c) for i, (t, c) in enumerate(zip(texts, cats, strict=True), 1)],
        )
    create_vectorizer(conn, name, ["body"], model=model, **options)


class Hit(NamedTuple):
    """One result row of autoembed.search, bm25_search or hybrid_search."""

    pk: dict[str, Any]
    chunk_no: int
    chunk: str
    score: float
    rank: int

    @property
    def id(self) -> Any:
        return self.pk["id"]


def call_search(conn: Conn, function: str, *args: Any, **named: Any) -> list[Hit]:
    """``SELECT * FROM autoembed.<function>(args..., option => value, ...)``."""
    params: list[sql.Composable] = [sql.Placeholder() for _ in args]
    params += [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in named]
    query = sql.SQL("SELECT pk, chunk_no, chunk, score, rank FROM autoembed.{}({})").format(
        sql.Identifier(function), sql.SQL(", ").join(params)
    )
    return [Hit(*r) for r in conn.execute(query, [*args, *named.values()]).fetchall()]


def ids(hits: Sequence[Hit]) -> list[Any]:
    return [h.id for h in hits]


def grant_tables(conn: Conn, role: str, name: str, tables: Sequence[str]) -> None:
    """GRANT SELECT on some of vectorizer ``name``'s tables (``embeddings``,
    ``postings``, ``stats``) to ``role``."""
    columns = sql.SQL(", ").join(sql.Identifier(f"{t}_table") for t in tables)
    row = conn.execute(
        sql.SQL("SELECT {} FROM autoembed.vectorizer WHERE name = %s").format(columns), (name,)
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    for table in row:
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.Identifier("autoembed", table), sql.Identifier(role)
            )
        )
