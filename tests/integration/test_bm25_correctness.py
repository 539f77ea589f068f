"""autoembed.bm25_search equals the bm25s package's Lucene BM25 on real data.

About 900 SciFact abstracts (tests/data) are embedded with the hash embedder
in 128-token chunks, so BM25 runs over chunks exactly as in the product. bm25s
(method "lucene", float64) is fed the very lexemes Postgres produced: every
chunk's tsvector expanded to one token per position, every query's
to_tsvector likewise. bm25s's get_scores adds a repeated query token once per
occurrence, the convention our SQL documents (Lucene's), so a repeated query
lexeme is simply fed repeated. For 50 SciFact test claims (and two queries
made to repeat a lexeme and to tie in bulk) the top 100 chunks and the top
100 rows (best chunk per row) must carry bm25s's scores to 1e-6 relative and
be ranked by them, ties broken by key then chunk_no.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import (
    Hit,
    active_version,
    call_search,
    create_vectorizer,
    scratch_database,
    vectorizer,
)

Conn = psycopg.Connection[Any]
Key = tuple[int, int]  # (id, chunk_no)
Scores = npt.NDArray[np.float64]
DATA = Path(__file__).resolve().parents[1] / "data"
NAME = "scifact"
TOP = 100
REL = 1e-6
# Besides SciFact's claims: a repeated lexeme ("cells" and "CELL" are 'cell'
# too), and one frequent term, whose scores tie in bulk.
EXTRA_QUERIES = ["cell cells CELL proliferation of cells", "patients"]


def _queries() -> list[str]:
    with (DATA / "scifact_bm25_queries.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f] + EXTRA_QUERIES


@pytest.fixture(scope="module")
def scifact_url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    with scratch_database(pg_server, "bm25c") as url:
        with connect(url) as c, (DATA / "scifact_bm25_corpus.jsonl").open(encoding="utf-8") as f:
            c.execute("CREATE TABLE scifact (id int PRIMARY KEY, title text, text text)")
            with c.cursor() as cur, cur.copy("COPY scifact (id, title, text) FROM STDIN") as cp:
                for line in f:
                    doc = json.loads(line)
                    cp.write_row((doc["id"], doc["title"], doc["text"]))
            create_vectorizer(c, NAME, ["title", "text"], model="hash:8", chunk_tokens=128)
        with pytest.MonkeyPatch.context() as mp:
            # The same vectors, each word's computed once (BM25 never reads them).
            mp.setattr(HashingEmbedder, "_word_vector", cache(HashingEmbedder._word_vector))
            drain(url)
        yield url


@pytest.fixture(scope="module")
def scifact(scifact_url: str) -> Iterator[Conn]:
    with connect(scifact_url) as c:
        yield c


class Chunks:
    """The active version's chunks as bm25s sees them, and bm25s indexes of them."""

    def __init__(self, keys: list[Key], tokens: list[list[str]]) -> None:
        self.keys = keys
        self.tokens = tokens
        self.counts = [Counter(t) for t in tokens]
        self.avgdl = Fraction(sum(map(len, tokens)), len(tokens))
        self._indexes: dict[tuple[float, float], bm25s.BM25] = {}

    def scores(self, query: list[str], k1: float, b: float) -> Scores:
        """bm25s's Lucene BM25 of every chunk, in float64 (its default float32
        is too coarse for 1e-6)."""
        if (k1, b) not in self._indexes:
            index = bm25s.BM25(k1=k1, b=b, method="lucene", dtype="float64")
            index.index(self.tokens, show_progress=False)
            self._indexes[k1, b] = index
        return np.asarray(self._indexes[k1, b].get_scores(query), dtype=np.float64)

    def tie_class(self, i: int, query: list[str], k1: float, b: float) -> tuple[Any, ...]:
        """Chunks of one class score the same in exact arithmetic: the same
        tf / (tf + k1 * (1 - b + b * dl / avgdl)), as fractions, per query lexeme."""
        tf = self.counts[i]
        k1_, b_ = Fraction(k1), Fraction(b)
        norm = k1_ * (1 - b_ + b_ * len(self.tokens[i]) / self.avgdl)
        return tuple(
            sorted((t, n, tf[t] / (tf[t] + norm)) for t, n in Counter(query).items() if tf[t])
        )


@pytest.fixture(scope="module")
def chunks(scifact: Conn) -> Chunks:
    """Every chunk's lexemes, one token per position (as many as its doc_len)."""
    rows = scifact.execute(
        sql.SQL(
            "SELECT e.id, e.chunk_no, e.doc_len, coalesce(("
            "  SELECT array_agg(l.lexeme ORDER BY p)"
            "  FROM unnest(e.lexemes) AS l CROSS JOIN LATERAL unnest(l.positions) AS p"
            "), '{{}}') "
            "FROM {} AS e ORDER BY e.id, e.chunk_no"
        ).format(vectorizer(scifact, NAME).embeddings)
    ).fetchall()
    assert all(doc_len == len(tokens) for _, _, doc_len, tokens in rows)
    return Chunks([(i, n) for i, n, _, _ in rows], [list(t) for *_, t in rows])


