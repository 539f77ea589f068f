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
    """Register pgvector's types; False when the database has no pgvector.

    The types are looked up in the schema pgvector is installed in, never by
    the session's search_path, so a look-alike ``vector`` type in a schema
    earlier on the path cannot take their place."""
    from pgvector.psycopg.bit import register_bit_info
    from pgvector.psycopg.halfvec import register_halfvec_info
    from pgvector.psycopg.sparsevec import register_sparsevec_info
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    row = conn.execute(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
        "WHERE e.extname OPERATOR(pg_catalog.=) 'vector'"
    ).fetchone()
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        conn.rollback()
    if not row:
        return False
    schema = str(row[0])
    registrations: list[tuple[str, Any]] = [
        (f"{schema}.vector", register_vector_info),
        ("pg_catalog.bit", register_bit_info),
        (f"{schema}.halfvec", register_halfvec_info),
        (f"{schema}.sparsevec", register_sparsevec_info),
    ]
    for name, register in registrations:
        info = TypeInfo.fetch(conn, name)
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.rollback()
        if info is not None:
            register(conn, info)
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
    raise NotAPostgresURL(f"not a PostgreSQL URL: {url!r} (expected postgresql://...)")


class NotAPostgresURL(ValueError):
    """A database URL that is not postgresql://..."""
