"""CPU inference speed and retrieval quality of the ONNX Runtime backend
against torch, on SciFact's abstracts, in one run.

    .venv/bin/python benchmarks/onnx_backend.py              # all 5,183 abstracts (~35 min here)
    .venv/bin/python benchmarks/onnx_backend.py --docs 300   # the first 300: ~2 min
    .venv/bin/python benchmarks/onnx_backend.py [--dataset ../shared/datasets/scifact]
        [--backends torch,onnx,onnx-int8] [--batch-docs 16] [--threads N] [--json PATH]

Every document (title, a blank line, abstract: what a vectorizer on
ARRAY['title', 'text'] embeds) is chunked once as the worker chunks it
(all-MiniLM-L6-v2's tokenizer, 256-token windows, 32 overlapping), and the
same chunks are embedded by:

- ``torch encode``: raw ``SentenceTransformer.encode`` of all chunks in one
  call (it sorts them by length itself, batches of 32): the competitor;
- ``torch``: autoembed's torch embedder, as a CPU worker calls it (the
  chunks of --batch-docs documents per call; texts of equal token count
  embedded together);
- ``onnx`` and ``onnx-int8``: the ONNX Runtime backend (model names
  ``onnx:`` / ``onnx-int8:sentence-transformers/all-MiniLM-L6-v2``), called
  the same way; exported into AUTOEMBED_ONNX_CACHE (~/.cache/autoembed/onnx)
  the first time, the export time reported.

docs/s = documents / seconds to embed their chunks (after a warm-up; the
tokenization for grouping included). Quality: each backend also embeds the
test queries; exact search over the chunk vectors (a document scores its
best chunk's cosine; no index), nDCG@10 / Recall@100 / MRR@10 against the
qrels (with --docs N, the queries with a relevant document among the N).
The profile splits each autoembed embedder's time into tokenization (the
count that groups texts, and the model's tokenizer) and the rest (the model).

Prints a table and writes the figures, the machine and the versions to
--json (benchmarks/results/onnx_backend.json; with --docs N,
onnx_backend_docs<N>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
from bench_run_info import REPO, machine, run_info

from autoembed.evaluation import beir
from autoembed.evaluation.metrics import Scores, mean, score
from autoembed.worker.chunking import chunk_text
from autoembed.worker.embedders import (
    DEFAULT_MODEL,
    Embedder,
    SentenceTransformerEmbedder,
    limit_cpu_threads,
    load_embedder,
)
from autoembed.worker.onnx_backend import OnnxEmbedder

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results"
OVERLAP = 32  # create_vectorizer's default chunk_overlap
Vectors = npt.NDArray[np.float32]


def documents(collection: beir.Collection) -> list[str]:
    return [f"{d.title}\n\n{d.text}" if d.title else d.text for d in collection.corpus]


def chunks_of(embedder: Embedder, docs: list[str]) -> list[list[str]]:
    """Each document's chunks, as the worker's pipeline cuts them."""
    limit = embedder.max_seq_length
    max_tokens = limit - embedder.special_tokens
    overlap = min(OVERLAP, max_tokens // 2)
    return [
        [
            c.text
            for c in chunk_text(
                d, embedder.token_spans(d), max_tokens, overlap, embedder.count_tokens, limit
            )
        ]
        for d in docs
    ]


def judged_subset(collection: beir.Collection, n: int) -> beir.Collection:
    docs = collection.corpus[:n]
    ids = {d.id for d in docs}
    qrels = {q: {d: g for d, g in j.items() if d in ids} for q, j in collection.qrels.items()}
    queries = [q for q in collection.queries if any(g > 0 for g in qrels[q.id].values())]
    return replace(collection, corpus=docs, queries=queries, qrels=qrels)


def quality(
    collection: beir.Collection, owner: list[int], chunk_vectors: Vectors, query_vectors: Vectors
) -> Scores:
    """Exact search: a document's score is its best chunk's cosine."""
    ids = [d.id for d in collection.corpus]
    per_query = []
    sims = query_vectors @ chunk_vectors.T
    for q, row in zip(collection.queries, sims, strict=True):
        best = np.full(len(ids), -np.inf, dtype=np.float32)
        np.maximum.at(best, owner, row)
        top = np.argsort(-best, kind="stable")[:100]
        per_query.append(score([ids[i] for i in top], collection.qrels[q.id]))
    return mean(per_query)


def normalized(v: Vectors) -> Vectors:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def time_torch_encode(model: Any, flat: list[str]) -> tuple[float, Vectors]:
    t = time.perf_counter()
    vectors = model.encode(flat, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - t, np.asarray(vectors, dtype=np.float32)


def time_embedder(embedder: Embedder, calls: list[list[str]]) -> tuple[float, Vectors]:
    """Embed call by call, as a CPU worker does (one call per claimed batch)."""
    t = time.perf_counter()
    vectors = np.concatenate([embedder.embed(call) for call in calls])
    return time.perf_counter() - t, vectors


def embed_queries(embed: Any, queries: list[str]) -> Vectors:
    """One query at a time, as the query service embeds them."""
    return np.stack([np.asarray(embed([q]), dtype=np.float32)[0] for q in queries])


def tokenize_seconds(embedder: Embedder, calls: list[list[str]]) -> float:
    """What the embedder spends tokenizing: the torch embedder counts each
    text's tokens (to group them by length), then the model tokenizes each
    group; the ONNX embedder tokenizes each call once."""
    t = time.perf_counter()
    for call in calls:
        if isinstance(embedder, OnnxEmbedder):
            embedder._truncating.encode_batch(call)
        elif isinstance(embedder, SentenceTransformerEmbedder):
            for text in call:
                embedder.count_tokens(text)
            embedder.model.preprocess(call)
    return time.perf_counter() - t


def cpu_pressure() -> str:
    """The kernel's CPU pressure line (others' work on a shared machine)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--docs", type=int, default=0, help="the first N documents (0: all)")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--batch-docs", type=int, default=16, help="documents per embed call")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: the default)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the best counts")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_start = os.getloadavg()
    pressure_start = cpu_pressure()
    info = run_info("onnx_backend")

    collection = beir.load(args.dataset)
    if args.docs:
        collection = judged_subset(collection, args.docs)
    queries = [q.text for q in collection.queries]
    t = time.perf_counter()
    torch_embedder = load_embedder(DEFAULT_MODEL)
    torch_load = time.perf_counter() - t
    assert isinstance(torch_embedder, SentenceTransformerEmbedder)
    limit_cpu_threads(torch_embedder, args.threads)
    chunks = chunks_of(torch_embedder, documents(collection))
    flat = [c for doc in chunks for c in doc]
    owner = [i for i, doc in enumerate(chunks) for _ in doc]
    n_docs = len(chunks)
    print(
        f"{collection.name}: {n_docs} documents, {len(flat)} chunks, "
        f"{len(queries)} queries; threads {args.threads or 'default'}",
        flush=True,
    )

    model = torch_embedder.model
    backends: dict[str, Embedder] = {}
    rows: dict[str, dict[str, Any]] = {"torch encode": {"rounds": []}}
    for backend in [b for b in args.backends.split(",") if b]:
        name = DEFAULT_MODEL if backend == "torch" else f"{backend}:{DEFAULT_MODEL}"
        t = time.perf_counter()
        embedder = load_embedder(name)  # ONNX: exported on first use
        load = torch_load if embedder is torch_embedder else time.perf_counter() - t
        rows[backend] = {"rounds": [], "load_seconds": load}
        rows[backend]["tag"] = embedder.version().tag
        if isinstance(embedder, OnnxEmbedder):
            rows[backend]["model_file"] = str(embedder.path)
            rows[backend]["model_file_mb"] = round(embedder.path.stat().st_size / 1e6, 1)
        limit_cpu_threads(embedder, args.threads)
        embedder.embed(flat[:32])  # warm-up
        backends[backend] = embedder
    model.encode(flat[:32], batch_size=32, show_progress_bar=False)
    batch_docs = args.batch_docs or n_docs
    calls = [
        [c for doc in chunks[i : i + batch_docs] for c in doc] for i in range(0, n_docs, batch_docs)
    ]
    # Rounds take turns, so that others' load on a shared machine falls on
    # every backend alike; each backend's best round counts.
    for r in range(args.rounds):
        seconds, rows["torch encode"]["vectors"] = time_torch_encode(model, flat)
        rows["torch encode"]["rounds"].append(seconds)
        print(f"round {r + 1}: torch encode {n_docs / seconds:.1f} docs/s", flush=True)
        for backend, embedder in backends.items():
            seconds, rows[backend]["vectors"] = time_embedder(embedder, calls)
            rows[backend]["rounds"].append(seconds)
            print(f"round {r + 1}: {backend} {n_docs / seconds:.1f} docs/s", flush=True)
    rows["torch encode"]["queries"] = embed_queries(
        lambda q: model.encode(q, convert_to_numpy=True, show_progress_bar=False), queries
    )
    for backend, embedder in backends.items():
        rows[backend]["queries"] = embed_queries(embedder.embed, queries)
        rows[backend]["tokenize_seconds"] = tokenize_seconds(embedder, calls)
    for row in rows.values():
        row["seconds"] = min(row["rounds"])

    reference = rows["torch encode"]
    ref_vectors = normalized(reference["vectors"])
    out: dict[str, Any] = {}
    for label, row in rows.items():
        scores = quality(collection, owner, row["vectors"], row["queries"])
        cos = (normalized(row["vectors"]) * ref_vectors).sum(axis=1)
        entry = {
            "docs_per_s": n_docs / row["seconds"],
            "chunks_per_s": len(flat) / row["seconds"],
            "seconds": row["seconds"],
            "vs_torch_encode": reference["seconds"] / row["seconds"],
            **scores.as_json(),
            "cosine_to_torch": {"min": float(cos.min()), "p1": float(np.percentile(cos, 1))}
            | {"mean": float(cos.mean())},
        }
        if "tokenize_seconds" in row:
            entry["tokenize_share"] = row["tokenize_seconds"] / row["seconds"]
        entry["rounds_seconds"] = row["rounds"]
        for key in ("load_seconds", "tag", "model_file", "model_file_mb"):
            if key in row:
                entry[key] = row[key]
        out[label] = entry
    base_ndcg = out["torch encode"]["ndcg@10"]
    for entry in out.values():
        entry["ndcg@10_delta"] = entry["ndcg@10"] - base_ndcg

    print()
    header = (
        f"{'backend':<14}{'docs/s':>8}{'chunks/s':>10}{'x encode':>10}{'nDCG@10':>9}"
        f"{'delta':>8}{'cos min':>9}{'cos mean':>10}{'tokenize':>10}{'load s':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, e in out.items():
        share = f"{e['tokenize_share']:.0%}" if "tokenize_share" in e else "-"
        load = f"{e['load_seconds']:.1f}" if "load_seconds" in e else "-"
        print(
            f"{label:<14}{e['docs_per_s']:>8.1f}{e['chunks_per_s']:>10.1f}"
            f"{e['vs_torch_encode']:>9.2f}x{e['ndcg@10']:>9.4f}{e['ndcg@10_delta']:>+8.4f}"
            f"{e['cosine_to_torch']['min']:>9.4f}{e['cosine_to_torch']['mean']:>10.5f}"
            f"{share:>10}{load:>8}"
        )

    import onnxruntime
    import torch

    doc = {
        **info,
        "machine": machine(load_start, libraries=True)
        | {"onnxruntime": onnxruntime.__version__, "torch_threads_now": torch.get_num_threads()},
        "dataset": str(args.dataset),
        "documents": n_docs,
        "chunks": len(flat),
        "queries": len(queries),
        "batch_docs": args.batch_docs,
        "rounds": args.rounds,
        "cpu_pressure": {"start": pressure_start, "end": cpu_pressure()},
        "threads": args.threads,
        "results": out,
    }
    path = args.json or RESULTS / (
        f"onnx_backend_docs{args.docs}.json" if args.docs else "onnx_backend.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
