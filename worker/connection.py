"""One database connection per worker process, reopened when it breaks."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from autoembed.db import connect
from autoembed.worker import queue

_local = threading.local()

# The application_name of every session that claims work (``--once`` adds
# to it): the dispatcher watches for one ending (queue.worker_sessions).
WORKER_APPLICATION = "autoembed worker"


def worker_connection(url: str, statement_timeout: float = 0.0) -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is not None and not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK:
        try:
            # A connection whose server restarted looks fine until used: one
            # round trip per task finds out, instead of failing the task.
            conn.execute("SELECT 1")
            return conn
        except psycopg.OperationalError:
            pass
    if conn is not None:
        conn.close()
    conn = connect(url, application_name=WORKER_APPLICATION)
    secure_session(conn, statement_timeout)
    queue.prepare(conn)
    _local.conn = conn
    return conn


def secure_session(conn: psycopg.Connection[Any], statement_timeout: float = 0.0) -> None:
    """Make a worker session safe to run whatever the role's settings: every
    name a worker's SQL leaves unqualified resolves in pg_catalog (never in a
    schema someone else can create look-alike functions or operators in), and
    every statement is bounded by ``statement_timeout`` seconds (0 keeps the
    role's setting)."""
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
    if statement_timeout > 0:
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, false)",
            (f"{round(statement_timeout * 1000)}ms",),
        )


def discard() -> None:
    """Forget the connection after an error that may have broken it."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        conn.close()


# While autoembed's schema is missing (not installed yet, removed by an
# Alembic downgrade), long-running loops check this often.
SCHEMA_WAIT_SECONDS = 5.0
_SCHEMA_READY_SQL = (
    "SELECT to_regprocedure('autoembed.vectorizers_with_changes()') IS NOT NULL "
    "AND to_regclass('autoembed.vectorizer_version') IS NOT NULL"
)
_MISSING = (
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
)


class SchemaWatch:
    """For a loop that needs autoembed's schema (the dispatcher, the query
    service): one log line while the schema is missing, instead of a
    traceback per retry, and one when it is there again."""

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self.log, self.who = logger, who
        self.waiting = False

    def ready(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the schema is there (logging the change, if any)."""
        row = conn.execute(_SCHEMA_READY_SQL).fetchone()
        if row and row[0]:
            if self.waiting:
                self.log.info("%s: autoembed's schema is installed; resuming", self.who)
                self.waiting = False
            return True
        self._wait("not installed")
        return False

    def missing(self, error: BaseException) -> bool:
        """Whether ``error`` says the schema (or part of it) went missing."""
        if not (isinstance(error, _MISSING) and "autoembed" in str(error)):
            return False
        self._wait(str(error).splitlines()[0])
        return True

    def _wait(self, why: str) -> None:
        if not self.waiting:
            self.log.warning(
                "%s: autoembed's schema is missing from the database (%s); waiting for "
                "`autoembed install` or `alembic upgrade`, checking every %.0f s",
                self.who,
                why,
                SCHEMA_WAIT_SECONDS,
            )
            self.waiting = True
