"""Semantic search from Python: embed the query with exactly the model
version of the stored vectors, then call ``autoembed.search`` in SQL."""

from __future__ import annotations

import json
from collections.abc import Callable
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
    (the active one by default); LookupError when there is no such vectorizer
    or version."""
    try:
        found = resolve_version(conn, name, version)
    except psycopg.errors.UndefinedObject as e:  # no such vectorizer or version
        raise LookupError(e.diag.message_primary or str(e)) from None
    return found.model, found.tag, found.number


@dataclass(frozen=True)
class Version:
    model: str
    tag: str | None  # of the model version that embedded it; None before its first row
    number: int
    model_version_id: int | None


def resolve_version(
    conn: psycopg.Connection[Any], name: str, version: str | None = None
) -> Version:
    """A vectorizer's version (the active one by default), as SQL names it;
    the database's error (with its hint) when there is none."""
    row = conn.execute(
        "SELECT ver.model, mv.tag, ver.ordinal, ver.model_version_id "
        "FROM autoembed._version(autoembed._vectorizer(%s), %s) AS ver "
        "LEFT JOIN autoembed.model_version AS mv ON mv.id = ver.model_version_id",
        (name, version),
    ).fetchone()
    assert row is not None
    return Version(str(row[0]), row[1], int(row[2]), row[3])


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
    return _hits(
        conn.execute(
            f"SELECT {_COLUMNS} FROM autoembed.search(%s, %s, %s, version => %s)",
            (name, vector, k, number),
        ).fetchall()
    )


_COLUMNS = "rank, score, pk::text, chunk_no, chunk"


def _hits(rows: list[tuple[Any, ...]]) -> list[Hit]:
    return [Hit(int(r[0]), float(r[1]), json.loads(r[2]), int(r[3]), r[4]) for r in rows]


# How long ``search_anywhere`` lets a worker take to embed the query.
WORKER_TIMEOUT = "2s"


def search_by_worker(
    conn: psycopg.Connection[Any],
    name: str,
    query: str,
    k: int = 10,
    version: str | None = None,
    timeout: str = WORKER_TIMEOUT,
) -> list[Hit]:
    """``autoembed.search(name, 'text')`` in SQL: the query embedded by a
    worker's query service (or found in the query cache), waiting at most
    ``timeout`` (an interval) for the worker."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_catalog.set_config('autoembed.query_timeout', %s, true)", (timeout,)
        )
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM autoembed.search(%s, %s::text, %s, version => %s)",
            (name, query, k, version),
        ).fetchall()
    return _hits(rows)


def worker_answers(conn: psycopg.Connection[Any], version: Version, query: str) -> str | None:
    """None when SQL can embed ``query`` for ``version`` now (it is cached,
    or a query service is connected to this database); else why not."""
    from autoembed.worker.query_service import APPLICATION_NAME

    if version.model_version_id is None:
        return None  # nothing embedded yet: nothing to search, nothing to embed
    row = conn.execute(
        "SELECT (SELECT c.embedding IS NOT NULL "
        "        FROM autoembed._cached_query_embedding(%s, %s) AS c), "
        "       EXISTS (SELECT FROM pg_catalog.pg_stat_activity "
        "               WHERE datname = pg_catalog.current_database() AND application_name = %s)",
        (version.model_version_id, query, APPLICATION_NAME),
    ).fetchone()
    if row is not None and (row[0] or row[1]):
        return None
    return "no worker's query service is connected to this database"


# What embed_query raises when no worker answers (or the loopback that asks
# one is not set up): the CLI then embeds the query itself.
_NO_WORKER = (
    psycopg.errors.ObjectNotInPrerequisiteState,
    psycopg.errors.ExternalRoutineException,
    psycopg.errors.ConnectionException,
    psycopg.errors.SqlclientUnableToEstablishSqlconnection,
)


def search_anywhere(
    conn: psycopg.Connection[Any],
    name: str,
    query: str,
    k: int = 10,
    version: str | None = None,
    note: Callable[[str], None] | None = None,
) -> list[Hit]:
    """Search with a text query embedded by a running worker through SQL
    (milliseconds) when one answers, else in this process (loads the model:
    seconds), calling ``note(why)`` first."""
    found = resolve_version(conn, name, version)
    number = str(found.number)
    # A role that may not search learns it now, not after loading a model.
    conn.execute(
        "SELECT autoembed._check_search_privilege(v, autoembed._version(v, %s), 'semantic') "
        "FROM autoembed._vectorizer(%s) AS v",
        (number, name),
    )
    why = worker_answers(conn, found, query)
    if why is None:
        try:
            return search_by_worker(conn, name, query, k, number)
        except _NO_WORKER as e:
            why = (e.diag.message_primary or str(e)).removeprefix("autoembed: ")
    if note is not None:
        note(why)
    return search(conn, name, query, k, number)
