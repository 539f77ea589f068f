"""Upgrading from the previous release built from the git history
(tests/integration/previous_release.py): its own code installs autoembed,
creates vectorizers, grants a worker and a reader role, embeds the rows and
leaves a change queued; this release's install then brings every generated
object, trigger, grant and catalog row to exactly what a fresh install with
the same calls makes, and the queued change is embedded by the worker role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.install import install
from tests.conftest import drain
from tests.integration import previous_release
from tests.integration.helpers import schema_snapshot, snapshot_diff
from tests.integration.security_helpers import url_as

# Run by the previous release's code and by this one's, in this order.
SETUP = [
    "CREATE TABLE notes (id int PRIMARY KEY, title text, body text)",
    "INSERT INTO notes SELECT i, 'note ' || i, 'apples pears and plums number ' || i "
    "|| repeat(' orchard harvest', i % 5 + 1) FROM generate_series(1, 40) AS i",
    "SELECT autoembed.create_vectorizer('notes', ARRAY['title','body'], model => 'hash:16', "
    "chunk_tokens => 16, chunk_overlap => 2)",
    "CREATE SCHEMA shop",
    'CREATE TABLE shop."Items" (sku text, lang text, descr text, PRIMARY KEY (sku, lang))',
    "INSERT INTO shop.\"Items\" SELECT 'sku' || i, 'en', 'a red rain jacket with a hood ' || i "
    "FROM generate_series(1, 10) AS i",
    "SELECT autoembed.create_vectorizer('shop.\"Items\"', ARRAY['descr'], name => 'items', "
    "model => 'hash:8')",
    "SELECT autoembed.grant_worker({worker})",
    "GRANT SELECT ON notes TO {reader_role}",
    "SELECT autoembed.grant_search('notes', {reader})",
]
QUEUE_A_CHANGE = "UPDATE notes SET body = body || ' picked late' WHERE id = 7"

OLD_RELEASE_SCRIPT = """
import sys
from autoembed.db import connect
from autoembed.install import install
from autoembed.settings import Settings
from autoembed.worker.once import run_once
url, worker_url, setup, change = sys.argv[1:5]
install(url)
with connect(url) as c:
    for statement in setup.split(";\\n"):
        c.execute(statement)
stats = run_once(Settings(database_url=worker_url), show_progress=False)
with connect(url) as c:
    c.execute(change)
print(stats.written)
"""


@pytest.fixture(scope="session")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> previous_release.PreviousRelease:
    return previous_release.build(tmp_path_factory.mktemp("previous-release"))


@pytest.fixture
def two_databases(pg_server: PostgresServer) -> Iterator[tuple[str, str, str, str]]:
    """Databases 'old' and 'fresh' and a worker and a reader role (the same
    roles in both, so that their grants compare), dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    dbs = [f"upgrade_old_{tag}", f"upgrade_fresh_{tag}"]
    worker, reader = f"worker_{tag}", f"reader_{tag}"
    with connect(pg_server.url) as c:
        for db in dbs:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(worker)))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
    try:
        yield pg_server.url_for(dbs[0]), pg_server.url_for(dbs[1]), worker, reader
    finally:
        with connect(pg_server.url) as c:
            for db in dbs:
                c.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
            for role in (worker, reader):
                c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def setup_statements(worker: str, reader: str) -> list[str]:
    return [
        s.format(
            worker=sql.quote(worker),
            reader=sql.quote(reader),
            reader_role=sql.Identifier(reader).as_string(None),
        )
        for s in SETUP
    ]


def reader_search(url: str, reader: str) -> list[Any]:
    with connect(url_as(url, reader)) as c:
        return c.execute(
            "SELECT pk, score FROM autoembed.bm25_search('notes', 'orchard harvest plums', 5)"
        ).fetchall()


def test_the_previous_release_upgrades_to_what_a_fresh_install_makes(
    old_release: previous_release.PreviousRelease, two_databases: tuple[str, str, str, str]
) -> None:
    old, fresh, worker, reader = two_databases
    statements = setup_statements(worker, reader)

    embedded = old_release.run(
        OLD_RELEASE_SCRIPT, old, url_as(old, worker), ";\n".join(statements), QUEUE_A_CHANGE
    )
    assert embedded.split() == ["50"]  # 40 notes and 10 items, by the worker role
    with connect(old) as c:
        assert c.execute("SELECT version_num FROM autoembed.alembic_version").fetchone() == (
            "0001",
        )
        assert c.execute(
            "SELECT (SELECT count(*) FROM autoembed.notes_inbox) "
            "+ (SELECT count(*) FROM autoembed.notes_queue)"
        ).fetchone() == (1,)
    before = reader_search(old, reader)
    assert len(before) == 5

    install(old)

    install(fresh)
    with connect(fresh) as c:
        for statement in statements:
            c.execute(statement)
    assert drain(url_as(fresh, worker)).written == 50
    with connect(fresh) as c:
        c.execute(QUEUE_A_CHANGE)

    assert not snapshot_diff(schema_snapshot(old), schema_snapshot(fresh))
    assert reader_search(old, reader) == before

    # The queued change survived the upgrade: the worker role embeds it.
    assert drain(url_as(old, worker)).written == 1
    with connect(old) as c:
        assert c.execute(
            "SELECT count(*) FROM autoembed.notes_embeddings WHERE chunk LIKE '%picked late%'"
        ).fetchone() == (1,)
        assert c.execute(
            "SELECT pending, embedded_rows FROM autoembed.vectorizer_versions "
            "WHERE vectorizer = 'notes'"
        ).fetchone() == (0, 40)

    # A second install changes nothing.
    snapshot = schema_snapshot(old)
    install(old)
    assert schema_snapshot(old) == snapshot


def test_install_remakes_a_trigger_an_older_release_generated(db_url: str) -> None:
    """A generated trigger that differs from this release's template (as an
    older release's would) is made anew by install, queued work kept."""
    with connect(db_url) as c:
        c.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, note text)")
        c.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:8')")
        c.execute("INSERT INTO docs VALUES (1, 'first'), (2, 'second')")
        want = schema_snapshot(db_url)
        vid = c.execute("SELECT id FROM autoembed.vectorizer WHERE name = 'docs'").fetchone()
        assert vid is not None
        # an older template: the UPDATE trigger fired on any column
        c.execute(
            sql.SQL("DROP TRIGGER {} ON docs").format(sql.Identifier(f"autoembed_{vid[0]}_update"))
        )
        c.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER UPDATE ON docs FOR EACH ROW "
                "EXECUTE FUNCTION autoembed.docs_sync_row()"
            ).format(sql.Identifier(f"autoembed_{vid[0]}_update"))
        )
        c.execute(
            sql.SQL("DROP TRIGGER {} ON docs").format(
                sql.Identifier(f"autoembed_{vid[0]}_truncate")
            )
        )
    assert schema_snapshot(db_url) != want
    install(db_url)
    assert schema_snapshot(db_url) == want
    with connect(db_url) as c:
        c.execute("UPDATE docs SET note = 'not embedded' WHERE id = 1")
        c.execute("TRUNCATE docs")
    assert drain(db_url).written == 0
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM autoembed.docs_embeddings").fetchone() == (0,)


def test_previous_release_is_an_ancestor_of_this_one(repo_root: Path) -> None:
    import subprocess

    _, commit = previous_release.PREVIOUS_RELEASE
    done = subprocess.run(
        ["git", "-C", str(repo_root), "merge-base", "--is-ancestor", commit, "HEAD"],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
