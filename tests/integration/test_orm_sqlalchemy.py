"""autoembed.sqlalchemy against a real database: a vectorizer declared on a
mapped class is created by create_all(), rows inserted through the ORM are
embedded by the real worker pipeline, and semantic, BM25 and hybrid searches
return model instances that compose with the caller's own SQL, in sync and
async sessions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, selectinload

from autoembed.db import connect, sqlalchemy_url
from autoembed.sqlalchemy import QueryEmbedding, Vectorizer
from tests.conftest import drain


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str | None]
    topic: Mapped[str] = mapped_column(default="misc")
    embeddings = Vectorizer(
        columns=["title", "body"], model="hash:64", chunk_tokens=32, chunk_overlap=4
    )


NOTES = [
    (1, "Apple orchards", "Harvesting red apples and pears in autumn", "fruit"),
    (2, "River engines", "Steam engines on the river boats", "machines"),
    (3, "Night sky", "Stars and planets seen through a telescope", "space"),
    (4, "Apple pie", "Baking apples with cinnamon and butter", "fruit"),
]


@pytest.fixture(autouse=True)
def _embed_queries_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker runs in these tests: queries are embedded in this process
    (the default, the database path, is tested in test_orm_query_embedding)."""
    monkeypatch.setenv("AUTOEMBED_QUERY_EMBEDDING", "process")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Note(id=i, title=t, body=b, topic=c) for i, t, b, c in NOTES)
        session.commit()
    drain(db_url)
    yield engine
    engine.dispose()


def test_create_all_creates_the_vectorizer_and_drop_all_drops_it(db_url: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    with connect(db_url) as c:
        row = c.execute(
            "SELECT v.columns, ver.model, v.chunk_tokens FROM autoembed.vectorizer AS v "
            "JOIN autoembed.vectorizer_version AS ver ON ver.vectorizer_id = v.id "
            "WHERE v.name = 'notes'"
        ).fetchone()
        assert row == (["title", "body"], "hash:64", 32)
    Base.metadata.drop_all(engine)
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM autoembed.vectorizer").fetchone() == (0,)
        tables = c.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'autoembed'::regnamespace "
            "AND relname LIKE 'notes%'"
        ).fetchone()
        assert tables == (0,)
    engine.dispose()


def test_embeddings_are_mapped_with_a_relationship_both_ways(engine: sa.Engine) -> None:
    Embedding = Note.embeddings.Embedding
    with Session(engine) as session:
        note = session.scalars(
            sa.select(Note).options(selectinload(Note.embeddings.chunks)).where(Note.id == 3)
        ).one()
        chunks = note.embeddings
        expected = "Night sky\n\nStars and planets seen through a telescope"
        assert [c.chunk for c in chunks] == [expected]
        assert len(chunks[0].embedding) == 64
        other = session.scalars(sa.select(Embedding).where(Embedding.id == 2)).one()
        assert other.parent.title == "River engines"


def test_a_query_embedded_before_a_model_change_searches_its_own_version(
    engine: sa.Engine, db_url: str
) -> None:
    with Session(engine) as session:
        before = Note.embeddings.embed_query(session, "stars and planets")
        first = session.execute(Note.embeddings.semantic(before, k=2).select()).all()
    with connect(db_url) as c:
        c.execute("SELECT autoembed.set_model('notes', 'hash:32')")
    drain(db_url)  # version 2 (32 dimensions) is active now
    with Session(engine) as session:
        # the old query's vector is searched in the version that made it
        again = session.execute(Note.embeddings.semantic(before, k=2).select()).all()
        assert [(r.Note.id, r.score) for r in again] == [(r.Note.id, r.score) for r in first]
        after = Note.embeddings.embed_query(session, "stars and planets")
        assert len(after.vector) == 32
        assert after.version != before.version
        rows = session.execute(Note.embeddings.hybrid(after, k=2).select()).all()
        assert rows[0].Note.id == 3
        old = session.execute(Note.embeddings.bm25("telescope", k=1, version="1").select()).all()
        assert [r.Note.id for r in old] == [3]
        chunks = session.scalars(sa.select(Note.embeddings.Embedding)).all()
        assert {len(c.embedding) for c in chunks} == {32}  # the view: the active version


