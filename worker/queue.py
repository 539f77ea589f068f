"""Thin calls to the SQL queue functions (extension_sql/idempotent/050_queue.sql).

Keys travel as JSON text exactly as the database produced them, so keys of
any type (numeric, timestamps, composite) come back byte-for-byte.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.string import TextLoader

from autoembed.worker.versions import ModelVersion


@dataclass(frozen=True)
class VectorizerConfig:
    id: int
    name: str
    chunk_tokens: int | None
    chunk_overlap: int
    paused: bool


@dataclass(frozen=True)
class VersionConfig:
    """One version of a vectorizer: its model, and the exact model version
    bound to it (None until a worker first writes to it)."""

    id: int
    ordinal: int
    model: str
    dimensions: int
    state: str  # building, ready, active, retired
    model_version_id: int | None


@dataclass(frozen=True)
class Claimed:
    key: str  # the row's primary key as a JSON object, verbatim
    document: str | None
    fresh: bool = False  # claimed in a fresh batch (claim_batch in 050_queue.sql)


@dataclass(frozen=True)
class Completion:
    written: int
    requeued: int
    rejected: int


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Load jsonb as text on this connection (keys stay verbatim)."""
    conn.adapters.register_loader("jsonb", TextLoader)


def vectorizer(conn: psycopg.Connection[Any], vectorizer_id: int) -> VectorizerConfig | None:
    row = conn.execute(
        "SELECT id, name, chunk_tokens, chunk_overlap, paused "
        "FROM autoembed.vectorizer WHERE id = %s",
        (vectorizer_id,),
    ).fetchone()
    return None if row is None else VectorizerConfig(*row)


def versions(conn: psycopg.Connection[Any], vectorizer_id: int) -> list[VersionConfig]:
    """The vectorizer's versions, the active one first."""
    return [
        VersionConfig(*r)
        for r in conn.execute(
            "SELECT id, ordinal, model, dimensions, state, model_version_id "
            "FROM autoembed.vectorizer_version WHERE vectorizer_id = %s "
            "ORDER BY state <> 'active', state <> 'building', ordinal",
            (vectorizer_id,),
        )
    ]


