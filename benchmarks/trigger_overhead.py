"""What autoembed's triggers cost the writer, side by side with the same table
without a vectorizer, in one run.

    .venv/bin/python benchmarks/trigger_overhead.py                 # the issue's sizes, ~1 min
    .venv/bin/python benchmarks/trigger_overhead.py --quick         # a smoke run, ~10 s
    .venv/bin/python benchmarks/trigger_overhead.py --alternatives  # + design alternatives
    .venv/bin/python benchmarks/trigger_overhead.py --ablations     # + where the time goes
    .venv/bin/python benchmarks/trigger_overhead.py --apply-sql changed_030_ddl.sql  # try a change

Prints a table and writes every sample to --json (benchmarks/results/ by default);
the exit status is 1 when a target is missed.

Scenarios (targets from issue 2; pgai's trigger was measured the same way here):
  COPY of --rows rows of ~1 KB text into an emptied table (TRUNCATE, CHECKPOINT);
  --updates single-row autocommit UPDATEs of a column that is not embedded (views);
  --updates single-row autocommit UPDATEs of an embedded column (body);
  the same on tables of --steady-rows rows whose rows are embedded (the steady
  state of a live table: its vectorizer drained before the run and again
  before each pass, outside the timings), against a plain table of that size.

Method. A private embedded PostgreSQL with its default, durable settings (fsync
and synchronous_commit on), autoembed installed, and a LISTEN autoembed session
in another process, as a running dispatcher holds. Every contender is its own
table with the same rows; they differ only in their triggers. COPY runs on one
set of tables, the UPDATEs on another, so that both kinds of work can be spread
over the whole run: each of --copy-reps passes makes one COPY round (every COPY
table once, in a random order) and then a share of the UPDATE rounds (a block of
--block keys, UPDATEd on every table in a random order, each UPDATE its own
transaction and its own sample). Every UPDATE table takes the same keys in the
same order with the same new values, so all stay in the same page state.

Figure: the median over rounds of the per-round ratio (autoembed / no trigger, of
the round's median times), over the rounds in which the machine was quiet, with a
90% bootstrap interval (see paired_stats.py); also the same ratio of the server
process's CPU time, which outside load disturbs much less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from bench_run_info import run_info
from bench_server import Listener, ServerClock, embedded_database, server_settings
from paired_stats import Series, summarize
from psycopg import sql
from trigger_variants import (
    ABLATIONS,
    ALTERNATIVES,
    AUTOEMBED,
    COPY,
    PLAIN,
    UPDATE_EMBEDDED,
    UPDATE_PLAIN,
    Variant,
)

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "benchmarks" / "results" / "trigger_overhead.json"
BODY_BYTES = 1000
COPY_CHUNK = 1 << 20
BASELINES = (PLAIN.name, AUTOEMBED.name)
UPDATE_STEADY = "update_steady"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    target: float  # issue 2's bound on the ratio
    pgai: float | None  # pgai's vectorizer trigger, measured the same way on this machine
    statement: str = ""  # UPDATE scenarios: the statement, {table} for the table


SCENARIOS = {
    COPY: Scenario(COPY, "COPY {rows:,} rows of ~1 KB", 1.30, 1.91),
    UPDATE_PLAIN: Scenario(
        UPDATE_PLAIN, "{updates:,} UPDATEs, non-embedded column", 1.03, 4.38,
        "UPDATE {table} SET views = views + 1 WHERE id = %s",
    ),
    UPDATE_EMBEDDED: Scenario(
        UPDATE_EMBEDDED, "{updates:,} UPDATEs, embedded column", 1.18, 4.38,
        "UPDATE {table} SET body = %s WHERE id = %s",
    ),
    UPDATE_STEADY: Scenario(
        UPDATE_STEADY, "the same, rows embedded", 1.18, None,
        "UPDATE {table} SET body = %s WHERE id = %s",
    ),
}  # fmt: skip
UPDATES = (UPDATE_PLAIN, UPDATE_EMBEDDED)

# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    copy_data: bytes  # the rows, in COPY text format
    steady_data: bytes  # the first --steady-rows of them
    update_keys: list[int]  # a warm-up block, then the measured keys
    steady_keys: list[int]  # the same for the steady tables
    new_bodies: list[str]  # the embedded-column UPDATE's new values, one per key
    mean_row_bytes: float


class TextMaker:
    """Deterministic pseudo-English: words from a fixed vocabulary drawn with
    Zipf-like frequencies, so texts vary and compress roughly like real ones."""

    def __init__(self, rng: np.random.Generator, vocabulary: int = 5000) -> None:
        lengths = rng.integers(2, 12, size=vocabulary)
        letters = rng.integers(ord("a"), ord("z") + 1, size=int(lengths.sum())).astype(np.uint8)
        self.words = [w.tobytes().decode() for w in np.split(letters, np.cumsum(lengths)[:-1])]
        weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.1
        self.p = weights / weights.sum()
        self.rng = rng
        self.body_words = round(BODY_BYTES / (float(np.dot(self.p, lengths)) + 1))

    def texts(self, n: int, words: int, batch: int = 10_000) -> list[str]:
        out = []
        for start in range(0, n, batch):
            draws = self.rng.choice(len(self.words), size=(min(batch, n - start), words), p=self.p)
            out += [" ".join(map(self.words.__getitem__, row)) for row in draws.tolist()]
        return out


def make_corpus(rows: int, updates: int, block: int, seed: int, steady_rows: int) -> Corpus:
    rng = np.random.default_rng(seed)
    maker = TextMaker(rng)
    titles, bodies = maker.texts(rows, 6), maker.texts(rows, maker.body_words)
    lines = (f"{i}\t{t}\t{b}\t0\n" for i, (t, b) in enumerate(zip(titles, bodies, strict=True), 1))
    copy_data = "".join(lines).encode()
    n = block + updates
    steady_rows = min(steady_rows, rows)
    return Corpus(
        copy_data=copy_data,
        steady_data=b"".join(copy_data.splitlines(keepends=True)[:steady_rows]),
        update_keys=[int(k) + 1 for k in rng.choice(rows, size=n, replace=n > rows)],
        steady_keys=[int(k) + 1 for k in rng.choice(steady_rows, size=n, replace=n > steady_rows)],
        new_bodies=maker.texts(n, maker.body_words),
        mean_row_bytes=len(copy_data) / rows,
    )


# -- the tables and the work -----------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    variant: Variant
    name: str

    def sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(table=sql.Identifier(self.name))


Samples = dict[str, Series]  # by variant name


def create_tables(
    conn: psycopg.Connection[Any], variants: Sequence[Variant], purpose: str, data: bytes
) -> list[Table]:
    tables = [Table(v, f"{purpose}_{v.name}") for v in variants]
    for t in tables:
        t.variant.create(conn, t.name)
        copy_into(conn, t, data)
    return tables


def copy_into(conn: psycopg.Connection[Any], table: Table, data: bytes) -> None:
    """COPY the rows into the table, in one autocommit statement."""
    view = memoryview(data)
    with conn.cursor() as cur, cur.copy(table.sql("COPY {table} FROM STDIN")) as copy:
        for offset in range(0, len(view), COPY_CHUNK):
            copy.write(view[offset : offset + COPY_CHUNK])


def settle(conn: psycopg.Connection[Any], tables: Sequence[Table]) -> None:
    """The same start for every table: hint bits set, statistics fresh, no dirty pages."""
    for t in tables:
        conn.execute(t.sql("VACUUM (ANALYZE) {table}"))
    conn.execute("CHECKPOINT")


def timed(clock: ServerClock, work: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and server CPU seconds of work."""
    cpu, start = clock.cpu(), time.perf_counter()
    work()
    wall = time.perf_counter() - start
    return wall, clock.cpu() - cpu


