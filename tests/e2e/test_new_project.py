"""A new web project's whole path, as a developer takes it: models declared
with SQLAlchemy, ``alembic revision --autogenerate`` on an empty database
(it installs autoembed), ``alembic upgrade head``, a dev-mode worker
(``autoembed dev``: no broker to install), rows inserted through the ORM and
awaited until searchable, similar rows, a filtered and paginated hybrid
search with the query embedded by the worker, async searches that leave the
event loop free, then ``alembic downgrade base``: nothing of autoembed left."""

from __future__ import annotations

import asyncio
import gc
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from autoembed.db import connect, sqlalchemy_url
from tests.alembic_project import alembic_project, autogenerate, load_models, ops
from tests.e2e.conftest import DevWorker

MODELS = """
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from autoembed.sqlalchemy import Vectorizer

class Base(DeclarativeBase):
    pass

class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str]
    body: Mapped[str]
    status: Mapped[str]
    embeddings = Vectorizer(columns=["subject", "body"], model="hash:64")
"""

WORDS = [
    "refund",
    "invoice",
    "parcel",
    "delay",
    "password",
    "login",
    "billing",
    "warranty",
    "repair",
    "battery",
]


def test_a_new_project_from_autogenerate_to_downgrade(
    empty_db: str,
    tmp_path: Path,
    start_dev_worker: Callable[..., DevWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUTOEMBED_QUERY_EMBEDDING", raising=False)  # the default: the worker
    (tmp_path / "models.py").write_text(textwrap.dedent(MODELS))
    cfg = alembic_project(tmp_path, empty_db)
    assert ops(autogenerate(cfg, "tickets")) == [
        "install_autoembed",
        "create_table",
        "create_vectorizer",
    ]
    command.upgrade(cfg, "head")
    Ticket = load_models(tmp_path / "models.py").Ticket
    worker = start_dev_worker(empty_db)

    engine = sa.create_engine(sqlalchemy_url(empty_db), poolclass=sa.pool.NullPool)
    with Session(engine) as session:
        session.add_all(
            Ticket(
                id=i,
                subject=f"{WORDS[i % 10]} question {i}",
                body=" ".join(WORDS[(i * j) % 10] for j in range(1, 7)),
                status="open" if i % 3 else "closed",
            )
            for i in range(1, 41)
        )
        session.commit()
        assert Ticket.embeddings.wait_embedded(session, timeout=60), worker.describe()

        similar = session.execute(Ticket.embeddings.similar(1, k=3).select()).all()
        assert len(similar) == 3
        assert 1 not in [r.Ticket.id for r in similar]

        query = Ticket.embeddings.embed_query(session, "refund for a late parcel")
        assert query.embedded_by == "database"  # no model in this process

        def page(n: int) -> list[Any]:
            hits = Ticket.embeddings.hybrid(
                query, k=5, where=Ticket.status == "open", offset=5 * n, candidates=20
            )
            return list(session.execute(hits.select()).all())

        pages = page(0) + page(1)
        assert [r.rank for r in pages] == list(range(1, 11))
        assert all(r.Ticket.status == "open" for r in pages)
        assert len({r.Ticket.id for r in pages}) == 10
    engine.dispose()

    # The test session's objects out of the garbage collector's way, as
    # docs/web-apps.md advises a web app: a full collection of this heap
    # stalls any loop, whatever it runs.
    gc.collect()
    gc.freeze()
    try:
        lag, found = asyncio.run(_async_searches(empty_db, Ticket))
    finally:
        gc.unfreeze()
    assert all(found), "every async search found rows"
    # The queries are embedded by the worker: the loop only awaits
    # (benchmarks/loop_lag.py measures the real model: max lag <= 20 ms).
    assert lag < 200, f"the event loop stalled {lag:.0f} ms"

    worker.stop()
    command.downgrade(cfg, "base")
    with connect(empty_db) as c:
        left = c.execute(
            "SELECT 'schema' FROM pg_namespace WHERE nspname = 'autoembed' UNION ALL "
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'autoembed%' UNION ALL "
            "SELECT proname FROM pg_proc WHERE proname LIKE 'tickets%' UNION ALL "
            "SELECT relname FROM pg_class WHERE relname LIKE 'tickets%'"
        ).fetchall()
    assert left == []


async def _async_searches(url: str, Ticket: Any) -> tuple[float, list[bool]]:
    """10 concurrent async hybrid searches (twice: a warm-up, then measured
    beside a task sleeping 5 ms at a time); its longest oversleep (ms) and
    whether each search found rows."""
    engine = create_async_engine(sqlalchemy_url(url), pool_size=10)
    sessions = async_sessionmaker(engine)

    async def one(text: str) -> bool:
        async with sessions() as session:
            query = await Ticket.embeddings.aembed_query(session, text)
            hits = Ticket.embeddings.hybrid(query, k=3, where=Ticket.status == "open")
            return bool((await session.execute(hits.select())).all())

    await asyncio.gather(*(one(f"warm-up {w}") for w in WORDS))
    worst, done = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, (time.perf_counter() - t - 0.005) * 1000)

    tick = asyncio.create_task(ticker())
    found = await asyncio.gather(*(one(f"{w} problem number {i}") for i, w in enumerate(WORDS)))
    done = True
    await tick
    await engine.dispose()
    return worst, list(found)
