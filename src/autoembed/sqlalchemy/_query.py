"""Query embeddings for searches from SQLAlchemy, never by another model
version than the stored vectors':

- ``database`` (the default, AUTOEMBED_QUERY_EMBEDDING): asked of the
  database (``autoembed.embed_query``), which a worker's query service
  answers, from its cache when the text was asked before. No model in the
  application's processes: a web process stays small and starts at once.
- ``process``: embedded in this process when it loads exactly the model
  version of the stored vectors (else asked of the database), on
  AUTOEMBED_QUERY_THREADS CPU threads (1). Async callers get it from a
  one-thread pool, so the event loop never runs the model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from autoembed.settings import Settings

if TYPE_CHECKING:
    from autoembed.worker.embedders import Embedder

log = logging.getLogger("autoembed.sqlalchemy")

Bind = Session | sa.Connection
EmbedIn = Literal["database", "process"]

# Models run one query at a time, on a thread of their own: an async caller
# awaits it, and a burst of queries queues here rather than on the loop.
_pool: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class QueryEmbedding:
    """A query text and its embedding by ``version`` (a model version tag,
    None when the vectorizer has embedded nothing yet). Searches with it use
    the vectorizer version of that tag, so a model change between embedding
    the query and searching can never mix two models."""

    text: str
    vector: Sequence[float]
    version: str | None
    embedded_by: Literal["process", "database"]


@dataclass(frozen=True)
class _Target:
    """The version a query is embedded for: its model, the tag of its
    stored vectors (None: none yet) and its number."""

    model: str
    tag: str | None
    number: int


def embed_query(
    bind: Bind,
    name: str,
    query: str,
    version: str | None = None,
    *,
    embed_in: EmbedIn | None = None,
) -> QueryEmbedding:
    """Embed ``query`` for vectorizer ``name`` by its active version's model,
    or by ``version``'s (a number, model or tag); where: see the module
    docstring (``embed_in`` overrides AUTOEMBED_QUERY_EMBEDDING)."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    target = _target(conn, name, version)
    if _where(embed_in) == "process" and (here := _in_process(target, query)) is not None:
        return here
    return _from_database(target, query, conn.execute(*_database_call(name, query, target)))


async def aembed_query(
    session: AsyncSession,
    name: str,
    query: str,
    version: str | None = None,
    *,
    embed_in: EmbedIn | None = None,
) -> QueryEmbedding:
    """``embed_query`` for an AsyncSession: the database is awaited, and a
    model in this process runs on the query thread, never on the loop."""
    target = await session.run_sync(lambda s: _target(s.connection(), name, version))
    if _where(embed_in) == "process":
        loop = asyncio.get_running_loop()
        here = await loop.run_in_executor(_query_pool(), _in_process, target, query)
        if here is not None:
            return here
    return _from_database(
        target, query, await session.execute(*_database_call(name, query, target))
    )


def _where(embed_in: EmbedIn | None) -> str:
    if embed_in is None:
        return Settings.from_env().query_embedding
    if embed_in not in ("database", "process"):
        raise ValueError(f"embed_in must be 'database' or 'process', got {embed_in!r}")
    return embed_in


def _target(conn: sa.Connection, name: str, version: str | None) -> _Target:
    if (
        conn.execute(
            sa.text("SELECT 1 FROM autoembed.vectorizer WHERE name = :name").bindparams(
                sa.bindparam("name", name, type_=sa.Text)
            )
        ).first()
        is None
    ):
        raise LookupError(f'autoembed: no vectorizer named "{name}"')
    model, tag, number = conn.execute(
        sa.text(
            "SELECT ver.model, mv.tag, ver.ordinal "
            "FROM autoembed._version(autoembed._vectorizer(CAST(:name AS text)), "
            "CAST(:version AS text)) AS ver "
            "LEFT JOIN autoembed.model_version AS mv ON mv.id = ver.model_version_id"
        ).bindparams(
            sa.bindparam("name", name, type_=sa.Text),
            sa.bindparam("version", version, type_=sa.Text),
        )
    ).one()
    return _Target(str(model), tag, int(number))


def _local_embedder(target: _Target) -> Embedder | None:
    """The model in this process, if it loads and is exactly the stored
    vectors' version (loading it the first time takes seconds)."""
    # Imported here: only a search embedded in this process loads torch.
    from autoembed.worker.embedders import ModelLoadError, limit_cpu_threads, load_embedder

    try:
        embedder = load_embedder(target.model)
    except ModelLoadError as e:
        log.info("model %r does not load here (%s); asking the database", target.model, e)
        return None
    tag = embedder.version().tag
    if target.tag is not None and tag != target.tag:
        log.info("this process loads %s, the vectors are %s; asking the database", tag, target.tag)
        return None
    limit_cpu_threads(embedder, Settings.from_env().query_threads)
    return embedder


def _in_process(target: _Target, query: str) -> QueryEmbedding | None:
    """The query embedded here, or None when this process may not (see
    _local_embedder)."""
    embedder = _local_embedder(target)
    if embedder is None:
        return None
    vector = [float(x) for x in embedder.embed([query])[0]]
    return QueryEmbedding(query, vector, embedder.version().tag, "process")


def _database_call(name: str, query: str, target: _Target) -> tuple[Any, ...]:
    return (
        sa.text("SELECT CAST(autoembed.embed_query(:name, :query, :version) AS text)").bindparams(
            sa.bindparam("name", name, type_=sa.Text),
            sa.bindparam("query", query, type_=sa.Text),
            sa.bindparam("version", str(target.number), type_=sa.Text),
        ),
    )


def _from_database(target: _Target, query: str, result: Any) -> QueryEmbedding:
    text = result.scalar_one()
    return QueryEmbedding(query, _parse_vector(text), target.tag, "database")


def _query_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autoembed-query")
    return _pool


def _parse_vector(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]
