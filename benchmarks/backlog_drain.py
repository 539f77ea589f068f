"""Backlog drain rate: SciFact abstracts embedded per second by one worker
(the drain of ``autoembed worker --once``, in this process) with
all-MiniLM-L6-v2 on the CPU, its batches sized to take about
AUTOEMBED_BATCH_SECONDS (0.5 s by default, so a fresh change waits at most
about that for a busy worker), against the competitor: fixed batches of 16
rows, the CPU's batch size, which is what a worker claimed before batches
were sized by seconds. Rounds alternate the two on fresh tables of --rows
rows each (one backfill each), after a warm-up that loads the model.

    .venv/bin/python benchmarks/backlog_drain.py [--rows 400] [--rounds 3] [--json PATH]

Prints a table, writes benchmarks/results/backlog_drain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_run_info import machine, run_info
from bench_server import embedded_database
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import sigterm_as_interrupt
from autoembed.evaluation import beir
from autoembed.evaluation.metrics import percentile
from autoembed.settings import Settings
from autoembed.worker.once import run_once

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "backlog_drain.json"
# label -> batch_seconds (a batch never exceeds the CPU's 16 rows)
CONFIGS = {"sized by seconds (0.5 s)": 0.5, "16 rows, fixed": 1e9}


def drain_once(url: str, table: str, rows: list[tuple[str, str, str]], seconds: float) -> float:
    """Rows per second draining a backfill of ``rows`` into a new table."""
    with connect(url) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, abstract text)").format(
                sql.Identifier(table)
            )
        )
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute(
            "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY['title', 'abstract'])",
            (table,),
        )
    started = time.perf_counter()
    stats = run_once(Settings(database_url=url, batch_seconds=seconds), show_progress=False)
    elapsed = time.perf_counter() - started
    assert stats.written == len(rows), stats
    return len(rows) / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=400, help="rows per drain")
    p.add_argument("--rounds", type=int, default=3, help="drains per configuration")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    corpus = beir.load(DATASET, "test").corpus

    def rows(round_no: int, n: int) -> list[tuple[str, str, str]]:
        # a marker keeps every text distinct
        picked = [corpus[(round_no * n + i) % len(corpus)] for i in range(n)]
        return [
            (f"r{round_no}-{i}", d.title or "", f"{d.text} [{i}]") for i, d in enumerate(picked)
        ]

    rates: dict[str, list[float]] = {label: [] for label in CONFIGS}
    with embedded_database() as url:
        drain_once(url, "warm", rows(0, 20), 0.5)  # loads the model
        for r in range(args.rounds):
            for n, (label, seconds) in enumerate(CONFIGS.items()):
                rate = drain_once(
                    url, f"t{r}_{n}", rows(1 + r * len(CONFIGS) + n, args.rows), seconds
                )
                rates[label].append(rate)
                print(f"  round {r + 1}: {label}: {rate:.2f} rows/s")
    mach = machine(load_start, libraries=True)
    base = percentile(rates["16 rows, fixed"], 50)
    print(
        f"\nbacklog drain: {args.rows} SciFact abstracts per drain, all-MiniLM-L6-v2 on the CPU, "
        f"{args.rounds} rounds\nmachine: {mach['cpu']}, {mach['cpu_count']} cores; "
        f"load average {load_start[0]:.2f} at the start\n"
    )
    print(f"{'batches':<28}{'median rows/s':>15}{'each round':>30}{'ratio':>8}")
    for label, rs in rates.items():
        each = ", ".join(f"{x:.2f}" for x in rs)
        print(f"{label:<28}{percentile(rs, 50):>15.2f}{each:>30}{percentile(rs, 50) / base:>8.3f}")
    report = {
        **run_info("backlog_drain"),
        "parameters": vars(args),
        "machine": mach,
        "rows_per_s": rates,
        "median_ratio": percentile(rates["sized by seconds (0.5 s)"], 50) / base,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\n{args.json}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():
        sys.exit(main())
