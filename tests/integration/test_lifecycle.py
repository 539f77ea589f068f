"""Changing the model without an outage (extension_sql/idempotent/047_lifecycle.sql):
versions side by side, re-embedding campaigns, the switch, rollback, gc,
and everything that must keep working meanwhile. hash: embedders; the real
models and a real Celery worker are in tests/e2e/test_model_change.py."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import drain
from tests.integration.helpers import (
    Conn,
    add_docs,
    call_search,
    chunks,
    create_vectorizer,
    ids,
    make_docs,
    vectorizer,
)


def versions(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT version, model, dimensions, state FROM autoembed.vectorizer_versions "
        "WHERE vectorizer = 'docs' ORDER BY version"
    ).fetchall()


def vector(text: str, dims: int) -> Any:
    return HashingEmbedder(dims).embed([text])[0]


def results(conn: Conn, dims: int, **named: Any) -> dict[str, list[Any]]:
    """The ids each search method finds for "rivers", with a query vector of ``dims``."""
    q = vector("rivers", dims)
    return {
        "bm25": ids(call_search(conn, "bm25_search", "docs", "rivers", 5, **named)),
        "semantic": ids(call_search(conn, "search", "docs", q, 5, **named)),
        "hybrid": ids(call_search(conn, "hybrid_search", "docs", "rivers", q, 5, **named)),
    }


def embedded(conn: Conn, ordinal: int) -> dict[int, list[str]]:
    """id -> chunk texts in version ``ordinal`` of docs."""
    table = conn.execute(
        "SELECT embeddings_table FROM autoembed.vectorizer_version WHERE ordinal = %s", (ordinal,)
    ).fetchone()
    assert table is not None
    out: dict[int, list[str]] = {}
    for i, chunk in conn.execute(
        f'SELECT id, chunk FROM autoembed."{table[0]}" ORDER BY id, chunk_no'
    ):
        out.setdefault(i, []).append(chunk)
    return out


def source_texts(conn: Conn) -> dict[int, str]:
    return dict(conn.execute("SELECT id, title || E'\\n\\n' || body FROM docs").fetchall())


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    """40 docs under vectorizer "docs" (hash:16, title and body), embedded."""
    make_docs(conn, 40)
    conn.execute("UPDATE docs SET title = 'Title ' || id")
    create_vectorizer(conn, "docs", ["title", "body"], model="hash:16")
    drain(db_url)
    return conn


def test_set_model_starts_a_campaign_and_the_old_version_keeps_serving(
    docs: Conn, db_url: str
) -> None:
    before = results(docs, 16)
    assert all(before.values()), before
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:32')").fetchone() == (2,)
    assert versions(docs) == [(1, "hash:16", 16, "active"), (2, "hash:32", 32, "building")]
    assert results(docs, 16) == before  # nothing removed, nothing mixed in
    status = docs.execute(
        "SELECT model, campaign_version, campaign_model, campaign_percent "
        "FROM autoembed.vectorizer_status"
    ).fetchone()
    assert status == ("hash:16", 2, "hash:32", 0)
    # Each version: its own typed vector column and its own HNSW index.
    for ordinal, dims in ((1, 16), (2, 32)):
        row = docs.execute(
            "SELECT format_type(a.atttypid, a.atttypmod), "
            "  (SELECT count(*) FROM pg_index AS i JOIN pg_class AS x ON x.oid = i.indexrelid "
            "   JOIN pg_am AS am ON am.oid = x.relam "
            "   WHERE i.indrelid = ('autoembed.' || ver.embeddings_table)::regclass "
            "     AND am.amname = 'hnsw') "
            "FROM autoembed.vectorizer_version AS ver "
            "JOIN pg_attribute AS a "
            "  ON a.attrelid = ('autoembed.' || ver.embeddings_table)::regclass "
            "WHERE ver.ordinal = %s AND a.attname = 'embedding'",
            (ordinal,),
        ).fetchone()
        assert row == (f"vector({dims})", 1)

    drain(db_url)
    assert versions(docs) == [(1, "hash:16", 16, "retired"), (2, "hash:32", 32, "active")]
    after = results(docs, 32)
    assert after["bm25"] == before["bm25"]  # the same chunks, so the same BM25
    assert all(after.values())
    dims = docs.execute("SELECT DISTINCT vector_dims(embedding) FROM autoembed.docs_embeddings")
    assert dims.fetchall() == [(32,)]
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="version 2"):
        results(docs, 16)


def test_changes_during_a_campaign_reach_every_version(docs: Conn, db_url: str) -> None:
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    add_docs(docs, 41, 45)
    docs.execute("UPDATE docs SET title = 'Title ' || id WHERE id > 40")
    docs.execute("UPDATE docs SET body = 'Rewritten ' || id WHERE id IN (1, 2, 3)")
    docs.execute("DELETE FROM docs WHERE id IN (10, 11)")
    docs.execute("UPDATE docs SET id = 120 WHERE id = 20")
    drain(db_url)
    want = {i: [t] for i, t in source_texts(docs).items()}
    assert embedded(docs, 1) == want
    assert embedded(docs, 2) == want
    assert versions(docs)[1][3] == "active"
    # ... and after the switch too, for the retired version
    docs.execute("UPDATE docs SET body = 'After the switch' WHERE id = 5")
    docs.execute("TRUNCATE docs")
    add_docs(docs, 1, 3)
    drain(db_url)
    assert sorted(embedded(docs, 1)) == sorted(embedded(docs, 2)) == [1, 2, 3]


def test_manual_activation_rollback_and_gc(docs: Conn, db_url: str) -> None:
    before = results(docs, 16)
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32', activate => 'manual')")
    drain(db_url)
    assert [v[3] for v in versions(docs)] == ["active", "ready"]
    assert results(docs, 16) == before
    assert results(docs, 32, version="2")["bm25"] == before["bm25"]  # a named version

    v1_chunks = docs.execute("SELECT chunk_id, embedded_at FROM autoembed.docs_embeddings_v1")
    v1_chunks = sorted(v1_chunks.fetchall())
    assert docs.execute("SELECT autoembed.activate_version('docs', 'hash:32')").fetchone() == (2,)
    assert [v[3] for v in versions(docs)] == ["retired", "active"]
    add_docs(docs, 41, 41)  # kept current in the retired version too
    docs.execute("UPDATE docs SET title = 'Title 41' WHERE id = 41")
    drain(db_url)

    assert docs.execute("SELECT autoembed.rollback('docs')").fetchone() == (1,)
    assert [v[3] for v in versions(docs)] == ["active", "retired"]
    assert results(docs, 16) == before
    kept = docs.execute(
        "SELECT chunk_id, embedded_at FROM autoembed.docs_embeddings_v1 WHERE id <> 41"
    ).fetchall()
    assert sorted(kept) == v1_chunks  # its vectors were kept, not made again
    assert 41 in embedded(docs, 1)
    assert docs.execute("SELECT autoembed.rollback('docs')").fetchone() == (2,)

    with pytest.raises(psycopg.errors.ObjectInUse, match="active version"):
        docs.execute("SELECT autoembed.drop_version('docs', '2')")
    for call in ("activate_version", "drop_version"):
        with pytest.raises(psycopg.errors.NullValueNotAllowed, match="version must not be NULL"):
            docs.execute(f"SELECT autoembed.{call}('docs', NULL)")
    assert docs.execute("SELECT autoembed.gc_versions('docs')").fetchone() == (1,)
    assert versions(docs) == [(2, "hash:32", 32, "active")]
    gone = docs.execute(
        "SELECT to_regclass('autoembed.docs_embeddings_v1'), to_regclass('autoembed.docs_queue_v1')"
    ).fetchone()
    assert gone == (None, None)
    assert results(docs, 32)["bm25"] == before["bm25"]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no earlier version"):
        docs.execute("SELECT autoembed.rollback('docs')")


def test_what_set_model_does_with_each_model(docs: Conn, db_url: str) -> None:
    notices: list[str] = []
    docs.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:16')").fetchone() == (1,)
    assert len(versions(docs)) == 1  # the active model: nothing to do
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:32')").fetchone() == (2,)
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:32')").fetchone() == (2,)
    with pytest.raises(psycopg.errors.ObjectInUse, match="already re-embedding with hash:32") as e:
        docs.execute("SELECT autoembed.set_model('docs', 'hash:64')")
    assert "cancel_campaign" in (e.value.diag.message_hint or "")
    # back to the active model: the campaign is cancelled, its tables dropped
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:16')").fetchone() == (1,)
    assert any("cancelled the campaign" in n for n in notices)
    assert versions(docs) == [(1, "hash:16", 16, "active")]
    assert docs.execute("SELECT to_regclass('autoembed.docs_queue_v2')").fetchone() == (None,)
    assert docs.execute("SELECT autoembed.cancel_campaign('docs')").fetchone() == (None,)

    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    assert docs.execute("SELECT autoembed.cancel_campaign('docs')").fetchone() == (2,)
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    drain(db_url)
    # a retired version is current: going back to its model switches at once
    assert docs.execute("SELECT autoembed.set_model('docs', 'hash:16')").fetchone() == (1,)
    assert [v[3] for v in versions(docs)] == ["active", "retired"]
    assert queue.pending(docs) == {vectorizer(docs, "docs").id: (0, 0)}


def test_a_campaign_with_failed_rows_does_not_switch_by_itself(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_docs(conn, 10)
    conn.execute("UPDATE docs SET body = 'poison pill' WHERE id IN (3, 4)")
    create_vectorizer(conn, "docs", ["body"], model="hash:16", max_attempts=1)
    drain(db_url)
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", "poison")
    conn.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    drain(db_url)
    row = conn.execute(
        "SELECT state, failed, error FROM autoembed.vectorizer_versions WHERE version = 2"
    ).fetchone()
    assert row is not None
    assert row[:2] == ("ready", 2)
    assert "2 rows failed" in row[2]
    assert "activate_version" in row[2]
    conn.execute("SELECT autoembed.activate_version('docs', '2')")
    assert [v[3] for v in versions(conn)] == ["retired", "active"]


def test_a_worker_of_another_model_cannot_write_to_a_version(docs: Conn, db_url: str) -> None:
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    old = docs.execute(
        "SELECT model_version_id FROM autoembed.vectorizer_version WHERE ordinal = 1"
    ).fetchone()
    new = docs.execute("SELECT id FROM autoembed.vectorizer_version WHERE ordinal = 2").fetchone()
    assert old is not None
    assert new is not None
    with connect(db_url) as w:
        queue.prepare(w)
        claimed = queue.claim(w, new[0], 1, 30, token := __import__("uuid").uuid4())
        vectors = list(HashingEmbedder(16).embed([str(claimed[0].document)]))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match='uses "hash:32"'):
            queue.complete(w, new[0], token, old[0], [claimed[0].key], [0], [0], ["x"], vectors)


def test_fresh_changes_are_embedded_before_the_campaign(docs: Conn, db_url: str) -> None:
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    add_docs(docs, 41, 41)

    class FirstBatch(Exception):
        pass

    def stop(_vid: int, _result: Any) -> None:
        raise FirstBatch

    with connect(db_url) as w:
        queue.prepare(w)
        with pytest.raises(FirstBatch):
            drain_vectorizer(
                w, vectorizer(docs, "docs").id, Settings(database_url=db_url), progress=stop
            )
    assert 41 in embedded(docs, 1)  # searchable now
    assert embedded(docs, 2) == {}  # the campaign waits


def test_versions_are_named_by_number_model_or_tag(docs: Conn, db_url: str) -> None:
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32', activate => 'manual')")
    drain(db_url)
    tag = docs.execute(
        "SELECT model_version FROM autoembed.vectorizer_versions WHERE version = 2"
    ).fetchone()
    assert tag is not None
    want = results(docs, 32, version="2")
    assert results(docs, 32, version="hash:32") == want
    assert results(docs, 32, version=tag[0]) == want
    assert results(docs, 16, version="active") == results(docs, 16)
    with pytest.raises(psycopg.errors.UndefinedObject, match='no version "hash:99"') as e:
        results(docs, 32, version="hash:99")
    assert "1 (hash:16, active), 2 (hash:32, ready)" in (e.value.diag.message_hint or "")
    docs.execute("SELECT autoembed.set_model('docs', 'hash:64', activate => 'manual')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="still being embedded"):
        docs.execute("SELECT autoembed.activate_version('docs', 'hash:64')")


def test_version_health_describes_the_vectors(conn: Conn, db_url: str) -> None:
    make_docs(conn, 60)
    create_vectorizer(conn, "docs", ["body"], model="hash:64")
    drain(db_url)
    conn.execute("UPDATE autoembed.docs_embeddings_v1 SET embedded_at = now() - interval '2 days'")
    conn.execute(
        "INSERT INTO docs (id, title, body) SELECT i, 't', 'quantum chromodynamics lattice ' || i "
        "FROM generate_series(100, 109) i"
    )
    drain(db_url)
    row = conn.execute(
        "SELECT version_no, model, chunks, sampled, mean_pair_cosine, mean_norm, recent_chunks, "
        "drift FROM autoembed.version_health('docs')"
    ).fetchone()
    assert row is not None
    version, model, n, sampled, cosine, norm, recent, drift = row
    assert (version, model, n, sampled, recent) == (1, "hash:64", 70, 70, 10)
    assert 0 < cosine < 1  # the bodies share words
    assert norm == pytest.approx(1, abs=1e-5)  # normalized vectors
    assert drift > 0.3  # the new rows are about something else
    same = conn.execute(
        "SELECT drift FROM autoembed.version_health('docs', recent => '10 years')"
    ).fetchone()
    assert same is not None
    assert same[0] == pytest.approx(0, abs=1e-6)  # everything is recent: no drift
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="sample"):
        conn.execute("SELECT * FROM autoembed.version_health('docs', sample => 1)")


def test_chunks_of_both_versions_match_the_source(docs: Conn, db_url: str) -> None:
    """The view shows the active version's chunks, one version at a time."""
    docs.execute("SELECT autoembed.set_model('docs', 'hash:32')")
    view = chunks(docs, "docs")
    assert {c.model_version_id for cs in view.values() for c in cs} == {
        docs.execute(
            "SELECT model_version_id FROM autoembed.vectorizer_version WHERE ordinal = 1"
        ).fetchone()[0]  # type: ignore[index]
    }
    drain(db_url)
    view = chunks(docs, "docs")
    assert len({c.model_version_id for cs in view.values() for c in cs}) == 1
    assert sorted(view) == [(i,) for i in range(1, 41)]
