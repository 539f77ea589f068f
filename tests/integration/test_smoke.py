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


def test_the_null_embedder_embeds_and_chunks_like_minilm(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """null:<dims> (load tests: everything but the model): a text's vector
    finds it, its chunks are up to 256 tokens long, and BM25 works as ever."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    long_text = " ".join(f"word{i}" for i in range(600))
    conn.execute("INSERT INTO docs VALUES (1, 'red apples and green pears'), (2, %s)", (long_text,))
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'null:16')")
    assert drain(db_url).written == 2
    from autoembed.worker.embedders import load_embedder

    q = load_embedder("null:16").embed(["red apples and green pears"])[0]
    assert conn.execute("SELECT pk FROM autoembed.search('docs', %s, 1)", (q,)).fetchone() == (
        {"id": 1},
    )
    chunks = conn.execute("SELECT count(*) FROM autoembed.docs_embeddings WHERE id = 2").fetchone()
    assert chunks is not None
    assert chunks[0] == 3  # 600 words in chunks of at most 256 tokens
    assert conn.execute("SELECT pk FROM autoembed.bm25_search('docs', 'pears', 5)").fetchall() == [
        ({"id": 1},)
    ]
