"""``autoembed install``: put the database half into a PostgreSQL database.

Runs the Alembic revisions in ``autoembed.migrations`` (version table
``autoembed.alembic_version``), then the idempotent SQL, in one transaction
under an advisory lock: running it twice, or twice at once, is safe. Also
installs dblink, which text queries from SQL need, when the user may.

The installing role need not be a superuser: ``preflight`` checks first what
only a superuser can provide (the vector extension, new enough; CREATE on the
database for autoembed's schema) and raises ``InstallPrerequisiteError``
with the exact one-time SQL when something is missing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
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


# The oldest versions autoembed supports (and is tested on: PostgreSQL 15 and 18).
MIN_POSTGRES_VERSION_NUM = 150000
# hnsw.iterative_scan (filtered searches that still find k rows) is new in 0.8.0.
MIN_PGVECTOR = (0, 8, 0)


class InstallPrerequisiteError(RuntimeError):
    """autoembed cannot be installed yet: what is missing, and the one-time
    SQL a superuser runs first (``superuser_sql``, in ``database``)."""

    def __init__(
        self,
        problem: str,
        *,
        superuser_sql: Sequence[str] = (),
        database: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.superuser_sql = tuple(superuser_sql)
        self.database = database
        self.hint = hint

    def one_line_hint(self) -> str:
        """What to do, on one line."""
        parts = []
        if self.superuser_sql:
            where = f" in database {self.database}" if self.database else ""
            parts.append(
                f"a superuser runs once{where}: {' '.join(self.superuser_sql)} "
                "then autoembed install again"
            )
        if self.hint:
            parts.append(self.hint)
        return "; ".join(parts) or "see docs/least-privilege.md"

    def __str__(self) -> str:
        lines = [self.problem]
        if self.superuser_sql:
            where = f" in database {self.database}" if self.database else ""
            lines.append(f"A superuser runs once{where}, then autoembed install again:")
            lines += [f"  {stmt}" for stmt in self.superuser_sql]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def _quote_ident(conn: Any, name: str) -> str:
    return str(conn.execute("SELECT quote_ident(%s)", (name,)).fetchone()[0])


def preflight(conn: Any) -> None:
    """Check, before changing anything, that the connected role can install
    autoembed here (psycopg connection); raise InstallPrerequisiteError naming
    every missing piece and the SQL a superuser runs to provide it."""
    num, version, me, database, superuser = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version'), "
        "current_user, current_database(), "
        "(SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
    ).fetchone()
    if num < MIN_POSTGRES_VERSION_NUM:
        raise InstallPrerequisiteError(
            f"autoembed needs PostgreSQL 15 or newer; this server is PostgreSQL {version}"
        )
    role, db = _quote_ident(conn, me), _quote_ident(conn, database)
    minimum = ".".join(map(str, MIN_PGVECTOR))
    problems: list[str] = []
    sql: list[str] = []
    hint = None
    vector = conn.execute(
        "SELECT default_version, installed_version FROM pg_catalog.pg_available_extensions "
        "WHERE name = 'vector'"
    ).fetchone()
    if vector is None:
        raise InstallPrerequisiteError(
            "the server has no pgvector: extension vector is not available",
            hint=f"Install pgvector {minimum} or newer on the server (e.g. the "
            "postgresql-NN-pgvector package; on managed PostgreSQL it is built in), "
            f"then a superuser runs in database {database}: CREATE EXTENSION vector;",
        )
    available, installed = vector
    if installed is None and not superuser:
        problems.append(f"extension vector is not installed in database {database}")
        sql.append("CREATE EXTENSION vector;")
    current = installed or available
    if _version_tuple(current) < MIN_PGVECTOR:
        problems.append(f"pgvector {current} is older than {minimum}, which autoembed needs")
        if installed is not None and _version_tuple(available) >= MIN_PGVECTOR:
            sql.append("ALTER EXTENSION vector UPDATE;")
        else:
            hint = f"Install pgvector {minimum} or newer on the server first."
    if installed is not None:
        usable = conn.execute(
            "SELECT has_schema_privilege(e.extnamespace, 'USAGE'), quote_ident(n.nspname) "
            "FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        ).fetchone()
        if not usable[0]:
            problems.append(f"role {me} may not use schema {usable[1]}, where vector is")
            sql.append(f"GRANT USAGE ON SCHEMA {usable[1]} TO {role};")
    schema_missing, may_create = conn.execute(
        "SELECT to_regnamespace('autoembed') IS NULL, "
        "has_database_privilege(current_database(), 'CREATE')"
    ).fetchone()
    if schema_missing and not may_create:
        problems.append(
            f"role {me} may not create schema autoembed (no CREATE privilege on database "
            f"{database})"
        )
        sql.append(f"GRANT CREATE ON DATABASE {db} TO {role};")
    if problems:
        raise InstallPrerequisiteError(
            "autoembed install cannot run as role " + f"{me}: " + "; ".join(problems),
            superuser_sql=sql,
            database=database,
            hint=hint,
        )


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
            command.upgrade(alembic_config(conn), "head")
            rev = conn.exec_driver_sql(
                "SELECT version_num FROM autoembed.alembic_version"
            ).scalar_one()
            try_dblink(conn)
    finally:
        engine.dispose()
    return str(rev)


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


def dblink_note(database: str = "this database") -> str:
    """What to say when the database lacks dblink: the exact SQL."""
    return (
        "note: text queries from SQL (autoembed.search(name, 'text')) need dblink, which "
        f"only a superuser can install; a superuser runs once in {database}: "
        "CREATE EXTENSION dblink;  then: autoembed setup-queries --db URL"
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
