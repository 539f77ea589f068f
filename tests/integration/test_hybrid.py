"""autoembed.hybrid_search: its fused scores recomputed in Python from what
autoembed.search and autoembed.bm25_search return for the same arguments
(reciprocal rank fusion and min-max convex combination), per row or per
chunk; the filter in both branches; argument checks."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

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
    call_search,
    ids,
    make_texts,
    scratch_database,
)

Conn = psycopg.Connection[Any]
Key = Any  # a row's id, or (id, chunk_no) per chunk
DIMS = 32
EMBEDDER = HashingEmbedder(DIMS)
WORDS = ["apples", "pears", "rivers", "engines", "poems", "stars", "bread", "clocks"]


def embed(text: str) -> npt.NDArray[np.float32]:
    return np.asarray(EMBEDDER.embed([text])[0], dtype=np.float32)


def _texts(n: int, words_each: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words_each)) for _ in range(n)]


ROWS = _texts(40, 6, seed=1)
CATEGORIES = ["even" if i % 2 == 0 else "odd" for i in range(1, 41)]
LONG_ROWS = _texts(8, 60, seed=2)  # several 16-token chunks each
# The text and the embedding disagree, so the two branches rank differently
# and each finds rows the other does not.
TEXT = "apples and pears"
VECTOR = embed("rivers engines stars")


@pytest.fixture(scope="module")
def shared_url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    with scratch_database(pg_server, "hybrid") as url:
        with connect(url) as c:
            make_texts(c, ROWS, categories=CATEGORIES, model=f"hash:{DIMS}")
            make_texts(c, LONG_ROWS, "long", model=f"hash:{DIMS}", chunk_tokens=16, chunk_overlap=0)
            drain(url)
            make_texts(c, ROWS, "later", model=f"hash:{DIMS}")
        yield url


@pytest.fixture
def shared(shared_url: str) -> Iterator[Conn]:
    with connect(shared_url) as c:
        yield c


def hybrid(
    conn: Conn, text: Any = TEXT, vector: Any = VECTOR, k: Any = 10, **options: Any
) -> list[Hit]:
    name = options.pop("name", "docs")
    return call_search(conn, "hybrid_search", name, text, vector, k, **options)


def branches(
    conn: Conn, name: str = "docs", candidates: int = 100, **options: Any
) -> tuple[list[Hit], list[Hit]]:
    """What search and bm25_search return for TEXT and VECTOR."""
    return (
        call_search(conn, "search", name, VECTOR, candidates, **options),
        call_search(conn, "bm25_search", name, TEXT, candidates, **options),
    )


def key(hit: Hit, chunks: bool) -> Key:
    return (hit.id, hit.chunk_no) if chunks else hit.id


def rrf(
    sem: list[Hit], lex: list[Hit], rrf_k: int, weight: float, chunks: bool
) -> dict[Key, float]:
    """sum over branches of weight / (rrf_k + rank); semantic weight w, BM25 1 - w."""
    fused: dict[Key, float] = {}
    for hits, w in ((sem, weight), (lex, 1 - weight)):
        for h in hits:
            fused[key(h, chunks)] = fused.get(key(h, chunks), 0.0) + w / (rrf_k + h.rank)
    return fused


def convex(sem: list[Hit], lex: list[Hit], weight: float, chunks: bool) -> dict[Key, float]:
    """sum over branches of weight * (score - min) / (max - min), 1 when max = min."""
    fused: dict[Key, float] = {}
    for hits, w in ((sem, weight), (lex, 1 - weight)):
        lo, hi = min(h.score for h in hits), max(h.score for h in hits)
        for h in hits:
            norm = (h.score - lo) / (hi - lo) if hi > lo else 1.0
            fused[key(h, chunks)] = fused.get(key(h, chunks), 0.0) + w * norm
    return fused


def top(fused: dict[Key, float], k: int) -> list[tuple[Key, float]]:
    """Best first, ties broken by key."""
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def assert_fused(hits: list[Hit], expected: list[tuple[Key, float]], chunks: bool) -> None:
    assert [key(h, chunks) for h in hits] == [k for k, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-9)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


# ------------------------------------------------------------ fusion


def test_the_branches_disagree(shared: Conn) -> None:
    """Guards the fusion tests: each branch finds rows the other does not,
    and they rank the rows both find differently."""
    sem, lex = branches(shared, candidates=20)
    assert set(ids(sem)) - set(ids(lex))
    assert set(ids(lex)) - set(ids(sem))
    both = set(ids(sem)) & set(ids(lex))
    assert len(both) > 2
    assert [i for i in ids(sem) if i in both] != [i for i in ids(lex) if i in both]


@pytest.mark.parametrize("chunks", [False, True], ids=["rows", "chunks"])
@pytest.mark.parametrize(("rrf_k", "weight"), [(60, 0.5), (0, 0.3), (5, 0.9)])
def test_rrf_is_the_weighted_sum_of_reciprocal_ranks(
    shared: Conn, rrf_k: int, weight: float, chunks: bool
) -> None:
    name = "long" if chunks else "docs"
    sem, lex = branches(shared, name, candidates=15, chunks=chunks)

    hits = hybrid(
        shared,
        k=12,
        name=name,
        fusion="rrf",
        rrf_k=rrf_k,
        semantic_weight=weight,
        candidates=15,
        chunks=chunks,
    )

    assert_fused(hits, top(rrf(sem, lex, rrf_k, weight, chunks), 12), chunks)


@pytest.mark.parametrize("chunks", [False, True], ids=["rows", "chunks"])
@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_convex_is_the_weighted_sum_of_min_max_normalized_scores(
    shared: Conn, weight: float, chunks: bool
) -> None:
    name = "long" if chunks else "docs"
    sem, lex = branches(shared, name, candidates=15, chunks=chunks)

    hits = hybrid(
        shared,
        k=12,
        name=name,
        fusion="convex",
        normalization="minmax",
        semantic_weight=weight,
        candidates=15,
        chunks=chunks,
    )

    assert_fused(hits, top(convex(sem, lex, weight, chunks), 12), chunks)


def spread(
    sem: list[Hit], lex: list[Hit], weight: float, chunks: bool, bm25_top: float
) -> dict[Key, float]:
    """sum over branches of weight * (score - weakest) / (attainable - weakest):
    attainable is 1 for cosine and bm25_max_score for BM25; 0 when no room."""
    fused: dict[Key, float] = {}
    for hits, w, high in ((sem, weight, 1.0), (lex, 1 - weight, bm25_top)):
        low = min(h.score for h in hits)
        for h in hits:
            part = (h.score - low) / (high - low) if high > low else 0.0
            fused[key(h, chunks)] = fused.get(key(h, chunks), 0.0) + w * part
    return fused


@pytest.mark.parametrize("chunks", [False, True], ids=["rows", "chunks"])
@pytest.mark.parametrize("weight", [0.5, 0.8])
def test_the_default_fusion_is_convex_over_each_branchs_spread(
    shared: Conn, weight: float, chunks: bool
) -> None:
    name = "long" if chunks else "docs"
    sem, lex = branches(shared, name, candidates=15, chunks=chunks)
    row = shared.execute("SELECT autoembed.bm25_max_score(%s, %s)", (name, TEXT)).fetchone()
    assert row is not None
    bm25_top = float(row[0])
    assert bm25_top > max(h.score for h in lex)  # no chunk reaches the ceiling

    hits = hybrid(shared, k=12, name=name, semantic_weight=weight, candidates=15, chunks=chunks)

    assert_fused(hits, top(spread(sem, lex, weight, chunks, bm25_top), 12), chunks)


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_semantic_weight_one_or_zero_gives_one_branchs_order(shared: Conn, fusion: str) -> None:
    sem, lex = branches(shared, candidates=20)
    both = set(ids(sem)) & set(ids(lex))

    for weight, branch in ((1.0, sem), (0.0, lex)):
        # k: every row either branch returns, those the other misses included
        hits = hybrid(shared, k=40, fusion=fusion, semantic_weight=weight, candidates=20)
        assert [i for i in ids(hits) if i in both] == [i for i in ids(branch) if i in both]


def test_a_row_found_by_one_branch_only_still_appears(conn: Conn, db_url: str) -> None:
    # Row 1 has no lexeme (stop words only) but is the query embedding's
    # nearest; row 3 is BM25's only match.
    make_texts(conn, ["the of and", "rivers and engines", "apples and pears"], model=f"hash:{DIMS}")
    drain(db_url)
    vector = embed("the of and")
    sem = call_search(conn, "search", "docs", vector, 2)
    lex = call_search(conn, "bm25_search", "docs", "apples", 2)
    assert ids(sem) == [1, 2]
    assert ids(lex) == [3]

    hits = hybrid(conn, "apples", vector, k=2, candidates=2, fusion="rrf")

    assert_fused(hits, [(1, 0.5 / 61), (3, 0.5 / 61)], False)  # a tie, ranked by key
    assert [h.chunk for h in hits] == ["the of and", "apples and pears"]


def test_a_row_of_several_chunks_appears_once_with_the_semantic_best_chunk(shared: Conn) -> None:
    sem, _ = branches(shared, "long", candidates=100)
    best_chunk = {h.id: h.chunk_no for h in sem}

    hits = hybrid(shared, k=100, name="long")
    per_chunk = hybrid(shared, k=100, name="long", chunks=True)

    assert sorted(ids(hits)) == list(range(1, len(LONG_ROWS) + 1))
    assert {h.id: h.chunk_no for h in hits} == best_chunk
    assert len(per_chunk) > 2 * len(LONG_ROWS)
    assert len({(h.id, h.chunk_no) for h in per_chunk}) == len(per_chunk)


def test_the_filter_applies_to_both_branches(shared: Conn) -> None:
    sem, lex = branches(shared)
    odd = '{"category": "odd"}'
    assert sem[0].id % 2 == 0 or lex[0].id % 2 == 0  # a branch's best row is filtered out
    f_sem, f_lex = branches(shared, filter=odd)

    hits = hybrid(shared, k=20, filter=odd, fusion="rrf")

    assert all(i % 2 == 1 for i in ids(hits))
    assert_fused(hits, top(rrf(f_sem, f_lex, 60, 0.5, False), 20), False)


def test_k_may_exceed_candidates(shared: Conn) -> None:
    sem, lex = branches(shared, candidates=25)

    hits = hybrid(shared, k=25, candidates=3, fusion="rrf")

    assert len(hits) == 25
    assert_fused(hits, top(rrf(sem, lex, 60, 0.5, False), 25), False)


def test_nothing_embedded_yet_gives_no_results(shared: Conn) -> None:
    assert hybrid(shared, name="later") == []
    assert hybrid(shared, name="later", fusion="convex") == []


def test_k_limits_the_results(shared: Conn) -> None:
    everything = hybrid(shared, k=100)
    assert len(everything) == 40
    # The same candidates (the fused scores depend on them), fewer rows.
    assert hybrid(shared, k=7, candidates=100) == everything[:7]
    assert hybrid(shared, k=0) == []


def test_by_default_each_branch_contributes_20_candidates_or_k(shared: Conn) -> None:
    assert hybrid(shared, k=10) == hybrid(shared, k=10, candidates=20)
    assert hybrid(shared, k=10) != hybrid(shared, k=10, candidates=40)
    assert hybrid(shared, k=30) == hybrid(shared, k=30, candidates=30)


def test_rows_hidden_by_row_level_security_never_appear(
    conn: Conn, db_url: str, searcher: str
) -> None:
    make_texts(conn, ROWS, categories=CATEGORIES, model=f"hash:{DIMS}")
    drain(db_url)
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(searcher)))
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY only_odd ON docs FOR SELECT USING (category = 'odd')")
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(searcher)))

    assert ids(hybrid(conn, k=100)) == ids(hybrid(conn, k=100, filter='{"category": "odd"}'))
    assert len(hybrid(conn, k=100)) == 20


# ------------------------------------------------------ bad arguments


N = psycopg.errors.NullValueNotAllowed
V = psycopg.errors.InvalidParameterValue


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"fusion": "max"}, V, "fusion must be rrf or convex, got max"),
        ({"fusion": None}, V, "fusion must be rrf or convex, got NULL"),
        ({"rrf_k": -1}, V, "rrf_k must be at least 0, got -1"),
        ({"normalization": "zscore"}, V, "normalization must be spread or minmax, got zscore"),
        ({"normalization": None}, V, "normalization must be spread or minmax, got NULL"),
        ({"rrf_k": None}, V, "rrf_k must be at least 0, got NULL"),
        ({"semantic_weight": -0.1}, V, "semantic_weight must be between 0 and 1, got -0.1"),
        ({"semantic_weight": 1.5}, V, "semantic_weight must be between 0 and 1, got 1.5"),
        ({"semantic_weight": math.nan}, V, "semantic_weight must be between 0 and 1, got NaN"),
        ({"semantic_weight": None}, V, "semantic_weight must be between 0 and 1, got NULL"),
        ({"candidates": 0}, V, "candidates must be between 1 and 10000, got 0"),
        ({"candidates": 10_001}, V, "candidates must be between 1 and 10000, got 10001"),
        ({"candidates": None}, V, "candidates must be between 1 and 10000, got NULL"),
        ({"text": None}, N, "needs both the query text and its embedding"),
        ({"vector": None}, N, "needs both the query text and its embedding"),
        ({"k": -1}, V, "k must not be negative, got -1"),
        ({"k": 10_001}, V, "k must be at most 10000, got 10001"),
        ({"k": None}, N, "k must not be NULL"),
        ({"chunks": None}, N, "chunks must not be NULL"),
        ({"filter": "[1, 2]"}, V, "filter must be a JSON object of column values, got array"),
        ({"name": "nope"}, psycopg.errors.UndefinedObject, 'no vectorizer named "nope"'),
        ({"name": None}, N, "vectorizer name must not be NULL"),
        ({"vector": np.ones(3, dtype=np.float32)}, psycopg.errors.DatatypeMismatch, "3 dimensions"),
    ],
)
def test_a_bad_argument_is_a_clear_error(
    shared: Conn, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        hybrid(shared, **arguments)
