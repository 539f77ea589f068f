"""A million vectors: HNSW over vector, halfvec and binary quantization with
exact re-ranking, as a vectorizer version stores them (storage => 'vector',
'halfvec', 'binary'; extension_sql/idempotent/035_version_tables.sql).

Command (11 minutes here at 1,000,000 rows; ``--rows 100000`` for a quick
check, 2.5 minutes)::

    flock /tmp/quiet.lock .venv/bin/python benchmarks/million.py

What it does, in a private embedded PostgreSQL (18, pgvector 0.8) whose
shared_buffers is raised to --shared-buffers (restart):

1. --rows synthetic 384-d vectors (benchmarks/million_data.py: a Gaussian
   mixture around real MiniLM embeddings of SciFact, with their covariance;
   why, there), loaded by binary COPY into a table shaped like a version's
   embeddings table (key, model_version_id, chunk_no, embedding; the chunk
   text and lexemes are left out: they cost the same under every storage),
   and the same vectors as halfvec(384) in a second table.
2. The HNSW indexes built once, at the end (m 16, ef_construction 64,
   pgvector's defaults, as autoembed makes them), with --maintenance-work-mem
   and --parallel-workers parallel maintenance workers: vector_cosine_ops,
   halfvec_cosine_ops, and bit_hamming_ops on binary_quantize(embedding)::bit(384).
3. --queries held-out draws of the same mixture; exact top 10 by cosine
   computed in numpy over the float32 vectors. For each storage and setting:
   p50/p95 latency of one client (after a warm-up pass), recall@10 against
   exact, and QPS of --clients concurrent clients (threads, one connection
   each). vector and halfvec: ORDER BY distance LIMIT 10 at hnsw.ef_search
   in --ef. binary: the N nearest by Hamming distance on the bit index
   (ef_search = N), re-ranked by exact cosine on the full vectors, for N in
   --candidates: the query autoembed.search runs for storage => 'binary'.
4. SciFact (real MiniLM vectors of its 5,183 abstracts and 300 test
   queries): nDCG@10 and recall@10 against exact vector search for each
   storage, at the ef_search autoembed.search uses for k = 10 (200), and
   binary at its default candidates.

Prints a table; writes JSON to benchmarks/results/million.json (rewritten
after each phase, so a stopped run leaves what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run_info import machine, run_info
from million_data import COPY_HEADER, COPY_TRAILER, Matrix, Mixture, copy_rows, scifact

from autoembed.embedded import EmbeddedPostgres, sigterm_as_interrupt
from autoembed.evaluation import metrics

Conn = psycopg.Connection[Any]
K = 10
DIMS = 384
# What autoembed.search sets for k = 10: hnsw.ef_search = max(2 * 56, 200).
SEARCH_EF = 200
# The candidates autoembed.search re-ranks under storage => 'binary' for k = 10:
# autoembed._binary_candidates(56) (060_search.sql).
SEARCH_CANDIDATES = 224
RESULTS = Path(__file__).resolve().parent / "results"


def nearest_sql(storage: str, table: str) -> str:
    """The top-K query of one storage: %(q)s the query vector as text, %(n)s
    the candidates re-ranked (binary)."""
    if storage == "vector":
        return f"SELECT id FROM {table} ORDER BY embedding <=> %(q)s::vector LIMIT {K}"
    if storage == "halfvec":
        return f"SELECT id FROM {table} ORDER BY embedding <=> %(q)s::halfvec({DIMS}) LIMIT {K}"
    # binary: candidates by Hamming distance, exact cosine on the full vectors
    return (
        f"SELECT c.id FROM (SELECT id, embedding FROM {table} "
        f"ORDER BY binary_quantize(embedding)::bit({DIMS}) <~> binary_quantize(%(q)s::vector) "
        "LIMIT %(n)s) AS c "
        f"ORDER BY c.embedding <=> %(q)s::vector LIMIT {K}"
    )


def as_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v) + "]"


def start_server(tmp: Path, shared_buffers: str) -> tuple[EmbeddedPostgres, str]:
    server = EmbeddedPostgres(tmp / "data", delete_on_stop=True)
    url = server.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
    server.restart()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return server, url


def load(conn: Conn, mixture: Mixture, rows: int, queries: Matrix, say: Any) -> np.ndarray:
    """COPY the rows in; returns the exact top K ids of each query."""
    conn.execute(
        "CREATE TABLE emb_vector (id bigint NOT NULL, model_version_id int NOT NULL DEFAULT 1, "
        f"chunk_no int NOT NULL DEFAULT 0, embedding vector({DIMS}) NOT NULL, "
        "PRIMARY KEY (id, model_version_id, chunk_no))"
    )
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), K), dtype=np.int64)
    t = time.perf_counter()
    first = 0
    copy_sql = "COPY emb_vector (id, embedding) FROM STDIN (FORMAT binary)"
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write(COPY_HEADER)
        for batch in mixture.batches(rows):
            copy.write(copy_rows(first, batch))
            scores = queries @ batch.T
            top = np.argpartition(-scores, K, axis=1)[:, :K]
            cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
            cand_i = np.concatenate([best_i, top + first], axis=1)
            keep = np.argsort(-cand_s, axis=1)[:, :K]
            best_s = np.take_along_axis(cand_s, keep, 1)
            best_i = np.take_along_axis(cand_i, keep, 1)
            first += len(batch)
            if first % 200_000 == 0:
                say(f"  copied {first:,} rows")
        copy.write(COPY_TRAILER)
    say(f"loaded {rows:,} rows in {time.perf_counter() - t:.0f} s")
    conn.execute(
        "CREATE TABLE emb_halfvec AS SELECT id, model_version_id, chunk_no, "
        f"embedding::halfvec({DIMS}) AS embedding FROM emb_vector"
    )
    conn.execute("VACUUM (ANALYZE) emb_vector")
    conn.execute("VACUUM (ANALYZE) emb_halfvec")
    return best_i


INDEXES = {
    "vector": ("emb_vector", "hnsw (embedding vector_cosine_ops)"),
    "halfvec": ("emb_halfvec", "hnsw (embedding halfvec_cosine_ops)"),
    "binary": ("emb_vector", f"hnsw ((binary_quantize(embedding)::bit({DIMS})) bit_hamming_ops)"),
}


def build(conn: Conn, storage: str, args: argparse.Namespace) -> dict[str, Any]:
    table, method = INDEXES[storage]
    conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    conn.execute(f"SET max_parallel_maintenance_workers = {args.parallel_workers}")
    t = time.perf_counter()
    conn.execute(f"CREATE INDEX idx_{storage} ON {table} USING {method}")
    seconds = time.perf_counter() - t
    conn.execute("CHECKPOINT")
    table_bytes, index_bytes = conn.execute(
        "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass)",
        (table, f"idx_{storage}"),
    ).fetchone() or (0, 0)
    return {"build_s": round(seconds, 1), "table_bytes": table_bytes, "index_bytes": index_bytes}


def run_queries(
    url: str, storage: str, table: str, ef: int, candidates: int, texts: list[str], clients: int = 1
) -> tuple[list[float], list[list[int]], float]:
    """Latencies (s) and ids per query; wall seconds. With clients > 1 each
    client runs its share of texts on its own connection."""
    q = nearest_sql(storage, table)
    results: list[list[int]] = [[] for _ in texts]
    latencies = [0.0] * len(texts)

    def client(c: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            for i in range(c, len(texts), clients):
                t = time.perf_counter()
                rows = conn.execute(q, {"q": texts[i], "n": candidates}).fetchall()
                latencies[i] = time.perf_counter() - t
                results[i] = [int(r[0]) for r in rows]

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, results, time.perf_counter() - t


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = [len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def settings(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(storage, ef_search, candidates) to measure."""
    out: list[tuple[str, int, int]] = []
    for storage in args.storages:
        if storage == "binary":
            out += [(storage, n, n) for n in args.candidates]
        else:
            out += [(storage, ef, 0) for ef in args.ef]
    return out


