"""What searching costs the roles apps really use: BM25, semantic and hybrid
search as the table's owner, as a reader granted search (grant_search and
SELECT on the source), and as a tenant under row-level security that sees
half of the rows — side by side in one run, same queries, same order.

    .venv/bin/python benchmarks/search_roles.py    # SciFact's 5,183 abstracts, 300 queries
    .venv/bin/python benchmarks/search_roles.py --limit 1000 --queries 40    # a smoke run
    .venv/bin/python benchmarks/search_roles.py [--dataset DIR] [--json PATH]

Prints a table (p50/p95 per method and role, and each role's ratio to the
owner) and writes every timing to --json (benchmarks/results/search_roles.json).

Setup: a fresh embedded PostgreSQL in a temporary directory (deleted after),
autoembed installed, table ``docs`` (id, tenant, title, text) holding the
corpus with tenant = 1 for every other document, a vectorizer on title and
text with the deterministic ``hash:384`` embedder (search costs do not depend
on the model; the vectors are drained in-process first), the roles
``bench_reader`` (grant_search, SELECT on docs) and ``bench_tenant`` (the
same, under a policy showing it tenant 1 only). Each query's vector is the
hash embedder's. Timing: execute + fetch of the SQL call, k = 10, on one
connection per role, warm (every relation read once first; 5 untimed
queries), query by query in a shuffled order, every (method, role) once per
query in a shuffled order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from bench_run_info import machine, run_info
from bench_server import embedded_database
from psycopg import sql

from autoembed.evaluation.beir import load
from autoembed.evaluation.metrics import percentile
from autoembed.settings import Settings
from autoembed.worker.embedders import load_embedder
from autoembed.worker.once import run_once

REPO = Path(__file__).resolve().parent.parent
ROLES = ("owner", "bench_reader", "bench_tenant")
METHODS = {
    "bm25": "SELECT pk, score FROM autoembed.bm25_search('docs', %(text)s, 10)",
    "semantic": "SELECT pk, score FROM autoembed.search('docs', %(vector)s::vector, 10)",
    "hybrid": "SELECT pk, score "
    "FROM autoembed.hybrid_search('docs', %(text)s, %(vector)s::vector, 10)",
}
DIMS = 384


def build(url: str, dataset: Path, limit: int | None) -> int:
    docs = load(dataset).corpus[:limit]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id text PRIMARY KEY, tenant int, title text, text text)")
        with conn.cursor().copy("COPY docs FROM STDIN") as copy:
            for i, d in enumerate(docs):
                copy.write_row((d.id, 1 + i % 2, d.title, d.text))
        conn.execute(
            "SELECT autoembed.create_vectorizer('docs', ARRAY['title', 'text'], "
            f"model => 'hash:{DIMS}')"
        )
        for role in ROLES[1:]:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(role)))
            conn.execute("SELECT autoembed.grant_search('docs', %s)", (role,))
        conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY everything ON docs TO bench_reader USING (true)")
        conn.execute("CREATE POLICY tenant_one ON docs TO bench_tenant USING (tenant = 1)")
    started = time.monotonic()
    stats = run_once(Settings(database_url=url), show_progress=sys.stderr.isatty())
    print(
        f"embedded {stats.written:,} rows ({stats.chunks:,} chunks) with hash:{DIMS} "
        f"in {time.monotonic() - started:.0f}s",
        file=sys.stderr,
    )
    return stats.chunks


def connect(url: str, role: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True, **({} if role == "owner" else {"user": role}))
    conn.execute("SELECT count(*) FROM docs")
    for name in ("docs_embeddings_v1", "docs_postings_v1", "docs_stats_v1"):
        # (a role may read some only through the search functions)
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT count(*) FROM autoembed.{}").format(sql.Identifier(name)))
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/scifact")
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/search_roles.json")
    args = parser.parse_args()
    load_start = os.getloadavg()
    queries = [q.text for q in load(args.dataset).queries][: args.queries]
    vectors = [str(list(map(float, v))) for v in load_embedder(f"hash:{DIMS}").embed(queries)]
    rng = random.Random(args.seed)
    timings: dict[str, dict[str, list[float]]] = {m: {r: [] for r in ROLES} for m in METHODS}
    with embedded_database() as url:
        chunks = build(url, args.dataset, args.limit)
        conns = {r: connect(url, r) for r in ROLES}
        hits: dict[str, dict[str, int]] = {m: {r: 0 for r in ROLES} for m in METHODS}
        order = list(range(len(queries)))
        rng.shuffle(order)
        for n, qi in enumerate([*order[:5], *order]):
            pairs = [(m, r) for m in METHODS for r in ROLES]
            rng.shuffle(pairs)
            for method, role in pairs:
                params = {"text": queries[qi], "vector": vectors[qi]}
                t0 = time.perf_counter()
                rows = conns[role].execute(METHODS[method], params).fetchall()
                elapsed = (time.perf_counter() - t0) * 1000
                if n >= 5:  # the first 5: warm-up
                    timings[method][role].append(elapsed)
                    hits[method][role] += len(rows)
        for c in conns.values():
            c.close()
    table = [f"search as the roles apps use: {len(queries)} queries, {chunks:,} chunks, k = 10"]
    table.append(f"{'method':<10}{'role':<15}{'p50 ms':>9}{'p95 ms':>9}{'p50/owner':>11}")
    summary: dict[str, Any] = {}
    for method in METHODS:
        base = percentile(timings[method]["owner"], 50)
        for role in ROLES:
            p50 = percentile(timings[method][role], 50)
            p95 = percentile(timings[method][role], 95)
            summary[f"{method}/{role}"] = {
                "p50_ms": p50,
                "p95_ms": p95,
                "ratio_to_owner_p50": p50 / base,
                "hits": hits[method][role],
            }
            table.append(f"{method:<10}{role:<15}{p50:>9.2f}{p95:>9.2f}{p50 / base:>10.2f}x")
    print("\n".join(table))
    out = run_info("search_roles") | {
        "parameters": vars(args) | {"dataset": str(args.dataset), "json": str(args.json)},
        "chunks": chunks,
        "machine": machine(load_start),
        "summary": summary,
        "timings_ms": timings,
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
