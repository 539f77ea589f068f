"""``autoembed install``: put the database half into a PostgreSQL database.

Runs the Alembic revisions in ``autoembed.migrations`` (version table
``autoembed.alembic_version``), then the idempotent SQL, in one transaction
under an advisory lock: running it twice, or twice at once, is safe. Also
installs dblink, which text queries from SQL need, when the user may.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from autoembed.db import sqlalchemy_url

log = logging.getLogger("autoembed.install")

# Alembic's migration context is process-global: installs from threads of
# one process take turns (installs from different processes are serialized by
# an advisory lock in the database, see migrations/_runner.py).
_process_lock = threading.Lock()


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("autoembed.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def install(url: str) -> str:
    """Install or upgrade autoembed in the database at ``url``; returns the revision."""
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with _process_lock, engine.begin() as conn:
            _load_pgvector(conn)
            command.upgrade(alembic_config(conn), "head")
            rev = conn.exec_driver_sql(
                "SELECT version_num FROM autoembed.alembic_version"
            ).scalar_one()
            try_dblink(conn)
    finally:
        engine.dispose()
    return str(rev)


def _load_pgvector(conn: sa.Connection) -> None:
    """Load pgvector's library into this session when the extension exists
    (its type's input function does), so that its settings are defined:
    search functions SET hnsw.iterative_scan, and only a superuser may name a
    setting of a library the session has not loaded."""
    conn.exec_driver_sql(
        "DO $load$ DECLARE t regtype; BEGIN "
        "SELECT x.oid::regtype INTO t FROM pg_catalog.pg_type AS x "
        "JOIN pg_catalog.pg_extension AS e ON e.extnamespace = x.typnamespace "
        "WHERE e.extname = 'vector' AND x.typname = 'vector'; "
        "IF t IS NOT NULL THEN EXECUTE 'SELECT ''[1]''::' || t::text; END IF; END $load$"
    )


def try_dblink(conn: sa.Connection) -> bool:
    """CREATE EXTENSION IF NOT EXISTS dblink, which text queries from SQL need
    (autoembed.embed_query); only a superuser may, so failing is fine.
    Whether the database has it now."""
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS dblink")
    except sa.exc.DBAPIError as e:
        log.info("dblink not installed (text queries from SQL need it): %s", e.orig)
        return False
    return True


def dblink_note() -> str:
    """What to say when the database lacks dblink."""
    return (
        "note: text queries from SQL (autoembed.search(name, 'text')) need dblink, "
        "which only a superuser can install: CREATE EXTENSION dblink"
    )


def has_dblink(conn: Any) -> bool:
    """Whether the database has dblink (psycopg connection)."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'dblink'").fetchone()
    return row is not None


def installed_revision(conn: Any) -> str | None:
    """The installed revision, or None when autoembed is not installed (psycopg connection)."""
    row = conn.execute("SELECT to_regclass('autoembed.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    rev = conn.execute("SELECT version_num FROM autoembed.alembic_version").fetchone()
    return None if rev is None else str(rev[0])
