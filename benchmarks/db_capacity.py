"""Database capacity: how many chunks a second one PostgreSQL takes in from
workers whose model costs nothing, BM25 on (the default), and what BM25's
index costs on disk.

    .venv/bin/python benchmarks/db_capacity.py              # SciFact x 2, 1 and 2 workers, ~5 min
    .venv/bin/python benchmarks/db_capacity.py --replicas 1 --workers 2 --index none   # ~1 min

Method. A private embedded PostgreSQL (its default, durable settings). For each
--index (hnsw: the default, the index kept up to date row by row; none: no
vector index while the backfill runs, then autoembed.set_index(name, 'hnsw')
at the end, the "deferred build") and each --workers count: SciFact's abstracts (x --replicas,
distinct keys) are COPYed into a fresh table under a vectorizer whose model is
``null:384`` (a vector from a hash of each chunk: ~10 µs, so what is measured
is everything but the model: claims, chunking, the write path, BM25's
statistics and the merges into its index), then that many worker processes
(``autoembed worker --once``'s drain, batches of --batch rows) drain it. The
clock runs from the first claim to the last merge. The database's CPU time
(every server process, exited backends included: the postmaster's own and
its children's counters) and the workers' are measured apart, so the table
also says what one database core absorbs: chunks / database CPU second.

The competitor, in the same run: the same chunks, vectors and lexemes written
by one COPY into a bare table of the same shape and indexes (what storing them
costs without autoembed's queue, BM25 statistics and index): its database CPU
per chunk; and 0.2.0's BM25 layout (one row per chunk and lexeme, three
B-tree indexes) built from the same chunks, for its size.

Storage is measured after the drain, statistics compacted and VACUUM: bytes per
chunk of the embeddings table (with the vector and lexemes), its HNSW index,
BM25's posting blocks and statistics; and after VACUUM FULL. Prints a table,
writes benchmarks/results/db_capacity.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from bench_run_info import machine, run_info
from bench_server import embedded_database, server_settings
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import sigterm_as_interrupt
from autoembed.evaluation import beir

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "db_capacity.json"
MODEL = "null:384"


def server_cpu(conn: psycopg.Connection[Any]) -> float:
    """CPU seconds of every process of the server so far: the postmaster's
    own and its reaped children's (exited backends), plus live children's."""
    data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid: int) -> list[str]:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2 :].split()

    own = fields(postmaster)
    total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = fields(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            if int(f[1]) == postmaster:  # ppid
                total += int(f[11]) + int(f[12])
    return total / tick


def _drain(url: str, batch: int, out: Any) -> None:
    from autoembed.settings import Settings
    from autoembed.worker.once import run_once

    started = time.process_time()
    run_once(Settings(database_url=url, batch_size=batch), show_progress=False)
    out.put(time.process_time() - started)


def load(
    conn: psycopg.Connection[Any], table: str, docs: list[beir.Document], replicas: int
) -> int:
    conn.execute(
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, abstract text)").format(
            sql.Identifier(table)
        )
    )
    conn.execute(
        "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY['title', 'abstract'], "
        "name => %s, model => %s, index => %s)",
        (table, table, MODEL, "none" if table.endswith("none") else "hnsw"),
    )
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as cp,
    ):
        for r in range(replicas):
            for d in docs:
                cp.write_row((f"{d.id}-{r}", d.title, d.text))
    return replicas * len(docs)


def table_bytes(conn: psycopg.Connection[Any], relation: str) -> int:
    """The relation's bytes, its indexes and TOAST included."""
    row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (relation,)).fetchone()
    return int(row[0]) if row else 0


