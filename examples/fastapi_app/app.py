"""A small FastAPI app: articles in PostgreSQL, embedded by autoembed, and a
hybrid search endpoint through the ORM.

    AUTOEMBED_DATABASE_URL=postgresql://... uvicorn examples.fastapi_app.app:app
    autoembed worker --db postgresql://...      # embeds rows as they change
    curl 'localhost:8000/search?q=waterproof+jacket'
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from autoembed.db import sqlalchemy_url
from autoembed.sqlalchemy import Vectorizer

MODEL = os.environ.get("AUTOEMBED_EXAMPLE_MODEL", "sentence-transformers/all-MiniLM-L6-v2")


class Base(DeclarativeBase):
    pass


class Article(Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str]
    embeddings = Vectorizer(columns=["title", "body"], model=MODEL)


def create_app(url: str) -> FastAPI:
    engine = sa.create_engine(sqlalchemy_url(url))
    app = FastAPI(title="autoembed example")

    def session() -> Iterator[Session]:
        with Session(engine) as s:
            yield s

    @app.get("/search")
    def search(q: str, k: int = 5, db: Session = Depends(session)) -> list[dict[str, Any]]:  # noqa: B008
        query = Article.embeddings.embed_query(db, q)
        rows = db.execute(Article.embeddings.hybrid(query, k=k).select()).all()
        return [
            {"id": r.Article.id, "title": r.Article.title, "score": r.score, "rank": r.rank}
            for r in rows
        ]

    return app


app = (
    create_app(os.environ["AUTOEMBED_DATABASE_URL"])
    if "AUTOEMBED_DATABASE_URL" in os.environ
    else None
)