def query_tokens(conn: Conn, query: str) -> list[str]:
    """The query's lexemes under the vectorizer's configuration, one per position."""
    row = conn.execute(
        "SELECT coalesce(array_agg(l.lexeme ORDER BY p), '{}') "
        "FROM autoembed.vectorizer AS v"
        " CROSS JOIN LATERAL unnest(to_tsvector(v.ts_config::regconfig, %s)) AS l"
        " CROSS JOIN LATERAL unnest(l.positions) AS p "
        "WHERE v.name = %s",
        (query, NAME),
    ).fetchone()
    assert row is not None
    return list(row[0])


def reference_scores(chunks: Chunks, query: list[str], k1: float, b: float) -> Scores:
    """bm25s's scores, where chunks that tie in exact arithmetic get one score
    (floating point may tell them apart in the last bit, in any direction)."""
    scores = chunks.scores(query, k1, b)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] > 0]
    ordered = scores[order]
    close = np.isclose(ordered[1:], ordered[:-1], rtol=1e-12, atol=0)
    for run in np.split(order, np.flatnonzero(~close) + 1):
        if len(run) > 1:
            classes: dict[tuple[Any, ...], list[int]] = {}
            for i in run:
                classes.setdefault(chunks.tie_class(int(i), query, k1, b), []).append(int(i))
            for members in classes.values():
                scores[members] = scores[members].max()
    return scores


def expected_chunks(chunks: Chunks, scores: Scores) -> list[tuple[Key, float]]:
    """The top chunks by score, ties broken by key then chunk_no."""
    hits = [(key, float(s)) for key, s in zip(chunks.keys, scores, strict=True) if s > 0]
    return sorted(hits, key=lambda h: (-h[1], h[0]))[:TOP]


def expected_rows(chunks: Chunks, scores: Scores) -> list[tuple[Key, float]]:
    """The top rows by their best chunk (the first such chunk on a tie)."""
    best: dict[int, tuple[Key, float]] = {}
    for key, s in zip(chunks.keys, scores, strict=True):
        if s > 0 and (key[0] not in best or s > best[key[0]][1]):
            best[key[0]] = (key, float(s))
    return sorted(best.values(), key=lambda h: (-h[1], h[0]))[:TOP]


def assert_same_ranking(hits: list[Hit], expected: list[tuple[Key, float]]) -> None:
    got = [((h.id, h.chunk_no), h.score) for h in hits]
    assert len(got) == len(expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=REL)
    keys = [k for k, _ in got]
    first = next((i for i, (k, _) in enumerate(expected) if keys[i] != k), None)
    assert first is None, (
        f"rank {first + 1}: SQL {got[first : first + 2]!r}, bm25s {expected[first : first + 2]!r}"
        if first is not None
        else ""
    )
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_the_comparison_has_teeth(scifact: Conn, chunks: Chunks) -> None:
    """Guards the data: rows of several chunks, queries matching more than TOP
    chunks, a repeated query lexeme, and exact ties among the top chunks."""
    assert len({i for i, _ in chunks.keys}) > 800
    assert len(chunks.keys) > 2.5 * len({i for i, _ in chunks.keys})
    assert all(query_tokens(scifact, q) for q in _queries())
    assert query_tokens(scifact, EXTRA_QUERIES[0]).count("cell") == 4
    frequent = reference_scores(chunks, query_tokens(scifact, "patients"), 0.9, 0.4)
    top = sorted(frequent, reverse=True)[:TOP]
    assert top[-1] > 0
    assert TOP - len(set(top)) > 20  # ties


def test_bm25s_adds_a_repeated_query_token_once_per_occurrence(chunks: Chunks) -> None:
    """The convention both sides share (Lucene's): bm25s fed 'cell' twice
    scores exactly twice 'cell' once."""
    once = chunks.scores(["cell"], 0.9, 0.4)
    assert np.count_nonzero(once) > TOP
    assert chunks.scores(["cell", "cell"], 0.9, 0.4) == pytest.approx(2 * once, rel=1e-12)


