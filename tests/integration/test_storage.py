"""How a version stores its vectors (storage => 'vector' | 'halfvec' |
'binary', extension_sql/idempotent/035_version_tables.sql): each end to end
with the hash: embedder (insert, drain, search against exact cosine in
numpy), campaigns between storages, bad names, and the bytes each takes."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from autoembed import versions as lib
from autoembed.alembic._ops import AlterVectorizerOp
from autoembed.cli import main
from autoembed.db import sqlalchemy_url
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import Conn, call_search, create_vectorizer, ids, make_docs

DIMS = 64
STORAGES = ["vector", "halfvec", "binary"]
# float2 has an 11-bit significand: a unit vector's components and their
# products round at ~5e-4 relative; a 64-term cosine stays well within this.
HALF_TOLERANCE = 5e-3


def exact(conn: Conn, query: str) -> list[tuple[int, float]]:
    """(id, cosine) of every docs row's best chunk for query, best first:
    the hash embedder's vectors of the stored chunks, in numpy."""
    embedder = HashingEmbedder(DIMS)
    rows = conn.execute("SELECT id, chunk FROM autoembed.docs_embeddings").fetchall()
    vectors = embedder.embed([chunk for _, chunk in rows])
    scores = vectors @ embedder.embed([query])[0]
    best: dict[int, float] = {}
    for (key, _), s in zip(rows, scores, strict=True):
        best[int(key)] = max(best.get(int(key), -2.0), float(s))
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))


