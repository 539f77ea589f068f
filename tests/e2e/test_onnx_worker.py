"""A real Celery worker (prefork pool process, Redis, PostgreSQL) embeds a
vectorizer on the ONNX Runtime backend (onnx-int8:all-MiniLM-L6-v2) and its
query service answers text queries from SQL with the same model version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder
from tests.e2e.conftest import StartWorker, wait_embedded
from tests.e2e.test_celery_worker import FLU_QUERY, PLANET_QUERY, TEXTS

pytestmark = pytest.mark.e2e

INT8 = f"onnx-int8:{DEFAULT_MODEL}"


def test_a_celery_worker_embeds_and_answers_queries_with_onnx_int8(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker, onnx_cache: Path
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO notes VALUES (%s, %s)", list(TEXTS.items()))
    worker = start_worker(db_url, AUTOEMBED_QUERY_SERVICE="1", AUTOEMBED_ONNX_CACHE=str(onnx_cache))
    conn.execute(
        "SELECT autoembed.create_vectorizer('notes', ARRAY['body'], "
        "model => 'onnx-int8:all-MiniLM-L6-v2')"
    )
    took = wait_embedded(conn, "notes", len(TEXTS), worker, timeout=180)
    print(f"\n[e2e onnx] {len(TEXTS)} rows embedded by the worker in {took:.1f}s (incl. export)")

    (tag,) = conn.execute(
        "SELECT DISTINCT mv.tag FROM autoembed.notes_embeddings AS e "
        "JOIN autoembed.model_version AS mv ON mv.id = e.model_version_id"
    ).fetchall()
    # The worker's pool process and this process derive the same version.
    assert tag == (load_embedder(INT8).version().tag,)
    assert "/int8/" in tag[0]

    conn.execute("SET autoembed.query_timeout = '60s'")
    for query, expected in ((PLANET_QUERY, 3), (FLU_QUERY, 7)):
        hits = conn.execute(
            "SELECT pk ->> 'id' FROM autoembed.search('notes', %s, 3)", (query,)
        ).fetchall()
        assert hits[0] == (str(expected),), (query, hits, worker.describe())
    assert worker.proc.poll() is None, worker.describe()
    worker.assert_clean_log()
