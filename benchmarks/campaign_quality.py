"""The campaign benchmark's figures after the switch: nDCG@10, Recall@100 and
MRR@10 of a version (semantic search over the judged queries), version_health,
compare_versions' overlap of two versions, and the raw encode rate of the new
model (SentenceTransformer.encode, then autoembed's own embedder) over the chunk
texts the version holds for a sample of the documents."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import psycopg
from campaign_base import Conn, version_row
from campaign_load import K, Vector
from psycopg import sql

from autoembed.evaluation import beir
from autoembed.evaluation.runner import Method, MethodResult, run_method
from autoembed.worker.embedders import SentenceTransformerEmbedder, load_embedder


def judged_subset(collection: beir.Collection, docs: list[beir.Document]) -> beir.Collection:
    """The collection restricted to docs: judgments on them only, and the
    queries with at least one relevant document among them."""
    ids = {d.id for d in docs}
    qrels = {
        qid: {d: g for d, g in judged.items() if d in ids}
        for qid, judged in collection.qrels.items()
    }
    queries = [q for q in collection.queries if any(g > 0 for g in qrels[q.id].values())]
    return replace(collection, corpus=docs, queries=queries, qrels=qrels)


def quality(
    conn: Conn, name: str, judged: beir.Collection, ordinal: int, vectors: dict[str, Vector]
) -> dict[str, Any]:
    result: MethodResult = run_method(
        conn, name, judged, vectors, Method("semantic", {"version": str(ordinal)})
    )
    mean = result.mean
    return {
        "version": ordinal,
        "queries": len(result.queries),
        **mean.as_json(),
        "latency_p50_ms_k100": result.latency_ms(50),
        "per_query": [
            {"query_id": q.query_id, **q.scores.as_json(), "top10": [h.doc_id for h in q.hits[:10]]}
            for q in result.queries
        ],
    }


def version_health(conn: Conn, name: str, ordinal: int) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM autoembed.version_health(%s, %s)", (name, str(ordinal)))
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def compare(conn: Conn, name: str, queries: list[str], a: int, b: int) -> dict[str, Any]:
    """compare_versions over the queries (semantic, k = 10); the worker's
    query service embeds each with both models."""
    conn.execute("SET autoembed.query_timeout = '300s'")
    conn.execute("SET statement_timeout = 0")
    t = time.monotonic()
    try:
        rows = conn.execute(
            "SELECT query, overlap, rank_correlation, shared FROM autoembed.compare_versions("
            "%s, %s::text[], %s, %s, %s, 'semantic')",
            (name, queries, K, str(a), str(b)),
        ).fetchall()
    except psycopg.Error as e:
        return {"error": str(e).strip(), "seconds": round(time.monotonic() - t, 1)}
    summary = next(r for r in rows if r[0] is None)
    return {
        "queries": len(rows) - 1,
        "mean_overlap": summary[1],
        "mean_rank_correlation": summary[2],
        "seconds": round(time.monotonic() - t, 1),
        "per_query": [
            {"query": r[0], "overlap": r[1], "rank_correlation": r[2], "shared": r[3]}
            for r in rows
            if r[0] is not None
        ],
    }


def raw_encode(
    conn: Conn,
    name: str,
    ordinal: int,
    model_path: str,
    docs: list[beir.Document],
    sample: int,
    seed: int,
) -> dict[str, Any]:
    """SentenceTransformer.encode (batch 32, its own length sorting) over
    every chunk text version ``ordinal`` holds for a fixed random sample of
    the documents, timed in this process with no worker running; then the
    same texts through autoembed's embedder (what the worker calls: texts of
    equal token count batched, none padded), one document's chunks per call
    (the campaign's batches hold a few rows), to tell the model's cost from
    the pipeline's."""
    import torch

    embedder = load_embedder(model_path)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    model = embedder.model
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(docs), size=min(sample, len(docs)), replace=False).tolist())
    ids = [docs[i].id for i in picks]
    table = version_row(conn, name, ordinal)["embeddings_table"]
    rows = conn.execute(
        sql.SQL("SELECT id, chunk FROM {} WHERE id = ANY (%s) ORDER BY id, chunk_no").format(
            sql.Identifier("autoembed", table)
        ),
        (ids,),
    ).fetchall()
    texts = [str(r[1]) for r in rows]
    per_doc: dict[str, list[str]] = {}
    for r in rows:
        per_doc.setdefault(str(r[0]), []).append(str(r[1]))
    model.encode(texts[:4], batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    embedder.embed(texts[:4])
    t, cpu_t = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    seconds, cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    t, cpu_t = time.perf_counter(), time.process_time()
    for chunks in per_doc.values():
        embedder.embed(chunks)
    path_s, path_cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    return {
        "documents": len(ids),
        "documents_with_chunks": len({r[0] for r in rows}),
        "chunks": len(texts),
        "seconds": seconds,
        "rows_per_second": len(ids) / seconds,
        "chunks_per_second": len(texts) / seconds,
        "cpu_s": cpu_s,
        "rows_per_cpu_s": len(ids) / cpu_s,
        "batch_size": 32,
        "embed_path": {
            "seconds": path_s,
            "rows_per_second": len(ids) / path_s,
            "chunks_per_second": len(texts) / path_s,
            "cpu_s": path_cpu_s,
            "rows_per_cpu_s": len(ids) / path_cpu_s,
        },
        "torch_threads": torch.get_num_threads(),
        "sample_of_all": len(ids) == len(docs),
    }