def vectorizer_ids(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM autoembed.vectorizer ORDER BY id")]


def register_version(conn: psycopg.Connection[Any], v: ModelVersion) -> int:
    row = conn.execute(
        "SELECT autoembed.register_model_version(%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            v.model,
            v.weights_digest,
            v.dimensions,
            v.pooling,
            v.normalized,
            v.dtype,
            v.max_seq_length,
            v.tag,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def new_token() -> uuid.UUID:
    """A claim token tying its claim to the claiming session: a random UUID
    of version 8 (see "Claims and the sessions that hold them" in
    050_queue.sql). End each such claim with ``end_claim``."""
    random = uuid.uuid4().int & ~(0xF << 76)
    return uuid.UUID(int=random | (0x8 << 76))


def claim(
    conn: psycopg.Connection[Any],
    version_id: int,
    batch_size: int,
    lease_seconds: float,
    token: uuid.UUID,
    fresh_seconds: float | None = None,
) -> list[Claimed]:
    """Claim up to ``batch_size`` rows: those queued within the last
    ``fresh_seconds`` if there are any (None: none are), else the rows
    waiting longest."""
    rows = conn.execute(
        "SELECT pk, document, fresh FROM autoembed.claim_batch("
        "%s, %s, make_interval(secs => %s), %s, make_interval(secs => %s))",
        (version_id, batch_size, lease_seconds, token, fresh_seconds),
    ).fetchall()
    return [Claimed(key, doc, fresh) for key, doc, fresh in rows]


def _items(keys: list[str]) -> str:
    return "[" + ",".join(keys) + "]"


def complete(
    conn: psycopg.Connection[Any],
    version_id: int,
    token: uuid.UUID,
    model_version_id: int,
    keys: list[str],
    chunk_item: list[int],
    chunk_no: list[int],
    chunks: list[str],
    embeddings: list[npt.NDArray[np.float32]],
) -> Completion:
    row = conn.execute(
        "SELECT written, requeued, rejected FROM autoembed.complete_batch("
        # the vectors in binary: their text form costs the worker ~0.2 ms a
        # chunk to write and the server as much to parse
        "%s, %s, %s, %s::jsonb, %s::int[], %s::int[], %s::text[], %b)",
        (
            version_id,
            token,
            model_version_id,
            _items(keys),
            chunk_item,
            chunk_no,
            chunks,
            embeddings,
        ),
    ).fetchone()
    assert row is not None
    return Completion(*row)


def fail(
    conn: psycopg.Connection[Any],
    version_id: int,
    token: uuid.UUID,
    keys: list[str],
    errors: list[str],
) -> int:
    row = conn.execute(
        "SELECT autoembed.fail_items(%s, %s, %s::jsonb, %s::text[])",
        (version_id, token, _items(keys), errors),
    ).fetchone()
    return int(row[0]) if row else 0


def extend_lease(
    conn: psycopg.Connection[Any], version_id: int, token: uuid.UUID, lease_seconds: float
) -> int:
    row = conn.execute(
        "SELECT autoembed.extend_lease(%s, %s, make_interval(secs => %s))",
        (version_id, token, lease_seconds),
    ).fetchone()
    return int(row[0]) if row else 0


def end_claim(conn: psycopg.Connection[Any], token: uuid.UUID) -> bool:
    """End a claim: this session stops vouching for it, so rows it still
    holds are claimable at once (the claim's lock, 050_queue.sql)."""
    row = conn.execute("SELECT autoembed.end_claim(%s)", (token,)).fetchone()
    return bool(row and row[0])


def release(conn: psycopg.Connection[Any], version_id: int, token: uuid.UUID) -> int:
    row = conn.execute("SELECT autoembed.release_claim(%s, %s)", (version_id, token)).fetchone()
    return int(row[0]) if row else 0


def report_error(conn: psycopg.Connection[Any], version_id: int, error: str) -> None:
    conn.execute("SELECT autoembed.report_version_error(%s, %s)", (version_id, error))


def finish_campaign(conn: psycopg.Connection[Any], vectorizer_id: int) -> bool:
    """Finish the vectorizer's campaign if nothing is left in its queue."""
    row = conn.execute("SELECT autoembed.finish_campaign(%s)", (vectorizer_id,)).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class Work:
    vectorizer_id: int
    claimable: int
    live_claims: int
    drains_started: int
    pending: int = 0
    failed: int = 0


def work_summary(conn: psycopg.Connection[Any], only: set[int] | None = None) -> list[Work]:
    """Work per vectorizer (not paused), summed over its versions."""
    return [
        Work(*r)
        for r in conn.execute(
            "SELECT vectorizer_id, claimable, live_claims, drains_started, pending, failed "
            "FROM autoembed.work_summary(%s::int[])",
            (None if only is None else sorted(only),),
        )
    ]


def vectorizers_with_changes(conn: psycopg.Connection[Any]) -> set[int]:
    return {r[0] for r in conn.execute("SELECT autoembed.vectorizers_with_changes()")}


def worker_sessions(conn: psycopg.Connection[Any], application: str) -> set[int]:
    """Backend pids of this database's sessions whose application_name starts
    with ``application`` (pid and application_name are visible to every role)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT pid FROM pg_catalog.pg_stat_activity "
            "WHERE datname = pg_catalog.current_database() "
            "AND pg_catalog.starts_with(application_name, %s)",
            (application,),
        )
    }


# A session draining a vectorizer says so in its application_name (visible
# to every role, like its pid): "<name> [drain <vectorizer id>]".
DRAIN_MARK = " [drain {}]"


def mark_draining(conn: psycopg.Connection[Any], vectorizer_id: int | None, name: str) -> None:
    """Set the session's application_name to ``name``, marked as draining the
    vectorizer (None: unmarked)."""
    marked = name if vectorizer_id is None else name + DRAIN_MARK.format(vectorizer_id)
    conn.execute("SELECT pg_catalog.set_config('application_name', %s, false)", (marked,))


def running_drains(conn: psycopg.Connection[Any]) -> dict[int, int]:
    """vectorizer id -> how many sessions of this database are draining it
    now, between two batches too (when they hold no claim)."""
    return {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT substring(application_name FROM ' \\[drain ([0-9]+)\\]$')::int, count(*) "
            "FROM pg_catalog.pg_stat_activity "
            "WHERE datname = pg_catalog.current_database() "
            "AND application_name ~ ' \\[drain [0-9]+\\]$' GROUP BY 1"
        )
    }


def compact_stats(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT autoembed.compact_stats(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


def merge_bm25(conn: psycopg.Connection[Any], name: str, min_chunks: int) -> int:
    """Merge the vectorizer's fresh BM25 chunks into its index when there
    are at least min_chunks (064_bm25_index.sql); 0 if another session is."""
    row = conn.execute("SELECT autoembed.merge_bm25(%s, %s)", (name, min_chunks)).fetchone()
    return int(row[0]) if row else 0


def drain_started(conn: psycopg.Connection[Any], vectorizer_id: int) -> None:
    conn.execute("SELECT autoembed.drain_started(%s)", (vectorizer_id,))


def pending(conn: psycopg.Connection[Any]) -> dict[int, tuple[int, int]]:
    """vectorizer id -> (pending, failed), over all its versions, for every
    vectorizer that is not paused."""
    return {w.vectorizer_id: (w.pending, w.failed) for w in work_summary(conn)}
