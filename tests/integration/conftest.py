"""Fixtures shared by the integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql


@pytest.fixture
def searcher(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role with no privilege on the source tables or autoembed's
    per-vectorizer tables unless a test grants it; dropped after the test."""
    role = f"searcher_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    yield role
    conn.execute("RESET ROLE")
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def password_for(conn: psycopg.Connection[Any]) -> Iterator[Callable[[str], None]]:
    """password_for(role): make pg_hba.conf ask that role (only) for a password
    on the unix socket; undone after the test."""
    row = conn.execute("SHOW hba_file").fetchone()
    assert row is not None
    hba = Path(row[0])
    original = hba.read_text()

    def add(role: str) -> None:
        hba.write_text(f"local all {role} scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)

    yield add
    hba.write_text(original)
    conn.execute("SELECT pg_reload_conf()")