def storage_of(conn: Conn, version: int = 1) -> tuple[str, str, str]:
    """(catalog storage, the embedding column's type, the HNSW index's definition)."""
    row = conn.execute(
        "SELECT x.storage, format_type(a.atttypid, a.atttypmod), pg_get_indexdef(i.indexrelid) "
        "FROM autoembed.vectorizer_version AS x "
        "JOIN pg_attribute AS a "
        "  ON a.attrelid = format('autoembed.%%I', x.embeddings_table)::regclass "
        "  AND a.attname = 'embedding' "
        "JOIN pg_index AS i "
        "  ON i.indrelid = a.attrelid AND pg_get_indexdef(i.indexrelid) LIKE '%%hnsw%%' "
        "WHERE x.ordinal = %s",
        (version,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


@pytest.fixture
def docs(conn: Conn, db_url: str, request: pytest.FixtureRequest) -> Conn:
    """60 docs under vectorizer "docs" (hash:64) with the storage the test is parametrized by."""
    make_docs(conn, 60)
    create_vectorizer(conn, "docs", ["body"], model=f"hash:{DIMS}", storage=request.param)
    drain(db_url)
    return conn


@pytest.mark.parametrize("docs", STORAGES, indirect=True)
def test_each_storage_searches_like_exact_cosine(docs: Conn) -> None:
    conn = docs
    storage = conn.execute("SELECT storage FROM autoembed.vectorizer_version").fetchone()
    assert storage is not None
    query = "rivers document 17"
    truth = exact(conn, query)
    hits = call_search(conn, "search", "docs", HashingEmbedder(DIMS).embed([query])[0], 10)
    assert len(hits) == 10
    if storage[0] == "halfvec":
        # scores within float2 precision of exact, in order, of the rows exact search finds
        assert [h.score for h in hits] == pytest.approx(
            [s for _, s in truth[:10]], abs=HALF_TOLERANCE
        )
        for h in hits:
            assert h.score == pytest.approx(dict(truth)[h.id], abs=HALF_TOLERANCE)
    else:
        # vector, and binary re-ranked by the full vectors: exact scores
        assert [(h.id, h.score) for h in hits] == [
            (key, pytest.approx(score, abs=1e-6)) for key, score in truth[:10]
        ]


@pytest.mark.parametrize("docs", STORAGES, indirect=True)
def test_every_reader_of_the_embeddings_works_under_each_storage(docs: Conn) -> None:
    conn = docs
    q = HashingEmbedder(DIMS).embed(["rivers"])[0]
    similar = ids(call_search(conn, "similar", "docs", 5, 5))
    assert len(similar) == 5
    assert 5 not in similar
    hybrid = call_search(conn, "hybrid_search", "docs", "rivers", q, 5)
    assert len(hybrid) == 5
    assert all("rivers" in h.chunk for h in hybrid)
    filtered = call_search(conn, "search", "docs", q, 3, predicate="id > 30", chunks=True)
    assert len(filtered) == 3
    assert all(h.id > 30 for h in filtered)
    # the view shows full vectors as vector(dims), whatever the storage
    kind = conn.execute(
        "SELECT DISTINCT pg_typeof(embedding)::text, vector_dims(embedding) "
        "FROM autoembed.docs_embeddings"
    ).fetchall()
    assert kind == [("vector", DIMS)]
    health = conn.execute("SELECT * FROM autoembed.version_health('docs')").fetchone()
    assert health is not None


@pytest.mark.parametrize(
    ("storage", "column", "index"),
    [
        ("vector", f"vector({DIMS})", "(embedding vector_cosine_ops)"),
        ("halfvec", f"halfvec({DIMS})", "(embedding halfvec_cosine_ops)"),
        (
            "binary",
            f"vector({DIMS})",
            f"((binary_quantize(embedding))::bit({DIMS})) bit_hamming_ops)",
        ),
    ],
)
def test_each_storage_makes_its_column_and_index(
    conn: Conn, storage: str, column: str, index: str
) -> None:
    make_docs(conn, 3)
    create_vectorizer(conn, "docs", ["body"], model=f"hash:{DIMS}", storage=storage)
    stored, col, indexdef = storage_of(conn)
    assert (stored, col) == (storage, column)
    assert indexdef.endswith(index), indexdef


def test_halfvec_and_binary_index_take_fewer_bytes(conn: Conn, db_url: str) -> None:
    dims = 384
    sizes: dict[str, tuple[float, int]] = {}
    for storage in STORAGES:
        table = f"docs_{storage}"
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO {table} SELECT i, 'text ' || i || ' of ' || md5(i::text) "
            "FROM generate_series(1, 300) AS i"
        )
        create_vectorizer(conn, table, ["body"], model=f"hash:{dims}", storage=storage)
    drain(db_url)
    for storage in STORAGES:
        row = conn.execute(
            "SELECT (SELECT avg(pg_column_size(embedding)) FROM autoembed."
            f'"docs_{storage}_embeddings_v1"), '
            f"pg_relation_size('autoembed.\"docs_{storage}_hnsw_v1\"')"
        ).fetchone()
        assert row is not None
        sizes[storage] = (float(row[0]), int(row[1]))
    assert sizes["vector"][0] == 8 + 4 * dims  # header, dimensions, float4s
    assert sizes["halfvec"][0] == 8 + 2 * dims  # float2s: half the bytes
    assert sizes["binary"][0] == sizes["vector"][0]  # the full vectors, to re-rank
    assert sizes["halfvec"][1] < 0.7 * sizes["vector"][1]
    assert sizes["binary"][1] < 0.3 * sizes["vector"][1]


def test_campaign_from_vector_to_halfvec_and_back(conn: Conn, db_url: str) -> None:
    make_docs(conn, 30)
    create_vectorizer(conn, "docs", ["body"], model=f"hash:{DIMS}")
    drain(db_url)
    q = HashingEmbedder(DIMS).embed(["rivers"])[0]
    before = ids(call_search(conn, "search", "docs", q, 5))

    assert lib.set_model(conn, "docs", f"hash:{DIMS}", storage="halfvec") == 2
    # the same model, another storage: a campaign; the vector version serves meanwhile
    states = {v.version: (v.storage, v.state) for v in lib.fetch(conn, "docs")}
    assert states == {1: ("vector", "active"), 2: ("halfvec", "building")}
    assert ids(call_search(conn, "search", "docs", q, 5)) == before
    drain(db_url)
    states = {v.version: (v.storage, v.state) for v in lib.fetch(conn, "docs")}
    assert states == {1: ("vector", "retired"), 2: ("halfvec", "active")}
    assert ids(call_search(conn, "search", "docs", q, 5)) == before
    # another model keeps the active storage
    assert lib.set_model(conn, "docs", f"hash:{DIMS}") == 2

    assert conn.execute("SELECT autoembed.rollback('docs')").fetchone() == (1,)
    assert storage_of(conn, 1)[0] == "vector"
    assert ids(call_search(conn, "search", "docs", q, 5)) == before
    # back to halfvec: the retired version is current, so it is reused at once
    assert lib.set_model(conn, "docs", f"hash:{DIMS}", storage="halfvec") == 2
    active = conn.execute(
        "SELECT version, storage FROM autoembed.vectorizer_versions WHERE state = 'active'"
    )
    assert active.fetchall() == [(2, "halfvec")]
    # a version named by model alone is ambiguous now; the hint shows the storages
    with pytest.raises(psycopg.errors.AmbiguousParameter) as e:
        call_search(conn, "search", "docs", q, 5, version=f"hash:{DIMS}")
    assert "as halfvec" in (e.value.diag.message_hint or "")


@pytest.mark.parametrize("call", ["create", "set_model"])
def test_an_unknown_storage_is_refused_with_the_choices(conn: Conn, call: str) -> None:
    make_docs(conn, 3)
    if call == "set_model":
        create_vectorizer(conn, "docs", ["body"])
    statement = {
        "create": "SELECT autoembed.create_vectorizer('docs', ARRAY['body'], storage => 'float16')",
        "set_model": "SELECT autoembed.set_model('docs', 'hash:16', storage => 'float16')",
    }[call]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        conn.execute(statement)
    assert 'unknown storage "float16"' in str(e.value)
    assert "halfvec" in (e.value.diag.message_hint or "")


def test_binary_needs_an_index_and_halfvec_indexes_more_dimensions(conn: Conn) -> None:
    make_docs(conn, 3)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="binary needs index hnsw"):
        create_vectorizer(conn, "docs", ["body"], storage="binary", index="none")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at most 2000 dimensions") as e:
        create_vectorizer(conn, "docs", ["body"], model="hash:3000")
    assert "storage => 'halfvec'" in (e.value.diag.message_hint or "")
    create_vectorizer(conn, "docs", ["body"], model="hash:3000", storage="halfvec")
    assert storage_of(conn)[1] == "halfvec(3000)"


