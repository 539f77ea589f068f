"""The results: a table for the terminal, and a JSON document with every
per-query ranking, the settings, versions, timings and machine."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from autoembed.evaluation.beir import Collection
from autoembed.evaluation.metrics import Scores
from autoembed.evaluation.runner import MethodResult

# Computed outside autoembed, on the test splits (../shared/datasets/README.md):
# BM25 = Lucene BM25 (k1 0.9, b 0.4, English Snowball stemming and stopwords,
# title + text); semantic = all-MiniLM-L6-v2 on title + " " + text (truncated
# at 256 tokens), cosine; hybrid = reciprocal rank fusion (k = 60) of the top
# 100 of each.
REFERENCE: dict[str, dict[str, Scores]] = {
    "scifact": {
        "bm25": Scores(0.676, 0.913, 0.641),
        "semantic": Scores(0.645, 0.925, 0.605),
        "hybrid": Scores(0.719, 0.948, 0.683),
    },
    "cranfield": {
        "bm25": Scores(0.342, 0.726, 0.514),
        "semantic": Scores(0.368, 0.772, 0.538),
        "hybrid": Scores(0.399, 0.781, 0.575),
    },
}
REFERENCE_NOTE = (
    "reference figures computed outside autoembed (Lucene BM25 k1 0.9 b 0.4; "
    "all-MiniLM-L6-v2 truncated at 256 tokens; RRF k 60)"
)
HEADER = ("method", "nDCG@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "queries")


def reference(collection: Collection) -> dict[str, Scores]:
    return REFERENCE.get(collection.name, {}) if collection.split == "test" else {}


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(collection: Collection, results: Sequence[MethodResult]) -> str:
    rows: list[tuple[str, ...]] = [HEADER]
    for r in results:
        m = r.mean
        rows.append(
            (
                r.method.label,
                f"{m.ndcg10:.3f}",
                f"{m.recall100:.3f}",
                f"{m.mrr10:.3f}",
                _ms(r.latency_ms(50)),
                _ms(r.latency_ms(95)),
                str(len(r.queries)),
            )
        )
    ref = reference(collection)
    for name, s in ref.items():
        row = (f"reference {name}", f"{s.ndcg10:.3f}", f"{s.recall100:.3f}", f"{s.mrr10:.3f}")
        rows.append((*row, "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if ref:
        lines.insert(len(results) + 2, "")
        lines.append(f"({REFERENCE_NOTE})")
    return "\n".join(lines)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_setting('server_version'), "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
        "(SELECT version_num FROM autoembed.alembic_version LIMIT 1)"
    ).fetchone()
    assert row is not None
    return {
        "autoembed": _version("autoembed"),
        "autoembed_schema_revision": row[2],
        "postgresql": row[0],
        "pgvector": row[1],
        "python": platform.python_version(),
        "psycopg": _version("psycopg"),
        "torch": _version("torch"),
        "sentence_transformers": _version("sentence-transformers"),
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gb: float | None = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
    }


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def summary_json(r: MethodResult) -> dict[str, Any]:
    return {
        "method": r.method.name,
        "options": dict(r.method.options),
        **r.mean.as_json(),
        "latency_ms": {"p50": _number(r.latency_ms(50)), "p95": _number(r.latency_ms(95))},
        "queries": len(r.queries),
    }


def per_query_json(r: MethodResult, collection: Collection) -> list[dict[str, Any]]:
    return [
        {
            "query_id": q.query_id,
            **q.scores.as_json(),
            "latency_ms": q.latency_ms,
            "relevant": {d: g for d, g in collection.qrels[q.query_id].items() if g > 0},
            "hits": [[h.doc_id, h.chunk_no, h.score] for h in q.hits],
        }
        for q in r.queries
    ]


def document(
    collection: Collection,
    results: Sequence[MethodResult],
    *,
    settings: dict[str, Any],
    versions: dict[str, Any],
    model_version: str | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    return {
        "dataset": {
            "name": collection.name,
            "path": str(collection.path.resolve()),
            "split": collection.split,
            "documents": len(collection.corpus),
            "queries": len(collection.queries),
            "judgments": collection.judgments,
            "skipped_queries": collection.skipped_queries,
            "corpus_sha256": collection.corpus_digest(),
        },
        "settings": settings,
        "model_version": model_version,
        "versions": versions,
        "machine": machine(),
        "timings_s": timings,
        "reference": {m: s.as_json() for m, s in reference(collection).items()},
        "metrics": {r.method.label: summary_json(r) for r in results},
        "per_query_hits_format": ["doc_id", "chunk_no", "score"],
        "per_query": {r.method.label: per_query_json(r, collection) for r in results},
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