def storage(conn: psycopg.Connection[Any], name: str, chunks: int) -> dict[str, float]:
    ver = conn.execute(
        "SELECT ver.embeddings_table, ver.postings_table, ver.stats_table "
        "FROM autoembed.vectorizer_version AS ver JOIN autoembed.vectorizer AS v "
        "ON v.id = ver.vectorizer_id WHERE v.name = %s AND ver.state = 'active'",
        (name,),
    ).fetchone()
    assert ver is not None
    emb, postings, stats = (f"autoembed.{t}" for t in ver)
    hnsw = conn.execute(
        "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index AS i "
        "JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_am AS a ON a.oid = c.relam "
        "WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw'",
        (emb,),
    ).fetchone()
    assert hnsw is not None
    per = {
        "embeddings table": table_bytes(conn, emb) - int(hnsw[0]),
        "HNSW index": int(hnsw[0]),
        "BM25 postings": table_bytes(conn, postings),
        "BM25 statistics": table_bytes(conn, stats),
    }
    return {k: round(v / chunks, 1) for k, v in per.items()}


def old_layout_bytes(conn: psycopg.Connection[Any], emb: str, chunks: int) -> float:
    """0.2.0's postings of the same chunks: one row per chunk and lexeme, three indexes."""
    conn.execute("DROP TABLE IF EXISTS old_postings")
    conn.execute(
        "CREATE TABLE old_postings AS SELECT e.model_version_id, l.lexeme AS term, e.chunk_id, "
        "cardinality(l.positions) AS tf, e.doc_len, 0.5::float4 AS impact "
        f"FROM {emb} AS e CROSS JOIN LATERAL unnest(e.lexemes) AS l"
    )
    conn.execute(
        "CREATE INDEX ON old_postings (model_version_id, term, impact DESC) "
        "INCLUDE (chunk_id, tf, doc_len)"
    )
    conn.execute(
        "CREATE INDEX ON old_postings (model_version_id, term, chunk_id) INCLUDE (tf, doc_len)"
    )
    conn.execute("CREATE INDEX ON old_postings (chunk_id)")
    size = table_bytes(conn, "old_postings")
    conn.execute("DROP TABLE old_postings")
    return round(size / chunks, 1)


def bare_copy(conn: psycopg.Connection[Any], emb: str, index: str) -> dict[str, float]:
    """The same chunks stored without autoembed: COPYed (text and vectors)
    and inserted with their lexemes computed as autoembed does, into a bare
    table with the same columns and indexes. Database CPU and wall time."""
    rows = conn.execute(
        f"SELECT id, model_version_id, chunk_no, chunk, embedding::text FROM {emb}"
    ).fetchall()
    conn.execute("DROP TABLE IF EXISTS bare, staged")
    conn.execute(
        "CREATE TABLE bare (id text NOT NULL, model_version_id int NOT NULL, chunk_no int NOT NULL,"
        " chunk text NOT NULL, embedding vector(384) NOT NULL, lexemes tsvector NOT NULL,"
        " doc_len int NOT NULL, chunk_id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,"
        " PRIMARY KEY (id, model_version_id, chunk_no))"
    )
    conn.execute(
        "CREATE TEMP TABLE staged (id text, model_version_id int, chunk_no int, chunk text,"
        " embedding vector(384))"
    )
    if index == "hnsw":
        conn.execute("CREATE INDEX ON bare USING hnsw (embedding vector_cosine_ops)")
    cpu, t = server_cpu(conn), time.perf_counter()
    with (
        conn.cursor() as cur,
        cur.copy("COPY staged (id, model_version_id, chunk_no, chunk, embedding) FROM STDIN") as cp,
    ):
        for r in rows:
            cp.write_row(r)
    conn.execute(
        "INSERT INTO bare (id, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len) "
        "SELECT id, model_version_id, chunk_no, chunk, embedding, x.l, "
        "(SELECT coalesce(sum(cardinality(p.positions)), 0) FROM unnest(x.l) AS p) "
        "FROM staged CROSS JOIN LATERAL (SELECT to_tsvector('english', chunk) AS l) AS x"
    )
    out = {"wall_s": time.perf_counter() - t, "db_cpu_s": server_cpu(conn) - cpu}
    conn.execute("DROP TABLE bare, staged")
    return out