def measure(
    url: str, args: argparse.Namespace, texts: list[str], truth: np.ndarray, say: Any
) -> list[dict[str, Any]]:
    rows = []
    warmed: set[str] = set()
    for storage, ef, candidates in settings(args):
        table = INDEXES[storage][0]
        if storage not in warmed:  # read the index into the caches once
            run_queries(url, storage, table, ef, candidates, texts, 1)
            warmed.add(storage)
        lat, found, _ = run_queries(url, storage, table, ef, candidates, texts, 1)
        _, _, wall = run_queries(url, storage, table, ef, candidates, texts * 2, args.clients)
        row = {
            "storage": storage, "ef_search": ef, "candidates": candidates or None,
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 2),
            "recall_at_10": round(recall(found, truth), 4),
            f"qps_{args.clients}_clients": round(2 * len(texts) / wall, 1),
        }  # fmt: skip
        say(f"  {row}")
        rows.append(row)
    return rows


def scifact_quality(url: str, say: Any) -> dict[str, Any]:
    """nDCG@10 and recall@10 against exact vector search per storage, on
    real MiniLM vectors of SciFact."""
    data = scifact(say=say)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE sf_vector (id bigint PRIMARY KEY, embedding vector({DIMS}))")
        copy_sql = "COPY sf_vector (id, embedding) FROM STDIN (FORMAT binary)"
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(COPY_HEADER + copy_rows(0, data.docs) + COPY_TRAILER)
        conn.execute(
            f"CREATE TABLE sf_halfvec AS SELECT id, embedding::halfvec({DIMS}) AS embedding "
            "FROM sf_vector"
        )
        for storage, (_, method) in INDEXES.items():
            table = "sf_halfvec" if storage == "halfvec" else "sf_vector"
            conn.execute(f"CREATE INDEX ON {table} USING {method}")
        conn.execute("VACUUM ANALYZE")
    exact = np.argsort(-(data.queries @ data.docs.T), axis=1)[:, :K]
    texts = [as_text(q) for q in data.queries]
    out: dict[str, Any] = {"docs": len(data.doc_ids), "queries": len(texts), "ef_search": SEARCH_EF}

    def ndcg(ranked: list[list[int]] | np.ndarray) -> float:
        return float(np.mean([
            metrics.ndcg([data.doc_ids[i] for i in r], data.qrels[qid])
            for qid, r in zip(data.query_ids, ranked, strict=True)
        ]))  # fmt: skip

    out["exact_vector"] = {"ndcg_at_10": round(ndcg(exact), 4), "recall_at_10": 1.0}
    for storage in INDEXES:
        table = "sf_halfvec" if storage == "halfvec" else "sf_vector"
        _, found, _ = run_queries(url, storage, table, SEARCH_EF, SEARCH_CANDIDATES, texts, 1)
        out[storage] = {
            "ndcg_at_10": round(ndcg(found), 4),
            "recall_at_10": round(recall(found, exact), 4),
        }
        say(f"  scifact {storage}: {out[storage]}")
    return out


