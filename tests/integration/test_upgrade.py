"""Upgrading a database autoembed 0.1.0 made (tests/data/release_0.1.0.dump:
a pg_dump of one, with two embedded vectorizers, one change still queued)
to this release: every vectorizer keeps answering the same searches, its
tables become version 1, the queued change is embedded, campaigns work, and
the schema is what a fresh install and the same create_vectorizer calls
make."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.install import alembic_config, install
from tests.conftest import drain
from tests.integration.helpers import pg_bin, schema_snapshot

DUMP = Path(__file__).resolve().parent.parent / "data" / "release_0.1.0.dump"


@pytest.fixture
def empty_dbs(pg_server: PostgresServer) -> Iterator[Any]:
    made: list[str] = []

    def make(label: str) -> str:
        name = f"upgrade_{label}_{len(made)}"
        with connect(pg_server.url) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name}")
            c.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return pg_server.url_for(name)

    yield make
    with connect(pg_server.url) as c:
        for name in made:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def restore_release(url: str) -> None:
    dump = DUMP.read_text()
    with connect(url) as c:
        row = c.execute("SELECT current_setting('server_version_num')::int").fetchone()
    if row is not None and row[0] < 170000:
        # The dump was made by PostgreSQL 18's pg_dump; older servers lack
        # only this setting (new in 17), which it sets to its default.
        dump = dump.replace("SET transaction_timeout = 0;\n", "", 1)
    done = subprocess.run(
        [pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input=dump,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def searches(url: str) -> list[Any]:
    with connect(url) as c:
        return [
            c.execute(
                "SELECT pk, score FROM autoembed.bm25_search('notes', 'orchard harvest plums', 5)"
            ).fetchall(),
            c.execute(
                "SELECT pk, round(score::numeric, 6) FROM autoembed.search('items', "
                "(SELECT embedding FROM autoembed.items_embeddings LIMIT 1), 3)"
            ).fetchall(),
        ]


def recreate_release_tables(url: str) -> None:
    """What tests/data/release_0.1.0.dump holds, made with this release."""
    install(url)
    with connect(url) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
        c.execute(
            "SELECT autoembed.create_vectorizer('notes', ARRAY['title','body'], "
            "model => 'hash:16', chunk_tokens => 16, chunk_overlap => 2)"
        )
        c.execute("CREATE SCHEMA shop")
        c.execute(
            'CREATE TABLE shop."Items" (sku text, lang text, descr text, PRIMARY KEY (sku, lang))'
        )
        c.execute(
            "SELECT autoembed.create_vectorizer('shop.\"Items\"', ARRAY['descr'], name => 'items', "
            "model => 'hash:8')"
        )


def test_a_0_1_0_database_upgrades_to_versions(empty_dbs: Any) -> None:
    url = empty_dbs("old")
    restore_release(url)
    with connect(url) as c:
        assert c.execute("SELECT version_num FROM autoembed.alembic_version").fetchone() == (
            "0001",
        )
    before = searches(url)
    assert all(before)

    install(url)
    with connect(url) as c:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert c.execute("SELECT version_num FROM autoembed.alembic_version").fetchone() == (head,)
        rows = c.execute(
            "SELECT vectorizer, version, model, state, model_version IS NOT NULL, embedded_rows, "
            "pending FROM autoembed.vectorizer_versions ORDER BY 1"
        ).fetchall()
        assert rows == [
            ("items", 1, "hash:8", "active", True, 10, 0),
            ("notes", 1, "hash:16", "active", True, 40, 1),
        ]
        relkinds = dict(
            c.execute(
                "SELECT relname, relkind FROM pg_class "
                "WHERE relnamespace = 'autoembed'::regnamespace AND relname IN "
                "('notes_embeddings', 'notes_embeddings_v1', 'notes_queue', 'notes_queue_v1')"
            ).fetchall()
        )
        assert relkinds == {
            "notes_embeddings": "v",  # the view of the active version
            "notes_embeddings_v1": "r",
            "notes_queue_v1": "r",
        }
    assert searches(url) == before

    # the schema equals a fresh install's with the same vectorizers
    fresh = empty_dbs("fresh")
    recreate_release_tables(fresh)
    assert schema_snapshot(url) == schema_snapshot(fresh)

    assert drain(url).written == 1  # the change queued before the upgrade
    with connect(url) as c:
        c.execute("INSERT INTO notes VALUES (42, 'after', 'the upgrade orchard')")
        c.execute("SELECT autoembed.set_model('notes', 'hash:24')")
    drain(url)
    with connect(url) as c:
        assert c.execute(
            "SELECT version, state, embedded_rows FROM autoembed.vectorizer_versions "
            "WHERE vectorizer = 'notes' ORDER BY 1"
        ).fetchall() == [(1, "retired", 42), (2, "active", 42)]
        hits = c.execute(
            "SELECT pk ->> 'id' FROM autoembed.bm25_search('notes', 'upgrade', 3)"
        ).fetchall()
        assert hits == [("42",)]