def run_one(
    url: str, docs: list[beir.Document], replicas: int, workers: int, index: str, batch: int
) -> dict[str, Any]:
    name = f"cap_w{workers}_{index}"
    with connect(url) as conn:
        rows = load(conn, name, docs, replicas)
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_stat_reset()")
        cpu0, t0 = server_cpu(conn), time.perf_counter()
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_drain, args=(url, batch, out)) for _ in range(workers)]
        for p in procs:
            p.start()
        worker_cpu = sum(out.get() for _ in procs)
        for p in procs:
            p.join()
        # the fresh chunks left merged, the statistics folded: as a worker leaves them
        conn.execute("SELECT autoembed.compact_stats(%s)", (name,))
        drain_s, db_cpu = time.perf_counter() - t0, server_cpu(conn) - cpu0
        profile = where_the_time_goes(conn)
        build_s = 0.0
        emb = conn.execute(
            "SELECT 'autoembed.' || quote_ident(ver.embeddings_table) "
            "FROM autoembed.vectorizer_version AS ver JOIN autoembed.vectorizer AS v "
            "ON v.id = ver.vectorizer_id WHERE v.name = %s",
            (name,),
        ).fetchone()[0]  # type: ignore[index]
        if index == "none":
            # the deferred build: one CREATE INDEX once the backfill is in
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")
            t = time.perf_counter()
            conn.execute("SELECT autoembed.set_index(%s, 'hnsw')", (name,))
            build_s = time.perf_counter() - t
        chunks = conn.execute(f"SELECT count(*) FROM {emb}").fetchone()[0]  # type: ignore[index]
        pending = conn.execute(
            "SELECT pending FROM autoembed.vectorizer_versions WHERE vectorizer = %s", (name,)
        ).fetchone()[0]  # type: ignore[index]
        assert pending == 0, f"{name}: {pending} rows left pending"
        conn.execute(f"VACUUM (ANALYZE) {emb}")
        conn.execute("VACUUM")
        sizes = storage(conn, name, chunks)
        floor = bare_copy(conn, emb, index) if workers == 1 else None
        return {
            "name": name,
            "index": index,
            "workers": workers,
            "rows": rows,
            "chunks": chunks,
            "drain_s": round(drain_s, 2),
            "chunks_per_s": round(chunks / drain_s, 1),
            "index_build_s": round(build_s, 2),
            "chunks_per_s_with_build": round(chunks / (drain_s + build_s), 1),
            "db_cpu_s": round(db_cpu, 2),
            "db_us_per_chunk": round(db_cpu / chunks * 1e6, 1),
            "chunks_per_db_core_s": round(chunks / db_cpu, 1),
            "worker_cpu_s": round(worker_cpu, 2),
            "worker_us_per_chunk": round(worker_cpu / chunks * 1e6, 1),
            "bytes_per_chunk": sizes,
            "db_functions_ms": profile,
            "bare_copy": floor
            and {
                **{k: round(v, 2) for k, v in floor.items()},
                "db_us_per_chunk": round(floor["db_cpu_s"] / chunks * 1e6, 1),
            },
            "old_layout_postings_bytes_per_chunk": old_layout_bytes(conn, emb, chunks)
            if workers == 1
            else None,
        }


def where_the_time_goes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, float]]:
    """autoembed's SQL functions by their own (self) time in the run
    (track_functions = all), the largest first."""
    time.sleep(0.6)  # backends report their statistics at most every 0.5 s... or on exit
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
        "WHERE schemaname = 'autoembed' ORDER BY self_time DESC LIMIT 12"
    ).fetchall()
    return {
        str(f): {"calls": int(c), "total_ms": round(t, 1), "self_ms": round(s, 1)}
        for f, c, t, s in rows
    }


