"""Worker memory: the peak RSS and PSS of ``autoembed worker`` on the CPU with
all-MiniLM-L6-v2, every process of it (Celery's main process, its pool
process, the query service), sampled every 0.1 s while it starts, backfills
SciFact abstracts and answers text queries from SQL; against the model
alone, the competitor: one Python process that loads the same model with
sentence-transformers and encodes the same texts and queries.

    .venv/bin/python benchmarks/worker_memory.py [--rows 120] [--queries 40] [--json PATH]

RSS counts every page a process maps, so pages the processes share (the
Python and torch libraries) count once per process; PSS divides each shared
page among its sharers, so the processes' PSS add up to what they use
together. Target (issue 13): the worker's total peak RSS <= 1.5 GB.
Prints a table, writes benchmarks/results/worker_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
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

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "worker_memory.json"
TARGET_MB = 1536.0
MB = 1024 * 1024


def _tree(pid: int) -> list[int]:
    """The process and its descendants."""
    out = [pid]
    tasks = Path(f"/proc/{pid}/task")
    try:
        for task in tasks.iterdir():
            for child in (task / "children").read_text().split():
                out += _tree(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _memory(pid: int) -> tuple[float, float] | None:
    """(RSS, PSS) of the process in MB; None once it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = {
        line.split(":")[0]: float(line.split()[1]) / 1024
        for line in rollup.splitlines()[1:]
        if line.endswith("kB")
    }
    return fields.get("Rss", 0.0), fields.get("Pss", 0.0)


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "Celery main process"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "gone"
    return "query service" if "query_service" in cmdline else "pool process"


class Sampler:
    """Samples the memory of a process tree every ``period`` seconds."""

    def __init__(self, root: int, period: float = 0.1) -> None:
        self.root, self.period = root, period
        self.peak_rss: dict[str, float] = {}
        self.peak_pss: dict[str, float] = {}
        self.total_rss = self.total_pss = 0.0
        self.phase_peak: dict[str, float] = {}
        self.phase = "start-up"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            rss = pss = 0.0
            for pid in _tree(self.root):
                m = _memory(pid)
                if m is None:
                    continue
                role = _role(pid, self.root)
                self.peak_rss[role] = max(self.peak_rss.get(role, 0.0), m[0])
                self.peak_pss[role] = max(self.peak_pss.get(role, 0.0), m[1])
                rss, pss = rss + m[0], pss + m[1]
            self.total_rss, self.total_pss = max(self.total_rss, rss), max(self.total_pss, pss)
            self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0.0), rss)


def embedded(conn: psycopg.Connection[Any], rows: int) -> bool:
    row = conn.execute(
        "SELECT embedded_rows FROM autoembed.vectorizer_status WHERE name = 'papers'"
    ).fetchone()
    return row is not None and row[0] >= rows


MODEL_ALONE = """
import json, resource, sys
from autoembed.worker.embedders import resolve_model_path, DEFAULT_MODEL
from sentence_transformers import SentenceTransformer
import torch
torch.set_num_threads(int(sys.argv[1]))
texts, queries = json.load(sys.stdin)
model = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
model.encode(texts, batch_size=32)
for q in queries:
    model.encode([q])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def model_alone(texts: list[str], queries: list[str], threads: int) -> float:
    """Peak RSS (MB) of one process with the model encoding the same texts."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", MODEL_ALONE, str(threads)],
        input=json.dumps([texts, queries]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.split()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=120, help="SciFact abstracts to backfill")
    p.add_argument("--queries", type=int, default=40, help="text queries sent from SQL")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    collection = beir.load(DATASET, "test")
    docs = collection.corpus[: args.rows]
    queries = [q.text for q in collection.queries][: args.queries]
    timings: dict[str, float] = {}
    with (
        embedded_database() as url,
        tempfile.TemporaryDirectory(prefix="autoembed-mem-") as tmp,
    ):
        with connect(url) as conn:
            conn.execute("CREATE TABLE papers (id text PRIMARY KEY, title text, abstract text)")
            with conn.cursor().copy("COPY papers FROM STDIN") as copy:
                for d in docs:
                    copy.write_row((d.id, d.title or "", d.text))
        with (
            WorkerProcess(url, Path(tmp)) as worker,
            Sampler(worker.pid) as sampler,
            connect(url) as conn,
        ):
            timings["start-up s"] = worker.wait_for("query service ready", "ready.")
            sampler.phase = "backfill"
            conn.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title', 'abstract'])")
            t = time.monotonic()
            while not embedded(conn, len(docs)):
                if worker.proc is not None and worker.proc.poll() is not None:
                    raise RuntimeError(f"the worker died:\n{worker.log.read_text()[-3000:]}")
                time.sleep(0.2)
            timings["backfill s"] = time.monotonic() - t
            sampler.phase = "text queries"
            # the first may wait while the query service loads the model
            conn.execute("SET autoembed.query_timeout = '120s'")
            t = time.monotonic()
            for q in queries:
                rows = conn.execute("SELECT * FROM autoembed.search('papers', %s, 5)", (q,))
                assert rows.fetchall(), q
            timings["text queries s"] = time.monotonic() - t
            time.sleep(0.5)
    texts = [f"{d.title or ''} {d.text}" for d in docs]
    alone = model_alone(texts, queries, threads=os.cpu_count() or 1)
    report = {
        **run_info("worker_memory"),
        "parameters": {"rows": args.rows, "queries": args.queries},
        "machine": machine(load_start, libraries=True),
        "target_total_rss_mb": TARGET_MB,
        "peak_rss_mb": sampler.peak_rss,
        "peak_pss_mb": sampler.peak_pss,
        "total_peak_rss_mb": sampler.total_rss,
        "total_peak_pss_mb": sampler.total_pss,
        "total_rss_by_phase_mb": sampler.phase_peak,
        "model_alone_peak_rss_mb": alone,
        "timings": timings,
    }
    mach = report["machine"]
    print(
        f"\nworker memory, all-MiniLM-L6-v2 on the CPU: {args.rows} SciFact abstracts backfilled, "
        f"{args.queries} text queries from SQL\nmachine: {mach['cpu']}, {mach['cpu_count']} cores; "
        f"load average {load_start[0]:.2f} at the start"
    )
    print(f"\n{'process':<24}{'peak RSS':>12}{'peak PSS':>12}")
    for role in sorted(sampler.peak_rss):
        print(f"{role:<24}{sampler.peak_rss[role]:>9.0f} MB{sampler.peak_pss[role]:>9.0f} MB")
    verdict = "pass" if sampler.total_rss <= TARGET_MB else "FAIL"
    print(
        f"{'worker, all together':<24}{sampler.total_rss:>9.0f} MB{sampler.total_pss:>9.0f} MB"
        f"   target <= {TARGET_MB:.0f} MB RSS: {verdict}"
    )
    print(
        f"{'the model alone':<24}{alone:>9.0f} MB{'':>12}"
        f"   worker / model alone: {sampler.total_rss / alone:.2f}x RSS, "
        f"{sampler.total_pss / alone:.2f}x PSS"
    )
    phases = ", ".join(f"{k} {v:.0f} MB" for k, v in sampler.phase_peak.items())
    print(f"\ntotal RSS by phase: {phases}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\n{args.json}")
    return 0 if sampler.total_rss <= TARGET_MB else 1


if __name__ == "__main__":
    with sigterm_as_interrupt():  # a killed run stops its worker, Redis and PostgreSQL too
        sys.exit(main())
