"""Semantic search from Python: embed the query with exactly the model
version of the stored vectors, then call ``autoembed.search`` in SQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    pk: dict[str, Any]
    chunk_no: int
    chunk: str


class ModelVersionMismatch(RuntimeError):
    """The model this process would embed the query with is not the one that
    embedded the stored vectors."""


def embed_query(
    conn: psycopg.Connection[Any], name: str, query: str, device: str | None = None
) -> Any:
    """The query's vector, from the vectorizer's active model version."""
    return embed_queries(conn, name, [query], device)[0]


def embed_queries(
    conn: psycopg.Connection[Any],
    name: str,
    queries: list[str],
    device: str | None = None,
    batch_size: int = 64,
) -> npt.NDArray[np.float32]:
    """The queries' vectors (one row each, in order), from the vectorizer's
    active model version, embedded ``batch_size`` at a time."""
    from autoembed.worker.embedders import load_embedder

    row = conn.execute(
        "SELECT v.model, mv.tag FROM autoembed.vectorizer v "
        "LEFT JOIN autoembed.model_version mv ON mv.id = v.active_version_id WHERE v.name = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise LookupError(f'autoembed: no vectorizer named "{name}"')
    model, active_tag = row
    embedder = load_embedder(model, device)
    tag = embedder.version().tag
    if active_tag is not None and tag != active_tag:
        raise ModelVersionMismatch(
            f"vectorizer {name!r} was embedded with {active_tag}, but this process loads {tag}"
        )
    if not queries:
        return np.zeros((0, embedder.dimensions), dtype=np.float32)
    return np.concatenate(
        [embedder.embed(queries[i : i + batch_size]) for i in range(0, len(queries), batch_size)]
    )


def search(conn: psycopg.Connection[Any], name: str, query: str, k: int = 10) -> list[Hit]:
    vector = embed_query(conn, name, query)
    rows = conn.execute(
        "SELECT rank, score, pk::text, chunk_no, chunk FROM autoembed.search(%s, %s, %s)",
        (name, vector, k),
    ).fetchall()
    return [Hit(int(r[0]), float(r[1]), json.loads(r[2]), int(r[3]), r[4]) for r in rows]
