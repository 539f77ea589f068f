"""Security: 200 hostile names for schemas, tables, columns and vectorizers go
through create -> embed -> semantic, BM25 and hybrid search -> drop. Each
works, or fails with a clear error; no injected SQL ever runs (it would drop
or write to the canary table)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from tests.conftest import drain
from tests.integration.security_helpers import Conn, query_vectors

# Payloads that would drop or fill the canary table if they reached SQL unquoted.
INJECTIONS = [
    'x"; DROP TABLE public.canary; --',
    "x'; DROP TABLE public.canary; --",
    'a") ; INSERT INTO public.canary VALUES (1); --',
    "a'); INSERT INTO public.canary VALUES (1); --",
    "$$; DROP TABLE public.canary; $$",
    "$body$ DROP TABLE public.canary $body$",
    "%I %s %L %1$s",
    "x\\'; DROP TABLE public.canary; --",
    "/* */ DROP TABLE public.canary",
    "-- comment",
]
SHAPES = [
    "MixedCase",
    "with space",
    "semi;colon",
    'dou"ble',
    "sin'gle",
    "dollar$sign",
    "back\\slash",
    "ünïcödé",
    "日本語の表",
    "emoji 🦀",
    "tab\there",
    "select",
    "from",
    "pk",
    "document",
    "keys",
    "lock_rows",
    "id",
    "e",
    "s",
    "k",
    "q",
    "a" * 63,
    "é" * 31 + "a",  # 63 bytes
    "ab" * 31,  # 62 bytes: a vectorizer name whose derived names exceed 63 bytes
    "x" * 40 + "_embeddings",
]
NAMES = INJECTIONS + SHAPES


def _cases() -> list[dict[str, str]]:
    """200 combinations: each name in each role (schema, table, key column,
    text column, vectorizer name), mixed with the others."""
    cases = []
    n = len(NAMES)
    i = 0
    while len(cases) < 200:
        cases.append(
            {
                "schema": NAMES[i % n],
                "table": NAMES[(i * 7 + 1) % n],
                "key": NAMES[(i * 3 + 2) % n],
                "text": NAMES[(i * 5 + 3) % n],
                "name": NAMES[(i * 11 + 4) % n] + f" #{i}",
            }
        )
        i += 1
    return cases


def _fit(name: str) -> str:
    """At most 63 bytes, cut between characters."""
    while len(name.encode()) > 63:
        name = name[:-1]
    return name


def _table(i: int, case: dict[str, str]) -> sql.Identifier:
    return sql.Identifier(_fit(f"s{i} {case['schema']}"), case["table"])


def _make(conn: Conn, i: int, case: dict[str, str]) -> sql.Identifier:
    table = _table(i, case)
    if case["key"] == case["text"]:
        case["text"] = _fit(case["text"] + " body")
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(_fit(f"s{i} {case['schema']}"))))
    conn.execute(
        sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} text)").format(
            table, sql.Identifier(case["key"]), sql.Identifier(case["text"])
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} VALUES (1, {}), (2, {}), (3, {})").format(
            table,
            sql.Literal(f"apples {case['name']}"),
            sql.Literal("pears and plums"),
            sql.Literal(f"apples and pears {case['table']}"),
        )
    )
    return table


def test_200_hostile_identifiers(conn: Conn, db_url: str) -> None:
    conn.execute("CREATE TABLE public.canary (n int)")
    cases = _cases()
    names = [sql.Identifier(c["name"]) for c in cases]
    assert len(cases) == 200
    assert len({c["name"] for c in cases}) == 200

    created: list[tuple[int, dict[str, str]]] = []
    refused: list[tuple[dict[str, str], str]] = []
    for i, case in enumerate(cases):
        table = _make(conn, i, case)
        try:
            conn.execute(
                "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY[%s], name => %s, "
                "model => 'hash:16', index => 'none')",
                (table.as_string(conn), case["text"], case["name"]),
            )
        except psycopg.errors.Error as e:
            refused.append((case, str(e)))
            continue
        created.append((i, case))
    # Nothing here is unreasonable: every case works.
    assert refused == []
    assert len(names) == len(created)

    drain(db_url, batch_size=64)
    status = conn.execute(
        "SELECT name, embedded_rows, pending, failed, error FROM autoembed.vectorizer_status"
    ).fetchall()
    assert len(status) == 200
    assert [s for s in status if s[1:] != (3, 0, 0, None)] == []

    (e,) = query_vectors(["apples and pears"], dims=16)
    for _i, case in created:
        name = case["name"]
        got: dict[str, Any] = {}
        for method, call, args in (
            ("semantic", "SELECT pk FROM autoembed.search(%s, %s, 3)", (name, e)),
            ("bm25", "SELECT pk FROM autoembed.bm25_search(%s, 'apples pears', 3)", (name,)),
            ("hybrid", "SELECT pk FROM autoembed.hybrid_search(%s, 'apples', %s, 3)", (name, e)),
        ):
            got[method] = [r[0] for r in conn.execute(call, args)]
        key = case["key"]
        for method, pks in got.items():
            assert len(pks) == 3, (name, method, pks)
            assert {p[key] for p in pks} == {1, 2, 3}, (name, method, pks)
        assert got["bm25"][0] == {key: 3}, name

    # Changes still flow: update, key change, delete, truncate.
    for i, case in created[:20]:
        table = _table(i, case)
        key, text = sql.Identifier(case["key"]), sql.Identifier(case["text"])
        conn.execute(sql.SQL("UPDATE {} SET {} = 'kiwi' WHERE {} = 1").format(table, text, key))
        conn.execute(sql.SQL("UPDATE {} SET {} = 20 WHERE {} = 2").format(table, key, key))
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = 3").format(table, key))
    drain(db_url)
    for _i, case in created[:20]:
        rows = conn.execute(
            "SELECT pk FROM autoembed.bm25_search(%s, 'kiwi', 5)", (case["name"],)
        ).fetchall()
        assert rows == [({case["key"]: 1},)], case["name"]

    for _i, case in created:
        conn.execute("SELECT autoembed.drop_vectorizer(%s)", (case["name"],))
    left = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'autoembed'::regnamespace "
        "AND relname NOT IN ('model', 'model_version', 'vectorizer', 'vectorizer_version', "
        "'query_cache', 'query_request', 'alembic_version', 'vectorizer_status', "
        "'vectorizer_versions') AND relkind IN ('r', 'p', 'v')"
    ).fetchone()
    assert left == (0,)
    assert conn.execute("SELECT count(*) FROM public.canary").fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'autoembed%'"
    ).fetchone() == (0,)


def test_names_that_cannot_work_fail_clearly(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.canary (n int)")
    conn.execute('CREATE TABLE "t;x" (id int PRIMARY KEY, body text)')
    create = "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY['body'], model => 'hash:8')"
    with _raises(psycopg.errors.InvalidName, "invalid name syntax"), conn.transaction():
        conn.execute(create, ("'t;x'; DROP TABLE public.canary",))
    with _raises(psycopg.errors.UndefinedTable, "does not exist"), conn.transaction():
        conn.execute(create, ("no_such_table",))
    with _raises(psycopg.errors.UndefinedColumn, 'column "body; DROP'), conn.transaction():
        conn.execute(
            "SELECT autoembed.create_vectorizer('\"t;x\"', "
            "ARRAY['body; DROP TABLE public.canary'], model => 'hash:8')"
        )
    with _raises(psycopg.errors.InvalidParameterValue, "must not be empty"), conn.transaction():
        conn.execute(
            "SELECT autoembed.create_vectorizer('\"t;x\"', ARRAY['body'], name => '  ', "
            "model => 'hash:8')"
        )
    with _raises(psycopg.errors.UndefinedObject, "no vectorizer named"), conn.transaction():
        conn.execute("SELECT autoembed.drop_vectorizer('x''; DROP TABLE public.canary; --')")
    assert conn.execute("SELECT count(*) FROM public.canary").fetchone() == (0,)


class _raises:
    def __init__(self, error: type[BaseException], words: str) -> None:
        self.error, self.words = error, words

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        assert kind is not None, f"expected {self.error.__name__}"
        assert issubclass(kind, self.error), value
        assert self.words in str(value), value
        return True
