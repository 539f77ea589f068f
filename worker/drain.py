"""Draining a vectorizer: run batches until its claimable work is gone.

Used by the Celery task (with a time budget) and by ``autoembed worker
--once`` (until every vectorizer is drained, waiting out retry backoffs).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # versions this process cannot embed (their model will not load here, or
    # they are bound to another model version): id -> why
    unavailable: dict[int, str] = field(default_factory=dict)


def default_batch_size(embedder: Embedder) -> int:
    device = str(getattr(embedder, "device", "cpu"))
    return 128 if device.startswith("cuda") else 16


def pipeline_for(
    conn: psycopg.Connection[Any],
    config: queue.VectorizerConfig,
    version: queue.VersionConfig,
    settings: Settings,
) -> Pipeline:
    """A pipeline for one version. Raises VectorizerUnavailable (after
    recording why on the version) when this process cannot embed it."""
    try:
        embedder = load_embedder(version.model, settings.device, settings.embed_cache)
        mine = embedder.version()
        model_version_id = queue.register_version(conn, mine)
        if version.model_version_id is not None and version.model_version_id != model_version_id:
            raise VectorizerUnavailable(
                f"version {version.ordinal} of vectorizer {config.name!r} is embedded with model "
                f"version id {version.model_version_id}, but this worker loads {mine.tag} "
                f"(id {model_version_id})"
            )
        return Pipeline(
            conn,
            config,
            version,
            embedder,
            model_version_id,
            settings.batch_size or default_batch_size(embedder),
            settings.lease_seconds,
        )
    except (ModelLoadError, VectorizerUnavailable) as e:
        queue.report_error(conn, version.id, str(e))
        raise VectorizerUnavailable(str(e)) from e


class Scheduler:
    """Which version of a vectorizer a drain claims from next, and how much.

    Fresh changes go first: the active version is tried first, except that
    while it has work, the other versions (a campaign's, the ready and
    retired ones kept current) get ``share`` of the batches, so a campaign
    is never starved either. Without fresh work they get every batch.

    Within the active version, rows queued in the last ``FRESH_SECONDS``
    (changes made moments ago) make a batch of their own ahead of the
    backlog (claim_batch in 050_queue.sql), but never two such batches in a
    row, so the backlog gets at least every other batch.

    The other versions' batches are sized to take about
    ``campaign_batch_seconds``; the active version's, while changes are
    coming in (a fresh batch in the last ``FRESH_SECONDS``), about
    ``batch_seconds``, so the next change waits about that long for the
    batch in flight; with none coming in, they are the worker's batch size
    (the most rows per model call: a backfill alone drains at full speed,
    and the first change after a quiet spell waits for one such batch).
    Sizes come from the seconds per row measured in ``seconds_per_row``,
    and never exceed the worker's batch size; a version not measured yet
    starts with one row. ``seconds_per_row`` and ``fresh_seen`` (when each
    version last had a fresh batch) outlive one drain: they are the
    process's.
    """

    def __init__(
        self,
        share: float,
        batch_seconds: float,
        campaign_batch_seconds: float,
        seconds_per_row: dict[int, float] | None = None,
        fresh_seen: dict[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self.batch_seconds = batch_seconds
        self.campaign_batch_seconds = campaign_batch_seconds
        self.credit = 1.0 if share >= 1 else 0.0  # background batches owed
        self._seconds_per_row = {} if seconds_per_row is None else seconds_per_row
        self._fresh_seen = {} if fresh_seen is None else fresh_seen
        self._clock = clock
        self._fresh_last = False  # the last active batch was a fresh one

    def order(self, versions: list[queue.VersionConfig]) -> list[queue.VersionConfig]:
        active = [v for v in versions if v.state == "active"]
        others = [v for v in versions if v.state != "active"]
        return others + active if self.credit >= 1 else active + others

    def batch(self, version: queue.VersionConfig, default: int) -> tuple[int, float | None]:
        """Rows to claim from the version next (at most ``default``), and
        the fresh lane's window in seconds (None: the backlog only)."""
        active = version.state == "active"
        window = FRESH_SECONDS if active and not self._fresh_last else None
        if (
            active
            and self._clock() - self._fresh_seen.get(version.id, float("-inf")) >= FRESH_SECONDS
        ):
            return default, window  # no change coming in: full batches
        per_row = self._seconds_per_row.get(version.id)
        seconds = self.batch_seconds if active else self.campaign_batch_seconds
        if active and per_row is not None and per_row >= seconds:
            # a row costs the whole budget (a batch's fixed cost, a model
            # warming up): smaller batches cannot help, full ones amortize it
            return default, window
        size = 1 if per_row is None else max(1, min(default, round(seconds / per_row)))
        return size, window

    def record(
        self, version: queue.VersionConfig, rows: int, seconds: float, fresh: bool = False
    ) -> None:
        if rows > 0:
            measured = seconds / rows
            old = self._seconds_per_row.get(version.id)
            self._seconds_per_row[version.id] = measured if old is None else 0.5 * (old + measured)
        if version.state == "active":
            self._fresh_last = fresh
            if fresh:
                self._fresh_seen[version.id] = self._clock()
            if self.share >= 1:
                self.credit = 1.0
            elif self.share > 0:
                self.credit = min(1.0, self.credit + self.share / (1 - self.share))
            return
        if self.credit >= 1 and self.share < 1:
            self.credit -= 1


# Rows queued this recently are a fresh change's (Scheduler): long enough
# for any batch in flight to end, short enough that a backfill's own rows
# stop counting as fresh soon after its COPY.
FRESH_SECONDS = 30.0