def full_vacuum_sizes(url: str, name: str) -> dict[str, float]:
    with connect(url) as conn:
        for t in conn.execute(
            "SELECT ver.postings_table, ver.stats_table FROM autoembed.vectorizer_version AS ver "
            "JOIN autoembed.vectorizer AS v ON v.id = ver.vectorizer_id WHERE v.name = %s",
            (name,),
        ).fetchone():  # type: ignore[union-attr]
            conn.execute(sql.SQL("VACUUM FULL {}").format(sql.Identifier("autoembed", t)))
        chunks = conn.execute(
            "SELECT chunks FROM autoembed.vectorizer_versions WHERE vectorizer = %s",
            (name,),
        ).fetchone()
        n = int(chunks[0]) if chunks and chunks[0] else 1
        return storage(conn, name, n)


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'index':<6} {'workers':>7} {'chunks':>7} {'chunks/s':>9} {'+build':>8} "
        f"{'DB µs/chunk':>11} {'chunks/DB core·s':>16} {'worker µs/chunk':>15}"
    )
    for r in results:
        print(
            f"{r['index']:<6} {r['workers']:>7} {r['chunks']:>7} {r['chunks_per_s']:>9,.0f} "
            f"{r['chunks_per_s_with_build']:>8,.0f} {r['db_us_per_chunk']:>11,.0f} "
            f"{r['chunks_per_db_core_s']:>16,.0f} {r['worker_us_per_chunk']:>15,.0f}"
        )
        if r["bare_copy"]:
            b = r["bare_copy"]
            print(
                f"{'':<6} {'':>7} bare COPY of the same chunks: "
                f"{b['db_us_per_chunk']:,.0f} DB µs/chunk "
                f"(autoembed {r['db_us_per_chunk'] / b['db_us_per_chunk']:.2f}x)"
            )
    r = results[0]
    total = r["drain_s"] * 1000
    print(
        f"\nwhere the database's time goes ({r['index']}, {r['workers']} worker(s)): "
        "ms spent in each SQL function itself, share of the drain's wall time"
    )
    for f, x in r["db_functions_ms"].items():
        print(
            f"  {f:<28} {x['self_ms']:>9,.0f}  {x['self_ms'] / total:>5.0%}  ({x['calls']} calls)"
        )
    print("\nbytes per chunk (after VACUUM):")
    for k, v in r["bytes_per_chunk"].items():
        print(f"  {k:<18} {v:>8,.0f}")
    bm25 = r["bytes_per_chunk"]["BM25 postings"] + r["bytes_per_chunk"]["BM25 statistics"]
    print(f"  {'BM25 in all':<18} {bm25:>8,.0f}   (target <= 4,096)")
    old = r.get("old_layout_postings_bytes_per_chunk")
    if old:
        print(f"  0.2.0's postings layout of the same chunks: {old:,.0f}")
    if r.get("bytes_per_chunk_vacuum_full"):
        full = r["bytes_per_chunk_vacuum_full"]
        print(
            f"  after VACUUM FULL: postings {full['BM25 postings']:,.0f}, "
            f"statistics {full['BM25 statistics']:,.0f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--replicas", type=int, default=2, help="copies of SciFact's 5,183 abstracts")
    p.add_argument("--workers", default="1,2", help="worker process counts, comma-separated")
    p.add_argument("--index", default="hnsw,none", help="hnsw and/or none (deferred build)")
    p.add_argument("--batch", type=int, default=256, help="rows per claim")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    docs = beir.load(DATASET, "test").corpus
    results = []
    with sigterm_as_interrupt(), embedded_database() as url:
        with connect(url) as conn:
            conn.execute("ALTER SYSTEM SET track_functions = 'all'")
            conn.execute("SELECT pg_reload_conf()")
            settings = server_settings(conn)
        for index in args.index.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                print(f"{index}, {workers} worker(s) ...", flush=True)
                results.append(run_one(url, docs, args.replicas, workers, index, args.batch))
        results[0]["bytes_per_chunk_vacuum_full"] = full_vacuum_sizes(url, results[0]["name"])
    print_table(results)
    report = {
        **run_info("db_capacity"),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": MODEL,
        "machine": machine(load_start),
        "server": settings,
        "children_cpu_s": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
