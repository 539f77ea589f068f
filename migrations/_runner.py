"""What the revisions and env.py share: run SQL files online or offline."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from autoembed import extension_sql

LOCK_SQL = "SELECT pg_advisory_xact_lock(7022364465300499044)"
# Evaluating a vector loads pgvector's library in the session, which defines
# its settings: until then a role that is not a superuser may not create a
# function declaring SET hnsw.iterative_scan (060_search.sql).
LOAD_VECTOR_SQL = "SELECT '[1]'::{}.vector"
PREPARE_SQL = (
    "CREATE EXTENSION IF NOT EXISTS vector;\n"
    + LOAD_VECTOR_SQL.format("public")
    + ";\nCREATE SCHEMA IF NOT EXISTS autoembed;"
)
# Each SQL file runs with unqualified names resolving in pg_catalog only, so
# no look-alike function, operator or type in a schema on the installing
# role's search_path can end up in the catalog's defaults and constraints;
# the caller's search_path is restored after each file.
SEARCH_PATH_SQL = "SET LOCAL search_path = pg_catalog, pg_temp;"


def _raw(connection: sa.Connection) -> Any:
    """The psycopg connection under SQLAlchemy's: scripts run without any
    parameter parsing, so '%' and ':' in SQL text mean nothing special."""
    return connection.connection.dbapi_connection


def prepare_online(connection: sa.Connection) -> str:
    """Lock, check what a superuser must have provided (install.preflight),
    create the vector extension and the schema when missing and load
    pgvector's library; returns the vector extension's schema, quoted."""
    from autoembed.install import InstallPrerequisiteError, preflight

    raw = _raw(connection)
    raw.execute(LOCK_SQL)
    if raw.execute("SELECT 1 FROM pg_extension WHERE extname = 'autoembed'").fetchone():
        raise InstallPrerequisiteError(
            "autoembed is installed in this database as an extension (CREATE EXTENSION "
            "autoembed); upgrade it with ALTER EXTENSION autoembed UPDATE, not autoembed install"
        )
    preflight(raw)
    raw.execute("CREATE EXTENSION IF NOT EXISTS vector")
    owner = raw.execute(
        # (not pg_has_role: it is true for a superuser whoever owns the schema)
        "WITH RECURSIVE mine(r) AS ("
        "  SELECT oid FROM pg_roles WHERE rolname = current_user"
        "  UNION SELECT m.roleid FROM pg_auth_members AS m JOIN mine ON m.member = mine.r) "
        "SELECT pg_get_userbyid(nspowner), nspowner IN (SELECT r FROM mine) "
        "FROM pg_namespace WHERE nspname = 'autoembed'"
    ).fetchone()
    if owner is None:
        raw.execute("CREATE SCHEMA autoembed")
    elif not owner[1]:
        # Someone else made the schema: they could have planted look-alike
        # functions in it, or replace ours later. Refuse to install into it.
        raise InstallPrerequisiteError(
            f"schema autoembed already exists and belongs to role {owner[0]!r}, which the "
            "installing role is not a member of; install as that role, or drop the schema"
        )
    row = raw.execute(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    raw.execute(LOAD_VECTOR_SQL.format(row[0]))
    return str(row[0])


def prepare_offline() -> None:
    from alembic import context

    context.get_context().impl.static_output(LOCK_SQL + ";\n" + PREPARE_SQL)


def _execute_pinned(raw: Any, text: str) -> None:
    """Run one script under SEARCH_PATH_SQL, then restore the search_path."""
    saved = raw.execute("SELECT current_setting('search_path')").fetchone()[0]
    raw.execute(SEARCH_PATH_SQL)
    raw.execute(text)
    raw.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (saved,))


def run_sql(sql: str, vector_schema: str) -> None:
    """Run one SQL script from a revision, online or offline."""
    text = extension_sql.render(sql, vector_schema)
    if op.get_context().as_sql:
        op.get_context().impl.static_output(text)
    else:
        _execute_pinned(_raw(op.get_bind()), text)


def apply_idempotent_online(connection: sa.Connection, vector_schema: str) -> None:
    raw = _raw(connection)
    for _name, sql in extension_sql.idempotent_files():
        _execute_pinned(raw, extension_sql.render(sql, vector_schema))


def apply_idempotent_offline(vector_schema: str) -> None:
    from alembic import context

    for name, sql in extension_sql.idempotent_files():
        context.get_context().impl.static_output(
            f"-- {name}\n" + extension_sql.render(sql, vector_schema)
        )