def drain_vectorizer(
    conn: psycopg.Connection[Any],
    vectorizer_id: int,
    settings: Settings,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> DrainStats:
    """Run batches of every version of the vectorizer until nothing is
    claimable or ``deadline`` (monotonic) passes. Raises VectorizerUnavailable
    when this process cannot embed the active version."""
    stats = DrainStats()
    config = queue.vectorizer(conn, vectorizer_id)
    if config is None or config.paused:
        return stats
    # Marked as draining for its whole run, between batches too (when it
    # holds no claim), so the dispatcher does not take a pause for a free slot.
    name = conn.info.parameter_status("application_name") or ""
    queue.mark_draining(conn, vectorizer_id, name)
    try:
        return _drain(conn, config, settings, stats, deadline, progress)
    finally:
        if not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK:
            with contextlib.suppress(psycopg.Error):
                queue.mark_draining(conn, None, name)


def _drain(
    conn: psycopg.Connection[Any],
    config: queue.VectorizerConfig,
    settings: Settings,
    stats: DrainStats,
    deadline: float | None,
    progress: Progress | None,
) -> DrainStats:
    vectorizer_id = config.id
    scheduler = Scheduler(
        settings.campaign_share,
        settings.batch_seconds,
        settings.campaign_batch_seconds,
        _seconds_per_row,
        _fresh_seen,
    )
    pipes: dict[int, Pipeline] = {}
    unmerged = 0  # chunks written since this drain last merged BM25's fresh list
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            stats.more_work = True
            _maybe_compact(conn, config, stats)
            return stats
        versions = queue.versions(conn, vectorizer_id)
        ran = None
        for version in scheduler.order(versions):
            pipe = _pipe(conn, config, version, settings, pipes, stats)
            if pipe is None:
                continue
            pipe.version = version  # its state may have changed
            started = time.monotonic()
            try:
                result = pipe.run_batch(*scheduler.batch(version, pipe.batch_size))
            except (psycopg.errors.UndefinedObject, psycopg.errors.UndefinedTable):
                # dropped meanwhile (cancel_campaign, drop_version, gc_versions)
                pipes.pop(version.id, None)
                continue
            if result.claimed:
                scheduler.record(
                    version,
                    result.written + result.failed,
                    time.monotonic() - started,
                    result.fresh,
                )
                ran = (pipe, result)
                break
        if ran is None:
            if any(v.state == "building" for v in versions):
                queue.finish_campaign(conn, vectorizer_id)
            _maybe_compact(conn, config, stats)
            return stats
        pipe, result = ran
        stats.batches += 1
        stats.written += result.written
        stats.failed += result.failed
        stats.rejected += result.rejected
        stats.chunks += result.chunks
        unmerged += result.chunks
        if unmerged >= MERGE_AFTER_CHUNKS:
            queue.merge_bm25(conn, config.name, MERGE_AFTER_CHUNKS)
            unmerged = 0
        name = f"{config.name} v{pipe.version.ordinal}"
        for error in result.errors:
            log.warning("vectorizer %s: row failed: %s", name, error)
        if result.rejected:
            log.warning(
                "vectorizer %s: %d rows not written: their claim expired or was taken over "
                "(another worker's newer result stands)",
                name,
                result.rejected,
            )
        if progress is not None:
            progress(vectorizer_id, result)


def _pipe(
    conn: psycopg.Connection[Any],
    config: queue.VectorizerConfig,
    version: queue.VersionConfig,
    settings: Settings,
    pipes: dict[int, Pipeline],
    stats: DrainStats,
) -> Pipeline | None:
    """The drain's pipeline for a version; None when this process cannot
    embed it (raised for the active version: the vectorizer cannot serve)."""
    if version.id in pipes:
        return pipes[version.id]
    if version.id in stats.unavailable:
        return None
    try:
        pipes[version.id] = pipeline_for(conn, config, version, settings)
    except VectorizerUnavailable as e:
        if version.state == "active":
            raise
        stats.unavailable[version.id] = str(e)
        log.error("%s", e)
        return None
    return pipes[version.id]


# Seconds per row of each version this process embedded, and when each last
# had a fresh batch (time.monotonic), for Scheduler.
_seconds_per_row: dict[int, float] = {}
_fresh_seen: dict[int, float] = {}


# BM25 statistics are written as deltas; folding them keeps queries fast. A
# process folds a vectorizer's after writing this many chunks, or this long
# after it last did (cheap to skip, not worth doing after every small drain).
COMPACT_AFTER_CHUNKS = 2000
COMPACT_AFTER_SECONDS = 300.0
# Written chunks join BM25's fresh list: searchable at once, each costing
# every BM25 search a little until merged into the index. A drain merges
# every MERGE_AFTER_CHUNKS chunks it writes, and when it ends if at least
# MERGE_AT_END are fresh (compaction merges them all).
MERGE_AFTER_CHUNKS = 1000
MERGE_AT_END = 200
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
    elif stats.chunks:
        queue.merge_bm25(conn, config.name, MERGE_AT_END)
    _compaction[config.id] = (chunks, last)


def drain_all(
    conn: psycopg.Connection[Any],
    settings: Settings,
    progress: Progress | None = None,
    poll_seconds: float = 0.5,
) -> DrainStats:
    """Drain every vectorizer (every version) until none has pending work;
    rows waiting out a retry backoff are waited for. Vectorizers with a
    version this process cannot embed are reported and not waited for."""
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
            if s.unavailable:
                broken.add(vid)
            total.batches += s.batches
            total.written += s.written
            total.failed += s.failed
            total.rejected += s.rejected
            total.chunks += s.chunks
            total.unavailable.update(s.unavailable)
        waiting = {
            vid: p
            for vid, (p, _failed) in queue.pending(conn).items()
            if p > 0 and vid not in broken
        }
        if not waiting:
            return total
        time.sleep(poll_seconds)
