"""Vectorizers on the ONNX Runtime backend (model names ``onnx:<model>`` and
``onnx-int8:<model>``), with the real all-MiniLM-L6-v2 embedded in-process
(``autoembed worker --once``): the names resolve like the model's own, the
worker stores the backend's vectors under its own model version, and a
campaign switches a torch-embedded vectorizer to int8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from autoembed.search import search
from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder
from tests.conftest import drain

pytestmark = pytest.mark.model

INT8 = f"onnx-int8:{DEFAULT_MODEL}"
TITLES = Path(__file__).resolve().parent.parent / "data" / "scifact_titles.jsonl"
ROWS = 60


@pytest.fixture
def papers(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Table papers: the first ROWS SciFact titles."""
    with TITLES.open(encoding="utf-8") as f:
        rows = {
            r["id"]: r["title"]
            for r in (json.loads(line) for line, _ in zip(f, range(ROWS), strict=False))
        }
    conn.execute("CREATE TABLE papers (id text PRIMARY KEY, title text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO papers VALUES (%s, %s)", list(rows.items()))
    return rows


def stored(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[np.ndarray, int]]:
    return {
        r[0]: (r[1].to_numpy(), r[2])
        for r in conn.execute(f"SELECT id, embedding, model_version_id FROM autoembed.{table}")
    }


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("onnx-int8:all-MiniLM-L6-v2", INT8),
        (INT8, INT8),
        ("onnx:all-MiniLM-L6-v2", f"onnx:{DEFAULT_MODEL}"),
    ],
)
def test_onnx_names_resolve_like_the_models_own(
    conn: psycopg.Connection[Any], given: str, canonical: str
) -> None:
    assert conn.execute(
        "SELECT * FROM autoembed._resolve_model(%s, NULL)", (given,)
    ).fetchone() == (canonical, 384, 256)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("onnx:hash:16", "names a backend twice, or a hash embedder"),
        ("onnx-int8:onnx:all-MiniLM-L6-v2", "names a backend twice"),
        ("onnx-int8:someone/unknown-model", 'unknown model "someone/unknown-model"'),
    ],
)
def test_bad_onnx_names_are_refused(
    conn: psycopg.Connection[Any], model: str, message: str
) -> None:
    with pytest.raises(psycopg.Error, match=message):
        conn.execute("SELECT * FROM autoembed._resolve_model(%s, NULL)", (model,))


def test_a_vectorizer_on_onnx_int8_is_embedded_with_its_own_version(
    conn: psycopg.Connection[Any], db_url: str, papers: dict[str, str], onnx_cache: Path
) -> None:
    conn.execute(
        "SELECT autoembed.create_vectorizer('papers', ARRAY['title'], "
        "model => 'onnx-int8:all-MiniLM-L6-v2')"
    )
    stats = drain(db_url)
    assert (stats.written, stats.failed) == (ROWS, 0)
    embedder = load_embedder(INT8)
    got = stored(conn, "papers_embeddings")
    assert sorted(got) == sorted(papers)
    want = embedder.embed([papers[k] for k in got])
    for (vector, _), expected in zip(got.values(), want, strict=True):
        assert float(np.dot(vector, expected)) > 0.9999
    (mv,) = {m for _, m in got.values()}
    tag, model, dtype = conn.execute(
        "SELECT tag, model, dtype FROM autoembed.model_version WHERE id = %s", (mv,)
    ).fetchone() or (None, None, None)
    assert (tag, model, dtype) == (embedder.version().tag, INT8, "int8")
    assert tag != load_embedder(DEFAULT_MODEL).version().tag
    hits = search(conn, "papers", "DNA extraction from cotton for PCR", k=3)
    assert hits[0].pk == {"id": "102662"}, hits


def test_a_campaign_switches_a_torch_vectorizer_to_onnx_int8(
    conn: psycopg.Connection[Any], db_url: str, papers: dict[str, str], onnx_cache: Path
) -> None:
    conn.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title'])")
    assert drain(db_url).written == ROWS
    assert conn.execute(
        "SELECT autoembed.set_model('papers', 'onnx-int8:all-MiniLM-L6-v2')"
    ).fetchone() == (2,)
    assert drain(db_url).failed == 0
    versions = conn.execute(
        "SELECT version, model, state, embedded_rows FROM autoembed.vectorizer_versions "
        "WHERE vectorizer = 'papers' ORDER BY version"
    ).fetchall()
    assert versions == [(1, DEFAULT_MODEL, "retired", ROWS), (2, INT8, "active", ROWS)]
    v1, v2 = stored(conn, "papers_embeddings_v1"), stored(conn, "papers_embeddings_v2")
    assert len({m for _, m in v1.values()} | {m for _, m in v2.values()}) == 2
    keys = sorted(v2)
    old = np.stack([v1[k][0] for k in keys])
    new = np.stack([v2[k][0] for k in keys])
    c = (old * new).sum(1)
    assert c.min() > 0.97, "int8 vectors are close to torch's"
    assert c.max() < 1 - 1e-6, "int8 vectors are not torch's"
    # The versions are named by their (short) model names, with the prefix.
    for version, ordinal in (("onnx-int8:all-MiniLM-L6-v2", 2), ("all-MiniLM-L6-v2", 1)):
        assert conn.execute(
            "SELECT (autoembed._version(v, %s)).ordinal FROM autoembed.vectorizer AS v "
            "WHERE v.name = 'papers'",
            (version,),
        ).fetchone() == (ordinal,)
