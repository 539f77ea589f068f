"""Security: search_path. Every autoembed function pins its search_path; look-alike
functions, operators and types planted in a schema ahead of pg_catalog on
every session's search_path never run; pgspot finds nothing in the SQL that
`autoembed install` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql

from autoembed import extension_sql
from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.install import install
from autoembed.migrations import _runner
from tests.conftest import drain
from tests.integration.security_helpers import Conn, query_vectors, roles

PINNED = "search_path=pg_catalog, pg_temp"


def test_every_autoembed_function_pins_its_search_path(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:8')")
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig FROM pg_proc AS p "
        "WHERE p.pronamespace = 'autoembed'::regnamespace"
    ).fetchall()
    definers = [r for r in rows if r[1]]
    # the generated trigger functions and source reader, and the query
    # cache's functions (067_query_embedding.sql)
    assert len(definers) >= 7, definers
    unpinned = [name for name, _definer, config in rows if PINNED not in (config or [])]
    assert unpinned == []
    # ... and autoembed made no SECURITY DEFINER function anywhere else (those
    # of other extensions, e.g. dblink's dblink_connect_u, are theirs)
    others = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p "
        "WHERE p.prosecdef AND p.pronamespace <> 'autoembed'::regnamespace "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_proc'::regclass "
        "                AND d.objid = p.oid AND d.deptype = 'e') "
        "AND NOT coalesce(p.proconfig, '{}') @> ARRAY[%s]",
        (PINNED,),
    ).fetchall()
    assert others == []


# Look-alikes of what autoembed's SQL and the worker's queries use, in schema
# evil, which every session of the database searches before pg_catalog. Each
# records its call in public.canary and then behaves like the real thing, so
# a call would not be hidden by an error.
TRAP = "INSERT INTO public.canary VALUES ('{name}')"
PLANTS = [
    # functions
    ("lower", "(t text) RETURNS text", "pg_catalog.lower(t)"),
    ("btrim", "(t text) RETURNS text", "pg_catalog.btrim(t)"),
    ("now", "() RETURNS timestamptz", "pg_catalog.now()"),
    ("format", "(f text, a text) RETURNS text", "pg_catalog.format(f, a)"),
    ("concat_ws", "(s text, a text) RETURNS text", "pg_catalog.concat_ws(s, a)"),
    (
        "jsonb_build_object",
        "(k text, v integer) RETURNS jsonb",
        "pg_catalog.jsonb_build_object(k, v)",
    ),
    ("jsonb_build_array", "(v jsonb) RETURNS jsonb", "pg_catalog.jsonb_build_array(v)"),
    ("jsonb_array_length", "(v jsonb) RETURNS integer", "pg_catalog.jsonb_array_length(v)"),
    ("jsonb_typeof", "(v jsonb) RETURNS text", "pg_catalog.jsonb_typeof(v)"),
    ("to_jsonb", "(v anyelement) RETURNS jsonb", "pg_catalog.to_jsonb(v)"),
    ("to_tsvector", "(c regconfig, t text) RETURNS tsvector", "pg_catalog.to_tsvector(c, t)"),
    ("cardinality", "(a anyarray) RETURNS integer", "pg_catalog.cardinality(a)"),
    (
        "array_position",
        "(a anycompatiblearray, e anycompatible) RETURNS integer",
        "pg_catalog.array_position(a, e)",
    ),
    ("ln", "(x double precision) RETURNS double precision", "pg_catalog.ln(x)"),
    (
        "make_interval",
        "(secs double precision) RETURNS interval",
        "pg_catalog.make_interval(secs => secs)",
    ),
    ("md5", "(t text) RETURNS text", "pg_catalog.md5(t)"),
    ("octet_length", "(t text) RETURNS integer", "pg_catalog.octet_length(t)"),
    ("pg_notify", "(c text, p text) RETURNS void", "pg_catalog.pg_notify(c, p)"),
    ("set_config", "(n text, v text, l boolean) RETURNS text", "pg_catalog.set_config(n, v, l)"),
    ("current_setting", "(n text, m boolean) RETURNS text", "pg_catalog.current_setting(n, m)"),
    (
        "pg_try_advisory_xact_lock",
        "(a integer, b integer) RETURNS boolean",
        "pg_catalog.pg_try_advisory_xact_lock(a, b)",
    ),
    ("hashtext", "(t text) RETURNS integer", "pg_catalog.hashtext(t)"),
    ("vector_dims", "(v public.vector) RETURNS integer", "public.vector_dims(v)"),
    (
        "cosine_distance",
        "(a public.vector, b public.vector) RETURNS double precision",
        "public.cosine_distance(a, b)",
    ),
]
OPERATORS = [
    # (name, left, right, real operator)
    ("=", "integer", "integer", "pg_catalog.="),
    ("=", "text", "text", "pg_catalog.="),
    ("=", "jsonb", "jsonb", "pg_catalog.="),
    ("<>", "text", "text", "pg_catalog.<>"),
    ("<", "timestamptz", "timestamptz", "pg_catalog.<"),
    ("@>", "jsonb", "jsonb", "pg_catalog.@>"),
    ("||", "text", "text", "pg_catalog.||"),
    ("->", "jsonb", "integer", "pg_catalog.->"),
    ("->>", "jsonb", "integer", "pg_catalog.->>"),
    ("<=>", "public.vector", "public.vector", "public.<=>"),
    ("+", "integer", "integer", "pg_catalog.+"),
    ("*", "double precision", "double precision", "pg_catalog.*"),
]


def _plant(conn: Conn) -> int:
    conn.execute("CREATE TABLE public.canary (called text)")
    conn.execute("GRANT INSERT ON public.canary TO PUBLIC")
    conn.execute("CREATE SCHEMA evil")
    conn.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
    n = 0
    for name, signature, real in PLANTS:
        conn.execute(
            f"CREATE FUNCTION evil.{name}{signature} LANGUAGE plpgsql AS $$ "
            f"BEGIN {TRAP.format(name=name)}; "
            + (
                f"PERFORM {real}; RETURN; END $$"
                if "void" in signature
                else f"RETURN {real}; END $$"
            )
        )
        n += 1
    for i, (op, left, right, real) in enumerate(OPERATORS):
        fn = f"evil.op_{i}"
        conn.execute(
            f"CREATE FUNCTION {fn}(a {left}, b {right}) RETURNS {_result_type(op, left)} "
            f"LANGUAGE plpgsql AS $$ "
            f"BEGIN {TRAP.format(name=op)}; RETURN a OPERATOR({real}) b; END $$"
        )
        conn.execute(
            f"CREATE OPERATOR evil.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {fn})"
        )
        n += 1
    # A look-alike type: code that named "vector" unqualified would get this.
    conn.execute("CREATE DOMAIN evil.vector AS text CHECK (public.evil_type_used(VALUE))")
    return n


def _result_type(op: str, left: str) -> str:
    return {
        "=": "boolean",
        "<>": "boolean",
        "<": "boolean",
        "@>": "boolean",
        "||": "text",
        "->": "jsonb",
        "->>": "text",
        "<=>": "double precision",
    }.get(op, left)


def test_planted_look_alikes_never_run(conn: Conn, db_url: str) -> None:
    conn.execute(
        "CREATE FUNCTION public.evil_type_used(t text) RETURNS boolean LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO public.canary VALUES ('vector type'); RETURN true; END $$"
    )
    planted = _plant(conn)
    assert planted == len(PLANTS) + len(OPERATORS)
    db = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{db}" SET search_path = evil, pg_catalog, public')

    # The traps work: a session that uses them unqualified is caught.
    with connect(db_url) as probe:
        probe.execute("SELECT lower('X'), 1 = 1, '{}'::jsonb @> '{}'")
    assert conn.execute("SELECT count(*) FROM public.canary").fetchone() == (3,)
    conn.execute("TRUNCATE public.canary")

    # Every session below (this one, and the worker's) searches evil first.
    with connect(db_url) as c:
        assert c.execute("SHOW search_path").fetchone() == ("evil, pg_catalog, public",)
        q = "OPERATOR(pg_catalog.=)"
        c.execute("CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text)")
        c.execute(
            "INSERT INTO public.docs SELECT i, 'title ' || i, 'apples and pears number ' || i "
            "FROM generate_series(1, 40) AS i"
        )
        c.execute(
            "SELECT autoembed.create_vectorizer('public.docs', ARRAY['title', 'body'], "
            "model => 'hash:64', chunk_tokens => 16, chunk_overlap => 2)"
        )
        drain(db_url)
        c.execute(f"UPDATE public.docs SET body = 'bananas' WHERE id {q} 3")
        c.execute(f"UPDATE public.docs SET id = 100 WHERE id {q} 4")
        c.execute(f"DELETE FROM public.docs WHERE id {q} 5")
        drain(db_url)
        (e,) = query_vectors(["apples and pears"])
        for call in (
            "SELECT * FROM autoembed.search('docs', %(e)s, 5)",
            "SELECT * FROM autoembed.search('docs', %(e)s, 5, chunks => true)",
            "SELECT * FROM autoembed.search('docs', %(e)s, 5, filter => '{\"id\": 7}')",
            "SELECT * FROM autoembed.bm25_search('docs', 'apples pears', 5)",
            "SELECT * FROM autoembed.hybrid_search('docs', 'apples', %(e)s, 5)",
            "SELECT * FROM autoembed.hybrid_search('docs', 'apples', %(e)s, 5, fusion => 'rrf')",
            "SELECT * FROM autoembed.vectorizer_status",
            "SELECT autoembed.compact_stats('docs')",
            "SELECT autoembed.set_bm25('docs', 1.0, 0.6)",
            "SELECT autoembed.pause('docs')",
            "SELECT autoembed.resume('docs')",
            "SELECT autoembed.retry_failed('docs')",
        ):
            rows = c.execute(call, {"e": e}).fetchall()
            assert rows, call
        c.execute("TRUNCATE public.docs")
        c.execute("SELECT autoembed.drop_vectorizer('docs')")

    called = conn.execute("SELECT called, count(*) FROM public.canary GROUP BY 1").fetchall()
    assert called == []


def test_install_refuses_a_schema_someone_else_made(pg_server: PostgresServer, conn: Conn) -> None:
    """A role that created the schema autoembed first would own it, and could
    replace autoembed's functions later: install refuses to use it."""
    with roles(conn, "squatter") as (r,):
        conn.execute("CREATE DATABASE squat_target")
        try:
            url = pg_server.url_for("squat_target")
            with connect(url) as c:
                c.execute(
                    sql.SQL("CREATE SCHEMA autoembed AUTHORIZATION {}").format(sql.Identifier(r))
                )
            with pytest.raises(RuntimeError, match="belongs to role"):
                install(url)
            with connect(url) as c:
                assert c.execute("SELECT to_regclass('autoembed.vectorizer')").fetchone() == (None,)
        finally:
            conn.execute("DROP DATABASE squat_target WITH (FORCE)")


