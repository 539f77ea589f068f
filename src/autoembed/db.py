"""Connections: psycopg for the runtime, SQLAlchemy URLs for Alembic."""

from __future__ import annotations

from typing import Any

import psycopg


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection, with pgvector's types registered when the
    database has them."""
    conn = psycopg.connect(_libpq_url(url), autocommit=autocommit, **kwargs)
    try:
        register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def register_vector(conn: psycopg.Connection[Any]) -> bool:
    """Register pgvector's types; False when the database has no pgvector."""
    from pgvector.psycopg import register_vector as _register

    row = conn.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        conn.rollback()
    if not row or not row[0]:
        return False
    _register(conn)
    return True


def _libpq_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs too (postgresql+psycopg://...)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL using psycopg 3."""
    url = _libpq_url(url)
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://...)")
