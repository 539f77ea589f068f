"""Changing a vectorizer in place: set_columns and set_chunking (what
op.alter_vectorizer emits) re-embed every row the new way, and they and
set_model refuse bad settings before changing anything. (set_model's
campaigns: test_lifecycle.py.)"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.conftest import drain
from tests.integration.helpers import Conn, chunks, create_vectorizer, queued_keys, vectorizer

WORDS = " ".join(f"word{i}" for i in range(300))


def long_docs(conn: Conn, db_url: str, **options: object) -> None:
    """Table docs: 3 rows of 300 distinct words (title 'short'), embedded."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "INSERT INTO docs SELECT i, 'short title ' || i, %s FROM generate_series(1, 3) i", (WORDS,)
    )
    create_vectorizer(conn, "docs", ["body"], chunk_tokens=64, chunk_overlap=0, **options)
    drain(db_url)
    assert queued_keys(conn, "docs") == []


def chunk_counts(conn: Conn) -> dict[int, int]:
    return {k[0]: len(c) for k, c in chunks(conn, "docs").items()}


def dims(conn: Conn) -> set[int]:
    v = vectorizer(conn, "docs")
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT vector_dims(embedding) FROM {}").format(v.embeddings)
    )
    return {r[0] for r in rows}


def test_set_chunking_re_embeds_every_row_in_the_new_chunks(conn: Conn, db_url: str) -> None:
    long_docs(conn, db_url)
    before = chunk_counts(conn)
    conn.execute("SELECT autoembed.set_chunking('docs', 32)")
    assert sorted(queued_keys(conn, "docs")) == [(1,), (2,), (3,)]
    drain(db_url)
    after = chunk_counts(conn)
    assert set(after) == {1, 2, 3}
    assert all(before[i] >= 2 for i in before), before
    assert all(after[i] >= 2 * before[i] - 1 for i in after), (before, after)
    row = conn.execute("SELECT chunk_tokens, chunk_overlap FROM autoembed.vectorizer").fetchone()
    assert row == (32, 0)


def test_set_columns_embeds_the_new_columns_and_watches_only_them(conn: Conn, db_url: str) -> None:
    long_docs(conn, db_url)
    conn.execute("SELECT autoembed.set_columns('docs', ARRAY['title'])")
    drain(db_url)
    texts = {k[0]: [c.chunk for c in cs] for k, cs in chunks(conn, "docs").items()}
    assert texts == {i: [f"short title {i}"] for i in (1, 2, 3)}
    conn.execute("UPDATE docs SET body = 'no longer embedded' WHERE id = 1")
    assert queued_keys(conn, "docs") == []
    conn.execute("UPDATE docs SET title = 'a new title' WHERE id = 2")
    assert queued_keys(conn, "docs") == [(2,)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT autoembed.set_chunking('docs', 32, 16)", "chunk_overlap"),
        ("SELECT autoembed.set_chunking('docs', -1)", "chunk_tokens"),
        ("SELECT autoembed.set_columns('docs', ARRAY['nope'])", "nope"),
        ("SELECT autoembed.set_columns('docs', ARRAY[]::text[])", "column"),
        ("SELECT autoembed.set_model('docs', 'no-such-model')", "no-such-model"),
        ("SELECT autoembed.set_model('missing', 'hash:8')", "missing"),
    ],
)
def test_bad_settings_change_nothing(conn: Conn, db_url: str, call: str, message: str) -> None:
    long_docs(conn, db_url)
    catalog = "SELECT * FROM autoembed.vectorizer, autoembed.vectorizer_version"
    before = conn.execute(catalog).fetchall()
    kept = chunk_counts(conn)
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(call)
    assert conn.execute(catalog).fetchall() == before
    assert chunk_counts(conn) == kept
    assert queued_keys(conn, "docs") == []