def test_semantic_search_returns_instances_with_score_and_rank(engine: sa.Engine) -> None:
    with Session(engine) as session:
        query = Note.embeddings.embed_query(session, "red apples in autumn")
        assert query.embedded_by == "process"
        assert query.version is not None
        rows = session.execute(Note.embeddings.semantic(query, k=3).select()).all()
    assert rows[0].Note.id == 1
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].score > rows[1].score


def test_search_composes_with_where_join_order_and_limit(engine: sa.Engine) -> None:
    with Session(engine) as session:
        query = Note.embeddings.embed_query(session, "apples")
        hits = Note.embeddings.bm25(query, k=10)
        stmt = (
            sa.select(Note.title, hits.score)
            .join(hits.subquery, hits.onclause)
            .where(Note.topic == "fruit")
            .order_by(Note.title.desc())
            .limit(1)
        )
        assert session.execute(stmt).all()[0].title == "Apple pie"
        # the jsonb filter searches within the topic instead of filtering afterwards
        only = Note.embeddings.semantic(query, k=1, filter={"topic": "machines"})
        assert [n.id for n, *_ in session.execute(only.select())] == [2]
        # two searches in one statement
        sem = Note.embeddings.semantic(query, k=4)
        lex = Note.embeddings.bm25("apples", k=4)
        both = (
            sa.select(Note.id)
            .join(sem.subquery, sem.onclause)
            .join(lex.subquery, lex.onclause)
            .order_by(Note.id)
        )
        assert session.scalars(both).all() == [1, 4]


def test_similar_rows_of_an_instance_or_a_key(engine: sa.Engine) -> None:
    with Session(engine) as session:
        pie = session.get(Note, 4)
        assert pie is not None
        by_instance = session.execute(Note.embeddings.similar(pie, k=3).select()).all()
        sql_rows = session.execute(
            sa.text("SELECT pk ->> 'id', rank FROM autoembed.similar('notes', 4, 3)")
        ).all()
        assert [(str(r.Note.id), r.rank) for r in by_instance] == [tuple(r) for r in sql_rows]
        assert by_instance[0].Note.id == 1  # the other apple note
        assert 4 not in [r.Note.id for r in by_instance]
        for key in (4, (4,), {"id": 4}):
            again = session.execute(Note.embeddings.similar(key, k=3).select()).all()
            assert [r.Note.id for r in again] == [r.Note.id for r in by_instance]
        machines = Note.embeddings.similar(pie, k=3, filter={"topic": "machines"})
        assert [n.id for n, *_ in session.execute(machines.select())] == [2]
        with pytest.raises(ValueError, match=r"the key of notes is \(id\)"):
            Note.embeddings.similar((4, 5))
        with pytest.raises(sa.exc.DBAPIError, match="has no row"):
            session.execute(Note.embeddings.similar(99).select()).all()


def test_where_clauses_pages_and_score_floors(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            Note(id=i, title=f"Apple note {i}", body="apples " * (i % 5 + 1), topic=f"t{i % 7}")
            for i in range(10, 60)
        )
        session.commit()
        drain(session.get_bind().url.render_as_string(hide_password=False))
        query = Note.embeddings.embed_query(session, "apples")

        def ids(hits: Any) -> list[int]:
            return [n.id for n, *_ in session.execute(hits.select())]

        # a clause over the model's columns, values inlined safely, kept while ranking
        clause = Note.topic.in_(["t1", "t2"]) & (Note.title != "it's; DROP TABLE notes")
        for method in ("semantic", "bm25", "hybrid"):
            search = getattr(Note.embeddings, method)
            hits = ids(search(query, k=5, where=clause))
            assert len(hits) == 5, method
            assert all(session.get(Note, i).topic in ("t1", "t2") for i in hits), method
            as_text = ids(search(query, k=5, where="topic IN ('t1', 't2')"))
            assert as_text == hits, method
        similar = ids(Note.embeddings.similar(10, k=5, where=Note.id > 30))
        assert len(similar) == 5
        assert all(i > 30 for i in similar)
        # pages: slices of one ranking
        whole = ids(Note.embeddings.bm25(query, k=20))
        pages = [i for p in range(4) for i in ids(Note.embeddings.bm25(query, k=5, offset=5 * p))]
        assert pages == whole
        # a score floor
        scored = session.execute(Note.embeddings.semantic(query, k=20).select()).all()
        floor = scored[6].score
        kept = session.execute(Note.embeddings.semantic(query, k=20, min_score=floor).select())
        assert [r.Note.id for r in kept] == [r.Note.id for r in scored if r.score >= floor]
        with pytest.raises(TypeError, match="unknown search options \\['page'\\]"):
            Note.embeddings.bm25(query, k=5, page=2)
        # the quote in the clause's value was a value, not SQL
        assert session.scalar(sa.select(sa.func.count()).select_from(Note)) == len(NOTES) + 50


