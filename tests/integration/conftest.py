"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.worker import queue
from tests.conftest import create_test_role, drop_test_role


@pytest.fixture
def searcher(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role with no privilege on the source tables or autoembed's
    per-vectorizer tables unless a test grants it; dropped after the test."""
    role = f"searcher_{uuid.uuid4().hex[:12]}"
    create_test_role(conn, role)
    yield role
    drop_test_role(conn, role)


@pytest.fixture
def worker(db_url: str) -> Iterator[Callable[[], psycopg.Connection[Any]]]:
    """Opens worker connections (as the queue tests' workers: autocommit,
    jsonb keys loaded as text), closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_worker() -> psycopg.Connection[Any]:
        c = connect(db_url)
        queue.prepare(c)
        opened.append(c)
        return c

    yield open_worker
    for c in opened:
        c.close()
