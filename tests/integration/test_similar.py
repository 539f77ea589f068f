"""autoembed.similar(name, key, k, filter, chunks, version): rows like a
given row, by the centroid of its stored chunk vectors, checked against a
brute-force computation over the stored vectors; the row itself excluded,
ranks from 1; filters, k larger than the table, chunked rows, keys given
several ways, a missing, an unembedded and an invisible row, and row-level
security."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from tests.conftest import drain
from tests.integration.helpers import call_search, create_vectorizer, make_texts

Conn = psycopg.Connection[Any]

TEXTS = [
    "apples pears plums orchard harvest in autumn sun",
    "apples and pears picked in the orchard this autumn",
    "a basket of plums and apples from the harvest",
    "racing cars on the motorway at night",
    "fast cars and motorbikes racing on a track",
    "the orchard harvest festival with cider and apples",
    "a quiet library with old books and maps",
    "old maps and atlases in the library archive",
    "motorbikes parked outside the racing garage",
    "cider pressed from orchard apples and pears",
]
CATEGORIES = ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]


def chunk_vectors(conn: Conn, name: str = "docs") -> dict[int, list[np.ndarray[Any, Any]]]:
    rows = conn.execute(
        sql.SQL("SELECT id, embedding::text FROM autoembed.{} ORDER BY id, chunk_no").format(
            sql.Identifier(f"{name}_embeddings")
        )
    ).fetchall()
    out: dict[int, list[np.ndarray[Any, Any]]] = {}
    for pk, text in rows:
        out.setdefault(pk, []).append(np.array(text.strip("[]").split(","), dtype=np.float64))
    return out


def brute_force(conn: Conn, of: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
    """Every other row by its best chunk's cosine similarity to the centroid
    of row ``of``'s chunks, best first."""
    vectors = chunk_vectors(conn)
    centroid = np.mean(vectors[of], axis=0)
    centroid /= np.linalg.norm(centroid)
    scored = [
        (pk, max(float(c @ centroid / np.linalg.norm(c)) for c in chunks))
        for pk, chunks in vectors.items()
        if pk != of and (allowed is None or pk in allowed)
    ]
    return sorted(scored, key=lambda t: (-t[1], t[0]))


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    make_texts(conn, TEXTS, categories=CATEGORIES, model="hash:64", chunk_tokens=8, chunk_overlap=1)
    drain(db_url)
    return conn


