"""BM25's index (extension_sql/idempotent/064_bm25_index.sql): posting blocks
in segments, a fresh list merged in the background. Whatever state the index
is in — every chunk fresh, merged into one segment, many segments merged
into a higher level, deleted chunks' postings still in their blocks, rebuilt
— bm25_search must return exactly what a naive scan of every chunk's lexemes
returns, score for score (test_bm25_correctness.naive_top), and a searcher
that may not see every source row must never read the blocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.worker import drain as worker_drain
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import (
    active_version,
    call_search,
    create_vectorizer,
    scratch_database,
)
from tests.integration.test_bm25_correctness import NAME, _queries, naive_top

Conn = psycopg.Connection[Any]
DATA = Path(__file__).resolve().parents[1] / "data"
WAVES = 10  # the corpus inserted in this many parts, each merged alone


def _docs() -> list[tuple[int, str, str]]:
    with (DATA / "scifact_bm25_corpus.jsonl").open(encoding="utf-8") as f:
        return [(d["id"], d["title"], d["text"]) for d in map(json.loads, f)]


@pytest.fixture(scope="module")
def url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    with scratch_database(pg_server, "bm25i") as u:
        with connect(u) as c:
            c.execute("CREATE TABLE scifact (id int PRIMARY KEY, title text, text text)")
            create_vectorizer(c, NAME, ["title", "text"], model="hash:8", chunk_tokens=128)
        yield u


@pytest.fixture(scope="module")
def conn(url: str) -> Iterator[Conn]:
    with connect(url) as c:
        yield c


@pytest.fixture(autouse=True)
def no_merges_by_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say when the index merges: drains here never do."""
    monkeypatch.setattr(worker_drain, "MERGE_AFTER_CHUNKS", 10**9)
    monkeypatch.setattr(worker_drain, "MERGE_AT_END", 10**9)
    monkeypatch.setattr(worker_drain, "COMPACT_AFTER_CHUNKS", 10**9)
    monkeypatch.setattr(worker_drain, "COMPACT_AFTER_SECONDS", 10.0**9)
    # The same vectors, each word's computed once (BM25 never reads them).
    monkeypatch.setattr(HashingEmbedder, "_word_vector", cache(HashingEmbedder._word_vector))


def _postings(conn: Conn) -> sql.Composable:
    return sql.Identifier("autoembed", active_version(conn, NAME)["postings_table"])


def index_state(conn: Conn) -> dict[str, Any]:
    """Fresh chunks listed, segments per level, chunks, and the merged
    postings: held in blocks, and of them, those of chunks deleted since."""
    p = _postings(conn)
    e = sql.Identifier("autoembed", active_version(conn, NAME)["embeddings_table"])
    levels = conn.execute(
        sql.SQL(
            "SELECT segment / 1000000, count(DISTINCT segment) FROM {} WHERE segment > 0 GROUP BY 1"
        ).format(p)
    ).fetchall()
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT coalesce(sum(cardinality(chunk_ids)), 0) FROM {p} WHERE term = ''),"
            " (SELECT count(*) FROM {e}),"
            " (SELECT count(*) FROM {p} AS b, unnest(b.chunk_ids) AS u(id) WHERE b.segment > 0),"
            " (SELECT count(*) FROM {p} AS b, unnest(b.chunk_ids) AS u(id)"
            "  WHERE b.segment > 0 AND NOT EXISTS (SELECT FROM {e} AS x WHERE x.chunk_id = u.id))"
        ).format(p=p, e=e)
    ).fetchone()
    assert row is not None
    fresh, chunks, postings, dead = map(int, row)
    return {
        "fresh": fresh,
        "levels": dict(levels),
        "chunks": chunks,
        "postings": postings,
        "dead": dead,
    }


def assert_exact(conn: Conn, queries: int = 12) -> int:
    """bm25_search's top k (chunks and rows) equals the naive scan's, bit for bit."""
    checked = 0
    for query in _queries()[:queries]:
        for k in (1, 10, 40):
            for rows in (False, True):
                hits = call_search(conn, "bm25_search", NAME, query, k, chunks=not rows)
                got = [((h.id, h.chunk_no), h.score) for h in hits]
                assert got == naive_top(conn, query, k, rows=rows), (query, k, rows)
                checked += len(got)
    assert checked > 100
    return checked


def merge(conn: Conn, min_chunks: int = 1) -> int:
    row = conn.execute("SELECT autoembed.merge_bm25(%s, %s)", (NAME, min_chunks)).fetchone()
    assert row is not None
    return int(row[0])


