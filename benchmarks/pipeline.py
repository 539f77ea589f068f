"""autoembed's pipeline against the raw model, in one run: SciFact's abstracts
through trigger → queue → Celery worker → embeddings, against
``SentenceTransformer.encode`` of the very chunks the worker stored.

    .venv/bin/python benchmarks/pipeline.py              # all 5,183 abstracts (~18 min here)
    .venv/bin/python benchmarks/pipeline.py --docs 300   # the first 300: a smoke run, ~2 min
    .venv/bin/python benchmarks/pipeline.py [--dataset ../shared/datasets/scifact]
        [--cold-docs N] [--skip-cold] [--json PATH]

Setup: a private embedded PostgreSQL (``embedded_database``: default, durable
settings), a table ``scifact(id bigint primary key, title text, text text)``
under a vectorizer on ARRAY['title', 'text'] with the default model
(all-MiniLM-L6-v2, HNSW index), and a real ``autoembed worker`` process
(its defaults, a Redis of its own: ``WorkerProcess``).

1. Warm worker: the worker is started and waited for until its pool has
   loaded the model (its log says so), has embedded one warm-up row (id -1,
   kept; left out of every count) and its query service answers a text
   query (it loads its model only once the version has vectors); then the
   first N documents are COPYed in one transaction (the insert trigger
   queues them). Timed from the COPY's commit until the queue is empty
   (nothing queued, nothing claimed; polled every --poll seconds) and every
   document has its chunks. docs/s = N / seconds. The worker's batches are
   read back from its writes (a batch's chunks share one embedded_at): how
   many, their rows, the seconds between writes; and the CPU seconds of its
   main process, pool and query service.
2. Cold worker: the table is emptied (TRUNCATE clears the queue and the
   embeddings too), the first --cold-docs documents (default: N up to 1,000;
   start-up weighs less the more there are) COPYed with no worker running,
   then the worker started: timed from its process's start until drained
   (start-up and model load included).
3. Raw encode, same run, no worker running: the chunk texts the warm phase
   stored (the embeddings table, read back exactly as written),
   ``SentenceTransformer(model).encode(texts, batch_size=32)`` in this
   process (torch's default threads, as the worker gets). docs/s = N /
   seconds. The same texts are also put through autoembed's own embedder as
   the worker calls it (one batch's chunks per call; batches of the
   worker's claim size), to tell the model path's share from the rest.

Ratios: pipeline docs/s over raw docs/s, and the same per CPU second (the
worker's whole process group and PostgreSQL against this process's encode).
CPU seconds of the worker group, PostgreSQL and everything else come from
/proc (campaign_worker.CpuMeter). Exits 1 when the warm ratio is below 0.95.
Prints a table; writes it, every figure, the worker's log lines and the
machine (load average at the start and the end) to --json
(benchmarks/results/pipeline.json; with --docs N, pipeline_docs<N>.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_run_info import REPO, machine, run_info
from bench_server import WorkerProcess, embedded_database, server_settings
from campaign_worker import CpuMeter, _proc_stats
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.evaluation import beir
from autoembed.worker.embedders import DEFAULT_MODEL, resolve_model_path

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results"
TARGET = 0.95
TABLE = "scifact"
Conn = Any


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR collection")
    p.add_argument("--docs", type=int, help="the corpus's first N documents (default: all)")
    p.add_argument("--cold-docs", type=int, help="documents for the cold worker (N, at most 1000)")
    p.add_argument("--skip-cold", action="store_true", help="no cold-worker phase")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between queue polls")
    p.add_argument("--timeout", type=float, default=3600, help="give a phase up after")
    p.add_argument("--json", type=Path, help="where to write the results")
    args = p.parse_args(argv)
    if args.docs is not None and args.docs < 1:
        p.error("--docs must be at least 1")
    if args.json is None:
        name = "pipeline.json" if args.docs is None else f"pipeline_docs{args.docs}.json"
        args.json = RESULTS / name
    return args


# -- the database ---------------------------------------------------------------------------


def setup(conn: Conn) -> dict[str, Any]:
    conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, title text, text text)")
    conn.execute(
        "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY['title', 'text'], name => %s)",
        (TABLE, TABLE),
    )
    row = conn.execute(
        "SELECT ver.id, ver.embeddings_table, ver.queue_table, ver.model "
        "FROM autoembed.vectorizer_version AS ver JOIN autoembed.vectorizer AS v "
        "ON v.id = ver.vectorizer_id WHERE v.name = %s AND ver.state = 'active'",
        (TABLE,),
    ).fetchone()
    assert row is not None
    return {"version_id": row[0], "embeddings": row[1], "queue": row[2], "model": row[3]}


def copy_docs(conn: Conn, docs: list[beir.Document]) -> None:
    """COPY the documents in one transaction (the insert trigger queues each)."""
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(f"COPY {TABLE} (id, title, text) FROM STDIN") as copy,
    ):
        for d in docs:
            copy.write_row((int(d.id), d.title, d.text))


def work(conn: Conn, version: dict[str, Any]) -> tuple[int, int, int]:
    """(rows queued, rows claimed, documents with chunks) of the version."""
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM autoembed.{q}), "
            "(SELECT count(*) FROM autoembed.{q} WHERE claim_token IS NOT NULL), "
            "(SELECT count(DISTINCT id) FROM autoembed.{e})"
        ).format(q=sql.Identifier(version["queue"]), e=sql.Identifier(version["embeddings"]))
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def wait_drained(
    conn: Conn, version: dict[str, Any], n: int, poll: float, timeout: float, worker: WorkerProcess
) -> float:
    """Until nothing is queued or claimed and n documents have chunks; the
    monotonic time it was first seen so."""
    started = time.monotonic()
    while True:
        queued, claimed, done = work(conn, version)
        if queued == 0 and claimed == 0 and done >= n:
            return time.monotonic()
        if worker.proc is not None and worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited; see {worker.log}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not drained after {timeout:.0f}s: {queued} queued, {done} done")
        time.sleep(poll)


def wait_ready(conn: Conn, version: dict[str, Any], worker: WorkerProcess, poll: float,
               timeout: float = 300) -> float:  # fmt: skip
    """Until the worker's pool has loaded the model, embedded a warm-up row
    (id -1, which stays), and its query service answers a text query (it
    loads its model once the version has vectors); seconds waited."""
    started = time.monotonic()
    worker.wait_for("loaded at start", timeout=timeout)
    conn.execute(f"INSERT INTO {TABLE} VALUES (-1, 'Warm-up', 'A row that wakes the worker up.')")
    wait_drained(conn, version, 1, poll, timeout, worker)
    conn.execute("SET autoembed.query_timeout = '30s'")
    while True:
        try:
            conn.execute("SELECT autoembed.embed_query(%s, 'warm-up')", (TABLE,))
            return time.monotonic() - started
        except Exception as e:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no text query answered in {timeout:.0f}s: {e}") from e
        time.sleep(0.5)


def chunk_texts(conn: Conn, version: dict[str, Any]) -> tuple[list[str], dict[int, list[str]]]:
    rows = conn.execute(
        sql.SQL("SELECT id, chunk FROM autoembed.{} WHERE id >= 0 ORDER BY id, chunk_no").format(
            sql.Identifier(version["embeddings"])
        )
    ).fetchall()
    per_doc: dict[int, list[str]] = {}
    for doc_id, chunk in rows:
        per_doc.setdefault(int(doc_id), []).append(str(chunk))
    return [str(r[1]) for r in rows], per_doc


def db_now(conn: Conn) -> Any:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def batches(conn: Conn, version: dict[str, Any], since: Any, until: Any) -> dict[str, Any]:
    """The worker's batches as its writes show them (a batch's chunks are
    written in one transaction: one embedded_at): how many, their rows, the
    seconds from ``since`` (the COPY's commit) to the first write, between
    writes, and from the last write until ``until`` (drained seen)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT embedded_at, count(DISTINCT id), count(*) FROM autoembed.{} "
            "WHERE id >= 0 GROUP BY embedded_at ORDER BY embedded_at"
        ).format(sql.Identifier(version["embeddings"]))
    ).fetchall()
    if not rows:
        return {"count": 0}
    times = [since, *(r[0] for r in rows)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    sizes = [int(r[1]) for r in rows]
    return {
        "count": len(rows),
        "rows_mean": sum(sizes) / len(sizes),
        "rows_min": min(sizes),
        "rows_max": max(sizes),
        "rows": sizes,
        "first_write_after_s": gaps[0],
        "seconds_between_writes": gaps[1:],
        "drained_seen_after_last_write_s": (until - rows[-1][0]).total_seconds(),
    }


def meter_for(conn: Conn) -> CpuMeter:
    """CpuMeter only reads the data directory (for postmaster.pid)."""
    row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return CpuMeter(cast(EmbeddedPostgres, SimpleNamespace(data_dir=Path(row[0]))))


def group_cpu(group: int | None) -> dict[str, float]:
    """CPU seconds so far of the worker's processes: its main process (Celery,
    the dispatcher), its pool and its query service."""
    out = {"main": 0.0, "pool": 0.0, "query_service": 0.0}
    for pid, _ppid, g, cpu in _proc_stats():
        if g != group:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        role = "main" if pid == group else "query_service" if b"query_service" in cmd else "pool"
        out[role] += cpu
    return out


# -- the phases -----------------------------------------------------------------------------


def log_summary(log_text: str) -> dict[str, Any]:
    """What the worker's own log says: drain tasks and the rows they embedded."""
    done = [
        (int(m.group(1)), int(m.group(2)))
        for m in re.finditer(r"(\d+) rows embedded \((\d+) chunks\)", log_text)
    ]
    loaded = re.findall(r"model \S+ loaded at start in ([\d.]+) s", log_text)
    problems = [ln for ln in log_text.splitlines() if "Traceback" in ln or "ERROR" in ln]
    return {
        "tasks_logged": len(done),
        "rows_logged": sum(r for r, _ in done),
        "chunks_logged": sum(c for _, c in done),
        "model_load_s": [float(x) for x in loaded],
        "problems": problems[:20],
    }


def warm_phase(conn: Conn, version: dict[str, Any], docs: list[beir.Document], tmp: Path,
               args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    meter = meter_for(conn)
    with WorkerProcess(args.url, tmp / "warm") as worker:
        meter.worker_group = worker.pid
        ready = wait_ready(conn, version, worker, args.poll)
        say(f"warm: the worker is ready ({ready:.1f}s); COPY {len(docs):,} documents")
        time.sleep(2)  # let the query service's first query settle
        before, split = meter.snapshot(), group_cpu(worker.pid)
        copy_docs(conn, docs)
        t0, db_t0 = time.monotonic(), db_now(conn)
        t1 = wait_drained(conn, version, len(docs) + 1, args.poll, args.timeout, worker)
        db_t1 = db_now(conn)
        cpu = meter.since(before)
        cpu["worker_split"] = {k: round(v - split[k], 2) for k, v in group_cpu(worker.pid).items()}
        log_text = worker.log.read_text(errors="replace")
    seconds = t1 - t0
    done = work(conn, version)[2] - 1  # not the warm-up row
    chunks = chunk_count(conn, version)
    say(f"warm: {len(docs):,} documents ({chunks:,} chunks) in {seconds:.1f}s")
    return {
        "docs": len(docs), "docs_with_chunks": done, "chunks": chunks, "seconds": seconds,
        "docs_per_s": len(docs) / seconds, "ready_s": ready, "cpu": cpu,
        "batches": batches(conn, version, db_t0, db_t1), "log": log_summary(log_text),
    }  # fmt: skip


def cold_phase(conn: Conn, version: dict[str, Any], docs: list[beir.Document], tmp: Path,
               args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    conn.execute(f"TRUNCATE {TABLE}")
    left = work(conn, version)
    if left != (0, 0, 0):
        raise RuntimeError(f"TRUNCATE left (queued, claimed, documents) = {left}")
    copy_docs(conn, docs)
    say(f"cold: {len(docs):,} documents COPYed; starting the worker")
    meter = meter_for(conn)
    before = meter.snapshot()
    (tmp / "cold").mkdir(exist_ok=True)
    worker = WorkerProcess(args.url, tmp / "cold")
    redis_t = time.monotonic()
    with worker:
        t0 = time.monotonic()  # the worker process exists from here (Redis started before)
        db_t0 = db_now(conn)
        meter.worker_group = worker.pid
        t1 = wait_drained(conn, version, len(docs), args.poll, args.timeout, worker)
        db_t1 = db_now(conn)
        cpu = meter.since(before)
        log_text = worker.log.read_text(errors="replace")
    seconds = t1 - t0
    chunks = chunk_count(conn, version)
    say(f"cold: {len(docs):,} documents ({chunks:,} chunks) in {seconds:.1f}s")
    return {
        "docs": len(docs), "chunks": chunks, "seconds": seconds,
        "docs_per_s": len(docs) / seconds, "redis_start_s": t0 - redis_t, "cpu": cpu,
        "batches": batches(conn, version, db_t0, db_t1), "log": log_summary(log_text),
    }  # fmt: skip


def chunk_count(conn: Conn, version: dict[str, Any]) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM autoembed.{} WHERE id >= 0").format(
            sql.Identifier(version["embeddings"])
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


def raw_phase(texts: list[str], per_doc: dict[int, list[str]], n_docs: int,
              batch_docs: int) -> dict[str, Any]:  # fmt: skip
    """SentenceTransformer.encode of the stored chunks (batch 32, its own
    length sorting), then autoembed's embedder on the same chunks as a
    worker's batches call it (batch_docs documents' chunks per call)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from autoembed.worker.embedders import load_embedder

    model = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    model.encode(texts[:32], batch_size=32, show_progress_bar=False)  # warm-up
    t, cpu_t = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    seconds, cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    say(f"raw encode: {len(texts):,} chunks in {seconds:.1f}s")
    embedder = load_embedder(DEFAULT_MODEL)
    embedder.embed(texts[:32])
    docs = list(per_doc.values())
    t, cpu_t = time.perf_counter(), time.process_time()
    for i in range(0, len(docs), batch_docs):
        embedder.embed([c for d in docs[i : i + batch_docs] for c in d])
    path_s, path_cpu_s = time.perf_counter() - t, time.process_time() - cpu_t
    say(f"autoembed's embedder, {batch_docs} documents a call: {path_s:.1f}s")
    return {
        "docs": n_docs, "chunks": len(texts), "seconds": seconds,
        "docs_per_s": n_docs / seconds, "cpu_s": cpu_s, "batch_size": 32,
        "torch_threads": torch.get_num_threads(),
        "embed_path": {
            "batch_docs": batch_docs, "seconds": path_s, "docs_per_s": n_docs / path_s,
            "cpu_s": path_cpu_s,
        },
    }  # fmt: skip


# -- the report -----------------------------------------------------------------------------


def table(result: dict[str, Any]) -> list[str]:
    raw = result["raw"]
    head = (
        f"{'':<28}{'docs':>6}{'chunks':>8}{'seconds':>9}{'docs/s':>8}{'vs raw':>8}"
        f"{'per CPU s':>11}   CPU s worker / postgres / other"
    )
    lines = [head]

    def row(label: str, p: dict[str, Any], cpu: str, per_cpu: str) -> None:
        lines.append(
            f"{label:<28}{p['docs']:>6,}{p['chunks']:>8,}{p['seconds']:>9.1f}"
            f"{p['docs_per_s']:>8.2f}{p['docs_per_s'] / raw['docs_per_s']:>8.2f}{per_cpu:>11}"
            f"   {cpu}"
        )

    for key, label in (("warm", "pipeline, warm worker"), ("cold", "pipeline, cold worker")):
        p = result.get(key)
        if p is None:
            continue
        c = p["cpu"]
        row(
            label,
            p,
            f"{c['worker']:.1f} / {c['postgres']:.1f} / {c['others'] + c['this_process']:.1f}",
            f"{p['ratio_per_cpu_s']:.2f}",
        )
    row("raw SentenceTransformer", raw, f"{raw['cpu_s']:.1f} (this process)", "1.00")
    path = raw["embed_path"] | {"docs": raw["docs"], "chunks": raw["chunks"]}
    row(
        f"autoembed embedder, {path['batch_docs']}/call",
        path,
        f"{path['cpu_s']:.1f} (this process)",
        f"{(raw['docs'] / path['cpu_s']) / (raw['docs'] / raw['cpu_s']):.2f}",
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()
    collection = beir.load(args.dataset)
    docs = collection.corpus[: args.docs] if args.docs else collection.corpus
    cold_n = min(args.cold_docs or min(len(docs), 1000), len(docs))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autoembed-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "warm").mkdir()
        with embedded_database(tmp) as url, connect(url) as conn:
            args.url = url
            version = setup(conn)
            result["server"] = server_settings(conn)
            result["warm"] = warm_phase(conn, version, docs, tmp, args)
            texts, per_doc = chunk_texts(conn, version)
            if not args.skip_cold:
                result["cold"] = cold_phase(conn, version, docs[:cold_n], tmp, args)
            say(f"raw encode of the {len(texts):,} stored chunks, no worker running")
            batch = int(os.environ.get("AUTOEMBED_BATCH_SIZE") or 16)
            result["raw"] = raw_phase(texts, per_doc, len(docs), batch)
    raw = result["raw"]
    raw_per_cpu = raw["docs"] / raw["cpu_s"]
    for key in ("warm", "cold"):
        if key in result:
            p = result[key]
            p["ratio"] = p["docs_per_s"] / raw["docs_per_s"]
            p["cpu_s"] = p["cpu"]["worker"] + p["cpu"]["postgres"]
            p["ratio_per_cpu_s"] = (p["docs"] / p["cpu_s"]) / raw_per_cpu
    mach = machine(load_start, libraries=True)
    header = (
        f"pipeline vs raw model: {collection.name}, {len(docs):,} documents "
        f"({'cold: ' + format(cold_n, ',') if not args.skip_cold else 'no cold run'}), "
        f"{mach['cpu_count']} CPUs ({mach['cpu']}); load average {load_start[0]:.2f} at the "
        f"start, {mach['loadavg_end'][0]:.2f} at the end"
    )
    lines = [header, *table(result)]
    args_json = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args_json.pop("url", None)
    report = {
        **run_info("pipeline"),
        "parameters": args_json,
        "machine": mach,
        "target": TARGET,
        **result,
        "duration_s": round(time.monotonic() - started, 1),
        "table": lines,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print()
    print("\n".join(lines))
    warm = result["warm"]["ratio"]
    print(f"\nwarm ratio {warm:.2f} (target {TARGET}); {args.json}")
    return 0 if warm >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
