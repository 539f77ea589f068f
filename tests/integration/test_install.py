"""``autoembed install``: idempotent, safe to run twice at once, with its own
Alembic version table in the autoembed schema."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.install import install
from tests.integration.helpers import Conn, catalog_snapshot

_counter = itertools.count()
CLI = Path(sys.executable).parent / "autoembed"


@pytest.fixture
def empty_db(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database without autoembed (or pgvector), dropped after the test."""
    name = sql.Identifier(db := f"install_{os.getpid()}_{next(_counter)}")
    with connect(pg_server.url) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(name))
    yield pg_server.url_for(db)
    with connect(pg_server.url) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def installed(conn: Conn, *, oids: bool = True) -> dict[str, Any]:
    """The catalog, plus the version row, the models and the pgvector extension."""
    snap: dict[str, Any] = catalog_snapshot(conn, oids=oids)
    snap["alembic_version"] = conn.execute(
        "SELECT version_num FROM autoembed.alembic_version"
    ).fetchall()
    snap["models"] = conn.execute("SELECT * FROM autoembed.model ORDER BY name").fetchall()
    snap["extensions"] = conn.execute(
        "SELECT extname FROM pg_extension WHERE extname = 'vector'"
    ).fetchall()
    return snap


def test_second_install_is_a_no_op(empty_db: str) -> None:
    first = install(empty_db)
    with connect(empty_db) as conn:
        before = installed(conn)
    assert before["functions"]
    assert ("vectorizer_status", "v") in [r[1:] for r in before["relations"]]

    second = install(empty_db)

    with connect(empty_db) as conn:
        assert installed(conn) == before
    assert second == first


def test_two_installs_at_once_both_succeed(empty_db: str, template_url: str) -> None:
    barrier = threading.Barrier(2)
    results: list[str | BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(install(empty_db))
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(results) == 2
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results[0] == results[1]
    with connect(empty_db) as conn, connect(template_url) as reference:
        assert installed(conn, oids=False) == installed(reference, oids=False)


def test_two_install_commands_at_once_both_succeed(empty_db: str, template_url: str) -> None:
    procs = [
        subprocess.Popen(
            [str(CLI), "install", "--db", empty_db],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _out, err in outputs]
    with connect(empty_db) as conn, connect(template_url) as reference:
        assert installed(conn, oids=False) == installed(reference, oids=False)


def test_version_table_is_autoembed_alembic_version(empty_db: str) -> None:
    with connect(empty_db) as conn:
        # The application's own Alembic history must stay untouched.
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_rev_1')")

    rev = install(empty_db)

    with connect(empty_db) as conn:
        assert conn.execute("SELECT version_num FROM autoembed.alembic_version").fetchall() == [
            (rev,)
        ]
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("app_rev_1",)
        ]
        schemas = conn.execute(
            "SELECT relnamespace::regnamespace::text FROM pg_class "
            "WHERE relname = 'alembic_version' ORDER BY 1"
        ).fetchall()
        assert schemas == [("autoembed",), ("public",)]


def test_cli_install_prints_the_revision(empty_db: str) -> None:
    done = subprocess.run(
        [str(CLI), "install", "--db", empty_db],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with connect(empty_db) as conn:
        row = conn.execute("SELECT version_num FROM autoembed.alembic_version").fetchone()
    assert row is not None
    assert row[0] in done.stdout


def test_install_gives_vectorizers_of_an_older_version_their_source_reader(
    conn: Conn, db_url: str
) -> None:
    """Vectorizers created before workers read the source through a reader
    function get one from the next install, owned by their creator."""
    from tests.conftest import drain

    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'an older vectorizer')")
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:8')")
    reader = conn.execute(
        "SELECT format('autoembed.%I(jsonb, boolean)', autoembed._source_function(v)), "
        "(SELECT proowner FROM pg_proc WHERE oid = format('autoembed.%I()', v.sync_function)"
        "::regprocedure) FROM autoembed.vectorizer AS v"
    ).fetchone()
    assert reader is not None
    conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(reader[0])))

    install(db_url)

    row = conn.execute(
        "SELECT proowner FROM pg_proc WHERE oid = to_regprocedure(%s)", (reader[0],)
    ).fetchone()
    assert row == (reader[1],)
    drain(db_url)
    assert conn.execute(
        "SELECT embedded_rows, failed FROM autoembed.vectorizer_status WHERE name = 'docs'"
    ).fetchone() == (1, 0)
