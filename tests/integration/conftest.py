"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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
