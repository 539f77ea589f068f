"""One database connection per worker process, reopened when it breaks."""

from __future__ import annotations

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
