"""Filtered search at 100,000 chunks: a SQL predicate matching 1% (and 10%) of
rows, kept while ranking (predicate =>; pgvector's iterative index scan for
semantic search), against the same search without a predicate and against
what one gets without autoembed's predicate, in the same run:

  post-filter   autoembed's top 10, then the WHERE: the page comes back short;
  pgvector      the hand-written query, WHERE + ORDER BY embedding <=> q LIMIT
                10 over the chunks, with pgvector's iterative scan on (0.8's
                relaxed_order) and off (before 0.8): chunks, not rows;
  exact         the matching rows' best chunks by an exact scan (no index):
                the reference for recall, and the brute-force way.

    .venv/bin/python benchmarks/filtered_search.py          # latency.py's table, 100 queries
    .venv/bin/python benchmarks/filtered_search.py --quick  # SciFact x 1, 20 queries: a smoke run

The table is latency.py's (latency_corpus.py builds it once, ~10 min, and
keeps it in .autoembed/latency). Method as latency.py: one connection, every
relation prewarmed, 3 warm-up queries per method, then queries and methods in
shuffled orders. A predicate selects rows by a hash of their key
(mod(abs(hashtext(id)), 100) = 0: 1%), so it is independent of the text. Prints
a table and writes every timing to --json (benchmarks/results/filtered_search.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import latency_corpus as corpus_mod
import latency_methods as lm
import numpy as np
from bench_run_info import machine, run_info
from bench_server import server_settings
from psycopg import sql

from autoembed.db import connect
from autoembed.evaluation import beir
from autoembed.evaluation.metrics import percentile
from autoembed.worker.embedders import load_embedder

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "filtered_search.json"
WARMUP = 3
SELECTIVITY = {"1%": 100, "10%": 10}  # label -> modulus


def predicate(alias: str, modulus: int) -> str:
    return f"mod(abs(hashtext({alias}.id)), {modulus}) = 0"


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    statement: sql.Composable
    params: Callable[[Any, str, np.ndarray[Any, Any], int], tuple[Any, ...]]
    settings: tuple[tuple[str, str], ...] = ()


def methods(t: str, emb: str, version_id: int) -> list[Method]:
    table, chunks = sql.Identifier(t), sql.Identifier("autoembed", emb)
    out = [
        Method(
            "semantic",
            "search, no predicate",
            sql.SQL("SELECT pk ->> 'id', score FROM autoembed.search(%s, %s::vector, %s)"),
            lambda v, q, e, k: (t, e, k),
        )
    ]
    for label, mod in SELECTIVITY.items():
        p = predicate("s", mod)
        out.append(
            Method(
                f"semantic_{label}",
                f"search, predicate {label}",
                sql.SQL(
                    "SELECT pk ->> 'id', score "
                    "FROM autoembed.search(%s, %s::vector, %s, predicate => %s)"
                ),
                lambda v, q, e, k, p=p: (t, e, k, p),
            )
        )
    p1 = predicate("s", SELECTIVITY["1%"])
    out += [
        Method(
            "bm25_1%",
            "bm25_search, predicate 1%",
            sql.SQL(
                "SELECT pk ->> 'id', score FROM autoembed.bm25_search(%s, %s, %s, predicate => %s)"
            ),
            lambda v, q, e, k: (t, q, k, p1),
        ),
        Method(
            "hybrid_1%",
            "hybrid_search, predicate 1%",
            sql.SQL(
                "SELECT pk ->> 'id', score FROM autoembed.hybrid_search(%s, %s, %s::vector, %s, "
                "predicate => %s)"
            ),
            lambda v, q, e, k: (t, q, e, k, p1),
        ),
        Method(
            "postfilter_1%",
            "post-filter: search top k, then WHERE",
            sql.SQL(
                "SELECT h.pk ->> 'id', h.score FROM autoembed.search(%s, %s::vector, %s) AS h "
                "JOIN {table} AS s ON s.id = h.pk ->> 'id' WHERE {p}"
            ).format(table=table, p=sql.SQL(p1)),
            lambda v, q, e, k: (t, e, k),
        ),
    ]
    for on in (True, False):
        out.append(
            Method(
                f"pgvector_{'iterative' if on else 'plain'}_1%",
                f"pgvector by hand, iterative scan {'on' if on else 'off'}",
                sql.SQL(
                    "SELECT e.id, 1 - (e.embedding <=> %s::vector) FROM {chunks} AS e "
                    "JOIN {table} AS s ON s.id = e.id "
                    "WHERE e.model_version_id = %s AND {p} "
                    "ORDER BY e.embedding <=> %s::vector LIMIT %s"
                ).format(chunks=chunks, table=table, p=sql.SQL(p1)),
                lambda v, q, e, k: (e, version_id, e, k),
                (("hnsw.iterative_scan", "relaxed_order" if on else "off"),),
            )
        )
    out.append(
        Method(
            "exact_1%",
            "exact scan of the matching rows",
            sql.SQL(
                "SELECT e.id, 1 - min(e.embedding <=> %s::vector) AS score FROM {chunks} AS e "
                "JOIN {table} AS s ON s.id = e.id WHERE e.model_version_id = %s AND {p} "
                "GROUP BY e.id ORDER BY score DESC LIMIT %s"
            ).format(chunks=chunks, table=table, p=sql.SQL(p1)),
            lambda v, q, e, k: (e, version_id, k),
            (("enable_indexscan", "off"),),
        )
    )
    return out


@dataclass
class Timing:
    ms: float
    hits: list[tuple[str, float]]


def run(conn: Any, m: Method, query: str, vector: np.ndarray[Any, Any], k: int) -> Timing:
    with conn.transaction():
        for name, value in m.settings:
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        t = time.perf_counter()
        rows = conn.execute(m.statement, m.params(None, query, vector, k), prepare=True).fetchall()
        ms = (time.perf_counter() - t) * 1000
    return Timing(ms, [(str(r[0]), float(r[1])) for r in rows])


def measure(
    url: str, corpus: corpus_mod.Corpus, queries: list[beir.Query], k: int, seed: int
) -> dict[str, Any]:
    conn = connect(url, application_name="autoembed filtered search benchmark")
    v = lm.Vectorizer.load(conn, corpus.vectorizer)
    embedder = load_embedder(corpus_mod.MODEL)
    vectors = [np.asarray(x, dtype=np.float32) for x in embedder.embed([q.text for q in queries])]
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    for rel in [*v.relations, corpus.table]:
        conn.execute("SELECT pg_prewarm(%s::regclass)", (rel,))
    matching = {
        label: conn.execute(
            sql.SQL("SELECT count(*) FILTER (WHERE {}) / count(*)::float8 FROM {} AS s").format(
                sql.SQL(predicate("s", mod)), sql.Identifier(corpus.table)
            )
        ).fetchone()[0]
        for label, mod in SELECTIVITY.items()
    }
    ms = methods(corpus.table, v.embeddings, v.version_id)
    for m in ms:
        for i in range(min(WARMUP, len(queries))):
            run(conn, m, queries[i].text, vectors[i], k)
    rng = np.random.default_rng(seed)
    timings: dict[str, list[Timing]] = {m.key: [None] * len(queries) for m in ms}  # type: ignore[misc]
    print(f"timing {len(ms)} methods over {len(queries)} queries (interleaved) ...")
    for i in rng.permutation(len(queries)).tolist():
        for j in rng.permutation(len(ms)).tolist():
            timings[ms[j].key][i] = run(conn, ms[j], queries[i].text, vectors[i], k)
    info = {"postgres": server_settings(conn), "matching_share": matching}
    conn.close()
    exact = timings["exact_1%"]
    summary = {}
    for m in ms:
        ts = timings[m.key]
        row: dict[str, Any] = {
            "label": m.label,
            "p50": percentile([t.ms for t in ts], 50),
            "p95": percentile([t.ms for t in ts], 95),
            "mean_rows": float(np.mean([len({h[0] for h in t.hits}) for t in ts])),
            "short_pages": sum(len({h[0] for h in t.hits}) < k for t in ts),
        }
        if m.key.endswith("_1%") and not m.key.startswith(("bm25", "hybrid")):
            row["recall_at_k"] = float(
                np.mean([_recall(t.hits, e.hits) for t, e in zip(ts, exact, strict=True)])
            )
        summary[m.key] = row
    base = summary["semantic"]["p50"]
    for row in summary.values():
        row["p50_vs_unfiltered"] = row["p50"] / base
    return {
        "info": info,
        "summary": summary,
        "per_query": {
            key: [{"ms": round(t.ms, 3), "rows": len(t.hits)} for t in ts]
            for key, ts in timings.items()
        },
    }


def _recall(hits: list[tuple[str, float]], exact: list[tuple[str, float]]) -> float:
    """Share of the exact top rows found (by row; ties by score)."""
    if not exact:
        return 1.0
    got = {h[0] for h in hits}
    return sum(1 for e in exact if e[0] in got) / len(exact)


def print_table(lines: list[str], summary: dict[str, Any], k: int) -> None:
    print()
    for line in lines:
        print(line)
    print(
        f"\n{'method':<44}{'p50 ms':>9}{'p95 ms':>9}{'x unfiltered':>14}"
        f"{'rows (of ' + str(k) + ')':>14}{'short pages':>13}{'recall@' + str(k):>11}"
    )
    for r in summary.values():
        rec = r.get("recall_at_k")
        print(
            f"{r['label']:<44}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p50_vs_unfiltered']:>14.2f}"
            f"{r['mean_rows']:>14.1f}{r['short_pages']:>13}"
            f"{'-' if rec is None else f'{rec:.3f}':>11}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    corpus_mod.add_table_arguments(p, DEFAULT_DATASET)
    p.add_argument("--queries", type=int, default=100, help="only the first N queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="x1 replica, 20 queries")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = p.parse_args(argv)
    if args.quick:
        args.replicas, args.queries = 1, 20
        if args.json == DEFAULT_JSON:
            args.json = DEFAULT_JSON.with_name("filtered_search_quick.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()
    collection = corpus_mod.load_collection(args)
    with corpus_mod.opened(args, collection, print) as (url, corpus, _build_s):
        result = measure(url, corpus, collection.queries, args.k, args.seed)
    mach = machine(load_start)
    pg_info = result["info"]["postgres"]
    share = result["info"]["matching_share"]
    lines = [
        f"filtered search: {args.dataset.name} x {corpus.replicas} = {corpus.rows:,} rows, "
        f"{corpus.chunks:,} chunks; {len(collection.queries)} queries; k = {args.k}; predicates "
        + ", ".join(f"{label} (matches {100 * s:.2f}% of rows)" for label, s in share.items()),
        f"machine: {mach['cpu']}, {mach['cpu_count']} cores; PostgreSQL "
        f"{pg_info.get('server_version')}, shared_buffers {pg_info.get('shared_buffers')}; "
        f"load average {mach['loadavg_start'][0]:.2f} at the start",
    ]
    print_table(lines, result["summary"], args.k)
    report = {
        **run_info("filtered_search"),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": mach,
        "header": lines,
        "corpus": {"table": corpus.table, "rows": corpus.rows, "chunks": corpus.chunks},
        "duration_s": round(time.monotonic() - started, 1),
        **result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\n{report['duration_s']:.0f} s in all; {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
