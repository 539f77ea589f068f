"""autoembed.search(name, query_embedding, k, filter, chunks): ordering, one
row per source row (or per chunk), filters that exclude the nearest rows,
argument checks, every distance against a brute-force computation, and the
caller's privileges and row-level security."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.worker import queue
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import (
    active_version,
    call_search,
    chunks,
    ids,
    make_texts,
    scratch_database,
    vectorizer,
)

Conn = psycopg.Connection[Any]
DIMS = 32
EMBEDDER = HashingEmbedder(DIMS)
SEARCH = "SELECT pk, chunk_no, chunk, score, rank FROM autoembed.search(%s, %s::vector, %s)"


def embed(text: str) -> npt.NDArray[np.float32]:
    return np.asarray(EMBEDDER.embed([text])[0], dtype=np.float32)


def make_docs(conn: Conn, texts: list[str], name: str = "docs", **options: Any) -> None:
    """Table ``name``(id, body, category) with ids 1..n, and a vectorizer of the same name."""
    make_texts(conn, texts, name, model=f"hash:{DIMS}", **options)


def search(conn: Conn, query: Any, k: Any = 10, name: Any = "docs") -> list[tuple[Any, ...]]:
    return conn.execute(SEARCH, (name, query, k)).fetchall()


def ranked_ids(rows: list[tuple[Any, ...]]) -> list[int]:
    return [r[0]["id"] for r in rows]


FRUIT = [
    "red apples and green apples in a basket",
    "green pears on the kitchen table",
    "fast cars racing on the road",
    "a recipe for apple pie with cinnamon",
    "the history of the roman empire",
    "ripe bananas and yellow lemons",
]
LONG_TEXT = " ".join(f"word{i}" for i in range(200))
# Many rows near "apples and pears" and a few far from it: a filter for the
# far ones excludes more rows than one HNSW scan visits (ef_search <= 1,000).
FILTERED = [f"apples and pears number {i}" for i in range(1200)] + [
    f"rivers and engines and apples {i}" for i in range(30)
]
FILTERED_CATEGORIES = ["near"] * 1200 + ["far"] * 30


@pytest.fixture(scope="module")
def shared_url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    """One database for the tests that only read (or add their own
    vectorizer): 'docs' (FRUIT), 'long_docs' and 'filtered' embedded, 'later'
    not yet."""
    with scratch_database(pg_server, "search") as url:
        with connect(url) as c:
            make_docs(c, FRUIT)
            texts = [LONG_TEXT, "word5 word6 and something else", "unrelated"]
            make_docs(c, texts, "long_docs", chunk_tokens=16, chunk_overlap=0)
            make_docs(c, FILTERED, "filtered", categories=FILTERED_CATEGORIES)
            drain(url)
            make_docs(c, FRUIT, "later")
        yield url


@pytest.fixture
def shared(shared_url: str) -> Iterator[Conn]:
    with connect(shared_url) as c:
        yield c


# ------------------------------------------------------------- ordering


def test_results_are_ordered_by_score_with_ranks_from_one(shared: Conn) -> None:
    rows = search(shared, embed("green apples"), 10)

    assert len(rows) == len(FRUIT)
    assert [r[4] for r in rows] == list(range(1, len(FRUIT) + 1))
    scores = [r[3] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert ranked_ids(rows)[0] == 1
    assert rows[0][2] == FRUIT[0]  # the chunk is the row's text
    assert rows[0][3] == pytest.approx(float(embed("green apples") @ embed(FRUIT[0])), abs=1e-5)


def test_k_limits_the_results(shared: Conn) -> None:
    all_rows = search(shared, embed("apples"), 10)
    assert len(all_rows) == len(FRUIT)
    assert search(shared, embed("apples"), 3) == all_rows[:3]
    assert search(shared, embed("apples"), 0) == []


def test_a_row_of_many_chunks_appears_once_with_its_best_chunk(shared: Conn) -> None:
    long_chunks = chunks(shared, "long_docs")[(1,)]
    assert len(long_chunks) > 5
    target = long_chunks[3]

    rows = search(shared, embed(target.chunk), 10, name="long_docs")

    assert sorted(ranked_ids(rows)) == [1, 2, 3]  # each row once
    assert ranked_ids(rows)[0] == 1
    assert rows[0][1:3] == (target.chunk_no, target.chunk)
    assert rows[0][3] == pytest.approx(1.0, abs=1e-5)


def test_nothing_embedded_yet_gives_no_results(shared: Conn) -> None:
    assert search(shared, embed("apples"), name="later") == []


# ------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("k", "error", "message"),
    [
        (-1, psycopg.errors.InvalidParameterValue, r"k must not be negative, got -1"),
        (10001, psycopg.errors.InvalidParameterValue, r"k must be at most 10000, got 10001"),
        (None, psycopg.errors.NullValueNotAllowed, r"k must not be NULL"),
    ],
)
def test_a_bad_k_is_an_error_naming_k(
    shared: Conn, k: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        search(shared, embed("apples"), k)


def test_null_name_or_vector_is_a_clear_error(shared: Conn) -> None:
    null = psycopg.errors.NullValueNotAllowed
    with pytest.raises(null, match="vectorizer name must not be NULL"):
        search(shared, embed("apples"), name=None)
    with pytest.raises(null, match="query_embedding must not be NULL"):
        search(shared, None)


def test_a_vector_of_the_wrong_dimension_names_both(shared: Conn) -> None:
    with pytest.raises(psycopg.errors.DatatypeMismatch) as info:
        search(shared, np.ones(3, dtype=np.float32))
    assert "3 dimensions" in str(info.value)
    assert f"stores {DIMS}" in str(info.value)


def test_an_unknown_vectorizer_is_an_error(shared: Conn) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject, match='no vectorizer named "nope"'):
        search(shared, embed("apples"), name="nope")


# ------------------------------------------- distances vs brute force


def _store_random_vectors(
    db_url: str, name: str, rng: np.random.Generator, chunks_per_row: int
) -> None:
    """Write vectors of varied length and direction for every row, bypassing
    the embedder, so that cosine, l2 and inner product rank differently."""
    with connect(db_url) as w:
        queue.prepare(w)
        vid = active_version(w, name)["id"]
        token = uuid.uuid4()
        claimed = queue.claim(w, vid, 1000, 30, token)
        version = queue.register_version(w, EMBEDDER.version())
        item = [i for i in range(len(claimed)) for _ in range(chunks_per_row)]
        chunk_no = [n for _ in claimed for n in range(chunks_per_row)]
        vectors = [
            (rng.standard_normal(DIMS) * rng.uniform(0.2, 3.0)).astype(np.float32) for _ in item
        ]
        keys = [c.key for c in claimed]
        texts = [f"chunk {n}" for n in chunk_no]
        done = queue.complete(w, vid, token, version, keys, item, chunk_no, texts, vectors)
        assert done.written == len(claimed)


def _brute_force(
    conn: Conn,
    name: str,
    distance: str,
    q: npt.NDArray[np.float64],
    k: int,
    *,
    per_chunk: bool = False,
) -> list[tuple[int, int, float]]:
    """(id, best chunk_no, score) of the k best rows (or (id, chunk_no, score)
    of the k best chunks), computed in numpy."""
    table = vectorizer(conn, name).embeddings
    rows = conn.execute(sql.SQL("SELECT id, chunk_no, embedding FROM {}").format(table)).fetchall()
    best: dict[Any, tuple[float, int]] = {}
    for doc_id, chunk_no, emb in rows:
        e = np.asarray(emb.to_numpy(), dtype=np.float64)
        if distance == "cosine":
            score = float(e @ q / (np.linalg.norm(e) * np.linalg.norm(q)))
        elif distance == "l2":
            score = -float(np.linalg.norm(e - q))
        else:
            score = float(e @ q)
        key = (doc_id, chunk_no) if per_chunk else doc_id
        if key not in best or (score, -chunk_no) > (best[key][0], -best[key][1]):
            best[key] = (score, chunk_no)
    ordered = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
    return [(key[0] if per_chunk else key, n, score) for key, (score, n) in ordered]


@pytest.mark.parametrize("index", ["hnsw", "none"])
@pytest.mark.parametrize("distance", ["cosine", "l2", "inner_product"])
def test_every_distance_orders_like_brute_force(
    shared: Conn, shared_url: str, distance: str, index: str
) -> None:
    name = f"bf_{distance}_{index}"
    make_docs(shared, [f"row {i}" for i in range(40)], name, distance=distance, index=index)
    rng = np.random.default_rng(7)
    _store_random_vectors(shared_url, name, rng, chunks_per_row=2)
    q = (rng.standard_normal(DIMS) * 2.5).astype(np.float32)

    rows = search(shared, q, 10, name=name)
    expected = _brute_force(shared, name, distance, q.astype(np.float64), 10)

    assert [(r[0]["id"], r[1]) for r in rows] == [(i, c) for i, c, _ in expected]
    assert [r[3] for r in rows] == pytest.approx([s for _, _, s in expected], abs=1e-4)
    assert [r[4] for r in rows] == list(range(1, 11))


def test_the_distances_really_differ(shared: Conn, shared_url: str) -> None:
    """Guards the brute-force test: on its data the three orders are distinct."""
    make_docs(shared, [f"row {i}" for i in range(40)], "bf_guard")
    rng = np.random.default_rng(7)
    _store_random_vectors(shared_url, "bf_guard", rng, chunks_per_row=2)
    q = (rng.standard_normal(DIMS) * 2.5).astype(np.float64)
    orders = {
        tuple(i for i, _, _ in _brute_force(shared, "bf_guard", d, q, 10))
        for d in ("cosine", "l2", "inner_product")
    }
    assert len(orders) == 3


# ------------------------------------------------- filter and chunks


FAR = '{"category": "far"}'


def test_a_filter_that_excludes_the_nearest_rows_still_fills_k(shared: Conn) -> None:
    """pgvector's iterative index scan looks past the 1,200 nearest rows the
    filter excludes (more than one HNSW scan's ef_search of at most 1,000)."""
    # The plan of a table too big to sort whole: walk the HNSW index (on
    # 1,230 rows the planner would rather sort them all).
    shared.execute("SET enable_sort = off")
    q = embed("apples and pears")
    assert max(ids(call_search(shared, "search", "filtered", q, 100))) <= 1200
    every = _brute_force(shared, "filtered", "cosine", q.astype(np.float64), len(FILTERED))
    far = [r for r in every if r[0] > 1200]

    hits = call_search(shared, "search", "filtered", q, 10, filter=FAR)

    assert len(hits) == 10
    assert set(ids(hits)) <= {i for i, _, _ in far}
    assert len(set(ids(hits)) & {i for i, _, _ in far[:10]}) >= 8  # HNSW is approximate
    best = {i: s for i, _, s in far}
    assert [h.score for h in hits] == pytest.approx([best[i] for i in ids(hits)], abs=1e-5)
    assert [h.rank for h in hits] == list(range(1, 11))


def test_a_filter_matching_fewer_than_k_rows_returns_them_all(shared: Conn) -> None:
    hits = call_search(shared, "search", "filtered", embed("apples and pears"), 100, filter=FAR)

    assert sorted(ids(hits)) == list(range(1201, 1231))


def test_chunks_true_returns_the_nearest_chunks_several_of_one_row(shared: Conn) -> None:
    target = chunks(shared, "long_docs")[(1,)][3]
    q = embed(target.chunk)

    hits = call_search(shared, "search", "long_docs", q, 5, chunks=True)

    expected = _brute_force(shared, "long_docs", "cosine", q.astype(np.float64), 5, per_chunk=True)
    assert [(h.id, h.chunk_no) for h in hits] == [(i, n) for i, n, _ in expected]
    assert ids(hits).count(1) >= 2
    assert (hits[0].chunk_no, hits[0].chunk) == (target.chunk_no, target.chunk)
    assert [h.score for h in hits] == pytest.approx([s for _, _, s in expected], abs=1e-5)


def test_a_filter_applies_per_chunk_too(shared: Conn) -> None:
    target = chunks(shared, "long_docs")[(1,)][3]

    hits = call_search(
        shared, "search", "long_docs", embed(target.chunk), 5, chunks=True, filter='{"id": 2}'
    )

    assert ids(hits) == [2] * len(chunks(shared, "long_docs")[(2,)])


# ------------------------------------------------------ who sees what


def _grant_search(conn: Conn, role: str) -> None:
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (role,))


