"""create_vectorizer and drop_vectorizer: bad input gets a clear error and
leaves nothing behind; odd but valid input works end to end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from tests.conftest import TEMPLATE, drain
from tests.integration.helpers import (
    Conn,
    add_docs,
    catalog_snapshot,
    chunks,
    count,
    create_vectorizer,
    make_docs,
    queued_keys,
    status,
    vectorizer,
)


@pytest.fixture(scope="module")
def shared_db(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    """One database for the tests that should create nothing: docs (3 rows), a
    table without a primary key, one with non-text columns, and a view."""
    db = f"create_vectorizer_{os.getpid()}"
    name = sql.Identifier(db)
    with connect(pg_server.url) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(name, sql.Identifier(TEMPLATE)))
    url = pg_server.url_for(db)
    with connect(url) as c:
        make_docs(c, 3)
        c.execute("CREATE TABLE nopk (body text)")
        c.execute("CREATE TABLE typed (id int PRIMARY KEY, n int, j jsonb, body text)")
        c.execute("CREATE VIEW docs_view AS SELECT * FROM docs")
    yield url
    with connect(pg_server.url) as c:
        c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))


@pytest.fixture
def tables(shared_db: str) -> Iterator[Conn]:
    """A connection to shared_db; any vectorizer a test made is dropped after it."""
    with connect(shared_db) as c:
        yield c
        c.execute("SELECT autoembed.drop_vectorizer(name) FROM autoembed.vectorizer")


# (source, columns, options, error class, words the message must contain)
Case = tuple[str | None, list[Any] | None, dict[str, Any], type[psycopg.Error], list[str]]
BAD: dict[str, Case] = {
    "table without primary key": (
        "nopk",
        ["body"],
        {},
        errors.InvalidTableDefinition,
        ["nopk", "no primary key"],
    ),
    "missing column": (
        "docs",
        ["body", "nope"],
        {},
        errors.UndefinedColumn,
        ['"nope"', "does not exist"],
    ),
    "int column": ("typed", ["body", "n"], {}, errors.DatatypeMismatch, ['"n"', "integer"]),
    "jsonb column": ("typed", ["j"], {}, errors.DatatypeMismatch, ['"j"', "jsonb"]),
    "empty columns": ("docs", [], {}, errors.InvalidParameterValue, ["columns"]),
    "NULL columns": ("docs", None, {}, errors.InvalidParameterValue, ["columns"]),
    "NULL in columns": ("docs", ["body", None], {}, errors.NullValueNotAllowed, ["NULL"]),
    "duplicate column": (
        "docs",
        ["body", "title", "body"],
        {},
        errors.InvalidParameterValue,
        ["body", "twice"],
    ),
    "unknown model": (
        "docs",
        ["body"],
        {"model": "acme/unknown-model"},
        errors.UndefinedObject,
        ["unknown model", "acme/unknown-model"],
    ),
    "registered model, wrong dimensions": (
        "docs",
        ["body"],
        {"model": "all-MiniLM-L6-v2", "dimensions": 512},
        errors.InvalidParameterValue,
        ["384", "512"],
    ),
    "hash model, wrong dimensions": (
        "docs",
        ["body"],
        {"model": "hash:16", "dimensions": 32},
        errors.InvalidParameterValue,
        ["16", "32"],
    ),
    "chunk_overlap half of chunk_tokens": (
        "docs",
        ["body"],
        {"chunk_tokens": 64, "chunk_overlap": 32},
        errors.InvalidParameterValue,
        ["chunk_overlap", "32"],
    ),
    "negative chunk_overlap": (
        "docs",
        ["body"],
        {"chunk_overlap": -1},
        errors.InvalidParameterValue,
        ["chunk_overlap"],
    ),
    "chunk_tokens over the model's limit": (
        "docs",
        ["body"],
        {"chunk_tokens": 129},
        errors.InvalidParameterValue,
        ["chunk_tokens", "128", "129"],
    ),
    "chunk_tokens over MiniLM's limit": (
        "docs",
        ["body"],
        {"model": "all-MiniLM-L6-v2", "chunk_tokens": 257},
        errors.InvalidParameterValue,
        ["chunk_tokens", "256", "257"],
    ),
    "bad distance": (
        "docs",
        ["body"],
        {"distance": "manhattan"},
        errors.InvalidParameterValue,
        ["distance", "manhattan"],
    ),
    "bad index": (
        "docs",
        ["body"],
        {"index": "ivfflat"},
        errors.InvalidParameterValue,
        ["index", "ivfflat"],
    ),
    "a view": ("docs_view", ["body"], {}, errors.WrongObjectType, ["docs_view", "not a table"]),
    "NULL source": (None, ["body"], {}, errors.NullValueNotAllowed, ["source"]),
    "blank name": ("docs", ["body"], {"name": "  "}, errors.InvalidParameterValue, ["name"]),
    "autoembed's own table": (
        "autoembed.vectorizer",
        ["name"],
        {},
        errors.InvalidParameterValue,
        ["autoembed"],
    ),
}


def rejected(
    conn: Conn,
    source: str | None,
    columns: list[Any] | None,
    error: type[psycopg.Error],
    words: list[str],
    **options: Any,
) -> psycopg.Error:
    """create_vectorizer fails with ``error`` naming ``words``, and changes nothing."""
    before = catalog_snapshot(conn)
    with pytest.raises(error) as info:
        create_vectorizer(conn, source, columns, **options)
    message = str(info.value)
    for word in words:
        assert word in message
    assert catalog_snapshot(conn) == before
    return info.value


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_rejected_and_creates_nothing(tables: Conn, case: str) -> None:
    source, columns, options, error, words = BAD[case]
    rejected(tables, source, columns, error, words, **options)


def test_unknown_model_hint_mentions_dimensions(tables: Conn) -> None:
    e = rejected(tables, "docs", ["body"], errors.UndefinedObject, ["acme/x"], model="acme/x")
    assert "dimensions" in (e.diag.message_hint or "")


def test_unknown_model_with_dimensions_is_accepted(tables: Conn) -> None:
    create_vectorizer(tables, "docs", ["body"], model="acme/x", dimensions=24)
    row = tables.execute("SELECT model, dimensions FROM autoembed.vectorizer_version").fetchone()
    assert row == ("acme/x", 24)


def test_duplicate_default_name_is_rejected_with_a_hint(tables: Conn) -> None:
    create_vectorizer(tables, "docs", ["body"])
    e = rejected(tables, "docs", ["title"], errors.DuplicateObject, ['"docs"', "already exists"])
    assert "name =>" in (e.diag.message_hint or "")


def test_duplicate_explicit_name_is_rejected(tables: Conn) -> None:
    create_vectorizer(tables, "docs", ["body"], name="shared")
    rejected(
        tables,
        "typed",
        ["body"],
        errors.DuplicateObject,
        ['"shared"', "already exists"],
        name="shared",
    )


# ---------------------------------------------------------------- unknown names

HOSTILE = 'nope"; DROP TABLE docs; --'

CALLS = {
    "drop_vectorizer": "SELECT autoembed.drop_vectorizer(%s)",
    "pause": "SELECT autoembed.pause(%s)",
    "resume": "SELECT autoembed.resume(%s)",
    "retry_failed": "SELECT autoembed.retry_failed(%s)",
    "search": "SELECT * FROM autoembed.search(%s, '[1,0,0]'::vector, 5)",
}


@pytest.mark.parametrize("call", CALLS)
def test_unknown_vectorizer_name_is_a_clear_error(tables: Conn, call: str) -> None:
    create_vectorizer(tables, "docs", ["body"])
    before = catalog_snapshot(tables)
    with pytest.raises(errors.UndefinedObject) as info:
        tables.execute(CALLS[call], (HOSTILE,))
    assert f'no vectorizer named "{HOSTILE}"' in str(info.value)
    assert catalog_snapshot(tables) == before
    assert count(tables, sql.Identifier("docs")) == 3


# ---------------------------------------------------------------- empty text


def test_null_empty_and_blank_text_gives_no_chunks_and_counts_as_done(
    conn: Conn, db_url: str
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "INSERT INTO notes VALUES (1, NULL, NULL), (2, '', ''), (3, '  ', E' \\n\\t'), "
        "(4, NULL, '   '), (5, 'a real title', NULL)"
    )
    create_vectorizer(conn, "notes", ["title", "body"])

    stats = drain(db_url, batch_size=500)

    assert stats.failed == 0
    assert sorted(chunks(conn, "notes")) == [(5,)]
    assert queued_keys(conn, "notes") == []
    s = status(conn, "notes")
    assert (s["pending"], s["failed"], s["in_flight"], s["embedded_rows"]) == (0, 0, 0, 1)


def test_text_updated_to_null_loses_its_chunks(conn: Conn, db_url: str) -> None:
    make_docs(conn, 3)
    create_vectorizer(conn, "docs", ["title", "body"])
    drain(db_url, batch_size=500)
    conn.execute("UPDATE docs SET title = NULL, body = '' WHERE id = 2")
    stats = drain(db_url, batch_size=500)
    assert stats.failed == 0
    assert sorted(chunks(conn, "docs")) == [(1,), (3,)]
    assert queued_keys(conn, "docs") == []


# ---------------------------------------------------------------- drop_vectorizer


def test_drop_vectorizer_removes_everything_it_created(conn: Conn, db_url: str) -> None:
    make_docs(conn, 5)
    before = catalog_snapshot(conn)
    create_vectorizer(conn, "docs", ["title", "body"])
    drain(db_url, batch_size=500)
    add_docs(conn, 6, 8)  # something left in the inbox
    assert catalog_snapshot(conn) != before

    conn.execute("SELECT autoembed.drop_vectorizer('docs')")

    assert catalog_snapshot(conn) == before


def test_source_table_works_after_drop_vectorizer(conn: Conn) -> None:
    make_docs(conn, 5)
    create_vectorizer(conn, "docs", ["title", "body"])
    conn.execute("SELECT autoembed.drop_vectorizer('docs')")

    add_docs(conn, 6, 8)
    with conn.cursor().copy("COPY docs (id, body) FROM STDIN") as copy:
        copy.write_row((9, "nine"))
    conn.execute("UPDATE docs SET body = 'changed', id = id + 100 WHERE id = 1")
    conn.execute("DELETE FROM docs WHERE id = 2")
    ids = [r[0] for r in conn.execute("SELECT id FROM docs ORDER BY id")]
    assert ids == [3, 4, 5, 6, 7, 8, 9, 101]
    conn.execute("TRUNCATE docs")
    assert count(conn, sql.Identifier("docs")) == 0


def test_drop_vectorizer_after_its_source_table_is_dropped(conn: Conn) -> None:
    before = catalog_snapshot(conn)
    make_docs(conn, 2)
    create_vectorizer(conn, "docs", ["body"])
    conn.execute("DROP TABLE docs")
    conn.execute("SELECT autoembed.drop_vectorizer('docs')")
    assert catalog_snapshot(conn) == before


# ---------------------------------------------------------------- odd names


def test_mixed_case_schema_table_and_columns_with_spaces(conn: Conn, db_url: str) -> None:
    conn.execute('CREATE SCHEMA "Odd Schema"')
    conn.execute(
        'CREATE TABLE "Odd Schema"."My Docs" ('
        '"Doc Id" int PRIMARY KEY, "Body Text" text, "Title; DROP TABLE x" text, "N" int)'
    )
    conn.execute(
        'INSERT INTO "Odd Schema"."My Docs" VALUES '
        "(1, 'first body', 'first title', 0), (2, 'second body', NULL, 0)"
    )
    before = catalog_snapshot(conn)
    create_vectorizer(conn, '"Odd Schema"."My Docs"', ["Body Text", "Title; DROP TABLE x"])
    drain(db_url, batch_size=500)

    got = chunks(conn, "My Docs")
    assert sorted(got) == [(1,), (2,)]
    assert "first title" in got[(1,)][0].chunk
    conn.execute('UPDATE "Odd Schema"."My Docs" SET "N" = 1')
    assert queued_keys(conn, "My Docs") == []
    conn.execute('UPDATE "Odd Schema"."My Docs" SET "Body Text" = \'new\' WHERE "Doc Id" = 2')
    conn.execute('DELETE FROM "Odd Schema"."My Docs" WHERE "Doc Id" = 1')
    drain(db_url, batch_size=500)
    assert chunks(conn, "My Docs")[(2,)][0].chunk == "new"
    query = [1.0] + [0.0] * 15
    hits = conn.execute(
        "SELECT pk FROM autoembed.search('My Docs', %s::vector, 5)", (query,)
    ).fetchall()
    assert hits == [({"Doc Id": 2},)]

    conn.execute("SELECT autoembed.drop_vectorizer('My Docs')")
    assert catalog_snapshot(conn) == before


@pytest.mark.parametrize("pk", ["seq", "chunk"])  # inbox and queue; embeddings
def test_primary_key_named_like_an_internal_column_is_refused(conn: Conn, pk: str) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE events ({} int PRIMARY KEY, body text)").format(sql.Identifier(pk))
    )
    before = catalog_snapshot(conn)
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match=f'column named "{pk}"'):
        create_vectorizer(conn, "events", ["body"])
    assert catalog_snapshot(conn) == before


def derived_names(conn: Conn, name: str) -> list[str]:
    """The names of everything a vectorizer made in schema autoembed: its
    tables (and every version's), the view, their indexes, and its trigger
    functions."""
    vid = vectorizer(conn, name).id
    rows = conn.execute(
        "WITH v AS (SELECT * FROM autoembed.vectorizer WHERE id = %s), "
        "tables AS (SELECT c.oid, c.relname FROM pg_class AS c, v "
        "           WHERE c.relnamespace = 'autoembed'::regnamespace AND c.relname IN "
        "                 (v.inbox_table, v.embeddings_table) "
        "           UNION ALL "
        "           SELECT c.oid, c.relname FROM pg_class AS c, "
        "                  autoembed.vectorizer_version AS ver, v "
        "           WHERE ver.vectorizer_id = v.id AND c.relnamespace = 'autoembed'::regnamespace "
        "             AND c.relname IN (ver.queue_table, ver.embeddings_table, "
        "                               ver.postings_table, ver.stats_table)) "
        "SELECT relname::text FROM tables "
        "UNION ALL SELECT i.indexrelid::regclass::text FROM pg_index AS i "
        "          JOIN tables AS t ON t.oid = i.indrelid "
        "UNION ALL SELECT p.proname::text FROM pg_proc AS p, v "
        "          WHERE p.pronamespace = 'autoembed'::regnamespace "
        "            AND p.proname IN (v.sync_function, "
        "                              autoembed._derived_name(v.sync_function, '_row'))",
        (vid,),
    ).fetchall()
    return [r[0].removeprefix("autoembed.").strip('"') for r in rows]


def test_long_vectorizer_names_get_distinct_names_within_63_bytes(conn: Conn, db_url: str) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    make_docs(conn, 4)
    prefix = "Long Name " + "x" * 50  # 60 bytes
    long_names = [prefix + " one", prefix + " two", "é" * 40]  # 64, 64 and 80 bytes
    for name in long_names:
        create_vectorizer(conn, "docs", ["body"], name=name)
        conn.execute("SELECT autoembed.set_model(%s, 'hash:24', activate => 'manual')", (name,))

    names = {n: derived_names(conn, n) for n in long_names}
    for name, derived in names.items():
        # the inbox, the view, 2 functions; per version 4 tables and 8 indexes
        # (2 primary keys, the queue's queued_at, chunk_id, hnsw, 2 postings, stats)
        assert len(derived) == 4 + 2 * 12, (name, derived)
        assert all(len(d.encode()) <= 63 for d in derived), derived
    everything = [d for derived in names.values() for d in derived]
    assert len(set(everything)) == len(everything)
    assert not [n for n in notices if "truncated" in n]

    drain(db_url, batch_size=500)
    for name in long_names:
        assert sorted(chunks(conn, name)) == [(1,), (2,), (3,), (4,)]
    conn.execute("SELECT autoembed.drop_vectorizer(%s)", (long_names[0],))
    assert sorted(chunks(conn, long_names[1])) == [(1,), (2,), (3,), (4,)]