def shuffled(tables: Sequence[Table], rng: np.random.Generator) -> list[Table]:
    return [tables[i] for i in rng.permutation(len(tables))]


class Bench:
    """One connection doing the measured work, round by round."""

    def __init__(self, conn: psycopg.Connection[Any], rng: np.random.Generator) -> None:
        self.conn, self.rng = conn, rng
        self.clock = ServerClock(conn)
        self.cur = conn.cursor()

    def copy_round(self, tables: Sequence[Table], data: bytes, samples: Samples) -> None:
        """Every table emptied and COPYed into once, in a random order."""
        for t in shuffled(tables, self.rng):
            self.conn.execute(t.sql("TRUNCATE {table}"))
            self.conn.execute("CHECKPOINT")
            work = partial(copy_into, self.conn, t, data)
            samples[t.variant.name].add_round([timed(self.clock, work)])

    def update_round(
        self, tables: Sequence[Table], statement: str, block: Sequence[Any], samples: Samples
    ) -> None:
        """The block's UPDATEs on every table, in a random order; one sample each."""
        for t in shuffled(tables, self.rng):
            run = partial(self.cur.execute, t.sql(statement), prepare=True)
            measured = [timed(self.clock, partial(run, params)) for params in block]
            samples[t.variant.name].add_round(measured)

    def close(self) -> None:
        self.cur.close()
        self.clock.close()


def update_blocks(scenario: Scenario, corpus: Corpus, block: int) -> list[list[Any]]:
    if scenario.name == UPDATE_EMBEDDED:
        params: list[Any] = list(zip(corpus.new_bodies, corpus.update_keys, strict=True))
    elif scenario.name == UPDATE_STEADY:
        params = list(zip(corpus.new_bodies, corpus.steady_keys, strict=True))
    else:
        params = [(k,) for k in corpus.update_keys]
    return [params[i : i + block] for i in range(0, len(params), block)]


