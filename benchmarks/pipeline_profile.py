"""Where a drain's time goes: the first N SciFact abstracts COPYed into a
private PostgreSQL (pipeline.py's table and vectorizer), then drained in
this process by ``drain_vectorizer`` (what a worker's drain task runs, its
settings from AUTOEMBED_*, as ``autoembed worker --once`` does) under
cProfile; every batch's rows, chunks and seconds recorded.

    .venv/bin/python benchmarks/pipeline_profile.py --docs 300 [--top 25] [--json PATH]

Prints the batches' sizes, the wall time split into the model's forward pass
(SentenceTransformer.encode less its tokenizer), tokenization (the model's,
and autoembed's own for chunking and grouping), the database (claim,
complete and the rest of psycopg's round trips) and everything else, and
cProfile's top functions by cumulative time. JSON to --json
(benchmarks/results/pipeline_profile_docs<N>.json).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_run_info import machine, run_info
from bench_server import embedded_database
from pipeline import DEFAULT_DATASET, RESULTS, TABLE, copy_docs, say, setup

from autoembed.db import connect
from autoembed.evaluation import beir
from autoembed.settings import Settings
from autoembed.worker.connection import worker_connection
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder
from autoembed.worker.pipeline import BatchResult

# (label, cProfile key: file suffix and function name); cumulative times.
SHARES = {
    "model encode (incl. its tokenizer)": ("worker/embedders.py", "_encode_group"),
    "embed() incl. grouping (count_tokens)": ("worker/embedders.py", "embed"),
    "chunking (token_spans, chunk_text)": ("worker/pipeline.py", "_chunk_all"),
    "claim": ("worker/queue.py", "claim"),
    "complete (the write)": ("worker/queue.py", "complete"),
    "end_claim": ("worker/queue.py", "end_claim"),
    "merge_bm25 / compact": ("worker/drain.py", "_maybe_compact"),
}


class Timers:
    """Wall seconds inside some functions of the worker, by wrapping them
    (no profiler overhead): the model, the chunking, the claim and the write."""

    TARGETS = (
        ("model encode (incl. its tokenizer)", "autoembed.worker.embedders",
         "SentenceTransformerEmbedder", "_encode_group"),
        ("embed() grouping (count_tokens)", "autoembed.worker.embedders",
         "SentenceTransformerEmbedder", "embed"),
        ("chunking (token_spans, chunk_text)", "autoembed.worker.pipeline", "Pipeline",
         "_chunk_all"),
        ("claim", "autoembed.worker.queue", None, "claim"),
        ("complete (the write)", "autoembed.worker.queue", None, "complete"),
        ("end_claim", "autoembed.worker.queue", None, "end_claim"),
        ("versions / merge / compact", "autoembed.worker.queue", None, "versions"),
    )  # fmt: skip

    def __init__(self) -> None:
        import importlib

        self.seconds: dict[str, float] = {t[0]: 0.0 for t in self.TARGETS}
        self.calls: dict[str, int] = {t[0]: 0 for t in self.TARGETS}
        for label, module, cls, name in self.TARGETS:
            owner = importlib.import_module(module)
            if cls is not None:
                owner = getattr(owner, cls)
            setattr(owner, name, self._wrap(label, getattr(owner, name)))
        # the pipeline imported queue's functions by module, so patching queue suffices

    def _wrap(self, label: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        return timed


def shares(stats: pstats.Stats) -> dict[str, float]:
    out = {}
    raw: Any = stats.stats  # type: ignore[attr-defined]
    for label, (suffix, name) in SHARES.items():
        out[label] = sum(
            ct for (f, _l, fn), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if f.endswith(suffix) and fn == name
        )  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", type=Path)
    p.add_argument("--cprofile", action="store_true", help="cProfile (slower) instead of timers")
    args = p.parse_args(argv)
    args.json = args.json or RESULTS / f"pipeline_profile_docs{args.docs}.json"
    load_start = os.getloadavg()
    docs = beir.load(args.dataset).corpus[: args.docs]
    settings = Settings.from_env()
    embedder = load_embedder(DEFAULT_MODEL, settings.device, settings.embed_cache)
    embedder.embed(["autoembed warm-up"])  # as the worker's preload does
    batches: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="autoembed-profile-") as tmp,
        embedded_database(Path(tmp)) as url,
        connect(url) as conn,
    ):
        setup(conn)
        vid = conn.execute("SELECT id FROM autoembed.vectorizer WHERE name = %s", (TABLE,))
        vectorizer_id = int(vid.fetchone()[0])  # type: ignore[index]
        copy_docs(conn, docs)
        wconn = worker_connection(url, settings.statement_timeout)
        last = [time.monotonic()]

        def progress(_vid: int, r: BatchResult) -> None:
            now = time.monotonic()
            batches.append({"rows": r.claimed, "chunks": r.chunks, "s": now - last[0]})
            last[0] = now

        say(
            f"draining {len(docs)} documents in this process "
            f"({'cProfile' if args.cprofile else 'timers'})"
        )
        profiler = cProfile.Profile()
        timers = None if args.cprofile else Timers()
        t = time.monotonic()
        cpu = time.process_time()
        if args.cprofile:
            profiler.enable()
        while True:  # drain tasks run until nothing is claimable
            stats = drain_vectorizer(wconn, vectorizer_id, settings, progress=progress)
            if not stats.batches:
                break
        profiler.disable()
        wall, cpu = time.monotonic() - t, time.process_time() - cpu
        wconn.close()
    out = io.StringIO()
    if timers is None:
        split = shares(pstats.Stats(profiler))
        split["embed() incl. grouping (count_tokens)"] -= split[
            "model encode (incl. its tokenizer)"
        ]
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    else:
        split = dict(timers.seconds)
        # embed() includes the model calls: its own part is the grouping
        split["embed() grouping (count_tokens)"] -= split["model encode (incl. its tokenizer)"]
        split["other (loop, lease, BatchResult, ...)"] = wall - sum(split.values())
    rows = [b["rows"] for b in batches]
    say(
        f"{len(docs)} documents in {wall:.1f}s ({len(docs) / wall:.2f} docs/s, {cpu:.1f} CPU s); "
        f"{len(batches)} batches, rows per batch {rows}"
    )
    for label, s in split.items():
        print(f"  {label:<48}{s:>8.2f}s {100 * s / wall:>5.1f}%")
    print(out.getvalue())
    report = {
        **run_info("pipeline_profile"),
        "docs": len(docs),
        "seconds": wall,
        "cpu_s": cpu,
        "docs_per_s": len(docs) / wall,
        "batches": batches,
        "shares_s": split,
        "profile": out.getvalue(),
        "machine": machine(load_start, libraries=True),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