def test_wait_embedded_reads_your_writes(engine: sa.Engine, db_url: str) -> None:
    with Session(engine) as session:
        note = Note(id=5, title="Comet", body="A comet tail over the observatory")
        session.add(note)
        session.commit()
        assert Note.embeddings.wait_embedded(session, note, timeout=0.2) is False
        assert Note.embeddings.wait_embedded(session, timeout=0) is False
        assert Note.embeddings.wait_embedded(session, 1, timeout=0) is True  # not pending
        drain(db_url)
        assert Note.embeddings.wait_embedded(session, note, timeout=0) is True
        assert Note.embeddings.wait_embedded(session) is True
        hits = session.execute(Note.embeddings.bm25("comet", k=1).select()).all()
        assert [r.Note.id for r in hits] == [5]


def test_bm25_and_hybrid_find_the_expected_rows(engine: sa.Engine) -> None:
    with Session(engine) as session:
        rows = session.execute(Note.embeddings.bm25("telescope", k=5).select()).all()
        assert [r.Note.id for r in rows] == [3]
        query = Note.embeddings.embed_query(session, "steam boats on the river")
        hybrid = session.execute(Note.embeddings.hybrid(query, k=2).select()).all()
        assert hybrid[0].Note.id == 2
        assert hybrid[0].rank == 1
        rrf = session.execute(Note.embeddings.hybrid(query, k=2, fusion="rrf").select()).all()
        assert rrf[0].Note.id == 2


def test_a_process_with_another_model_version_never_embeds_the_query(
    engine: sa.Engine, db_url: str
) -> None:
    with connect(db_url) as c:
        c.execute(
            "UPDATE autoembed.model_version SET tag = tag || '-elsewhere' "
            "WHERE id = (SELECT model_version_id FROM autoembed.vectorizer_version "
            "WHERE state = 'active')"
        )
    with Session(engine) as session:
        # no worker answers text queries here: the database path is tried, and fails
        session.execute(sa.text("SET autoembed.query_timeout = '200ms'"))
        with pytest.raises(sa.exc.DBAPIError, match="autoembed"):
            Note.embeddings.embed_query(session, "apples")


def test_async_session_search(engine: sa.Engine, db_url: str) -> None:
    async def run() -> list[Any]:
        aengine = create_async_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
        try:
            async with async_sessionmaker(aengine, expire_on_commit=False)() as session:
                query = await Note.embeddings.aembed_query(session, "stars and planets")
                assert isinstance(query, QueryEmbedding)
                result = await session.execute(
                    Note.embeddings.hybrid(query, k=2).select().where(Note.topic != "fruit")
                )
                rows = list(result.all())
                session.add(Note(id=6, title="Meteor", body="A meteor shower"))
                await session.commit()
                assert await Note.embeddings.await_embedded(session, 6, timeout=0) is False
                await asyncio.to_thread(drain, db_url)
                assert await Note.embeddings.await_embedded(session, 6, timeout=0) is True
                return rows
        finally:
            await aengine.dispose()

    rows = asyncio.run(run())
    assert rows[0].Note.id == 3
    assert rows[0].Note.title == "Night sky"


def test_importing_the_integrations_does_not_import_torch() -> None:
    code = (
        "import sys, autoembed.sqlalchemy, autoembed.alembic; "
        "bad = [m for m in ('torch', 'sentence_transformers', 'celery') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
