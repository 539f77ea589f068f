"""A deferred vector index (autoembed.set_index, 045_alter.sql): a large
backfill without HNSW, then one build per version; searches answer the same
before and after; a campaign's version follows the vectorizer's method;
bad methods and storages that need an index are refused."""

from __future__ import annotations

import psycopg
import pytest

from autoembed.alembic._compare import _alter
from autoembed.alembic._ops import AlterVectorizerOp
from autoembed.sqlalchemy._spec import VectorizerSpec
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import Conn, call_search, create_vectorizer, ids, make_docs

QUERY = HashingEmbedder(32).embed(["rivers document 17"])[0]


def hnsw_indexes(conn: Conn) -> dict[int, str]:
    """Version ordinal -> name of its HNSW index, for vectorizer docs."""
    rows = conn.execute(
        "SELECT x.ordinal, c.relname FROM autoembed.vectorizer_version AS x "
        "JOIN pg_index AS i ON i.indrelid = format('autoembed.%I', x.embeddings_table)::regclass "
        "JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_am AS a ON a.oid = c.relam "
        "WHERE a.amname = 'hnsw' ORDER BY 1"
    ).fetchall()
    return {int(n): str(name) for n, name in rows}


def index_method(conn: Conn) -> str:
    row = conn.execute(
        "SELECT index_method FROM autoembed.vectorizer WHERE name = 'docs'"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_backfill_without_an_index_then_one_build(conn: Conn, db_url: str) -> None:
    make_docs(conn, 80)
    create_vectorizer(conn, "docs", ["body"], model="hash:32", index="none")
    drain(db_url)
    assert hnsw_indexes(conn) == {}
    exact = call_search(conn, "search", "docs", QUERY, 10)
    assert len(exact) == 10

    assert conn.execute("SELECT autoembed.set_index('docs', 'hnsw')").fetchone() == (1,)
    assert list(hnsw_indexes(conn)) == [1]
    assert index_method(conn) == "hnsw"
    # 80 rows: the graph finds the exact neighbours, in the same order
    assert ids(call_search(conn, "search", "docs", QUERY, 10)) == ids(exact)
    assert conn.execute("SELECT autoembed.set_index('docs', 'hnsw')").fetchone() == (0,)

    # rows embedded after the build go into the index (pgvector's insert)
    conn.execute("INSERT INTO docs (id, body) VALUES (1000, 'rivers document 17')")
    drain(db_url)
    assert ids(call_search(conn, "search", "docs", QUERY, 1)) == [1000]


def test_a_campaign_version_follows_the_method_and_none_drops_every_index(
    conn: Conn, db_url: str
) -> None:
    make_docs(conn, 30)
    create_vectorizer(conn, "docs", ["body"], model="hash:16")
    drain(db_url)
    conn.execute("SELECT autoembed.set_model('docs', 'hash:32', activate => 'manual')")
    assert list(hnsw_indexes(conn)) == [1, 2]

    assert conn.execute("SELECT autoembed.set_index('docs', 'none')").fetchone() == (0,)
    assert hnsw_indexes(conn) == {}
    drain(db_url)
    conn.execute("SELECT autoembed.activate_version('docs', 'hash:32')")
    assert len(call_search(conn, "search", "docs", QUERY, 5)) == 5

    assert conn.execute("SELECT autoembed.set_index('docs', 'hnsw')").fetchone() == (2,)
    assert list(hnsw_indexes(conn)) == [1, 2]


@pytest.mark.parametrize(
    ("storage", "index", "message"),
    [
        ("vector", "ivfflat", "index must be hnsw or none, got ivfflat"),
        ("vector", None, "index must be hnsw or none, got NULL"),
        ("binary", "none", "storage binary needs index hnsw"),
    ],
)
def test_bad_methods_are_refused_and_change_nothing(
    conn: Conn, storage: str, index: str | None, message: str
) -> None:
    make_docs(conn, 5)
    create_vectorizer(conn, "docs", ["body"], model="hash:16", storage=storage)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute("SELECT autoembed.set_index('docs', %s)", (index,))
    assert message in str(info.value)
    assert info.value.diag.message_hint
    assert index_method(conn) == "hnsw"
    assert list(hnsw_indexes(conn)) == [1]


def test_alembic_alter_vectorizer_index_renders_set_index() -> None:
    op = AlterVectorizerOp("docs", {"index": "hnsw"}, {"index": "none"})
    [statement] = op.statements()
    assert "autoembed.set_index(:name, :index)" in str(statement)
    assert statement.compile().params == {"name": "docs", "index": "hnsw"}
    assert op.reverse().changes == {"index": "none"}


def test_autogenerate_diffs_a_declared_index_against_the_stored_one() -> None:
    stored = VectorizerSpec("docs", "docs", ("body",), dimensions=384, options={"index": "none"})
    declared = stored.with_changes(options={"index": "hnsw"})
    op = _alter(declared, stored)
    assert op is not None
    assert (op.changes, op.existing) == ({"index": "hnsw"}, {"index": "none"})
    assert _alter(stored.with_changes(options={}), stored) is None  # not declared: kept