def print_table(report: dict[str, Any], clients: int) -> None:
    builds = report.get("builds", {})
    rows = report["rows"]
    n = report["parameters"]["rows"]
    print(f"\n{n:,} rows x {DIMS}-d; ef_search or candidates N; {clients} clients for QPS")
    print(
        f"{'storage':<8}{'setting':>12}{'bytes/row':>11}{'build s':>9}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'recall@10':>10}{'QPS':>8}"
    )
    for r in rows:
        b = builds.get(r["storage"], {})
        per_row = (b.get("table_bytes", 0) + b.get("index_bytes", 0)) / n
        setting = f"N={r['candidates']}" if r["candidates"] else f"ef={r['ef_search']}"
        print(
            f"{r['storage']:<8}{setting:>12}{per_row:>11,.0f}{b.get('build_s', 0):>9.0f}"
            f"{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['recall_at_10']:>10.3f}{r[f'qps_{clients}_clients']:>8.0f}"
        )
    for storage, b in builds.items():
        print(
            f"  {storage}: table {b['table_bytes'] / 1e6:,.0f} MB, "
            f"index {b['index_bytes'] / 1e6:,.0f} MB, build {b['build_s']} s"
        )
    sf = report.get("scifact")
    if sf:
        print(
            f"\nSciFact ({sf['docs']} abstracts, {sf['queries']} queries, ef_search "
            f"{sf['ef_search']}): nDCG@10, recall@10 against exact"
        )
        for key in ("exact_vector", "vector", "halfvec", "binary"):
            print(f"  {key:<13}{sf[key]['ndcg_at_10']:>8.4f}{sf[key]['recall_at_10']:>8.3f}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--ef", type=ints, default=[40, 100, 200])
    p.add_argument("--candidates", type=ints, default=[50, 100, 224, 400])
    p.add_argument("--storages", type=lambda s: s.split(","), default=list(INDEXES))
    p.add_argument("--spread", type=float, default=0.6)
    p.add_argument("--maintenance-work-mem", default="6GB")
    p.add_argument(
        "--parallel-workers", type=int, default=1, help="max_parallel_maintenance_workers"
    )
    p.add_argument("--shared-buffers", default="4GB")
    p.add_argument("--no-scifact", action="store_true")
    p.add_argument("--json", type=Path, default=RESULTS / "million.json")
    args = p.parse_args()
    load_start = os.getloadavg()
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {msg}", flush=True)

    report: dict[str, Any] = {
        **run_info("million"), "parameters": vars(args), "rows": [], "builds": {}
    }  # fmt: skip

    def save() -> None:
        report["machine"] = machine(load_start)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")

    centres = scifact(say=say).docs
    mixture = Mixture(centres, spread=args.spread)
    queries = mixture.queries(args.queries)
    texts = [as_text(q) for q in queries]
    report["data"] = {"mixture": "SciFact MiniLM centres + covariance noise", "spread": args.spread,
                      "digest": mixture.digest(args.rows)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="autoembed-bench-million-") as tmp:
        server, url = start_server(Path(tmp), args.shared_buffers)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                report["server"] = dict(conn.execute(
                    "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings "
                    "WHERE name IN ('server_version', 'shared_buffers')"
                ).fetchall())  # fmt: skip
                report["server"]["pgvector"] = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()[0]  # type: ignore[index]
                truth = load(conn, mixture, args.rows, queries, say)
                for storage in args.storages:
                    report["builds"][storage] = build(conn, storage, args)
                    say(f"built {storage}: {report['builds'][storage]}")
                    save()
            report["rows"] = measure(url, args, texts, truth, say)
            save()
            if not args.no_scifact:
                report["scifact"] = scifact_quality(url, say)
                save()
        finally:
            server.stop()
    print_table(report, args.clients)
    print(f"\n{args.json}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # a killed run stops its PostgreSQL too
        sys.exit(main())
