"""The real all-MiniLM-L6-v2 model, in-process (``autoembed worker --once``).

A 1,000-row table of real titles (tests/data/scifact_titles.jsonl) is
embedded once for the module; the tests then check what was stored, search
it, and change it: an UPDATE of a column that is not embedded enqueues
nothing, an UPDATE of an embedded column re-embeds only that row, DELETE
removes its chunks, TRUNCATE clears them (last, as it empties the table).
A 5,000-word row is chunked within the model's token limit.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from autoembed.search import search
from autoembed.worker.embedders import Embedder, load_embedder
from tests.conftest import TEMPLATE, drain

pytestmark = pytest.mark.model

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TITLES = Path(__file__).resolve().parent.parent / "data" / "scifact_titles.jsonl"


def embedder() -> Embedder:
    return load_embedder(MODEL)  # loaded once per process


@dataclass
class Titles:
    url: str
    rows: dict[str, str]  # id -> title
    written: int
    failed: int
    chunks: int
    seconds: float


@pytest.fixture(scope="module")
def titles(pg_server: PostgresServer, template_url: str) -> Iterator[Titles]:
    """A database with table ``papers`` (1,000 SciFact titles) embedded by MiniLM."""
    name = f"real_model_{os.getpid()}"
    with connect(pg_server.url) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    url = pg_server.url_for(name)
    rows = {}
    for line in TITLES.read_text("utf-8").splitlines():
        record = json.loads(line)
        rows[record["id"]] = record["title"]
    assert len(rows) == 1000
    with connect(url) as c:
        c.execute(
            "CREATE TABLE papers (id text PRIMARY KEY, title text NOT NULL, "
            "views int NOT NULL DEFAULT 0)"
        )
        with c.cursor() as cur, cur.copy("COPY papers (id, title) FROM STDIN") as copy:
            for row in rows.items():
                copy.write_row(row)
        c.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title'])")
    embedder()  # the model load is not part of the backfill time
    t = time.monotonic()
    stats = drain(url)
    took = time.monotonic() - t
    print(f"\n[model] 1,000 titles embedded in-process in {took:.1f}s ({1000 / took:.0f} rows/s)")
    yield Titles(url, rows, stats.written, stats.failed, stats.chunks, took)
    with connect(pg_server.url) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def tconn(titles: Titles) -> Iterator[psycopg.Connection[Any]]:
    with connect(titles.url) as c:
        yield c


def _state(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    """id -> (chunks, source_seq, embedded_at) of every embedded row."""
    return {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT id, array_agg(chunk ORDER BY chunk_no), max(source_seq::text)::bigint, "
            "max(embedded_at) FROM autoembed.papers_embeddings GROUP BY id"
        )
    }


def _queued(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(inbox rows, queue rows, pending according to vectorizer_status)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM autoembed.papers_inbox), "
        "(SELECT count(*) FROM autoembed.papers_queue_v1), "
        "(SELECT pending FROM autoembed.vectorizer_status WHERE name = 'papers')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_every_row_is_embedded_as_384d_vectors_of_one_model_version(
    titles: Titles, tconn: psycopg.Connection[Any]
) -> None:
    assert (titles.written, titles.failed, titles.chunks) == (1000, 0, 1000)
    # About 8 s on an idle 2-core CPU; generous, as other tests may share the CPU.
    assert titles.seconds < 120, f"1,000 titles took {titles.seconds:.0f}s"
    stored = tconn.execute(
        "SELECT id, chunk_no, chunk, vector_dims(embedding), vector_norm(embedding), "
        "model_version_id FROM autoembed.papers_embeddings"
    ).fetchall()
    assert len(stored) == 1000
    # One chunk per title: the title itself (chunks do not keep outer whitespace).
    assert {r[0]: r[2] for r in stored} == {k: v.strip() for k, v in titles.rows.items()}
    assert {r[1] for r in stored} == {0}
    assert {r[3] for r in stored} == {384}
    assert all(abs(r[4] - 1) < 1e-3 for r in stored), "MiniLM's vectors are normalized"
    assert len({r[5] for r in stored}) == 1, "one model version"

    version = tconn.execute(
        "SELECT mv.model, mv.weights_digest, mv.dimensions, mv.tag FROM autoembed.model_version "
        "AS mv WHERE mv.id = %s",
        (stored[0][5],),
    ).fetchone()
    assert version is not None
    model, digest, dims, tag = version
    assert (model, dims) == (MODEL, 384)
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    assert "all-MiniLM-L6-v2" in tag
    assert f"@sha256:{digest[:16]}" in tag, tag
    assert tag == embedder().version().tag
    tstatus = tconn.execute(
        "SELECT model_version, embedded_rows, chunks, pending, in_flight, failed "
        "FROM autoembed.vectorizer_status WHERE name = 'papers'"
    ).fetchone()
    assert tstatus == (tag, 1000, 1000, 0, 0, 0)

    # The stored vectors are the model's vectors of those titles.
    sample = ["4983", "102662", "70115"]
    got = {
        r[0]: r[1].to_numpy()
        for r in tconn.execute(
            "SELECT id, embedding FROM autoembed.papers_embeddings WHERE id = ANY(%s)", (sample,)
        )
    }
    want = embedder().embed([titles.rows[i] for i in sample])
    for i, vec in zip(sample, want, strict=True):
        assert float(np.dot(got[i], vec)) > 0.999, i


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("A fast way to extract DNA from cotton plants for PCR", "102662"),
        ("reference charts of height and body weight for British children", "103007"),
        ("does reducing blood pressure help people on kidney dialysis", "202259"),
        ("a bayesian approach to measuring how complex a model is", "70115"),
    ],
)
def test_search_with_the_real_model_ranks_the_paraphrased_title_first(
    titles: Titles, tconn: psycopg.Connection[Any], query: str, expected: str
) -> None:
    hits = search(tconn, "papers", query, k=5)
    ranked = [(h.pk["id"], round(h.score, 3)) for h in hits]
    assert hits[0].pk == {"id": expected}, ranked
    assert hits[0].chunk == titles.rows[expected]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score > hits[1].score + 0.05, ranked


def _long_text(words: int) -> str:
    data = resources.files("autoembed.examples").joinpath("scifact_demo.jsonl").read_text("utf-8")
    out: list[str] = []
    for line in data.splitlines():
        out += json.loads(line)["text"].split()
        if len(out) >= words:
            return " ".join(out[:words])
    raise AssertionError("not enough demo text")


def test_a_5000_word_row_is_chunked_within_the_models_token_limit(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    text = _long_text(5000)
    conn.execute("CREATE TABLE longdocs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO longdocs VALUES (1, %s), (2, 'A short note.')", (text,))
    conn.execute("SELECT autoembed.create_vectorizer('longdocs', ARRAY['body'])")
    stats = drain(db_url)
    assert (stats.written, stats.failed) == (2, 0)

    rows = conn.execute(
        "SELECT chunk_no, chunk, vector_dims(embedding) FROM autoembed.longdocs_embeddings "
        "WHERE id = 1 ORDER BY chunk_no"
    ).fetchall()
    chunks = [r[1] for r in rows]
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert {r[2] for r in rows} == {384}
    model = embedder()
    assert model.max_seq_length == 256
    tokens = [model.count_tokens(c) for c in chunks]  # special tokens included
    print(f"\n[model] 5,000 words → {len(chunks)} chunks of {min(tokens)}..{max(tokens)} tokens")
    assert len(chunks) >= 5, "several chunks"
    assert max(tokens) <= 256, f"chunks over the model's limit: {tokens}"
    assert sorted(tokens)[len(tokens) // 2] >= 128, f"chunks far smaller than needed: {tokens}"

    # In order, together covering every word: each chunk is a piece of the text
    # starting after the previous one, and no text is skipped between them.
    # Consecutive chunks overlap (chunk_overlap defaults to 32 tokens).
    covered = 0
    start = -1
    for n, chunk in enumerate(chunks):
        start = text.find(chunk, start + 1)
        assert start >= 0, f"chunk {n} is not a piece of the text after chunk {n - 1}"
        assert text[covered:start].strip() == "", f"text skipped before chunk {n}"
        assert n == 0 or start < covered, f"chunk {n} does not overlap chunk {n - 1}"
        covered = max(covered, start + len(chunk))
    assert text[covered:].strip() == "", "the end of the text is missing"
    assert text[: text.find(chunks[0])].strip() == ""
    assert conn.execute(
        "SELECT embedded_rows, chunks, pending FROM autoembed.vectorizer_status"
    ).fetchone() == (2, len(chunks) + 1, 0)


def test_update_of_a_non_embedded_column_enqueues_nothing(
    titles: Titles, tconn: psycopg.Connection[Any]
) -> None:
    before = _state(tconn)
    tconn.execute("UPDATE papers SET views = views + 1")  # every row
    tconn.execute("UPDATE papers SET title = title, views = 7 WHERE id = '4983'")  # no change
    assert _queued(tconn) == (0, 0, 0)
    assert drain(titles.url).written == 0
    assert _state(tconn) == before


def test_update_of_an_embedded_column_re_embeds_only_that_row(
    titles: Titles, tconn: psycopg.Connection[Any]
) -> None:
    target = "5836"  # "Induction of myelodysplasia by myeloid-derived suppressor cells."
    new_title = "Honey bee colonies decline after exposure to neonicotinoid insecticides."
    before = _state(tconn)
    tconn.execute("UPDATE papers SET title = %s WHERE id = %s", (new_title, target))
    assert _queued(tconn)[2] == 1, "exactly one row pending"
    stats = drain(titles.url)
    assert (stats.written, stats.chunks, stats.failed) == (1, 1, 0)

    after = _state(tconn)
    assert after[target][0] == [new_title]
    assert after[target][1] > before[target][1], "made from the newer change"
    assert after[target][2] > before[target][2]
    del before[target], after[target]
    assert after == before, "no other row was re-embedded"
    hits = search(tconn, "papers", "pesticides are killing bees", k=3)
    assert hits[0].pk == {"id": target}, [(h.pk, round(h.score, 3)) for h in hits]


def test_delete_removes_the_rows_chunks(titles: Titles, tconn: psycopg.Connection[Any]) -> None:
    target = "7912"
    before = _state(tconn)
    assert target in before
    tconn.execute("DELETE FROM papers WHERE id = %s", (target,))
    after = _state(tconn)
    assert target not in after
    del before[target]
    assert after == before
    assert _queued(tconn) == (0, 0, 0)
    assert drain(titles.url).written == 0
    assert target not in [h.pk["id"] for h in search(tconn, "papers", titles.rows[target], k=10)]


def test_truncate_clears_them(titles: Titles, tconn: psycopg.Connection[Any]) -> None:
    assert len(_state(tconn)) > 900
    tconn.execute("TRUNCATE papers")
    assert _state(tconn) == {}
    assert _queued(tconn) == (0, 0, 0)
    assert tconn.execute(
        "SELECT embedded_rows, chunks FROM autoembed.vectorizer_status WHERE name = 'papers'"
    ).fetchone() == (0, 0)
    # ... and the vectorizer keeps working afterwards.
    tconn.execute("INSERT INTO papers (id, title) VALUES ('1', %s)", (titles.rows["70115"],))
    assert drain(titles.url).written == 1
    assert search(tconn, "papers", "bayesian model complexity", k=3)[0].pk == {"id": "1"}
