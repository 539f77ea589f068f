"""Freshness: from an INSERT's commit to its row's chunks being searchable,
with a real ``autoembed worker`` (all-MiniLM-L6-v2 on the CPU, its default
settings): --samples one-row INSERTs of SciFact abstracts into a table with a
vectorizer, one at a time, each polled every 10 ms in
``autoembed.<name>_embeddings`` (what ``autoembed.search`` reads); first with
the worker idle, then while a --backfill-row backfill of the same table runs
(one COPY before the samples start). The competitor is the idle worker: the
ratio says what a backlog costs a fresh write.

    .venv/bin/python benchmarks/freshness.py [--samples 200] [--backfill 10000] [--json PATH]

Targets (issue 13): p50 <= 0.5 s and p95 <= 2 s, idle and during the
backfill. A sample not visible within --give-up seconds counts as that long
(a lower bound). Prints a table, writes benchmarks/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from bench_run_info import machine, run_info
from bench_server import WorkerProcess, embedded_database

from autoembed.db import connect
from autoembed.embedded import sigterm_as_interrupt
from autoembed.evaluation import beir
from autoembed.evaluation.metrics import percentile

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "freshness.json"
P50_TARGET_S, P95_TARGET_S = 0.5, 2.0


def visible(conn: psycopg.Connection[Any], key: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM autoembed.papers_embeddings WHERE id = %s", (key,)).fetchone()
        is not None
    )


def sample(
    writer: psycopg.Connection[Any],
    reader: psycopg.Connection[Any],
    rows: list[tuple[str, str, str]],
    give_up: float,
    rng: random.Random,
    label: str,
) -> list[float]:
    """Seconds from each INSERT's commit to its chunks being visible."""
    out: list[float] = []
    for n, row in enumerate(rows, 1):
        writer.execute("INSERT INTO papers VALUES (%s, %s, %s)", row)  # autocommit
        committed = time.perf_counter()
        while not visible(reader, row[0]):
            if time.perf_counter() - committed > give_up:
                break
            time.sleep(0.01)
        out.append(time.perf_counter() - committed)
        if n % 10 == 0:
            print(f"  {label}: {n}/{len(rows)}, p50 so far {percentile(out, 50):.2f} s")
        time.sleep(rng.uniform(0.1, 0.5))  # think time between writes
    return out


def backlog(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT pending FROM autoembed.vectorizer_status WHERE name = 'papers'"
    ).fetchone()
    return int(row[0]) if row else 0


def summary(latencies: list[float], give_up: float) -> dict[str, Any]:
    return {
        "samples": len(latencies),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "max_s": max(latencies),
        "gave_up": sum(1 for x in latencies if x > give_up),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--samples", type=int, default=200, help="INSERTs timed per phase")
    p.add_argument("--backfill", type=int, default=10_000, help="rows of the backfill")
    p.add_argument("--give-up", type=float, default=60.0, help="seconds before a sample stops")
    p.add_argument("--json", type=Path, default=RESULTS)
    p.add_argument("--worker-log", type=Path, help="keep the worker's log there")
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    corpus = beir.load(DATASET, "test").corpus
    rng = random.Random(1)

    def rows(prefix: str, n: int, start: int) -> list[tuple[str, str, str]]:
        docs = [corpus[(start + i) % len(corpus)] for i in range(n)]
        # a marker keeps every text distinct (no embedding cache answers one)
        return [
            (f"{prefix}{i}", d.title or "", f"{d.text} [{prefix}{i}]") for i, d in enumerate(docs)
        ]

    phases: dict[str, Any] = {}
    with (
        embedded_database() as url,
        tempfile.TemporaryDirectory(prefix="autoembed-fresh-") as tmp,
        connect(url) as writer,
        connect(url) as reader,
    ):
        writer.execute("CREATE TABLE papers (id text PRIMARY KEY, title text, abstract text)")
        writer.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title', 'abstract'])")
        worker = WorkerProcess(url, Path(tmp))
        try:
            with worker:
                worker.wait_for("ready.")
                # warm: the model loaded in the pool process, a first row through
                sample(writer, reader, rows("warm", 3, 0), args.give_up, rng, "warm-up")
                print(f"idle worker: {args.samples} INSERTs ...")
                idle = sample(
                    writer, reader, rows("idle", args.samples, 10), args.give_up, rng, "idle"
                )
                phases["idle worker"] = summary(idle, args.give_up)
                with writer.cursor().copy("COPY papers FROM STDIN") as copy:
                    for r in rows("backfill", args.backfill, 500):
                        copy.write_row(r)
                print(f"during a {args.backfill:,}-row backfill: {args.samples} INSERTs ...")
                before = backlog(writer)
                t = time.monotonic()
                busy = sample(
                    writer, reader, rows("busy", args.samples, 4000), args.give_up, rng, "busy"
                )
                after = backlog(writer)
                phases[f"during a {args.backfill:,}-row backfill"] = summary(busy, args.give_up) | {
                    "backlog_before": before,
                    "backlog_after": after,
                    "backfill_rows_per_s": (before - after) / (time.monotonic() - t),
                }
        finally:
            if args.worker_log and worker.log.exists():
                args.worker_log.write_bytes(worker.log.read_bytes())
    mach = machine(load_start, libraries=True)
    print(
        f"\nfreshness: INSERT commit -> searchable, all-MiniLM-L6-v2 worker on the CPU; "
        f"{args.samples} samples per phase\nmachine: {mach['cpu']}, {mach['cpu_count']} cores; "
        f"load average {load_start[0]:.2f} at the start"
    )
    print(f"\n{'phase':<32}{'p50':>9}{'p95':>9}{'max':>9}{'gave up':>9}  target")
    ok = True
    base = phases["idle worker"]
    for name, r in phases.items():
        passed = r["p50_s"] <= P50_TARGET_S and r["p95_s"] <= P95_TARGET_S
        ok &= passed
        print(
            f"{name:<32}{r['p50_s']:>8.2f}s{r['p95_s']:>8.2f}s{r['max_s']:>8.2f}s{r['gave_up']:>9}"
            f"  {'pass' if passed else 'FAIL'} (p50 x{r['p50_s'] / base['p50_s']:.1f} idle)"
        )
    busy_phase = next(r for n, r in phases.items() if n != "idle worker")
    print(
        f"\nthe backfill went from {busy_phase['backlog_before']:,} to "
        f"{busy_phase['backlog_after']:,} rows pending meanwhile "
        f"({busy_phase['backfill_rows_per_s']:.1f} rows/s)"
    )
    report = {
        **run_info("freshness"),
        "parameters": vars(args),
        "machine": mach,
        "targets_s": {"p50": P50_TARGET_S, "p95": P95_TARGET_S},
        "phases": phases,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\n{args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    with sigterm_as_interrupt():  # a killed run stops its worker, Redis and PostgreSQL too
        sys.exit(main())
