"""What the revisions and env.py share: run SQL files online or offline."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from autoembed import extension_sql

LOCK_SQL = "SELECT pg_advisory_xact_lock(7022364465300499044)"
PREPARE_SQL = "CREATE EXTENSION IF NOT EXISTS vector;\nCREATE SCHEMA IF NOT EXISTS autoembed;"


def _raw(connection: sa.Connection) -> Any:
    """The psycopg connection under SQLAlchemy's: scripts run without any
    parameter parsing, so '%' and ':' in SQL text mean nothing special."""
    return connection.connection.dbapi_connection


def prepare_online(connection: sa.Connection) -> str:
    raw = _raw(connection)
    raw.execute(LOCK_SQL)
    if raw.execute("SELECT 1 FROM pg_extension WHERE extname = 'autoembed'").fetchone():
        raise RuntimeError(
            "autoembed is installed in this database as an extension (CREATE EXTENSION "
            "autoembed); upgrade it with ALTER EXTENSION autoembed UPDATE, not autoembed install"
        )
    raw.execute(PREPARE_SQL)
    row = raw.execute(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    return str(row[0])


def prepare_offline() -> None:
    from alembic import context

    context.get_context().impl.static_output(LOCK_SQL + ";\n" + PREPARE_SQL)


def run_sql(sql: str, vector_schema: str) -> None:
    """Run one SQL script from a revision, online or offline."""
    text = extension_sql.render(sql, vector_schema)
    if op.get_context().as_sql:
        op.get_context().impl.static_output(text)
    else:
        _raw(op.get_bind()).execute(text)


def apply_idempotent_online(connection: sa.Connection, vector_schema: str) -> None:
    raw = _raw(connection)
    for _name, sql in extension_sql.idempotent_files():
        raw.execute(extension_sql.render(sql, vector_schema))


def apply_idempotent_offline(vector_schema: str) -> None:
    from alembic import context

    for name, sql in extension_sql.idempotent_files():
        context.get_context().impl.static_output(
            f"-- {name}\n" + extension_sql.render(sql, vector_schema)
        )
