"""One batch through the pipeline: claim → read → chunk → embed → write.

No transaction is held open while embedding: the claim and the write are
two short transactions on one session, fenced by the claim token and lease;
the claim lives only as long as that session (see
extension_sql/idempotent/050_queue.sql), so a killed worker's rows are
claimable again at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from autoembed.worker import queue
from autoembed.worker.chunking import chunk_text
from autoembed.worker.embedders import Embedder

log = logging.getLogger("autoembed.worker")


class VectorizerUnavailable(RuntimeError):
    """The vectorizer cannot be processed now (dropped, paused, model won't load)."""


@dataclass
class BatchResult:
    claimed: int = 0
    written: int = 0
    requeued: int = 0
    rejected: int = 0
    failed: int = 0
    chunks: int = 0
    errors: list[str] = field(default_factory=list)
    fresh: bool = False  # a fresh batch (rows queued moments ago)


@dataclass
class Prepared:
    keys: list[str]
    chunk_item: list[int]
    chunk_no: list[int]
    chunks: list[str]


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:4000]


class Pipeline:
    """Processes batches of one version of a vectorizer with one embedder on
    one connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        config: queue.VectorizerConfig,
        version: queue.VersionConfig,
        embedder: Embedder,
        model_version_id: int,
        batch_size: int,
        lease_seconds: float,
    ) -> None:
        if embedder.dimensions != version.dimensions:
            raise VectorizerUnavailable(
                f"model {version.model!r} makes {embedder.dimensions}-dimensional vectors but "
                f"version {version.ordinal} of vectorizer {config.name!r} stores "
                f"{version.dimensions}"
            )
        self.conn = conn
        self.config = config
        self.version = version
        self.embedder = embedder
        self.model_version_id = model_version_id
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        limit = min(config.chunk_tokens or embedder.max_seq_length, embedder.max_seq_length)
        self.token_limit = limit  # what the model may see, special tokens included
        self.max_tokens = max(limit - embedder.special_tokens, 1)
        self.overlap = min(config.chunk_overlap, self.max_tokens // 2)

    def chunk(self, document: str | None) -> list[str]:
        if document is None or not document.strip():
            return []
        spans = self.embedder.token_spans(document)
        return [
            c.text
            for c in chunk_text(
                document,
                spans,
                self.max_tokens,
                self.overlap,
                self.embedder.count_tokens,
                self.token_limit,
            )
        ]

    def run_batch(
        self, batch_size: int | None = None, fresh_seconds: float | None = None
    ) -> BatchResult:
        """Claim one batch (of ``batch_size`` rows, default the pipeline's:
        the rows queued within ``fresh_seconds`` if any, else the longest
        waiting) and see it through; an empty result means no work. The
        claim lives as long as this connection's session, and ends with the
        batch."""
        token = queue.new_token()
        try:
            claimed = queue.claim(
                self.conn,
                self.version.id,
                batch_size or self.batch_size,
                self.lease_seconds,
                token,
                fresh_seconds,
            )
        except BaseException:
            self._end_claim(token)
            raise
        if not claimed:
            return BatchResult()
        try:
            return self._see_through(token, claimed)
        finally:
            self._end_claim(token)

    def _end_claim(self, token: uuid.UUID) -> None:
        if not self.conn.closed:
            _quietly(queue.end_claim, self.conn, token)

    def _see_through(self, token: uuid.UUID, claimed: list[queue.Claimed]) -> BatchResult:
        result = BatchResult(claimed=len(claimed), fresh=claimed[0].fresh)
        try:
            prepared, failed = self._chunk_all(claimed)
            vectors = self._embed(prepared, token, failed)
        except BaseException:
            # Our own failure (lost connection, shutdown): give the rows back
            # without spending an attempt, if the database still answers.
            _quietly(queue.release, self.conn, self.version.id, token)
            raise
        if failed:
            keys = list(failed)
            queue.fail(self.conn, self.version.id, token, keys, [failed[k] for k in keys])
            result.failed = len(keys)
            result.errors = sorted(set(failed.values()))[:5]
            prepared, vectors = _without(prepared, vectors, set(keys))
        ready = [v for v in vectors if v is not None]
        assert len(ready) == len(prepared.chunks), "every kept chunk has a vector"
        try:
            done = self._complete(token, prepared, ready)
        except psycopg.Error as e:
            if _connection_lost(self.conn, e):
                raise
            # The database refused to store something (e.g. a statement
            # timeout on one huge row): write row by row, so only the rows
            # it refuses fail, each with the database's error.
            log.warning(
                "vectorizer %s: writing a batch failed (%s); writing row by row",
                self.config.name,
                _error_text(e),
            )
            done = self._complete_one_by_one(token, prepared, ready, result)
        result.written = done.written
        result.requeued = done.requeued
        result.rejected = done.rejected
        result.chunks = len(prepared.chunks)
        return result

    def _complete(
        self, token: uuid.UUID, prepared: Prepared, vectors: list[npt.NDArray[np.float32]]
    ) -> queue.Completion:
        return queue.complete(
            self.conn,
            self.version.id,
            token,
            self.model_version_id,
            prepared.keys,
            prepared.chunk_item,
            prepared.chunk_no,
            prepared.chunks,
            vectors,
        )

    def _complete_one_by_one(
        self,
        token: uuid.UUID,
        prepared: Prepared,
        vectors: list[npt.NDArray[np.float32]],
        result: BatchResult,
    ) -> queue.Completion:
        written = requeued = rejected = 0
        failed: dict[str, str] = {}
        for item, key in enumerate(prepared.keys):
            own = [c for c, i in enumerate(prepared.chunk_item) if i == item]
            one = Prepared(
                [key],
                [0] * len(own),
                [prepared.chunk_no[c] for c in own],
                [prepared.chunks[c] for c in own],
            )
            try:
                done = self._complete(token, one, [vectors[c] for c in own])
            except psycopg.Error as e:
                if _connection_lost(self.conn, e):
                    raise
                failed[key] = "writing failed: " + _error_text(e)
                continue
            written += done.written
            requeued += done.requeued
            rejected += done.rejected
        if failed:
            keys = list(failed)
            queue.fail(self.conn, self.version.id, token, keys, [failed[k] for k in keys])
            result.failed += len(keys)
            result.errors = sorted(set(result.errors) | set(failed.values()))[:5]
        return queue.Completion(written, requeued, rejected)

    def _chunk_all(self, claimed: list[queue.Claimed]) -> tuple[Prepared, dict[str, str]]:
        prepared = Prepared([], [], [], [])
        failed: dict[str, str] = {}
        for item in claimed:
            try:
                pieces = self.chunk(item.document)
            except Exception as e:
                failed[item.key] = "chunking failed: " + _error_text(e)
                continue
            idx = len(prepared.keys)
            prepared.keys.append(item.key)
            for n, piece in enumerate(pieces):
                prepared.chunk_item.append(idx)
                prepared.chunk_no.append(n)
                prepared.chunks.append(piece)
        return prepared, failed

    def _embed(
        self, prepared: Prepared, token: uuid.UUID, failed: dict[str, str]
    ) -> list[npt.NDArray[np.float32] | None]:
        """Vectors for every chunk, None for chunks of rows that failed (which
        are added to ``failed``). A batch that raises is retried row by row so
        one bad row cannot fail its neighbours."""
        vectors: list[npt.NDArray[np.float32] | None] = [None] * len(prepared.chunks)
        renewed = time.monotonic()
        for start in range(0, len(prepared.chunks), EMBED_GROUP):
            if time.monotonic() - renewed > self.lease_seconds / 3:
                queue.extend_lease(self.conn, self.version.id, token, self.lease_seconds)
                renewed = time.monotonic()
            stop = min(start + EMBED_GROUP, len(prepared.chunks))
            try:
                out = self.embedder.embed(prepared.chunks[start:stop])
                self._check(out, stop - start)
                vectors[start:stop] = list(out)
                continue
            except Exception as e:
                log.warning(
                    "vectorizer %s: a batch failed to embed (%s); retrying row by row",
                    self.config.name,
                    _error_text(e),
                )
            for item in sorted(set(prepared.chunk_item[start:stop])):
                idx = [i for i in range(start, stop) if prepared.chunk_item[i] == item]
                key = prepared.keys[item]
                if key in failed:
                    continue
                try:
                    out = self.embedder.embed([prepared.chunks[i] for i in idx])
                    self._check(out, len(idx))
                except Exception as e:
                    failed[key] = _error_text(e)
                    continue
                for i, vec in zip(idx, out, strict=True):
                    vectors[i] = vec
        # A row whose chunks straddle groups may have failed in a later group.
        for i, item in enumerate(prepared.chunk_item):
            if prepared.keys[item] in failed:
                vectors[i] = None
        return vectors

    def _check(self, out: npt.NDArray[np.float32], n: int) -> None:
        if out.shape != (n, self.version.dimensions):
            raise ValueError(
                f"embedder returned shape {out.shape}, expected ({n}, {self.version.dimensions})"
            )
        if not np.isfinite(out).all():
            raise ValueError("embedder returned NaN or infinite values")


# Chunks per embed call: small enough to renew the lease between calls on
# long documents, large enough to keep a GPU busy.
EMBED_GROUP = 256


def _without(
    prepared: Prepared, vectors: list[npt.NDArray[np.float32] | None], drop: set[str]
) -> tuple[Prepared, list[npt.NDArray[np.float32] | None]]:
    kept = [i for i, k in enumerate(prepared.keys) if k not in drop]
    new_index = {old: new for new, old in enumerate(kept)}
    out = Prepared([prepared.keys[i] for i in kept], [], [], [])
    out_vectors: list[npt.NDArray[np.float32] | None] = []
    for c, item in enumerate(prepared.chunk_item):
        if item in new_index:
            out.chunk_item.append(new_index[item])
            out.chunk_no.append(prepared.chunk_no[c])
            out.chunks.append(prepared.chunks[c])
            out_vectors.append(vectors[c])
    return out, out_vectors


def _connection_lost(conn: psycopg.Connection[Any], e: psycopg.Error) -> bool:
    """The error is the connection's (lost, server shutting down), not the data's."""
    state = e.sqlstate or ""
    return conn.closed or not state or state.startswith("08") or state.startswith("57P")


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # the original error matters more
        log.debug("ignored while recovering: %s", e)
