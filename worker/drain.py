"""Draining a vectorizer: run batches until its claimable work is gone.

Used by the Celery task (with a time budget) and by ``autoembed worker
--once`` (until every vectorizer is drained, waiting out retry backoffs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.embedders import Embedder, ModelLoadError, load_embedder
from autoembed.worker.pipeline import BatchResult, Pipeline, VectorizerUnavailable

log = logging.getLogger("autoembed.worker")

Progress = Callable[[int, BatchResult], None]


@dataclass
class DrainStats:
    batches: int = 0
    written: int = 0
    failed: int = 0
    rejected: int = 0
    chunks: int = 0
    more_work: bool = False


def default_batch_size(embedder: Embedder) -> int:
    device = str(getattr(embedder, "device", "cpu"))
    return 128 if device.startswith("cuda") else 16


def pipeline_for(
    conn: psycopg.Connection[Any], vectorizer_id: int, settings: Settings
) -> Pipeline | None:
    """A pipeline for the vectorizer, or None when it is gone or paused.
    Raises VectorizerUnavailable (after recording why) when its model cannot run."""
    config = queue.vectorizer(conn, vectorizer_id)
    if config is None or config.paused:
        return None
    try:
        embedder = load_embedder(config.model, settings.device, settings.embed_cache)
        version = embedder.version()
        version_id = queue.register_version(conn, version)
        if config.active_version_id is not None and config.active_version_id != version_id:
            raise VectorizerUnavailable(
                f"vectorizer {config.name!r} is embedded with model version id "
                f"{config.active_version_id}, but this worker loads {version.tag} (id {version_id})"
            )
        return Pipeline(
            conn,
            config,
            embedder,
            version_id,
            settings.batch_size or default_batch_size(embedder),
            settings.lease_seconds,
        )
    except (ModelLoadError, VectorizerUnavailable) as e:
        queue.report_error(conn, vectorizer_id, str(e))
        raise VectorizerUnavailable(str(e)) from e


def drain_vectorizer(
    conn: psycopg.Connection[Any],
    vectorizer_id: int,
    settings: Settings,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> DrainStats:
    """Run batches until nothing is claimable or ``deadline`` (monotonic) passes."""
    stats = DrainStats()
    pipe = pipeline_for(conn, vectorizer_id, settings)
    if pipe is None:
        return stats
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            stats.more_work = True
            _maybe_compact(conn, pipe.config, stats)
            return stats
        result = pipe.run_batch()
        if result.claimed == 0:
            _maybe_compact(conn, pipe.config, stats)
            return stats
        stats.batches += 1
        stats.written += result.written
        stats.failed += result.failed
        stats.rejected += result.rejected
        stats.chunks += result.chunks
        for error in result.errors:
            log.warning("vectorizer %s: row failed: %s", pipe.config.name, error)
        if result.rejected:
            log.warning(
                "vectorizer %s: %d rows not written: their claim expired or was taken over "
                "(another worker's newer result stands)",
                pipe.config.name,
                result.rejected,
            )
        if progress is not None:
            progress(vectorizer_id, result)


# BM25 statistics are written as deltas; folding them keeps queries fast. A
# process folds a vectorizer's after writing this many chunks, or this long
# after it last did (cheap to skip, not worth doing after every small drain).
COMPACT_AFTER_CHUNKS = 2000
COMPACT_AFTER_SECONDS = 300.0
_compaction: dict[int, tuple[int, float]] = {}  # vectorizer id -> (chunks since, last time)


def _maybe_compact(
    conn: psycopg.Connection[Any], config: queue.VectorizerConfig, stats: DrainStats
) -> None:
    chunks, last = _compaction.get(config.id, (0, time.monotonic()))
    chunks += stats.chunks
    if chunks and (
        chunks >= COMPACT_AFTER_CHUNKS or time.monotonic() - last >= COMPACT_AFTER_SECONDS
    ):
        queue.compact_stats(conn, config.name)
        chunks, last = 0, time.monotonic()
    _compaction[config.id] = (chunks, last)


def drain_all(
    conn: psycopg.Connection[Any],
    settings: Settings,
    progress: Progress | None = None,
    poll_seconds: float = 0.5,
) -> DrainStats:
    """Drain every vectorizer until none has pending work; rows waiting out a
    retry backoff are waited for. Vectorizers whose model cannot run are
    reported and skipped."""
    total = DrainStats()
    broken: set[int] = set()
    while True:
        for vid in queue.vectorizer_ids(conn):
            if vid in broken:
                continue
            try:
                s = drain_vectorizer(conn, vid, settings, progress=progress)
            except VectorizerUnavailable as e:
                log.error("%s", e)
                broken.add(vid)
                continue
            total.batches += s.batches
            total.written += s.written
            total.failed += s.failed
            total.rejected += s.rejected
            total.chunks += s.chunks
        waiting = {
            vid: p
            for vid, (p, _failed) in queue.pending(conn).items()
            if p > 0 and vid not in broken and not _paused(conn, vid)
        }
        if not waiting:
            return total
        time.sleep(poll_seconds)


def _paused(conn: psycopg.Connection[Any], vectorizer_id: int) -> bool:
    config = queue.vectorizer(conn, vectorizer_id)
    return config is None or config.paused
