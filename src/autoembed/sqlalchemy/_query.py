"""Query embeddings for searches from SQLAlchemy: embedded in this process
when it loads exactly the model version of the stored vectors, else by the
database's text-query path (``autoembed.embed_query``, answered by a worker).
Never by another model version."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger("autoembed.sqlalchemy")

Bind = Session | sa.Connection


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


def embed_query(bind: Bind, name: str, query: str, version: str | None = None) -> QueryEmbedding:
    """Embed ``query`` for vectorizer ``name`` (see the module docstring), by
    its active version's model, or by ``version``'s (a number, model or tag)."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    if (
        conn.execute(
            sa.text("SELECT 1 FROM autoembed.vectorizer WHERE name = :name").bindparams(
                sa.bindparam("name", name, type_=sa.Text)
            )
        ).first()
        is None
    ):
        raise LookupError(f'autoembed: no vectorizer named "{name}"')
    model, active_tag, number = conn.execute(
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
    # Imported here: only a search with a real model loads torch.
    from autoembed.worker.embedders import ModelLoadError, load_embedder

    try:
        embedder = load_embedder(model)
    except ModelLoadError as e:
        log.info("model %r does not load here (%s); asking the database", model, e)
    else:
        tag = embedder.version().tag
        if active_tag is None or tag == active_tag:
            vector = [float(x) for x in embedder.embed([query])[0]]
            return QueryEmbedding(query, vector, tag, "process")
        log.info("this process loads %s, the vectors are %s; asking the database", tag, active_tag)
    text = conn.execute(
        sa.text("SELECT CAST(autoembed.embed_query(:name, :query, :version) AS text)").bindparams(
            sa.bindparam("name", name, type_=sa.Text),
            sa.bindparam("query", query, type_=sa.Text),
            sa.bindparam("version", str(number), type_=sa.Text),
        )
    ).scalar_one()
    return QueryEmbedding(query, _parse_vector(text), active_tag, "database")


async def aembed_query(
    session: AsyncSession, name: str, query: str, version: str | None = None
) -> QueryEmbedding:
    """``embed_query`` for an AsyncSession."""
    return await session.run_sync(embed_query, name, query, version)


def _parse_vector(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]