def _install_script() -> str:
    """What a fresh `autoembed install` runs, as one script: pgvector, the
    schema, then every file under the search_path the installer pins for it
    (migrations/_runner.py)."""
    parts = [
        "CREATE EXTENSION IF NOT EXISTS vector;",
        "CREATE SCHEMA autoembed;",
        _runner.SEARCH_PATH_SQL,
        extension_sql.render(extension_sql.incremental("0001_catalog.sql"), "public"),
    ]
    parts += [
        extension_sql.render(sql, "public") for _name, sql in extension_sql.idempotent_files()
    ]
    return "\n".join(parts)


def test_pgspot_finds_nothing(tmp_path: Path) -> None:
    script = tmp_path / "install.sql"
    script.write_text(_install_script(), encoding="utf-8")
    pgspot = Path(sys.executable).with_name("pgspot")
    # No suppressions. (Read from stdin: pgspot's per-file counts ignore
    # what it finds in --append mode.)
    done = subprocess.run(
        [str(pgspot)],
        input=script.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.strip().endswith("Errors: 0 Warnings: 0 Unknown: 0"), out


def test_pgspot_would_catch_an_unpinned_function(tmp_path: Path) -> None:
    bad = _install_script() + (
        "\nCREATE FUNCTION autoembed.oops() RETURNS bool LANGUAGE sql SECURITY DEFINER "
        "AS $$ SELECT lower('a') = 'a' $$;\n"
    )
    pgspot = Path(sys.executable).with_name("pgspot")
    done = subprocess.run([str(pgspot)], input=bad, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "PS003" in done.stdout
