"""Changing the model without an outage, with real parts: a Celery worker
process, Redis, all-MiniLM-L6-v2 and the fine-tuned sre-embedding-model.

A table of SciFact titles is embedded with MiniLM; ``set_model`` starts a
campaign to the sre model while another connection inserts, updates,
deletes and re-keys rows, and the test searches in a loop. In each
REPEATABLE READ snapshot the default (version NULL) semantic, BM25 and
hybrid results are non-empty and exactly those of the version that snapshot
says is active: never empty, never a mix. At the end version 2 is active,
version 1 retired and kept current, every row has exactly version 2's chunks
of its current text with the sre model's vectors, no deleted row has chunks
anywhere, and compare_versions tells the two models apart.
"""

from __future__ import annotations

import importlib.util
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from autoembed.db import connect
from autoembed.worker.embedders import load_embedder
from tests.e2e.conftest import StartWorker, Worker, wait_embedded

pytestmark = pytest.mark.e2e

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
NAME = "papers"
ROWS = 150
K = 5
WORDS = 8  # words of each title: short texts embed fast on a CPU
TITLES = Path(__file__).resolve().parents[1] / "data" / "scifact_titles.jsonl"
# Each holds "cell" or "human", which many titles do: BM25 always finds something.
QUERIES = [
    "DNA methylation in human blood cells",
    "insulin resistance in human obesity",
    "stem cell differentiation",
    "tumor cells and the immune response",
    "imaging the human brain of newborn infants",
    "gene expression in single cells of mice",
    "heart disease risk in humans",
    "bacteria infecting human cells",
]
MIN_AFTER_SWITCH = 20  # search iterations after the switch, at least
PAUSE = 0.1  # seconds between search iterations: the worker needs the CPUs too


