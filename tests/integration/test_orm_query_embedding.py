"""Where the SQLAlchemy integration embeds a query: by default the database
(a worker's query service answers; no model in the application), with
AUTOEMBED_QUERY_EMBEDDING=process (or embed_in="process") in this process;
for async callers never on the event loop. The model here is the hash
embedder slowed to 300 ms a call (AUTOEMBED_HASH_DELAY_MS), so a model on the
loop would stall a ticker task by that much: the probe is shown to see it."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from autoembed.db import sqlalchemy_url
from autoembed.sqlalchemy import Vectorizer
from autoembed.worker.embedders import load_embedder
from tests.conftest import SUPERUSER, drain, url_as_role
from tests.integration.helpers import QueryServiceThread

DELAY_MS = 300
CONCURRENT = 10


class Base(DeclarativeBase):
    pass


class Memo(Base):
    __tablename__ = "memos"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    embeddings = Vectorizer(columns=["body"], model="hash:32")


@pytest.fixture
def memos(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all(Memo(id=i, body=f"memo {i} about apples and engines") for i in range(1, 21))
        s.commit()
    engine.dispose()
    drain(db_url)
    monkeypatch.setenv("AUTOEMBED_HASH_DELAY_MS", str(DELAY_MS))
    monkeypatch.delenv("AUTOEMBED_QUERY_EMBEDDING", raising=False)
    # Searched as a superuser: an ordinary owner's text queries need the
    # loopback a superuser sets up once (tests/e2e/test_least_privilege_install.py).
    return url_as_role(db_url, SUPERUSER)


def _max_loop_lag(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Run ``work`` on a fresh event loop beside a task that sleeps 5 ms at a
    time; the longest it overslept (ms) and what ``work`` returned. ``work``
    runs once before, unmeasured, as in a warm application (SQLAlchemy
    compiles its statements, psycopg and the model load). The process's
    objects so far are frozen out of the garbage collector's reach, as
    docs/web-apps.md advises a web app: a full collection of a test
    session's heap stalls any loop for hundreds of ms, whatever it runs."""
    asyncio.run(work())
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(_measured(work))
    finally:
        gc.unfreeze()


async def _measured(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, (time.perf_counter() - t) * 1000 - 5)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    try:
        result = await work()
    finally:
        done = True
        await tick
    return worst, result


def _searches(url: str, **embed: Any) -> Callable[[], Awaitable[list[Any]]]:
    """CONCURRENT async searches at once, each embedding its query first."""

    async def one(engine: Any, i: int) -> Any:
        async with async_sessionmaker(engine)() as session:
            query = await Memo.embeddings.aembed_query(session, f"apples {i}", **embed)
            rows = (await session.execute(Memo.embeddings.hybrid(query, k=3).select())).all()
            return query, rows

    async def run() -> list[Any]:
        engine = create_async_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
        try:
            return list(await asyncio.gather(*(one(engine, i) for i in range(CONCURRENT))))
        finally:
            await engine.dispose()

    return run


def test_the_default_asks_the_database(memos: str) -> None:
    service = QueryServiceThread(memos)
    try:
        engine = sa.create_engine(sqlalchemy_url(memos), poolclass=sa.pool.NullPool)
        with Session(engine) as session:
            query = Memo.embeddings.embed_query(session, "apples")
            assert query.embedded_by == "database"
            assert [r.Memo.id for r in session.execute(Memo.embeddings.semantic(query).select())]
        engine.dispose()
        lag, results = _max_loop_lag(_searches(memos))
    finally:
        service.stop()
    assert all(q.embedded_by == "database" and rows for q, rows in results)
    assert lag < DELAY_MS / 2, f"the event loop stalled {lag:.0f} ms"


def test_in_process_async_embedding_runs_off_the_event_loop(memos: str) -> None:
    lag, results = _max_loop_lag(_searches(memos, embed_in="process"))
    assert all(q.embedded_by == "process" and rows for q, rows in results)
    assert lag < DELAY_MS / 2, f"the event loop stalled {lag:.0f} ms"

    # The probe sees a model run on the loop: the same embedding called
    # from a coroutine directly stalls it by the model's time.
    async def on_the_loop() -> None:
        load_embedder("hash:32").embed(["apples"])

    lag_on_loop, _ = _max_loop_lag(on_the_loop)
    assert lag_on_loop >= DELAY_MS * 0.9


def test_the_setting_chooses_and_a_bad_value_is_named(
    memos: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sa.create_engine(sqlalchemy_url(memos), poolclass=sa.pool.NullPool)
    monkeypatch.setenv("AUTOEMBED_QUERY_EMBEDDING", "process")
    with Session(engine) as session:
        assert Memo.embeddings.embed_query(session, "apples").embedded_by == "process"
        monkeypatch.setenv("AUTOEMBED_QUERY_EMBEDDING", "gpu")
        with pytest.raises(ValueError, match="query_embedding must be database or process"):
            Memo.embeddings.embed_query(session, "apples")
        with pytest.raises(ValueError, match="embed_in must be 'database' or 'process'"):
            Memo.embeddings.embed_query(session, "apples", embed_in="gpu")  # type: ignore[arg-type]
    engine.dispose()