def share(items: list[Any], part: int, parts: int) -> list[Any]:
    return items[part * len(items) // parts : (part + 1) * len(items) // parts]


def measure(
    bench: Bench,
    copy_tables: list[Table],
    update_tables: list[Table],
    steady: Steady,
    corpus: Corpus,
    args: argparse.Namespace,
) -> dict[str, Samples]:
    """--copy-reps passes, each one COPY round and its share of the UPDATE rounds."""
    samples = {COPY: {t.variant.name: Series() for t in copy_tables}}
    samples |= {name: {t.variant.name: Series() for t in update_tables} for name in UPDATES}
    samples[UPDATE_STEADY] = {t.variant.name: Series() for t in steady.tables}
    scenarios = [*UPDATES, UPDATE_STEADY]
    blocks = {name: update_blocks(SCENARIOS[name], corpus, args.block) for name in scenarios}
    for part in range(args.copy_reps):
        bench.copy_round(copy_tables, corpus.copy_data, samples[COPY])
        steady.drain()  # its rows embedded again, as a live worker keeps them
        for name in scenarios:
            tables = steady.tables if name == UPDATE_STEADY else update_tables
            for block in share(blocks[name], part, args.copy_reps):
                bench.update_round(tables, SCENARIOS[name].statement, block, samples[name])
    for name in scenarios:  # the first block of keys was a warm-up
        samples[name] = {v: s.drop_first_round() for v, s in samples[name].items()}
    return samples


class Steady:
    """The steady-state tables (plain and autoembed, --steady-rows rows): the
    autoembed table's rows embedded by a worker's drain (the hash embedder)."""

    def __init__(self, conn: psycopg.Connection[Any], url: str, data: bytes) -> None:
        self.tables = create_tables(conn, [PLAIN, AUTOEMBED], "steady", data)
        row = conn.execute(
            "SELECT id FROM autoembed.vectorizer WHERE name = %s", (f"steady_{AUTOEMBED.name}",)
        ).fetchone()
        assert row is not None
        self.vectorizer_id = int(row[0])
        self.settings = Settings(database_url=url)
        self.worker = connect(url, application_name="autoembed worker")
        queue.prepare(self.worker)
        self.drained_rows = 0

    def drain(self) -> None:
        stats = drain_vectorizer(self.worker, self.vectorizer_id, self.settings)
        self.drained_rows += stats.written

    def close(self) -> None:
        self.worker.close()


def run(args: argparse.Namespace, variants: list[Variant]) -> dict[str, Any]:
    corpus = make_corpus(args.rows, args.updates, args.block, args.seed, args.steady_rows)
    rng = np.random.default_rng(args.seed)
    copy_variants = [v for v in variants if COPY in v.scenarios]
    # Every UPDATE table takes every UPDATE, so that all keep the same page state.
    update_variants = [v for v in variants if v.scenarios & set(UPDATES)]
    database = embedded_database(args.data_dir, args.apply_sql)
    with database as url, psycopg.connect(url, autocommit=True) as conn:
        settings = server_settings(conn)
        copy_tables = create_tables(conn, copy_variants, "copy", corpus.copy_data)
        update_tables = create_tables(conn, update_variants, "update", corpus.copy_data)
        steady = Steady(conn, url, corpus.steady_data)
        started = time.perf_counter()
        steady.drain()
        print(f"steady-state table: {steady.drained_rows:,} rows embedded in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        settle(conn, update_tables + steady.tables)
        bench = Bench(conn, rng)
        with Listener(url, enabled=not args.no_listener) as listener:
            samples = measure(bench, copy_tables, update_tables, steady, corpus, args)
        bench.close()
        steady.close()
    return {
        "postgres": settings,
        "notifications_received": listener.received,
        "corpus": {"rows": args.rows, "mean_row_bytes": round(corpus.mean_row_bytes, 1)},
        "scenarios": {name: summarize(s, BASELINES, rng) for name, s in samples.items()},
    }


# -- reporting -------------------------------------------------------------------------------


def fmt_time(seconds: float, scenario: str, sign: str = "") -> str:
    return f"{seconds:{sign}.2f} s" if scenario == COPY else f"{seconds * 1e6:{sign}.0f} µs"


def headline(args: argparse.Namespace, scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """autoembed vs plain in each scenario, against the issue's targets."""
    rows = []
    for name, sc in SCENARIOS.items():
        tables, rounds = scenarios[name]["tables"], scenarios[name]
        ours = tables[AUTOEMBED.name]
        rows.append({
            "scenario": name,
            "title": sc.title.format(rows=args.rows, updates=args.updates),
            "plain_s": tables[PLAIN.name]["median_wall_s"],
            "autoembed_s": ours["median_wall_s"],
            "added_s": ours["median_wall_s"] - tables[PLAIN.name]["median_wall_s"],
            **ours["vs_plain"]["wall"],
            "ratio_all_rounds": ours["vs_plain"]["wall_all_rounds"]["ratio"],
            "cpu_ratio": ours["vs_plain"]["cpu"]["ratio"],
            "rounds_used": f"{rounds['quiet_rounds']}/{rounds['rounds']}",
            "target": sc.target,
            "pgai": sc.pgai,
            "pass": ours["vs_plain"]["wall"]["ratio"] <= sc.target,
        })  # fmt: skip
    return rows


def print_headline(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'scenario (median per operation)':<36}{'plain':>8}{'autoembed':>11}{'added':>9}"
        f"{'ratio':>8}"
        f"{'90% interval':>15}{'target':>8}{'pgai':>7}  result{'rounds':>10}{'CPU':>8}"
    )
    for r in rows:
        print(
            f"{r['title']:<36}{fmt_time(r['plain_s'], r['scenario']):>8}"
            f"{fmt_time(r['autoembed_s'], r['scenario']):>11}"
            f"{fmt_time(r['added_s'], r['scenario'], '+'):>9}{r['ratio']:>7.3f}x"
            f"{r['low']:>8.3f}-{r['high']:.3f}x{r['target']:>7.2f}x"
            f"{'—' if r['pgai'] is None else format(r['pgai'], '.2f') + 'x':>7}"
            f"  {'pass' if r['pass'] else 'FAIL':<6}{r['rounds_used']:>10}{r['cpu_ratio']:>7.3f}x"
        )
    print(
        "ratio: wall-clock, median of per-round ratios over the quiet rounds (used/all);"
        " CPU: server CPU time"
    )


def print_variants(
    args: argparse.Namespace, scenarios: dict[str, Any], variants: list[Variant]
) -> None:
    extra = [v for v in variants if v not in (PLAIN, AUTOEMBED)]
    if not extra:
        return
    width = max(len(v.label) for v in extra) + 2
    print("\nDesign alternatives and ablations (same data, same run, interleaved)")
    print(
        f"{'scenario':<36}{'variant':<{width}}{'time':>8}{'vs plain':>10}{'vs ours':>9}{'CPU':>8}"
    )
    for name, sc in SCENARIOS.items():
        for v in (v for v in extra if name in v.scenarios):
            s = scenarios[name]["tables"][v.name]
            print(
                f"{sc.title.format(rows=args.rows, updates=args.updates):<36}{v.label:<{width}}"
                f"{fmt_time(s['median_wall_s'], name):>8}{s['vs_plain']['wall']['ratio']:>9.3f}x"
                f"{s['vs_autoembed']['wall']['ratio']:>8.3f}x{s['vs_plain']['cpu']['ratio']:>7.3f}x"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=100_000, help="rows per COPY (100000)")
    p.add_argument("--updates", type=int, default=5_000, help="UPDATEs per scenario (5000)")
    p.add_argument("--copy-reps", type=int, default=15, help="COPYs per table = passes (15)")
    p.add_argument("--block", type=int, default=10, help="UPDATEs per table per round (10)")
    p.add_argument(
        "--steady-rows", type=int, default=10_000, help="rows of the steady-state tables (10000)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="10000 rows, 1000 UPDATEs, 5 COPYs")
    p.add_argument("--alternatives", action="store_true", help="also measure design alternatives")
    p.add_argument("--ablations", action="store_true", help="also measure trigger ablations")
    p.add_argument("--no-listener", action="store_true", help="no LISTEN session")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--data-dir", type=Path, help="parent of the temporary database directory")
    p.add_argument(
        "--apply-sql",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="run FILE after installing (e.g. a changed idempotent SQL file); repeatable",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.updates, args.copy_reps = 10_000, 1_000, 5
    return args


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [PLAIN, AUTOEMBED]
    variants += list(ALTERNATIVES) if args.alternatives else []
    variants += list(ABLATIONS) if args.ablations else []
    started, load_start = time.perf_counter(), os.getloadavg()
    result = run(args, variants)
    rows = headline(args, result["scenarios"])
    print_headline(rows)
    print_variants(args, result["scenarios"], variants)
    duration = time.perf_counter() - started
    report = {
        **run_info("trigger_overhead"),
        "applied_sql": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in args.apply_sql},
        "parameters": vars(args),
        "machine": machine(load_start),
        "duration_s": round(duration, 1),
        "summary": rows,
        "variants": {v.name: v.label for v in variants},
        **result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")
    print(f"\n{duration:.0f} s; all samples in {args.json}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