def test_search_without_select_on_the_source_table_is_refused(
    conn: Conn, db_url: str, searcher: str
) -> None:
    make_docs(conn, FRUIT)
    drain(db_url)
    _grant_search(conn, searcher)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(searcher)))

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table docs"):
        search(conn, embed("apples"))


def test_select_on_the_source_and_grant_search_are_enough_to_search(
    conn: Conn, db_url: str, searcher: str
) -> None:
    """Search runs as the caller and the source table's privileges decide what
    it sees (DESIGN.md); it needs no grant on autoembed's catalog tables. A
    grant on the embeddings table alone, without grant_search's row-level
    security policy, shows no chunk (docs/security.md)."""
    make_docs(conn, FRUIT)
    drain(db_url)
    r = sql.Identifier(searcher)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(vectorizer(conn, "docs").embeddings, r))
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(r))
    conn.execute(sql.SQL("SET ROLE {}").format(r))
    assert search(conn, embed("green apples"), 1) == []
    conn.execute("RESET ROLE")
    _grant_search(conn, searcher)
    conn.execute(sql.SQL("SET ROLE {}").format(r))

    assert ranked_ids(search(conn, embed("green apples"), 1)) == [1]


def test_search_never_returns_rows_hidden_by_row_level_security(
    conn: Conn, db_url: str, searcher: str
) -> None:
    # Many hidden rows sit nearer the query than the few visible ones, so the
    # search has to look past them to fill k.
    texts = [f"secret apples number {i}" for i in range(60)]
    texts += [f"public apples and pears {i}" for i in range(5)]
    make_docs(conn, texts)
    conn.execute("ALTER TABLE docs ADD COLUMN public boolean")
    conn.execute("UPDATE docs SET public = body LIKE 'public%'")
    drain(db_url)
    _grant_search(conn, searcher)
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(searcher)))
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY only_public ON docs FOR SELECT USING (public)")
    visible = set(range(61, 66))
    assert ranked_ids(search(conn, embed("secret apples"), 5))[0] <= 60  # the owner sees all

    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(searcher)))
    rows = search(conn, embed("secret apples"), 3)
    everything = search(conn, embed("secret apples"), 100)

    assert len(rows) == 3
    assert set(ranked_ids(rows)) <= visible
    assert set(ranked_ids(everything)) == visible
    assert [r[4] for r in rows] == [1, 2, 3]