@pytest.mark.parametrize(
    ("k1", "b"),
    [(None, None), (1.2, 0.75), (2.0, 1.0), (0.5, 0.0), (0.0, 0.4)],
    ids=["defaults", "k1=1.2,b=0.75", "b=1", "b=0", "k1=0"],
)
def test_bm25_search_equals_bm25s_lucene(
    scifact: Conn, chunks: Chunks, k1: float | None, b: float | None
) -> None:
    if k1 is None or b is None:
        k1, b = 1.2, 0.5  # the documented defaults, left as created
    else:
        scifact.execute("SELECT autoembed.set_bm25(%s, %s, %s)", (NAME, k1, b))
    try:
        for query in _queries():
            scores = reference_scores(chunks, query_tokens(scifact, query), k1, b)
            hits = call_search(scifact, "bm25_search", NAME, query, TOP, chunks=True)
            assert_same_ranking(hits, expected_chunks(chunks, scores))
            rows = call_search(scifact, "bm25_search", NAME, query, TOP)
            assert_same_ranking(rows, expected_rows(chunks, scores))
    finally:
        scifact.execute("SELECT autoembed.set_bm25(%s, 1.2, 0.5)", (NAME,))


# ------------------------------------------------------------ the fast path

NAIVE = """
WITH q AS (
    SELECT l.lexeme AS term, cardinality(l.positions)::float8 AS qtf
    FROM unnest(to_tsvector('english', %(query)s)) AS l
), coll AS (
    SELECT count(*)::float8 AS n, sum(e.doc_len)::float8 / count(*) AS avgdl
    FROM {embeddings} AS e WHERE e.model_version_id = %(version)s
), p AS (
    SELECT e.chunk_id, l.lexeme AS term, cardinality(l.positions) AS tf, e.doc_len
    FROM {embeddings} AS e CROSS JOIN LATERAL unnest(e.lexemes) AS l
    WHERE e.model_version_id = %(version)s
), df AS (
    SELECT p.term, count(*)::float8 AS df FROM p JOIN q USING (term) GROUP BY p.term
)
SELECT e.id, e.chunk_no,
       sum(q.qtf * ln(1 + (coll.n - df.df + 0.5) / (df.df + 0.5))
           / (1 + %(k1)s * ((1 - %(b)s) / p.tf + %(b)s * (p.doc_len::float8 / p.tf) / coll.avgdl))
           ORDER BY q.term) AS score
FROM q JOIN df USING (term) CROSS JOIN coll
JOIN p ON p.term = q.term
JOIN {embeddings} AS e ON e.chunk_id = p.chunk_id
GROUP BY e.id, e.chunk_no
"""


def naive_top(conn: Conn, query: str, k: int, *, rows: bool) -> list[tuple[Key, float]]:
    """Every chunk's lexemes read, those of the query summed: BM25 the slow,
    obviously exact way (Lucene's formula written out again, in term order),
    independent of autoembed's index and statistics."""
    v = vectorizer(conn, NAME)
    version = active_version(conn, NAME)["model_version_id"]
    k1, b = conn.execute(
        "SELECT bm25_k1, bm25_b FROM autoembed.vectorizer WHERE name = %s", (NAME,)
    ).fetchone()  # type: ignore[misc]
    naive = sql.SQL(NAIVE).format(embeddings=v.embeddings)
    hits = [
        ((i, n), s)
        for i, n, s in conn.execute(naive, {"query": query, "version": version, "k1": k1, "b": b})
    ]
    hits.sort(key=lambda h: (-h[1], h[0]))
    if rows:
        seen: set[int] = set()
        hits = [h for h in hits if not (h[0][0] in seen or seen.add(h[0][0]))]
    return hits[:k]


@pytest.fixture
def stale_impacts(scifact: Conn) -> Iterator[Any]:
    """stale_impacts(factor): rewrite every impact as if the average chunk
    length were factor times what it is, as after a collection's documents
    grew or shrank (the impacts are refreshed only on a large drift)."""
    version = active_version(scifact, NAME)

    def stale(factor: float) -> None:
        scifact.execute(
            "SELECT autoembed._rebuild_bm25(v, ver, autoembed._avgdl(ver) * %s)"
            " FROM autoembed.vectorizer AS v JOIN autoembed.vectorizer_version AS ver"
            " ON ver.vectorizer_id = v.id WHERE ver.id = %s",
            (factor, version["id"]),
        )

    yield stale
    scifact.execute("SELECT autoembed.refresh_bm25_impacts(%s)", (NAME,))


@pytest.mark.parametrize("factor", [1.0, 0.3, 3.0], ids=["fresh", "assumed-shorter", "longer"])
def test_the_fast_top_k_equals_a_full_scan_bit_for_bit(
    scifact: Conn, stale_impacts: Any, factor: float
) -> None:
    """bm25_search reads only some postings (MaxScore over impact-ordered
    lists); for every k it must return exactly what reading all of them does,
    the same scores to the last bit, also while the impacts assume another
    average length than the collection's."""
    stale_impacts(factor)
    checked = 0
    for query in _queries()[:25]:
        for k in (1, 3, 10, 40):
            for rows in (False, True):
                hits = call_search(scifact, "bm25_search", NAME, query, k, chunks=not rows)
                got = [((h.id, h.chunk_no), h.score) for h in hits]
                assert got == naive_top(scifact, query, k, rows=rows), (query, k, rows)
                checked += len(got)
    assert checked > 25 * 2 * 50
