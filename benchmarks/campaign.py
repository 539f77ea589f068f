"""A model change in the state users live in: a re-embedding campaign from
all-MiniLM-L6-v2 to all-mpnet-base-v2 (768-d) run by a real Celery worker,
while searches and fresh inserts go on.

    .venv/bin/python benchmarks/campaign.py               # SciFact's 5,183 abstracts (~75 min)
    .venv/bin/python benchmarks/campaign.py --limit 200   # its first 200: a smoke run, ~5 min
    .venv/bin/python benchmarks/campaign.py [--dataset ../shared/datasets/scifact] [--json PATH]

Prints a table and writes every figure, sample and timing, with the machine
and the versions, to --json (benchmarks/results/campaign.json; with --limit N,
campaign_limit<N>.json unless --json says otherwise). Times on this 2-core
VM when nothing else runs: the base state ~25 s per 200 documents the first
time (12-13 min for the whole corpus), the campaign ~0.6 s per document,
the idle phase 120 s (60 with --limit), the raw encode ~1.5 s per sampled
document (300; 60 with --limit).

Setup. An embedded PostgreSQL kept in .autoembed/campaign/pg (shared_buffers
--shared-buffers, 512MB). The base state: database
``campaign_base_<corpus>_<N|all>``, table ``<corpus>`` (id, title, text)
holding the corpus (its first N documents with --limit N) under a vectorizer
on title and text with the default model (MiniLM), embedded by autoembed's
own pipeline (``run_once``, as ``autoembed worker --once``; its embedding
cache is seeded with vectors this model version already made in
.autoembed/evaluate, .autoembed/latency or another base here). Reruns reuse
it when its manifest (the table's comment) names the same corpus (sha256 and
size), model and write path (a digest of the functions that write chunks),
the table still holds exactly that corpus (sha256 of its rows), nothing is
pending or failed, its only version is the MiniLM one, and its tables have
the layout a vectorizer created now would get; a change to autoembed's
run-once SQL recreates the database (--rebuild forces a build). Each run
works on a fresh copy, ``CREATE DATABASE campaign_run TEMPLATE <base>`` (kept
after the run for inspection, dropped by the next), so the base is never
changed and the versions are always 1 (MiniLM) and 2 (mpnet).

What runs. An embedded Redis and a real worker, ``autoembed worker --db URL
--broker URL`` (one prefork pool process on the CPU, the dispatcher and the
query service with it, every AUTOEMBED_* setting at its default unless
--worker-env sets it; its log: .autoembed/campaign/worker.log). This
process only measures; it records the CPU time of the worker's processes,
of PostgreSQL, of itself and of everything else on the machine in each
phase (other people's jobs on a shared machine show up there).

1. Idle (--idle-seconds, the worker running with nothing to do): one search
   every --search-interval seconds (search(vector) = semantic, bm25_search
   and hybrid_search in turn, k = 10, the split's test queries in a shuffled
   order, the same order in both phases, MiniLM query vectors computed here
   beforehand, version => '1' named so the switch cannot change what is
   searched), timed around the SQL call (execute + fetch) on a connection of
   its own; and an INSERT of a new row every --insert-interval seconds (a
   distinct text: a corpus abstract with a unique marker word) on another
   connection, timed from the INSERT until the active version's embeddings
   table holds its chunks (polled every --poll-ms; chunks, postings and
   statistics are written in one transaction), then checked with
   bm25_search (it must find the marker) and deleted again (so the campaign
   never embeds a probe).
2. The campaign: ``set_model(name, <mpnet folder>, dimensions => 768)``, the
   same searches and inserts until the new version becomes active, and its
   progress every --progress-seconds (autoembed.version_progress: rows done,
   rows/s, ETA). Campaign rows/s = the table's rows when set_model ran /
   (activated_at - created_at) of the new version (the database's clock,
   from set_model's transaction to the switch). Samples taken after the
   switch are kept in the JSON but not summarized.
3. After the switch: nDCG@10, Recall@100 and MRR@10 of both versions
   (semantic: search(vector) with version => '1' and MiniLM query vectors,
   version => '2' and mpnet query vectors, both computed here; with --limit
   only the test queries with a relevant document among the N, judged on
   those N), version_health of both, and compare_versions' mean overlap of
   their top 10 (text queries: the worker's query service embeds them).
4. The worker stopped (the two would share 2 cores): the raw
   ``SentenceTransformer.encode`` rate of mpnet (batch 32) over the chunk
   texts version 2 holds for a fixed random sample of --raw-sample documents
   (all of them when there are fewer); campaign rows/s over its rows/s is
   the figure. Then the same texts through autoembed's own embedder, one
   document per call (what the worker runs), to tell the model's share from
   the pipeline's; both also per CPU second.

The code: this file (arguments, the run, the JSON); campaign_base.py (the base
state, built and checked with latency_corpus.py's helpers); campaign_worker.py
(the worker process, the CPU meter); campaign_load.py (searches and inserts
during a phase); campaign_watch.py (the campaign's progress);
campaign_quality.py (quality, version health, compare, raw encode);
campaign_report.py (summaries and the table); bench_run_info.py (machine, revision).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import latency_corpus as lc
from bench_run_info import machine, run_info
from campaign_base import (
    DATA_DIR,
    REPO,
    RUN_DB,
    Base,
    Conn,
    ensure_base,
    fresh_copy,
    prewarm,
    say,
    version_row,
)
from campaign_load import Target, delete_probes, run_phase, warm_up
from campaign_quality import compare, judged_subset, quality, raw_encode, version_health
from campaign_report import phase_json, table_lines
from campaign_watch import CampaignWatch
from campaign_worker import CpuMeter, Worker, wait_for_queries
from models import mpnet_model_path
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres, EmbeddedRedis
from autoembed.evaluation import beir
from autoembed.evaluation.runner import embed_queries
from autoembed.settings import Settings
from autoembed.versions import fetch as fetch_versions
from autoembed.versions import set_model

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "campaign.json"
NEW_DIMENSIONS = 768


# -- the run ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR collection")
    p.add_argument("--split", default="test", help="queries and judgments")
    p.add_argument("--limit", type=int, help="only the corpus's first N documents")
    p.add_argument("--json", type=Path, help="where to write the results")
    p.add_argument(
        "--idle-seconds", type=float, help="length of the idle phase (120; 60 with --limit)"
    )
    p.add_argument("--search-interval", type=float, default=0.5, help="seconds between searches")
    p.add_argument("--insert-interval", type=float, default=3.0, help="seconds between inserts")
    p.add_argument("--poll-ms", type=float, default=20.0, help="poll for an insert's chunks")
    p.add_argument("--probe-timeout", type=float, default=120.0, help="give an insert up after")
    p.add_argument("--progress-seconds", type=float, default=5.0, help="progress line every")
    p.add_argument("--stall-seconds", type=float, default=600.0, help="abort after no progress")
    p.add_argument(
        "--raw-sample", type=int, help="documents for the raw encode (300; 60 with --limit)"
    )
    p.add_argument("--shared-buffers", default="512MB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rebuild", action="store_true", help="build the base state again")
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an AUTOEMBED_* setting for the worker (default: none, every setting its default)",
    )
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = p.parse_args(argv)
    if args.json is None:
        args.json = (
            DEFAULT_JSON
            if args.limit is None
            else DEFAULT_JSON.with_name(f"campaign_limit{args.limit}.json")
        )
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    quick = args.limit is not None
    if args.idle_seconds is None:
        args.idle_seconds = 60.0 if quick else 120.0
    if args.raw_sample is None:
        args.raw_sample = 60 if quick else 300
    for item in args.worker_env:
        if "=" not in item or not item.startswith("AUTOEMBED_"):
            p.error(f"--worker-env takes AUTOEMBED_KEY=VALUE, got {item!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()
    timings: dict[str, float] = {}
    full = beir.load(args.dataset, args.split)
    docs = full.corpus[: args.limit] if args.limit else full.corpus
    collection = replace(full, corpus=docs)
    judged = judged_subset(full, docs)
    say(f"mpnet: {(mpnet_path := mpnet_model_path(REPO / '.autoembed' / 'models'))}")
    extra_env = dict(item.split("=", 1) for item in args.worker_env)
    result: dict[str, Any] = {}
    with lc.server(args.data_dir, args.shared_buffers, say, "campaign") as pg:
        t = time.monotonic()
        base = ensure_base(pg, collection, args.limit, args.rebuild)
        timings["base"] = time.monotonic() - t
        url, timings["copy"] = fresh_copy(pg, base)
        say(f"working in a copy of {base.database}: database {RUN_DB} ({timings['copy']:.1f}s)")
        result = measure(pg, url, base, full, judged, mpnet_path, extra_env, args, timings)
    mach = machine(load_start, libraries=True)
    total = time.monotonic() - started
    report = {
        **run_info("campaign"),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": mach,
        "base": {**asdict(base), "url": None},
        "duration_s": {**{k: round(v, 1) for k, v in timings.items()}, "total": round(total, 1)},
        **result,
    }
    lines = table_lines(report)
    header = (
        f"campaign benchmark: {full.name} ({base.rows:,} documents"
        f"{', --limit' if args.limit else ''}), {mach['cpu_count']} CPUs ({mach['cpu']}), "
        f"{mach['gpu'] or 'no GPU'}; load average {load_start[0]:.2f} at the start, "
        f"{mach['loadavg_end'][0]:.2f} at the end"
    )
    report["table"] = [header, *lines]
    print()
    print(header)
    for line in lines:
        print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")
    problems = result["worker"]["log_problems"]
    if problems:
        print(f"\nthe worker's log has {len(problems)} error lines, e.g. {problems[0]!r}")
    base_note = "reused the base" if base.reused else f"built the base in {timings['base']:.0f}s"
    print(f"\n{total:.0f}s in all ({base_note}); {args.json}")
    return 0


def measure(
    pg: EmbeddedPostgres,
    url: str,
    base: Base,
    full: beir.Collection,
    judged: beir.Collection,
    mpnet_path: str,
    extra_env: dict[str, str],
    args: argparse.Namespace,
    timings: dict[str, float],
) -> dict[str, Any]:
    name = base.table
    conn = connect(url, application_name="campaign benchmark")
    redis = EmbeddedRedis(args.data_dir / "redis")
    worker: Worker | None = None
    cpu = CpuMeter(pg)
    try:
        old = version_row(conn, name)
        blocks = prewarm(conn, name, name)
        t = time.monotonic()
        vectors_v1 = embed_queries(conn, name, full, version=str(old["ordinal"]))
        timings["queries_minilm"] = time.monotonic() - t
        rest = [d for d in full.corpus if d.id not in {x.id for x in judged.corpus}]
        target = Target(
            url=url,
            name=name,
            version=str(old["ordinal"]),
            embeddings_table=str(old["embeddings_table"]),
            queries=full.queries,
            vectors=vectors_v1,
            probe_docs=rest or judged.corpus,
            run_tag=hashlib.sha256(str(time.time()).encode()).hexdigest()[:6],
        )
        warm_up(conn, target)

        say("Redis (embedded) and a worker: autoembed worker --db ... --broker ...")
        broker = redis.start()
        worker = Worker(url, broker, args.data_dir / "worker.log", extra_env)
        cpu.worker_group = worker.proc.pid
        timings["worker_queries_ready"] = wait_for_queries(conn, name, worker)
        say(f"  the worker answers text queries ({timings['worker_queries_ready']:.0f}s)")
        warm = run_phase(target, "warmup", args, lambda p: len(p.probes) >= 2, 0.5, cpu)
        say(f"  warm-up inserts searchable after {[round(p.ms or -1) for p in warm.probes]} ms")
        delete_probes(conn, name)

        say(
            f"idle: {args.idle_seconds:.0f}s of searches (one per {args.search_interval}s) and "
            f"inserts (one per {args.insert_interval}s) with the worker idle"
        )
        deadline = time.monotonic() + args.idle_seconds
        idle = run_phase(target, "idle", args, lambda p: time.monotonic() >= deadline, 1.0, cpu)
        delete_probes(conn, name)

        say(f"campaign: set_model({name!r}, {mpnet_path!r}, dimensions => {NEW_DIMENSIONS})")
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
        ).fetchone()
        assert count is not None
        rows_total = int(count[0])
        t_set = time.monotonic()
        ordinal = set_model(conn, name, mpnet_path, NEW_DIMENSIONS)
        watch = CampaignWatch(conn, name, ordinal, worker, t_set, args.stall_seconds)
        during = run_phase(target, "campaign", args, watch, args.progress_seconds, cpu)
        timings["campaign_wall"] = time.monotonic() - t_set
        new = version_row(conn, name, ordinal)
        if watch.state != "active":
            raise RuntimeError(f"the campaign ended {watch.state}: {new.get('last_error')}")
        campaign = campaign_figures(conn, name, old, new, base, rows_total)
        campaign["vectorizer_versions"] = [
            {"vectorizer": name, **asdict(v)} for v in fetch_versions(conn, name)
        ]
        # the searches and inserts after the switch (seen up to --progress-seconds late) are
        # kept in the JSON but not summarized: the database's clock says when it came
        during.cutoff = campaign["seconds"] - (during.start - t_set)
        say(
            f"campaign done: {campaign['rows_total']:,} rows in {campaign['seconds']:.0f}s, "
            f"{campaign['rows_per_second']:.2f} rows/s"
        )

        say(f"quality: {len(judged.queries)} queries, semantic, both versions ...")
        t = time.monotonic()
        vectors_v2 = embed_queries(conn, name, judged, version=str(ordinal))
        timings["queries_mpnet"] = time.monotonic() - t
        by_id = {q.id: vectors_v1[q.id] for q in judged.queries}
        versions = [
            quality(conn, name, judged, int(old["ordinal"]), by_id),
            quality(conn, name, judged, ordinal, vectors_v2),
        ]
        health = [
            version_health(conn, name, int(old["ordinal"])),
            version_health(conn, name, ordinal),
        ]
        say(f"compare_versions over {len(judged.queries)} queries (the worker embeds them) ...")
        compared = compare(
            conn, name, [q.text for q in judged.queries], int(old["ordinal"]), ordinal
        )
        problems = worker.problems()
        worker_env = worker.env
        worker.stop()
        worker = None

        say(
            f"raw SentenceTransformer.encode with mpnet, no worker running "
            f"({min(args.raw_sample, len(judged.corpus))} documents) ..."
        )
        raw = raw_encode(conn, name, ordinal, mpnet_path, judged.corpus, args.raw_sample, args.seed)
        campaign["efficiency"] = campaign["rows_per_second"] / raw["rows_per_second"]
        campaign["efficiency_embed_path"] = (
            campaign["rows_per_second"] / raw["embed_path"]["rows_per_second"]
        )
        # the same per CPU second (the worker's whole process group during the campaign
        # phase; this process during the encode): what it costs, whatever else ran
        campaign["worker_cpu_s"] = during.cpu["worker"]
        campaign["rows_per_worker_cpu_s"] = campaign["rows_total"] / during.cpu["worker"]
        campaign["efficiency_per_cpu_s"] = campaign["rows_per_worker_cpu_s"] / raw["rows_per_cpu_s"]
        pg_version = conn.execute("SHOW server_version").fetchone()
        pgvector = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()
        conn.close()
    phases = {p.name: phase_json(p) for p in (idle, during)}
    return {
        "environment": {
            "postgres": pg_version[0] if pg_version else None,
            "pgvector": pgvector[0] if pgvector else None,
            "shared_buffers": shared_buffers[0] if shared_buffers else None,
            "prewarmed_blocks": blocks,
            "worker_defaults": {
                k: v
                for k, v in asdict(Settings()).items()
                if k not in ("database_url", "broker_url")
            },
            "worker_env": worker_env,
        },
        "worker": {"log": str(args.data_dir / "worker.log"), "log_problems": problems[:20]},
        "phases": phases,
        "campaign": campaign,
        "raw_encode": raw,
        "quality": {
            "split": judged.split,
            "queries": len(judged.queries),
            "note": None
            if len(judged.corpus) == len(full.corpus)
            else (
                f"--limit: the {len(judged.queries)} queries with a relevant document among the "
                f"first {len(judged.corpus)}, judged on those documents only"
            ),
            "versions": versions,
        },
        "version_health": health,
        "compare_versions": compared,
    }


def campaign_figures(
    conn: Conn, name: str, old: dict[str, Any], new: dict[str, Any], base: Base, rows_total: int
) -> dict[str, Any]:
    """rows_total: the table's rows when set_model ran (the campaign's backfill)."""
    times = conn.execute(
        "SELECT extract(epoch FROM activated_at - created_at)::float8, "
        "extract(epoch FROM completed_at - created_at)::float8, created_at, activated_at "
        "FROM autoembed.vectorizer_version WHERE id = %s",
        (new["id"],),
    ).fetchone()
    assert times is not None
    seconds = float(times[0])
    chunks = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE id NOT LIKE 'probe-%%'").format(
            sql.Identifier("autoembed", new["embeddings_table"])
        )
    ).fetchone()
    n_chunks = int(chunks[0]) if chunks else 0
    return {
        "from": "v{} {}".format(old["ordinal"], old["model"].rsplit("/", 1)[-1]),
        "to": "v{} {}".format(new["ordinal"], Path(new["model"]).name),
        "version": new["ordinal"],
        "model": new["model"],
        "dimensions": new["dimensions"],
        "rows_total": rows_total,
        "chunks": n_chunks,
        "base_chunks": base.chunks,
        "seconds": seconds,
        "seconds_to_complete": float(times[1]),
        "created_at": times[2],
        "activated_at": times[3],
        "rows_per_second": rows_total / seconds,
        "chunks_per_second": n_chunks / seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
