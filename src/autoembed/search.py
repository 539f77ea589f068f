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
    conn: psycopg.Connection[Any],
    name: str,
    query: str,
    device: str | None = None,
    version: str | None = None,
) -> Any:
    """The query's vector, by the model version of the vectorizer's active
    version (or of ``version``: a number, model or tag)."""
    return embed_queries(conn, name, [query], device, version=version)[0]


def version_model(
    conn: psycopg.Connection[Any], name: str, version: str | None = None
) -> tuple[str, str | None, int]:
    """(model, model version tag or None, number) of a vectorizer's version
    (the active one by default)."""
    try:
        row = conn.execute(
            "SELECT ver.model, mv.tag, ver.ordinal "
            "FROM autoembed._version(autoembed._vectorizer(%s), %s) AS ver "
            "LEFT JOIN autoembed.model_version AS mv ON mv.id = ver.model_version_id",
            (name, version),
        ).fetchone()
    except psycopg.errors.UndefinedObject as e:  # no such vectorizer or version
        raise LookupError(e.diag.message_primary or str(e)) from None
    assert row is not None
    return str(row[0]), row[1], int(row[2])


def embed_queries(
    conn: psycopg.Connection[Any],
    name: str,
    queries: list[str],
    device: str | None = None,
    batch_size: int = 64,
    version: str | None = None,
) -> npt.NDArray[np.float32]:
    """The queries' vectors (one row each, in order), by the model version of
    the vectorizer's active version (or of ``version``), embedded
    ``batch_size`` at a time."""
    from autoembed.worker.embedders import load_embedder

    model, stored_tag, number = version_model(conn, name, version)
    embedder = load_embedder(model, device)
    tag = embedder.version().tag
    if stored_tag is not None and tag != stored_tag:
        raise ModelVersionMismatch(
            f"version {number} of vectorizer {name!r} was embedded with {stored_tag}, "
            f"but this process loads {tag}"
        )
    if not queries:
        return np.zeros((0, embedder.dimensions), dtype=np.float32)
    return np.concatenate(
        [embedder.embed(queries[i : i + batch_size]) for i in range(0, len(queries), batch_size)]
    )


def search(
    conn: psycopg.Connection[Any], name: str, query: str, k: int = 10, version: str | None = None
) -> list[Hit]:
    """Embed ``query`` in this process and search the version that model made
    (the active one, or ``version``)."""
    number = str(version_model(conn, name, version)[2])
    vector = embed_query(conn, name, query, version=number)
    rows = conn.execute(
        "SELECT rank, score, pk::text, chunk_no, chunk "
        "FROM autoembed.search(%s, %s, %s, version => %s)",
        (name, vector, k, number),
    ).fetchall()
    return [Hit(int(r[0]), float(r[1]), json.loads(r[2]), int(r[3]), r[4]) for r in rows]
