"""The query service: embeds the text queries SQL asks for.

``autoembed.search('articles', 'reset my password')`` in SQL calls
``autoembed.embed_query``, which, on a cache miss, commits a row to
``autoembed.query_request`` through a dblink loopback connection and sends
``NOTIFY autoembed_query, '<model version id>'`` (see
extension_sql/idempotent/067_query_embedding.sql). This service LISTENs,
claims the requests of the model versions it can produce — the embedder it
loads for that version's model must have exactly that version's tag — and
leaves the others to other workers. It embeds a claimed batch with one call,
writes ``autoembed.query_cache`` and deletes the requests, in one transaction
committed with ``synchronous_commit = off`` (a lost answer is only asked
again). The row locks are the claim (``FOR UPDATE SKIP LOCKED``): several
services may answer for one database, and one that dies releases its claims
at once. The transaction lasts one embedding call of at most ``BATCH_SIZE``
short texts. It also keeps the cache bounded and drops abandoned requests.

It runs as a child process of every Celery worker (``QueryServiceStep`` in
app.py; a process, not a thread: torch used in Celery's main process would
hang the pool processes it forks later), and alone as ``autoembed
query-server``. ``AUTOEMBED_QUERY_SERVICE=0`` turns the Celery one off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker.connection import SCHEMA_WAIT_SECONDS, SchemaWatch, secure_session
from autoembed.worker.embedders import Embedder, limit_cpu_threads, load_embedder

log = logging.getLogger("autoembed.query_service")

CHANNEL = "autoembed_query"
# How the service's connection names itself (pg_stat_activity): `autoembed
# search` looks for it to know that a worker answers text queries.
APPLICATION_NAME = "autoembed query service"
BATCH_SIZE = 32  # requests per claim
POLL_SECONDS = 1.0  # look for requests (and new model versions) this often anyway
PRUNE_SECONDS = 60.0
RETRY_SECONDS = 300.0  # look again at a model version this service could not produce
REQUEST_AGE = "10 minutes"  # requests older than this are abandoned


@dataclass
class _Version:
    """What this service knows about one model version."""

    embedder: Embedder | None
    checked_at: float
    reason: str = ""


@dataclass
class Stats:
    answered: int = 0
    failed: int = 0
    batches: int = 0
    versions: dict[int, str] = field(default_factory=dict)  # id -> tag, those it answers


class QueryService:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.stats = Stats()
        self._versions: dict[int, _Version] = {}

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, reconnecting whenever the database goes away."""
        schema = SchemaWatch(log, "query service")
        while not stop.is_set():
            wait = 1.0
            try:
                with connect(self.url, application_name=APPLICATION_NAME) as conn:
                    if schema.ready(conn):
                        self.serve(conn, stop)
                    else:
                        wait = SCHEMA_WAIT_SECONDS
            except psycopg.OperationalError as e:
                log.warning("query service lost the database (%s); reconnecting", e)
            except Exception as e:
                if schema.missing(e):
                    wait = SCHEMA_WAIT_SECONDS
                else:
                    log.exception("query service error; restarting")
            stop.wait(wait)

    def serve(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        secure_session(conn, self.settings.statement_timeout)
        conn.execute("SET synchronous_commit = off")
        conn.execute(f"LISTEN {CHANNEL}")
        self._preload(conn)
        log.info("query service ready")
        next_poll = next_prune = 0.0
        asked: set[int] = set()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                asked |= set(_pending_versions(conn))
                self._preload(conn)
                next_poll = now + POLL_SECONDS
            if asked:
                self.answer_all(conn, asked)
                asked = set()
            if now >= next_prune:
                _prune(conn, self.settings.query_cache_size)
                next_prune = now + PRUNE_SECONDS
            wait = max(0.01, min(next_poll, next_prune) - time.monotonic())
            for note in conn.notifies(timeout=wait, stop_after=1):
                asked.add(_version_id(note.payload))
            for note in conn.notifies(timeout=0, stop_after=10000):
                asked.add(_version_id(note.payload))
            asked.discard(0)

    def answer_all(self, conn: psycopg.Connection[Any], asked: set[int]) -> int:
        """Answer every claimable request of the asked model versions this
        service can produce; returns how many were answered."""
        ids = sorted(v for v in asked if self.embedder_for(conn, v) is not None)
        done = 0
        while ids:
            n, claimed = self.answer_batch(conn, ids)
            done += n
            if claimed < BATCH_SIZE:
                break
        return done

    def answer_batch(
        self, conn: psycopg.Connection[Any], version_ids: list[int]
    ) -> tuple[int, int]:
        """Claim, embed and answer one batch: (answered, claimed)."""
        with conn.transaction():
            requests = _claim(conn, version_ids)
            answered: list[tuple[Request, npt.NDArray[np.float32]]] = []
            for vid in sorted({r.version_id for r in requests}):
                group = [r for r in requests if r.version_id == vid]
                try:
                    vectors = self._embed(conn, vid, [r.query for r in group])
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"
                    log.warning("could not embed %d queries: %s", len(group), error)
                    _fail(conn, group, error)
                    self.stats.failed += len(group)
                    continue
                answered += zip(group, vectors, strict=True)
            _answer(conn, answered)
        self.stats.answered += len(answered)
        self.stats.batches += bool(requests)
        return len(answered), len(requests)

    def _embed(
        self, conn: psycopg.Connection[Any], version_id: int, texts: list[str]
    ) -> npt.NDArray[np.float32]:
        embedder = self.embedder_for(conn, version_id)
        if embedder is None:
            raise RuntimeError(f"model version {version_id} is no longer available")
        vectors = embedder.embed(texts)
        if vectors.shape != (len(texts), embedder.dimensions):
            raise ValueError(f"the embedder returned shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("the embedder returned NaN or infinite values")
        return vectors

    def embedder_for(self, conn: psycopg.Connection[Any], version_id: int) -> Embedder | None:
        """The embedder that produces exactly model version ``version_id``, or
        None when this service cannot (looked at again after RETRY_SECONDS)."""
        known = self._versions.get(version_id)
        if known is not None and (
            known.embedder is not None or time.monotonic() - known.checked_at < RETRY_SECONDS
        ):
            return known.embedder
        row = conn.execute(
            "SELECT model, tag FROM autoembed.model_version WHERE id = %s", (version_id,)
        ).fetchone()
        embedder: Embedder | None = None
        if row is None:
            reason = "no such model version"
        else:
            model, tag = row
            try:
                candidate = load_embedder(model, self.settings.device)
                mine = candidate.version().tag
            except Exception as e:
                reason = f"cannot load {model!r}: {e}"
            else:
                if mine == tag:
                    embedder, reason = candidate, ""
                    limit_cpu_threads(candidate, self.settings.query_threads)
                    self.stats.versions[version_id] = tag
                    log.info("answering text queries for model version %s", tag)
                else:
                    reason = f"this worker loads {mine}, not {tag}"
        if embedder is None:
            log.warning(
                "not answering text queries for model version %s: %s; another worker may",
                version_id,
                reason,
            )
        self._versions[version_id] = _Version(embedder, time.monotonic(), reason)
        return embedder

    def _preload(self, conn: psycopg.Connection[Any]) -> None:
        """Load the models of the vectorizers' active versions before anyone
        asks (another version's is loaded when a query asks for it)."""
        for (vid,) in conn.execute(
            "SELECT DISTINCT model_version_id FROM autoembed.vectorizer_version "
            "WHERE state = 'active' AND model_version_id IS NOT NULL"
        ).fetchall():
            if vid not in self._versions:
                self.embedder_for(conn, vid)


class Request(NamedTuple):
    id: int
    version_id: int
    query: str


def _claim(conn: psycopg.Connection[Any], version_ids: list[int]) -> list[Request]:
    return [
        Request(*r)
        for r in conn.execute(
            "SELECT id, model_version_id, query FROM autoembed.claim_query_requests(%s, %s)",
            (version_ids, BATCH_SIZE),
        )
    ]


def _answer(
    conn: psycopg.Connection[Any], answered: list[tuple[Request, npt.NDArray[np.float32]]]
) -> None:
    if answered:
        conn.execute(
            "SELECT autoembed.answer_query_requests(%s, %s, %s, %s)",
            (
                [r.id for r, _ in answered],
                [r.version_id for r, _ in answered],
                [r.query for r, _ in answered],
                [v for _, v in answered],
            ),
        )


def _fail(conn: psycopg.Connection[Any], requests: list[Request], error: str) -> None:
    conn.execute("SELECT autoembed.fail_query_requests(%s, %s)", ([r.id for r in requests], error))


def _version_id(payload: str) -> int:
    return int(payload) if payload.isdigit() else 0


def _pending_versions(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT autoembed.query_request_versions()")]


def _prune(conn: psycopg.Connection[Any], cache_size: int) -> None:
    row = conn.execute(
        "SELECT cache_entries, requests FROM autoembed.prune_query_cache(%s, %s::interval)",
        (cache_size, REQUEST_AGE),
    ).fetchone()
    if row and (row[0] or row[1]):
        log.info("pruned %d cached query embeddings and %d abandoned requests", row[0], row[1])


# ------------------------------------------------------------ as a process


def start_process() -> subprocess.Popen[bytes]:
    """Start the service as a child process (for the Celery worker); it
    inherits the environment (AUTOEMBED_*) and the output streams, and exits
    when its parent does."""
    return subprocess.Popen(
        [sys.executable, "-m", "autoembed.worker.query_service"], env=dict(os.environ)
    )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_forever(url: str, settings: Settings, watch_parent: bool = False) -> None:
    """Run in the foreground until SIGTERM or SIGINT (or, with
    ``watch_parent``, until the process that started this one is gone)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if watch_parent:
        parent = os.getppid()

        def watch() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    log.info("the worker that started the query service is gone; stopping")
                    stop.set()

        threading.Thread(target=watch, name="autoembed-parent-watch", daemon=True).start()
    QueryService(url, settings).run(stop)


def main() -> None:
    """``python -m autoembed.worker.query_service``: as started by the Celery worker."""
    logging.basicConfig(
        level=os.environ.get("AUTOEMBED_LOGLEVEL", "INFO").upper(),
        format="[%(asctime)s: %(levelname)s/query-service] %(message)s",
    )
    settings = Settings.from_env()
    serve_forever(settings.require_database_url(), settings, watch_parent=True)


if __name__ == "__main__":
    main()
