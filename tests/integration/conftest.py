"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import create_test_role, drop_test_role


@pytest.fixture
def searcher(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role with no privilege on the source tables or autoembed's
    per-vectorizer tables unless a test grants it; dropped after the test."""
    role = f"searcher_{uuid.uuid4().hex[:12]}"
    create_test_role(conn, role)
    yield role
    drop_test_role(conn, role)
