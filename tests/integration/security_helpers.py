"""Roles and connections for the security tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from autoembed.db import connect
from autoembed.worker.embedders import load_embedder
from tests.conftest import create_test_role, drop_test_role

Conn = psycopg.Connection[Any]


def url_as(db_url: str, role: str) -> str:
    """The same database, logging in as ``role`` (the embedded server trusts
    local connections)."""
    return make_conninfo(db_url, user=role)


@contextmanager
def roles(conn: Conn, *prefixes: str, login: bool = True) -> Iterator[list[str]]:
    """Fresh roles without any privilege, dropped (with what they own and
    were granted in this database) afterwards."""
    names = [f"{p}_{uuid.uuid4().hex[:10]}" for p in prefixes]
    for n in names:
        create_test_role(conn, n, "LOGIN" if login else "NOLOGIN")
    try:
        yield names
    finally:
        for n in names:
            drop_test_role(conn, n)


def query_vectors(texts: list[str], dims: int = 64) -> list[np.ndarray[Any, Any]]:
    """What the hash:<dims> embedder makes of each text."""
    return list(load_embedder(f"hash:{dims}").embed(texts))


def connect_as(db_url: str, role: str) -> Conn:
    return connect(url_as(db_url, role))