def test_similar_ranks_other_rows_by_the_centroid_of_the_rows_chunks(docs: Conn) -> None:
    assert max(len(c) for c in chunk_vectors(docs).values()) > 1  # chunked rows
    hits = call_search(docs, "similar", "docs", 1, 5)
    want = brute_force(docs, 1)[:5]
    assert [h.id for h in hits] == [pk for pk, _ in want]
    assert [h.score for h in hits] == pytest.approx([s for _, s in want], abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert 1 not in [h.id for h in hits]
    assert {h.id for h in hits[:3]} <= {2, 3, 6, 10}  # the orchard rows, not the cars


def test_filter_k_beyond_the_table_and_chunks(docs: Conn) -> None:
    everything = call_search(docs, "similar", "docs", 4, 100)
    assert [h.id for h in everything] == [pk for pk, _ in brute_force(docs, 4)]
    assert len(everything) == len(TEXTS) - 1
    assert [h.rank for h in everything] == list(range(1, len(TEXTS)))

    in_a = call_search(docs, "similar", "docs", 4, 100, filter='{"category": "a"}')
    assert [h.id for h in in_a] == [pk for pk, _ in brute_force(docs, 4, {1, 3, 5, 7, 9})]

    per_chunk = call_search(docs, "similar", "docs", 4, 7, chunks=True)
    assert len(per_chunk) == 7
    assert 4 not in [h.id for h in per_chunk]
    assert [h.rank for h in per_chunk] == list(range(1, 8))
    assert per_chunk[0].score >= per_chunk[-1].score

    assert call_search(docs, "similar", "docs", 4, 0) == []


def test_keys_given_as_json_scalar_or_the_keys_own_type(docs: Conn) -> None:
    want = [h.id for h in call_search(docs, "similar", "docs", 2, 3)]
    as_json = docs.execute(
        "SELECT pk ->> 'id' FROM autoembed.similar('docs', '{\"id\": 2}'::jsonb, 3)"
    ).fetchall()
    as_text = docs.execute(
        "SELECT pk ->> 'id' FROM autoembed.similar('docs', '{\"id\": \"2\"}'::jsonb, 3)"
    ).fetchall()
    as_scalar = docs.execute(
        "SELECT pk ->> 'id' FROM autoembed.similar('docs', '2'::jsonb, 3)"
    ).fetchall()
    named = docs.execute(
        "SELECT pk ->> 'id' FROM autoembed.similar('docs', key => 2, k => 3)"
    ).fetchall()
    literal = docs.execute("SELECT pk ->> 'id' FROM autoembed.similar('docs', '2', 3)").fetchall()
    literal_object = docs.execute(
        "SELECT pk ->> 'id' FROM autoembed.similar('docs', '{\"id\": 2}', 3)"
    ).fetchall()
    for got in (as_json, as_text, as_scalar, named, literal, literal_object):
        assert [int(r[0]) for r in got] == want


def test_bad_keys_and_rows_that_cannot_be_used(docs: Conn, db_url: str) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match=r"has no row \{\"id\": 999\}"):
        docs.execute("SELECT * FROM autoembed.similar('docs', 999)")
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=r"key of vectorizer \"docs\" is \(id\)"
    ):
        docs.execute("SELECT * FROM autoembed.similar('docs', '{\"ident\": 1}'::jsonb)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not a key"):
        docs.execute("SELECT * FROM autoembed.similar('docs', '{\"id\": \"one\"}'::jsonb)")
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        docs.execute("SELECT * FROM autoembed.similar('docs', NULL::jsonb)")
    with pytest.raises(psycopg.errors.UndefinedObject):
        docs.execute("SELECT * FROM autoembed.similar('nope', 1)")

    docs.execute("INSERT INTO docs VALUES (11, 'a new row about orchard apples', 'a')")
    with pytest.raises(
        psycopg.errors.ObjectNotInPrerequisiteState, match=r"row .* is not embedded yet"
    ) as e:
        docs.execute("SELECT * FROM autoembed.similar('docs', 11)")
    assert e.value.diag.message_hint
    assert "vectorizer_status" in e.value.diag.message_hint
    drain(db_url)
    assert [h.id for h in call_search(docs, "similar", "docs", 11, 3)] == [
        pk for pk, _ in brute_force(docs, 11)[:3]
    ]


def test_composite_keys(conn: Conn, db_url: str) -> None:
    conn.execute("CREATE TABLE items (sku text, lang text, descr text, PRIMARY KEY (sku, lang))")
    conn.execute(
        "INSERT INTO items VALUES ('s1', 'en', 'red rain jacket with hood'), "
        "('s1', 'fr', 'veste de pluie rouge'), ('s2', 'en', 'red rain coat with a hood'), "
        "('s3', 'en', 'garden hose and watering can')"
    )
    create_vectorizer(conn, "items", ["descr"], model="hash:64")
    drain(db_url)
    hits = call_search(conn, "similar", "items", '{"sku": "s1", "lang": "en"}', 2)
    assert hits[0].pk == {"sku": "s2", "lang": "en"}
    assert {"sku": "s1", "lang": "en"} not in [h.pk for h in hits]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="key of 2 columns") as e:
        conn.execute("SELECT * FROM autoembed.similar('items', 's1')")
    assert e.value.diag.message_hint
    assert '"lang"' in e.value.diag.message_hint


def test_row_level_security_decides_which_rows_and_which_queries(docs: Conn, searcher: str) -> None:
    role = sql.Identifier(searcher)
    docs.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    docs.execute(
        sql.SQL("CREATE POLICY only_a ON docs FOR SELECT TO {} USING (category = 'a')").format(role)
    )
    docs.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(role))
    docs.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
    docs.execute(sql.SQL("SET ROLE {}").format(role))
    hits = call_search(docs, "similar", "docs", 1, 100)
    docs.execute("RESET ROLE")
    assert [h.id for h in hits] == [pk for pk, _ in brute_force(docs, 1, {3, 5, 7, 9})]

    # a row the role cannot see is missing to it: its vectors are no query
    docs.execute(sql.SQL("SET ROLE {}").format(role))
    with pytest.raises(psycopg.errors.NoDataFound, match="or you may not see it"):
        docs.execute("SELECT * FROM autoembed.similar('docs', 2)")
