"""Latency of text queries from SQL: autoembed.search('papers', 'some text').

    .venv/bin/python benchmarks/text_query_latency.py [--queries 50] [--rows 60]

Starts a private embedded PostgreSQL, loads --rows SciFact abstracts (the
bundled demo set) under a vectorizer with the default model, embeds them
in-process, starts `autoembed query-server`, and measures, one after the
other in this run, over --queries distinct titles used as queries:

  model alone      the model embedding one query in this process, on as many
                   threads as the query service uses (the floor), and on
                   torch's default number
  embed_query      SELECT autoembed.embed_query(...) on a cache miss: request
                   through the loopback, the query service embeds, poll
  search (text)    the whole text search on a cache miss, and its cached repeat
  hybrid (text)    the same for hybrid_search
  search (vector)  the vector variant with a precomputed embedding

Prints p50/p95 and writes benchmarks/results/text_query_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_server import embedded_database

from autoembed.db import connect
from autoembed.quickstart import demo_rows
from autoembed.settings import Settings
from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder
from autoembed.worker.once import run_once

RESULTS = Path(__file__).parent / "results" / "text_query_latency.json"


def each(fn: Callable[[str], Any], queries: list[str]) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rows", type=int, default=60)
    args = parser.parse_args()
    rows = demo_rows(300)
    corpus, queries = rows[: args.rows], [r["title"] for r in rows[-4 * args.queries :]]
    sets = [queries[i::4] for i in range(4)]  # distinct queries for each measurement

    with embedded_database() as url:
        with connect(url) as conn:
            conn.execute("CREATE TABLE papers (id text PRIMARY KEY, title text, abstract text)")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO papers VALUES (%s, %s, %s)",
                    [(r["id"], r["title"], r["text"]) for r in corpus],
                )
            conn.execute("SELECT autoembed.create_vectorizer('papers', ARRAY['title', 'abstract'])")
        print(f"embedding {len(corpus)} abstracts ...", flush=True)
        run_once(Settings(database_url=url), show_progress=False)

        model = load_embedder(DEFAULT_MODEL)
        model.embed(["warm up"])
        results: dict[str, dict[str, float]] = {}
        import torch

        default_threads = torch.get_num_threads()
        results[f"model alone, {default_threads} threads"] = summary(
            each(lambda q: model.embed([q]), sets[1])
        )
        # As the query service runs it (AUTOEMBED_QUERY_THREADS, default 1).
        torch.set_num_threads(Settings().query_threads or default_threads)
        results["model alone"] = summary(each(lambda q: model.embed([q]), sets[0]))
        vectors = {q: model.embed([q])[0] for q in sets[3]}

        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        server = subprocess.Popen(
            [sys.executable, "-m", "autoembed.cli", "query-server", "--db", url,
             "--loglevel", "WARNING"],
            env=env,
        )  # fmt: skip
        try:
            with connect(url) as conn:
                conn.execute("SET autoembed.query_timeout = '60s'")
                for i in range(3):  # the service loads the model; plpgsql compiles
                    conn.execute("SELECT * FROM autoembed.search('papers', %s, 10)", (f"w{i}",))
                    conn.execute(
                        "SELECT * FROM autoembed.hybrid_search('papers', %s, 10)", (f"h{i}",)
                    )

                def text_search(q: str) -> None:
                    conn.execute(
                        "SELECT * FROM autoembed.search('papers', %s, 10)", (q,)
                    ).fetchall()

                def hybrid(q: str) -> None:
                    conn.execute(
                        "SELECT * FROM autoembed.hybrid_search('papers', %s, 10)", (q,)
                    ).fetchall()

                results["embed_query (miss)"] = summary(
                    each(
                        lambda q: conn.execute(
                            "SELECT autoembed.embed_query('papers', %s)", (q,)
                        ).fetchone(),
                        sets[0],
                    )
                )
                results["search, text (miss)"] = summary(each(text_search, sets[1]))
                results["search, text (cached repeat)"] = summary(each(text_search, sets[1]))
                results["hybrid, text (miss)"] = summary(each(hybrid, sets[2]))
                results["hybrid, text (cached repeat)"] = summary(each(hybrid, sets[2]))
                results["search, vector"] = summary(
                    each(
                        lambda q: conn.execute(
                            "SELECT * FROM autoembed.search('papers', %s, 10)", (vectors[q],)
                        ).fetchall(),
                        sets[3],
                    )
                )
        finally:
            server.terminate()
            server.wait(10)

    floor = results["model alone"]["p50"]
    print(f"\n{'':32} {'p50 ms':>8} {'p95 ms':>8}  p50 - model")
    for name, r in results.items():
        print(f"{name:32} {r['p50']:8.2f} {r['p95']:8.2f}  {r['p50'] - floor:+8.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average": os.getloadavg(),
                },
                "rows": len(corpus),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
