from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import drain


def test_insert_is_embedded_and_searchable(conn: psycopg.Connection[Any], db_url: str) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs VALUES (1, 'red apples and green pears'), (2, 'fast cars on the road')"
    )
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:32')")
    stats = drain(db_url)
    assert stats.written == 2
    from autoembed.worker.embedders import load_embedder

    q = load_embedder("hash:32").embed(["green pears"])[0]
    rows = conn.execute("SELECT pk, rank FROM autoembed.search('docs', %s, 2)", (q,)).fetchall()
    assert rows[0] == ({"id": 1}, 1)
