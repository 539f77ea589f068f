"""The documented least-privilege set-up, end to end: a real Celery worker
process (its dispatcher and sweep included) logged in as a role with no
superuser power and no privilege on the source table — only what
autoembed.grant_worker() gives — embeds a table under row-level security
that would hide every row from it, and keeps up with writes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import StartWorker, wait_embedded
from tests.integration.security_helpers import roles, url_as

pytestmark = pytest.mark.e2e


def test_a_celery_worker_as_the_worker_role_runs_the_whole_pipeline(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, owner_name text, body text)")
    conn.execute(
        "INSERT INTO notes SELECT i, 'user' || (i % 3), 'note ' || i || ' about the sea' "
        "FROM generate_series(1, 200) AS i"
    )
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY mine ON notes USING (owner_name = current_user)")
    conn.execute("SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:32')")
    with roles(conn, "worker") as (role,):
        conn.execute("SELECT autoembed.grant_worker(%s)", (role,))
        worker = start_worker(url_as(db_url, role))
        wait_embedded(conn, "notes", 200, worker, timeout=60)

        conn.execute("UPDATE notes SET body = 'changed ' || id WHERE id <= 20")
        conn.execute("DELETE FROM notes WHERE id > 190")
        conn.execute("INSERT INTO notes VALUES (500, 'user1', 'a late note')")
        wait_embedded(conn, "notes", 191, worker, timeout=60)
        changed = conn.execute(
            "SELECT count(*) FROM autoembed.notes_embeddings WHERE chunk LIKE 'changed %'"
        ).fetchone()
        assert changed == (20,)

        sessions = conn.execute(
            "SELECT DISTINCT usename::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename IS NOT NULL"
        ).fetchall()
        assert sessions == [(role,)], sessions  # every worker session is the worker role
        worker.stop()
        worker.assert_clean_log()
