"""The campaign benchmark's load: searches and inserts while something happens
(a phase). One thread searches every --search-interval seconds (search(vector),
bm25_search and hybrid_search in turn, the split's queries in a fixed shuffled
order, a named version), another INSERTs a probe row every --insert-interval
seconds and times it until its chunks are in the version's embeddings table
(checked with bm25_search, then deleted), each on its own connection."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import latency_corpus as lc
import numpy as np
import numpy.typing as npt
import psycopg
from campaign_base import Conn
from campaign_worker import CpuMeter
from psycopg import sql

from autoembed.db import connect
from autoembed.evaluation import beir

Vector = npt.NDArray[np.float32]

K = 10
METHODS = ("semantic", "bm25", "hybrid")
WARMUP_QUERIES = 3


@dataclass(frozen=True)
class SearchSample:
    method: str
    query_id: str
    t: float  # seconds since the phase started
    ms: float
    error: str | None = None


@dataclass(frozen=True)
class Probe:
    id: str
    t: float  # seconds since the phase started, at the INSERT
    ms: float | None  # INSERT issued -> its chunks in the active version's table (None: timeout)
    polls: int
    found_by_bm25: bool
    error: str | None = None


@dataclass
class Target:
    """What the phases search and insert into."""

    url: str
    name: str  # vectorizer and table
    version: str  # the version searched ('1'), named explicitly: it is the active one
    embeddings_table: str  # its embeddings table, polled for new rows
    queries: list[beir.Query]
    vectors: dict[str, Vector]  # MiniLM query vectors by query id
    probe_docs: list[beir.Document]
    run_tag: str


def statement(method: str) -> sql.Composed:
    fn, args = {
        "semantic": ("search", "%s, %s, %s"),
        "bm25": ("bm25_search", "%s, %s, %s"),
        "hybrid": ("hybrid_search", "%s, %s, %s, %s"),
    }[method]
    return sql.SQL(
        "SELECT s.pk, s.chunk_no, s.score FROM autoembed.{}(" + args + ", version => %s) AS s"
    ).format(sql.Identifier(fn))


def params(target: Target, method: str, q: beir.Query) -> tuple[Any, ...]:
    if method == "semantic":
        return (target.name, target.vectors[q.id], K, target.version)
    if method == "bm25":
        return (target.name, q.text, K, target.version)
    return (target.name, q.text, target.vectors[q.id], K, target.version)


def schedule(target: Target, seed: int) -> Iterator[tuple[str, beir.Query]]:
    """Queries in a shuffled order, each through the three methods in a
    shuffled order; the same sequence in every phase."""
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(target.queries)).tolist():
            for j in rng.permutation(len(METHODS)).tolist():
                yield METHODS[j], target.queries[i]


def warm_up(conn: Conn, target: Target) -> None:
    for q in target.queries[:WARMUP_QUERIES]:
        for m in METHODS:
            conn.execute(statement(m), params(target, m, q)).fetchall()


def searcher(
    target: Target,
    interval: float,
    seed: int,
    start: float,
    stop: threading.Event,
    out: list[SearchSample],
) -> None:
    """One search every ``interval`` seconds until stop is set."""
    statements = {m: statement(m) for m in METHODS}
    with connect(target.url, application_name="campaign benchmark: searches") as conn:
        for n, (method, q) in enumerate(schedule(target, seed)):
            due = start + n * interval
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            args = params(target, method, q)
            t = time.perf_counter()
            try:
                conn.execute(statements[method], args).fetchall()
                error = None
            except psycopg.Error as e:
                error = str(e).strip()
            ms = (time.perf_counter() - t) * 1000
            out.append(SearchSample(method, q.id, round(due - start, 3), ms, error))


def marker(target: Target, n: int) -> str:
    return f"zq{target.run_tag}x{n}"


def prober(
    target: Target,
    phase: str,
    interval: float,
    poll_s: float,
    timeout_s: float,
    start: float,
    stop: threading.Event,
    out: list[Probe],
) -> None:
    """An INSERT every ``interval`` seconds, each polled until searchable."""
    table = sql.Identifier(target.name)
    seen = sql.SQL("SELECT 1 FROM {} WHERE id = %s LIMIT 1").format(
        sql.Identifier("autoembed", target.embeddings_table)
    )
    insert = sql.SQL("INSERT INTO {} (id, title, text) VALUES (%s, %s, %s)").format(table)
    delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(table)
    bm25 = "SELECT s.pk ->> 'id' FROM autoembed.bm25_search(%s, %s, 5, version => %s) AS s"
    n = 0
    with connect(target.url, application_name="campaign benchmark: inserts") as conn:
        due = start + interval / 2  # between two searches
        while not stop.wait(max(0.0, due - time.monotonic())):
            doc = target.probe_docs[n % len(target.probe_docs)]
            n += 1
            word = marker(target, n)
            pk = f"probe-{phase}-{n}"
            polls, ms, error, found = 0, None, None, False
            at = time.monotonic() - start
            t0 = time.perf_counter()
            try:
                conn.execute(insert, (pk, f"{word}: {doc.title}", f"{doc.text} ({word})"))
                while (time.perf_counter() - t0) < timeout_s:
                    polls += 1
                    if conn.execute(seen, (pk,)).fetchone():
                        ms = (time.perf_counter() - t0) * 1000
                        break
                    time.sleep(poll_s)
                hits = conn.execute(bm25, (target.name, word, target.version)).fetchall()
                found = any(h[0] == pk for h in hits)
                # gone again, so that the campaign's version never embeds it (a delete
                # is fresh work too, but costs no embedding)
                conn.execute(delete, (pk,))
            except psycopg.Error as e:
                error = str(e).strip()
            out.append(Probe(pk, round(at, 3), ms, polls, found, error))
            due = max(due + interval, time.monotonic() + 0.2)


@dataclass
class Phase:
    name: str
    start: float = 0.0  # time.monotonic() when it started
    wall_start: float = 0.0  # time.time() then (to read the worker's log alongside)
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # samples after this many seconds (the campaign's switch) are not summarized
    cutoff: float | None = None
    searches: list[SearchSample] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)


def run_phase(
    target: Target,
    name: str,
    args: argparse.Namespace,
    until: Callable[[Phase], bool],
    every_s: float,
    cpu: CpuMeter,
) -> Phase:
    """Searches and inserts in two threads, each on its own connection,
    until ``until(phase)`` (called every ``every_s`` seconds) says done."""
    start = time.monotonic() + 0.05
    phase = Phase(name, start)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=searcher,
            args=(target, args.search_interval, args.seed, start, stop, phase.searches),
            name="searches",
        ),
        threading.Thread(
            target=prober,
            args=(
                target,
                name,
                args.insert_interval,
                args.poll_ms / 1000,
                args.probe_timeout,
                start,
                stop,
                phase.probes,
            ),
            name="inserts",
        ),
    ]
    before = cpu.snapshot()
    phase.wall_start = time.time()
    for t in threads:
        t.start()
    try:
        ticks = 0
        while not until(phase):
            ticks += 1
            time.sleep(max(0.0, start + ticks * every_s - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join()
    phase.seconds = time.monotonic() - start
    phase.cpu = cpu.since(before)
    return phase


def delete_probes(conn: Conn, name: str, timeout_s: float = 120) -> None:
    """Remove the idle phase's probe rows and wait until the worker has
    removed their chunks (nothing pending)."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id LIKE 'probe-%%'").format(sql.Identifier(name)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = lc.status(conn, name)
        if int(s["pending"]) + int(s["in_flight"]) == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the probe rows' deletion was not processed in {timeout_s:.0f}s")
