"""``autoembed evaluate`` end to end on tests/data/beir_tiny with the hash
embedder: the pipeline embeds the corpus, every query goes through the SQL
search functions, and the metrics are computed from what they returned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from autoembed.cli import main
from autoembed.db import connect
from autoembed.evaluation import beir, metrics
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain

TINY = Path(__file__).resolve().parent.parent / "data" / "beir_tiny"
MODEL = "hash:64"
VECTORIZER = "beir_tiny__hash_64"


def evaluate(db_url: str, out: Path, *args: str, dataset: Path = TINY) -> Result:
    argv = ["evaluate", str(dataset), "--db", db_url, "--model", MODEL, "--json", str(out)]
    return CliRunner().invoke(main, [*argv, *args], catch_exceptions=False)


def run_ok(db_url: str, out: Path, *args: str, dataset: Path = TINY) -> dict[str, Any]:
    result = evaluate(db_url, out, *args, dataset=dataset)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def embedded_at(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = conn.execute(
        f"SELECT id, max(embedded_at) FROM autoembed.{VECTORIZER}_embeddings GROUP BY id"
    )
    return dict(rows.fetchall())


def test_metrics_come_from_the_sql_search_functions(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = evaluate(db_url, out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    collection = beir.load(TINY)

    # the real pipeline embedded the corpus: the COPY's trigger queued it, the
    # worker's drain loop embedded it
    with connect(db_url) as conn:
        status = conn.execute(
            "SELECT embedded_rows, pending, in_flight, failed, model_version "
            "FROM autoembed.vectorizer_status WHERE name = %s",
            (VECTORIZER,),
        ).fetchone()
        assert status is not None
        assert status[:4] == (12, 0, 0, 0)
        assert status[4].startswith("hash:64@")
        assert doc["model_version"] == status[4]

        # each method's rankings are exactly what its SQL function returns
        embedder = HashingEmbedder(64)
        for q in collection.queries:
            vector = embedder.embed([q.text])[0]
            calls = {
                "bm25": ("bm25_search(%s, %s, 100)", (VECTORIZER, q.text)),
                "semantic": ("search(%s, %s, 100)", (VECTORIZER, vector)),
                "hybrid": ("hybrid_search(%s, %s, %s, 100)", (VECTORIZER, q.text, vector)),
            }
            for method, (call, params) in calls.items():
                rows = conn.execute(
                    f"SELECT pk ->> 'id', score FROM autoembed.{call} ORDER BY rank", params
                ).fetchall()
                (per_query,) = [p for p in doc["per_query"][method] if p["query_id"] == q.id]
                assert [h[0] for h in per_query["hits"]] == [r[0] for r in rows], (method, q.id)
                assert [h[2] for h in per_query["hits"]] == pytest.approx([r[1] for r in rows])

    assert doc["dataset"]["documents"] == 12
    assert doc["dataset"]["skipped_queries"] == ["q6"]
    for method in ("bm25", "semantic", "hybrid"):
        per_query = doc["per_query"][method]
        assert [p["query_id"] for p in per_query] == ["q1", "q2", "q3", "q4", "q5", "q7"]
        for p in per_query:  # each query's scores follow from its hits and judgments
            ranking = [h[0] for h in p["hits"]]
            expected = metrics.score(ranking, collection.qrels[p["query_id"]]).as_json()
            assert {k: p[k] for k in expected} == pytest.approx(expected)
        summary = doc["metrics"][method]
        for key in ("ndcg@10", "recall@100", "mrr@10"):
            assert summary[key] == pytest.approx(sum(p[key] for p in per_query) / 6)
        assert summary["queries"] == 6
        assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]

    # BM25: q1..q5 share words with their relevant document, which comes first;
    # q7 ("ancient fortifications") shares none with any document
    bm25 = {p["query_id"]: p for p in doc["per_query"]["bm25"]}
    assert [bm25[q]["mrr@10"] for q in ("q1", "q2", "q3", "q4", "q5")] == [1.0] * 5
    assert bm25["q7"]["hits"] == []
    assert doc["metrics"]["bm25"]["mrr@10"] == pytest.approx(5 / 6)
    # q3: d5 (grade 2) first; nDCG is 1 only if d10 (grade 1) comes right after
    assert bm25["q3"]["hits"][0][0] == "d5"
    # every document is embedded, so semantic search finds every relevant one
    assert doc["metrics"]["semantic"]["recall@100"] == 1.0

    lines = result.output.splitlines()
    (row,) = [line for line in lines if line.startswith("bm25 ")]
    assert row.split()[1:4] == [
        f"{doc['metrics']['bm25'][k]:.3f}" for k in ("ndcg@10", "recall@100", "mrr@10")
    ]
    assert any(line.startswith("latency: the SQL call alone") for line in lines)
    assert any(line.startswith("total run time: ") for line in lines)
    assert doc["settings"]["corpus_embeddings_reused"] is False
    assert doc["versions"]["postgresql"]
    assert set(doc["timings_s"]) >= {"embed_corpus", "embed_queries", "search", "total"}


def test_a_rerun_reuses_the_embeddings_and_rebuild_redoes_them(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    first = run_ok(db_url, out, "--methods", "semantic")
    assert first["settings"]["documents_embedded_this_run"] == 12
    with connect(db_url) as conn:
        before = embedded_at(conn)
    second = run_ok(db_url, out, "--methods", "semantic")
    assert second["settings"]["corpus_embeddings_reused"] is True
    assert second["settings"]["documents_embedded_this_run"] == 0
    hits = [[p["hits"] for p in d["per_query"]["semantic"]] for d in (first, second)]
    assert hits[0] == hits[1]
    with connect(db_url) as conn:
        assert embedded_at(conn) == before

    third = run_ok(db_url, out, "--methods", "semantic", "--rebuild")
    assert third["settings"]["corpus_embeddings_reused"] is False
    assert third["settings"]["documents_embedded_this_run"] == 12
    with connect(db_url) as conn:
        after = embedded_at(conn)
    assert after.keys() == before.keys()
    assert all(after[k] > before[k] for k in before)


def test_a_changed_corpus_is_loaded_again(db_url: str, tmp_path: Path) -> None:
    data = Path(shutil.copytree(TINY, tmp_path / "beir_tiny"))
    run_ok(db_url, tmp_path / "a.json", "--methods", "bm25", dataset=data)
    corpus = data / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("honeybee hives", "bumblebee nests"))
    result = evaluate(db_url, tmp_path / "b.json", "--methods", "bm25", dataset=data)
    assert result.exit_code == 0, result.output
    assert "beir_tiny: differs from the corpus; reloading" in result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["settings"]["documents_embedded_this_run"] == 12
    with connect(db_url) as conn:
        row = conn.execute("SELECT text FROM beir_tiny WHERE id = 'd2'").fetchone()
    assert row is not None
    assert "bumblebee nests" in row[0]


def test_hybrid_options_reach_the_sql_function(db_url: str, tmp_path: Path) -> None:
    rrf = run_ok(db_url, tmp_path / "rrf.json", "--methods", "hybrid")
    convex = run_ok(
        db_url,
        tmp_path / "convex.json",
        "--methods",
        "hybrid",
        "--hybrid-option",
        "fusion=convex",
        "--hybrid-option",
        "semantic_weight=0.7",
    )
    label = "hybrid fusion=convex semantic_weight=0.7"
    assert convex["metrics"][label]["options"] == {"fusion": "convex", "semantic_weight": "0.7"}

    def scores(doc: dict[str, Any], key: str) -> list[float]:
        return [h[2] for p in doc["per_query"][key] for h in p["hits"]]

    assert scores(rrf, "hybrid") != scores(convex, label)

    bad = evaluate(
        db_url, tmp_path / "bad.json", "--methods", "hybrid", "--hybrid-option", "bogus=1"
    )
    assert bad.exit_code == 1
    assert "bogus" in bad.output
    assert "hybrid_search" in bad.output


def test_train_split_and_limit(db_url: str, tmp_path: Path) -> None:
    doc = run_ok(db_url, tmp_path / "t.json", "--split", "train", "--methods", "bm25")
    assert doc["dataset"]["split"] == "train"
    assert [p["query_id"] for p in doc["per_query"]["bm25"]] == ["q101", "q102"]
    assert doc["metrics"]["bm25"]["mrr@10"] == 1.0
    doc = run_ok(db_url, tmp_path / "t.json", "--limit-queries", "2", "--methods", "bm25")
    assert [p["query_id"] for p in doc["per_query"]["bm25"]] == ["q1", "q2"]
    assert doc["settings"]["limit_queries"] == 2


def test_refuses_to_replace_a_table_it_did_not_make(db_url: str, tmp_path: Path) -> None:
    with connect(db_url) as conn:
        conn.execute("CREATE TABLE beir_tiny (id text PRIMARY KEY, title text, text text)")
    result = evaluate(db_url, tmp_path / "x.json", "--methods", "bm25")
    assert result.exit_code == 1
    assert "table beir_tiny exists and was not made by autoembed evaluate" in result.output
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--methods", "bm25,vector"], "distinct methods among bm25, semantic, hybrid"),
        (["--methods", "bm25,bm25"], "distinct methods"),
        (["--methods", "bm25", "--hybrid-option", "fusion=rrf"], "hybrid is not among --methods"),
        (["--hybrid-option", "fusion"], "expected key=value"),
        (["--hybrid-option", "Robert'); DROP=1"], "is not a parameter name"),
        (["--split", "dev"], "no judgments for split 'dev' (splits: test, train)"),
    ],
)
def test_bad_arguments(db_url: str, tmp_path: Path, args: list[str], error: str) -> None:
    result = evaluate(db_url, tmp_path / "x.json", *args)
    assert result.exit_code != 0
    assert error in result.output
    assert not (tmp_path / "x.json").exists()


def test_queries_are_embedded_in_batches_like_one_at_a_time(db_url: str) -> None:
    from autoembed.search import embed_queries, embed_query

    with connect(db_url) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute(
            "SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:8')"
        )
        texts = ["red apples", "green pears", "fast cars"]
        batched = embed_queries(conn, "notes", texts, batch_size=2)
        assert batched.shape == (3, 8)
        for text, row in zip(texts, batched, strict=True):
            assert row.tolist() == pytest.approx(embed_query(conn, "notes", text).tolist())
            assert row.tolist() == pytest.approx(HashingEmbedder(8).embed([text])[0].tolist())
        assert embed_queries(conn, "notes", []).shape == (0, 8)
        with pytest.raises(LookupError, match='no vectorizer named "nope"'):
            embed_queries(conn, "nope", ["x"])


def test_versions_side_by_side(db_url: str, tmp_path: Path) -> None:
    run_ok(db_url, tmp_path / "first.json")
    with connect(db_url) as conn:
        conn.execute(
            "SELECT autoembed.set_model(%s, 'hash:16', activate => 'manual')", (VECTORIZER,)
        )
    building = evaluate(db_url, tmp_path / "x.json", "--version", "2")
    assert building.exit_code == 1
    assert "still being embedded" in building.output
    drain(db_url)

    doc = run_ok(db_url, tmp_path / "both.json", "--version", "1", "--version", "hash:16")
    assert list(doc["metrics"]) == [
        f"{m} version={v}" for v in ("1", "hash:16") for m in ("bm25", "semantic", "hybrid")
    ]
    assert doc["settings"]["versions"] == ["1", "hash:16"]
    metrics_of = doc["metrics"]
    # the same chunks, so BM25 agrees; another model, so semantic does not
    scores = ("ndcg@10", "recall@100", "mrr@10")
    assert [metrics_of["bm25 version=1"][s] for s in scores] == [
        metrics_of["bm25 version=hash:16"][s] for s in scores
    ]
    first = {q["query_id"]: q["hits"] for q in doc["per_query"]["semantic version=1"]}
    second = {q["query_id"]: q["hits"] for q in doc["per_query"]["semantic version=hash:16"]}
    assert first != second

    unknown = evaluate(db_url, tmp_path / "y.json", "--version", "7")
    assert unknown.exit_code == 1
    assert 'has no version "7"' in unknown.output
