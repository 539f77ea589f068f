"""One database connection per worker process, reopened when it breaks."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from autoembed.db import connect
from autoembed.worker import queue

_local = threading.local()


def worker_connection(url: str) -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is not None and not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK:
        return conn
    if conn is not None:
        conn.close()
    conn = connect(url, application_name="autoembed worker")
    queue.prepare(conn)
    _local.conn = conn
    return conn


def discard() -> None:
    """Forget the connection after an error that may have broken it."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        conn.close()