def sre_model_path() -> str:
    """The installed sre-embedding-model's folder (as benchmarks/models.py
    finds it; the package is not imported: its __init__ imports
    sentence_transformers)."""
    spec = importlib.util.find_spec("sre_embedding_model")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("sre-embedding-model is not installed (scripts/bootstrap installs it)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model_weights"
        if (folder / "modules.json").is_file() and (folder / "config.json").is_file():
            return str(folder)
    pytest.skip("sre-embedding-model has no model_weights folder")


def titles() -> list[str]:
    with TITLES.open() as f:
        return [" ".join(json.loads(line)["title"].split()[:WORDS]) for line in f]


class Writer(threading.Thread):
    """Random INSERT / UPDATE / DELETE / primary-key change on another
    connection, one at a time, until stopped."""

    def __init__(self, url: str, ids: list[int], spare: list[str]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ids = list(ids)
        self.spare = spare
        self.rng = random.Random(7)
        self.next_id = 100_000
        self.stop = threading.Event()
        self.done = {"insert": 0, "update": 0, "delete": 0, "rekey": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.url) as conn:
                while not self.stop.is_set():
                    self.step(conn)
                    self.stop.wait(self.rng.uniform(0.1, 0.4))
        except BaseException as e:  # reported by the test
            self.error = e

    def step(self, conn: psycopg.Connection[Any]) -> None:
        kind = self.rng.choice(["insert", "update", "update", "delete", "rekey"])
        text = self.rng.choice(self.spare)
        if kind == "insert" or len(self.ids) < ROWS // 2:
            kind = "insert"
            self.next_id += 1
            conn.execute("INSERT INTO papers VALUES (%s, %s)", (self.next_id, text))
            self.ids.append(self.next_id)
        elif kind == "update":
            conn.execute(
                "UPDATE papers SET title = %s WHERE id = %s", (text, self.rng.choice(self.ids))
            )
        elif kind == "delete":
            victim = self.ids.pop(self.rng.randrange(len(self.ids)))
            conn.execute("DELETE FROM papers WHERE id = %s", (victim,))
        else:
            i = self.rng.randrange(len(self.ids))
            self.next_id += 1
            conn.execute("UPDATE papers SET id = %s WHERE id = %s", (self.next_id, self.ids[i]))
            self.ids[i] = self.next_id
        self.done[kind] += 1


def run_searches(
    conn: psycopg.Connection[Any], query: str, vector: Any, version: str | None
) -> dict[str, list[tuple[Any, ...]]]:
    """Semantic, BM25 and hybrid results of one query in one version."""
    return {
        "semantic": conn.execute(
            "SELECT * FROM autoembed.search(%s, %s, %s, version => %s)",
            (NAME, vector, K, version),
        ).fetchall(),
        "bm25": conn.execute(
            "SELECT * FROM autoembed.bm25_search(%s, %s, %s, version => %s)",
            (NAME, query, K, version),
        ).fetchall(),
        "hybrid": conn.execute(
            "SELECT * FROM autoembed.hybrid_search(%s, %s, %s, %s, version => %s)",
            (NAME, query, vector, K, version),
        ).fetchall(),
    }


def versions(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT version, state, pending, in_flight, failed, embedded_rows, error "
        "FROM autoembed.vectorizer_versions WHERE vectorizer = %s ORDER BY version",
        (NAME,),
    ).fetchall()


def wait_quiet(conn: psycopg.Connection[Any], worker: Worker, timeout: float) -> None:
    """Nothing pending, in flight or failed in any version, twice in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = versions(conn)
        if all(r[2:5] == (0, 0, 0) for r in rows):
            quiet += 1
            if quiet >= 2:
                return
        else:
            quiet = 0
        assert worker.proc.poll() is None, worker.describe()
        time.sleep(0.3)
    pytest.fail(f"work left after {timeout:.0f}s: {rows}\n{worker.describe()}")


def chunks_of(conn: psycopg.Connection[Any], ordinal: int) -> dict[int, list[tuple[Any, ...]]]:
    """id -> [(chunk_no, chunk, model_version_id, embedding)] of one version's table."""
    out: dict[int, list[tuple[Any, ...]]] = {}
    for row in conn.execute(
        f"SELECT id, chunk_no, chunk, model_version_id, embedding "
        f"FROM autoembed.{NAME}_embeddings_v{ordinal} ORDER BY id, chunk_no"
    ):
        out.setdefault(row[0], []).append(row[1:])
    return out


def test_model_change_under_writes_and_searches(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    sre = sre_model_path()
    all_titles = titles()
    rows, spare = all_titles[:ROWS], all_titles[ROWS:]
    conn.execute("CREATE TABLE papers (id int PRIMARY KEY, title text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO papers VALUES (%s, %s)", list(enumerate(rows, 1)))
    # The query service answers compare_versions' text queries at the end.
    worker = start_worker(db_url, AUTOEMBED_QUERY_SERVICE="1")
    conn.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title'])")
    # Meanwhile this process loads both models for its query vectors.
    embedders = {1: load_embedder(MINILM), 2: load_embedder(sre)}
    query_vectors = {v: e.embed(QUERIES) for v, e in embedders.items()}
    took = wait_embedded(conn, NAME, ROWS, worker, timeout=120)
    print(f"\n[model change] {ROWS} rows embedded with MiniLM in {took:.1f}s")

    assert conn.execute(
        "SELECT autoembed.set_model(%s, %s, dimensions => 384)", (NAME, sre)
    ).fetchone() == (2,)
    started = time.monotonic()
    assert [r[:2] for r in versions(conn)] == [(1, "active"), (2, "building")]

    writer = Writer(db_url, list(range(1, ROWS + 1)), spare)
    writer.start()
    iterations = {1: 0, 2: 0}
    switched_at: float | None = None
    rng = random.Random(3)
    try:
        with connect(db_url) as s:
            s.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            while True:
                i = rng.randrange(len(QUERIES))
                with s.transaction():
                    # The first statement takes the snapshot every search below reads.
                    active, active_mv = s.execute(
                        "SELECT ver.ordinal, ver.model_version_id "
                        "FROM autoembed.vectorizer_version AS ver "
                        "JOIN autoembed.vectorizer AS v ON v.id = ver.vectorizer_id "
                        "WHERE v.name = %s AND ver.state = 'active'",
                        (NAME,),
                    ).fetchall()[0]
                    vector = query_vectors[active][i]
                    default = run_searches(s, QUERIES[i], vector, None)
                    named = run_searches(s, QUERIES[i], vector, str(active))
                    in_view = s.execute(
                        f"SELECT DISTINCT model_version_id FROM autoembed.{NAME}_embeddings"
                    ).fetchall()
                    if active != 1:  # the retired version stays searchable
                        old = run_searches(s, QUERIES[i], query_vectors[1][i], "1")
                        assert all(old.values()), old
                for method, hits in default.items():
                    assert hits, f"{method} found nothing (active {active}, {QUERIES[i]!r})"
                    assert hits == named[method], (
                        f"{method} with version NULL differs from version {active}, "
                        f"the active one in its snapshot ({QUERIES[i]!r}):\n"
                        f"{hits}\n{named[method]}"
                    )
                assert in_view == [(active_mv,)], f"the view mixes versions: {in_view}"
                iterations[active] += 1
                if active == 2 and switched_at is None:
                    switched_at = time.monotonic()
                    writer.stop.set()
                if switched_at is not None and iterations[2] >= MIN_AFTER_SWITCH:
                    break
                assert time.monotonic() - started < 240, (
                    f"no switch within 240s: {versions(conn)}\n{worker.describe()}"
                )
                assert writer.error is None, writer.error
                time.sleep(PAUSE)
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None, writer.error
    assert switched_at is not None
    wait_quiet(conn, worker, timeout=60)
    print(
        f"[model change] switched {switched_at - started:.1f}s after set_model; "
        f"{iterations[1]} search iterations before the switch, {iterations[2]} after; "
        f"writes meanwhile: {writer.done}"
    )
    assert iterations[1] > 0, "the campaign finished before the first search"

    state = versions(conn)
    assert [r[:2] for r in state] == [(1, "retired"), (2, "active")], state
    source = dict(conn.execute("SELECT id, title FROM papers").fetchall())
    assert state[1][5] == len(source)
    mv = dict(
        conn.execute(
            "SELECT ordinal, model_version_id FROM autoembed.vectorizer_version ORDER BY ordinal"
        ).fetchall()
    )
    v1, v2 = chunks_of(conn, 1), chunks_of(conn, 2)
    # Short texts: one chunk each, its text the row's current text; no chunk
    # of a deleted (or re-keyed) row in either version.
    want = {k: [(0, t)] for k, t in source.items()}
    assert {k: [(c[0], c[1]) for c in cs] for k, cs in v2.items()} == want
    assert {k: [(c[0], c[1]) for c in cs] for k, cs in v1.items()} == want, "v1 kept current"
    assert {c[2] for cs in v2.values() for c in cs} == {mv[2]}
    assert {c[2] for cs in v1.values() for c in cs} == {mv[1]}
    keys = sorted(v2)
    stored = np.stack([np.asarray(v2[k][0][3].to_numpy(), dtype=np.float32) for k in keys])
    fresh = embedders[2].embed([source[k] for k in keys])
    diff = float(np.abs(stored - fresh).max())
    assert diff <= 1e-6, f"version 2's vectors differ from the sre model's by up to {diff}"
    print(f"[model change] version 2's vectors: at most {diff:.1e} from an in-process embedding")

    conn.execute("SET autoembed.query_timeout = '60s'")
    compared = conn.execute(
        "SELECT query, overlap, rank_correlation, shared, a_top, b_top "
        "FROM autoembed.compare_versions(%s, %s, 10)",
        (NAME, QUERIES),
    ).fetchall()
    assert [r[0] for r in compared] == [*QUERIES, None]
    for query, overlap, tau, _shared, _a, _b in compared:
        assert 0 <= overlap <= 1, (query, overlap)
        assert tau is None or -1 <= tau <= 1, (query, tau)
    assert any(r[1] < 1 for r in compared[:-1]), "two different models, the same top 10"
    summary = compared[-1]
    assert summary[4]["version"] == 2
    assert summary[5]["version"] == 1
    print(f"[model change] compare_versions: mean overlap {summary[1]:.2f}, tau {summary[2]}")
    assert worker.proc.poll() is None, worker.describe()
    worker.assert_clean_log()