def test_every_state_of_the_index_gives_the_full_scans_top_k(conn: Conn, url: str) -> None:
    docs = _docs()
    wave = len(docs) // WAVES + 1
    for i in range(WAVES):
        with conn.cursor() as cur, cur.copy("COPY scifact (id, title, text) FROM STDIN") as cp:
            for d in docs[i * wave : (i + 1) * wave]:
                cp.write_row(d)
        drain(url)
        if i == 0:
            # every chunk fresh: searched from its lexemes alone
            state = index_state(conn)
            assert state["fresh"] == state["chunks"] > 0
            assert state["levels"] == {}
            assert_exact(conn)
        assert merge(conn) > 0
    state = index_state(conn)
    # 10 merges of one wave each: 8 level-1 segments became one of level 2
    assert state == {**state, "fresh": 0, "levels": {1: 2, 2: 1}, "dead": 0}
    assert state["postings"] > 20 * state["chunks"]
    assert_exact(conn)

    # changed and deleted rows: new chunks fresh, the old ones' postings dead
    conn.execute("UPDATE scifact SET text = text || ' cell proliferation' WHERE id % 9 = 0")
    conn.execute("DELETE FROM scifact WHERE id % 13 = 0")
    drain(url)
    state = index_state(conn)
    assert 0 < state["fresh"] < state["chunks"]
    assert state["dead"] > 0  # the old chunks' postings, still in their blocks
    assert_exact(conn)

    # rebuilt: one segment, nothing fresh, no dead posting
    conn.execute("SELECT autoembed.optimize_bm25(%s)", (NAME,))
    state = index_state(conn)
    assert state["fresh"] == 0
    assert sum(state["levels"].values()) == 1
    assert state["dead"] == 0
    assert state["postings"] > 20 * state["chunks"]
    assert_exact(conn)


def test_a_search_sees_a_merge_whole_or_not_at_all(conn: Conn, url: str) -> None:
    with conn.cursor() as cur, cur.copy("COPY scifact (id, title, text) FROM STDIN") as cp:
        cp.write_row((10**6, "Quokka cells", "cell proliferation in quokka cells"))
    drain(url)
    query = "quokka cell proliferation"
    before = call_search(conn, "bm25_search", NAME, query, 10)
    with connect(url) as merger:
        merger.autocommit = False
        assert merger.execute("SELECT autoembed.merge_bm25(%s)", (NAME,)).fetchone() != (0,)
        # merged but not committed: this search still reads the fresh list
        assert call_search(conn, "bm25_search", NAME, query, 10) == before
        merger.commit()
    assert index_state(conn)["fresh"] == 0
    assert call_search(conn, "bm25_search", NAME, query, 10) == before
    assert before[0].id == 10**6


def test_a_second_merger_does_not_wait(conn: Conn, url: str) -> None:
    with conn.cursor() as cur, cur.copy("COPY scifact (id, title, text) FROM STDIN") as cp:
        cp.write_row((10**6 + 1, "Another", "another fresh abstract about cells"))
    drain(url)
    with connect(url) as first, connect(url) as second:
        first.autocommit = False
        assert first.execute("SELECT autoembed.merge_bm25(%s)", (NAME,)).fetchone() == (1,)
        second.execute("SET lock_timeout = '2s'")
        assert second.execute("SELECT autoembed.merge_bm25(%s)", (NAME,)).fetchone() == (0,)
        first.commit()


@pytest.mark.parametrize("bad", [0, -3, None])
def test_merge_bm25_refuses_a_bad_min_chunks(conn: Conn, bad: int | None) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="min_chunks must be at least 1"):
        conn.execute("SELECT autoembed.merge_bm25(%s, %s)", (NAME, bad))


def test_a_searcher_under_row_level_security_never_reads_the_blocks(conn: Conn, url: str) -> None:
    """A block lists chunks of many rows: a searcher that may not see every
    row reads none (its searches scan the chunks it may see, exactly), one
    that may see all reads them all."""
    merge(conn)
    for role in ("bm25_all", "bm25_some"):
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT autoembed.grant_search(%s, %s)", (NAME, role))
        conn.execute(sql.SQL("GRANT SELECT ON scifact TO {}").format(sql.Identifier(role)))
    conn.execute("ALTER TABLE scifact ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY everything ON scifact TO bm25_all USING (true)")
    conn.execute("CREATE POLICY even_ids ON scifact TO bm25_some USING (id % 2 = 0)")
    blocks = sql.SQL("SELECT count(*) FROM {} WHERE segment > 0").format(_postings(conn))
    query = _queries()[0]
    try:
        conn.execute("SET ROLE bm25_some")
        assert conn.execute(blocks).fetchone() == (0,)
        some = call_search(conn, "bm25_search", NAME, query, 20, chunks=True)
        conn.execute("RESET ROLE")
        # what the owner ranks, less the odd ids: the same scores, same order
        everything = call_search(conn, "bm25_search", NAME, query, 200, chunks=True)
        expected = [(h.id, h.chunk_no, h.score) for h in everything if h.id % 2 == 0][:20]
        assert [(h.id, h.chunk_no, h.score) for h in some] == expected
        assert len(some) == 20
        # with RLS on, even a policy showing everything does not open the blocks
        conn.execute("SET ROLE bm25_all")
        assert conn.execute(blocks).fetchone() == (0,)
        conn.execute("RESET ROLE")
        conn.execute("ALTER TABLE scifact DISABLE ROW LEVEL SECURITY")
        conn.execute("SET ROLE bm25_all")
        (n,) = conn.execute(blocks).fetchone()  # type: ignore[misc]
        assert n > 0
        assert call_search(conn, "bm25_search", NAME, query, 20, chunks=True) == everything[:20]
    finally:
        conn.execute("RESET ROLE")
        conn.execute("ALTER TABLE scifact DISABLE ROW LEVEL SECURITY")
        conn.execute("DROP POLICY IF EXISTS everything ON scifact")
        conn.execute("DROP POLICY IF EXISTS even_ids ON scifact")
