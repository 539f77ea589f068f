"""A small async FastAPI app on autoembed: articles in PostgreSQL, embedded by
a worker as they change; create (read-your-writes), hybrid search with a
filter and pages, and "more like this", through the SQLAlchemy ORM.

Development, with nothing to install beyond the package (the worker starts
its own broker; the app holds no model: queries are embedded by the worker):

    autoembed install --db postgresql://localhost/mydb
    autoembed dev --db postgresql://localhost/mydb &
    AUTOEMBED_DATABASE_URL=postgresql://localhost/mydb uvicorn examples.fastapi_app.app:app
    curl -X POST 'localhost:8000/articles?wait=true' -H 'content-type: application/json' \\
         -d '{"id": 1, "title": "Rain gear", "body": "A waterproof jacket", "category": "outdoor"}'
    curl 'localhost:8000/search?q=waterproof+jacket&category=outdoor&page=1'
    curl 'localhost:8000/articles/1/similar'

Every setting is the CLI's environment variable (AUTOEMBED_DATABASE_URL, ...);
AUTOEMBED_EXAMPLE_MODEL picks the model (the tests use a fast one).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from autoembed.db import sqlalchemy_url
from autoembed.sqlalchemy import SearchHits, Vectorizer

MODEL = os.environ.get("AUTOEMBED_EXAMPLE_MODEL", "sentence-transformers/all-MiniLM-L6-v2")


class Base(DeclarativeBase):
    pass


class Article(Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str]
    category: Mapped[str] = mapped_column(default="general")
    embeddings = Vectorizer(columns=["title", "body"], model=MODEL)


class ArticleIn(BaseModel):
    id: int
    title: str
    body: str
    category: str = "general"


class Created(BaseModel):
    id: int
    searchable: bool  # embedded before the response (with ?wait=true)


class Hit(BaseModel):
    id: int
    title: str
    category: str
    score: float
    rank: int


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as s:
        yield s


Db = Annotated[AsyncSession, Depends(session)]


async def hits(db: AsyncSession, search: SearchHits) -> list[Hit]:
    """The hits as the API returns them: (Article, score, rank) rows."""
    rows = (await db.execute(search.select())).all()
    return [
        Hit(id=a.id, title=a.title, category=a.category, score=score, rank=rank)
        for a, score, rank in rows
    ]


def create_app(url: str) -> FastAPI:
    engine = create_async_engine(sqlalchemy_url(url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the table and its vectorizer, if missing (a real app: Alembic)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        # Start-up objects are never collected again: no full collection of
        # them stalls the loop (docs/web-apps.md, "Freeze the start-up heap").
        gc.freeze()
        yield
        await engine.dispose()

    app = FastAPI(title="autoembed example", lifespan=lifespan)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @app.post("/articles", status_code=201)
    async def create(article: ArticleIn, db: Db, wait: bool = False) -> Created:
        row = Article(**article.model_dump())
        db.add(row)
        await db.commit()
        # read-your-writes: the worker embeds it within a second or two
        searchable = wait and await Article.embeddings.await_embedded(db, row, timeout=10)
        return Created(id=row.id, searchable=searchable)

    @app.get("/search")
    async def search(
        db: Db,
        q: Annotated[str, Query(min_length=1)],
        k: Annotated[int, Query(ge=1, le=50)] = 5,
        page: Annotated[int, Query(ge=1, le=20)] = 1,
        category: str | None = None,
    ) -> list[Hit]:
        query = await Article.embeddings.aembed_query(db, q)
        options: dict[str, Any] = {"offset": (page - 1) * k, "candidates": max(20, page * k)}
        if category is not None:
            options["where"] = Article.category == category  # kept while ranking
        return await hits(db, Article.embeddings.hybrid(query, k=k, **options))

    @app.get("/articles/{article_id}/similar")
    async def similar(
        article_id: int, db: Db, k: Annotated[int, Query(ge=1, le=50)] = 5
    ) -> list[Hit]:
        if await db.get(Article, article_id) is None:
            raise HTTPException(404, f"no article {article_id}")
        try:
            return await hits(db, Article.embeddings.similar(article_id, k=k))
        except sa.exc.DBAPIError as e:  # not embedded yet
            raise HTTPException(409, str(e.orig).splitlines()[0]) from None

    return app


app = (
    create_app(os.environ["AUTOEMBED_DATABASE_URL"])
    if "AUTOEMBED_DATABASE_URL" in os.environ
    else None
)
