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
    None when the vectorizer has embedded nothing yet)."""

    text: str
    vector: Sequence[float]
    version: str | None
    embedded_by: Literal["process", "database"]


def embed_query(bind: Bind, name: str, query: str) -> QueryEmbedding:
    """Embed ``query`` for vectorizer ``name`` (see the module docstring)."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    row = conn.execute(
        sa.text(
            "SELECT ver.model, mv.tag FROM autoembed.vectorizer AS v "
            "JOIN autoembed.vectorizer_version AS ver ON ver.vectorizer_id = v.id "
            "AND ver.state = 'active' "
            "LEFT JOIN autoembed.model_version AS mv ON mv.id = ver.model_version_id "
            "WHERE v.name = :name"
        ).bindparams(sa.bindparam("name", name, type_=sa.Text))
    ).one_or_none()
    if row is None:
        raise LookupError(f'autoembed: no vectorizer named "{name}"')
    model, active_tag = row
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
        sa.text("SELECT CAST(autoembed.embed_query(:name, :query) AS text)").bindparams(
            sa.bindparam("name", name, type_=sa.Text),
            sa.bindparam("query", query, type_=sa.Text),
        )
    ).scalar_one()
    return QueryEmbedding(query, _parse_vector(text), active_tag, "database")


async def aembed_query(session: AsyncSession, name: str, query: str) -> QueryEmbedding:
    """``embed_query`` for an AsyncSession."""
    return await session.run_sync(embed_query, name, query)


def _parse_vector(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]