def test_alembic_and_the_cli_change_the_storage(conn: Conn, db_url: str) -> None:
    make_docs(conn, 10)
    create_vectorizer(conn, "docs", ["body"], model="hash:16")
    drain(db_url)
    # op.alter_vectorizer("docs", storage="binary", existing_storage="vector"): the model stays
    change = AlterVectorizerOp("docs", {"storage": "binary"}, {"storage": "vector"})
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    with engine.begin() as c:
        for statement in change.statements():
            c.execute(statement)
    got = {(v.version, v.model, v.storage, v.state) for v in lib.fetch(conn, "docs")}
    assert got == {(1, "hash:16", "vector", "active"), (2, "hash:16", "binary", "building")}
    # its downgrade: back to the active vector version, which cancels the campaign
    with engine.begin() as c:
        for statement in change.reverse().statements():
            c.execute(statement)
    engine.dispose()
    assert [(v.version, v.storage) for v in lib.fetch(conn, "docs")] == [(1, "vector")]

    out = CliRunner().invoke(
        main, ["set-model", "--db", db_url, "--storage", "halfvec", "docs", "hash:16"]
    )
    assert out.exit_code == 0, out.output
    assert "docs: version 2 (hash:16, halfvec) is building" in out.output
    table = CliRunner().invoke(main, ["versions", "--db", db_url, "docs"]).output
    assert table.splitlines()[2].split()[:5] == ["2", "hash:16", "building", "16", "halfvec"]
