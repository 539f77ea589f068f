"""Trigger semantics, read from the inbox, queue and embeddings tables: what
each kind of write enqueues, removes and notifies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from autoembed.db import connect
from tests.conftest import drain
from tests.integration.helpers import (
    Conn,
    Key,
    active_version,
    add_docs,
    chunks,
    count,
    create_vectorizer,
    make_docs,
    queued_keys,
    status,
    vectorizer,
)

COLUMNS = ["title", "body"]


def docs_vectorizer(conn: Conn, rows: int = 0) -> int:
    """Table docs with rows 1..rows and vectorizer 'docs' on title and body."""
    make_docs(conn, rows)
    return create_vectorizer(conn, "docs", COLUMNS)


def embedded(conn: Conn, db_url: str, rows: int) -> None:
    """docs_vectorizer with every row embedded and nothing left queued."""
    docs_vectorizer(conn, rows)
    drain(db_url, batch_size=500)
    assert queued_keys(conn, "docs") == []
    assert len(chunks(conn, "docs")) == rows


def keys(*ids: int) -> list[tuple[int]]:
    return [(i,) for i in ids]


@contextmanager
def listening(db_url: str) -> Iterator[Conn]:
    """A second connection listening on autoembed's channel from now on."""
    with connect(db_url) as c:
        c.execute("LISTEN autoembed")
        yield c


def notifications(listener: Conn) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=0.3)]


# ---------------------------------------------------------------- INSERT


def test_single_row_insert_enqueues_its_key(conn: Conn) -> None:
    docs_vectorizer(conn)
    conn.execute("INSERT INTO docs (id, title, body) VALUES (42, 'a title', 'a body')")
    assert queued_keys(conn, "docs") == keys(42)


def test_multi_row_insert_enqueues_every_key(conn: Conn) -> None:
    docs_vectorizer(conn)
    conn.execute("INSERT INTO docs (id, body) VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    add_docs(conn, 10, 19)
    assert queued_keys(conn, "docs") == keys(1, 2, 3, *range(10, 20))


def test_copy_enqueues_every_key(conn: Conn) -> None:
    docs_vectorizer(conn)
    with conn.cursor().copy("COPY docs (id, title, body) FROM STDIN") as copy:
        for i in range(1, 101):
            copy.write_row((i, f"title {i}", f"copied body {i}"))
    assert queued_keys(conn, "docs") == keys(*range(1, 101))


def test_insert_of_no_rows_enqueues_nothing(conn: Conn, db_url: str) -> None:
    docs_vectorizer(conn)
    with listening(db_url) as listener:
        conn.execute("INSERT INTO docs (id, body) SELECT 1, 'x' WHERE false")
        assert notifications(listener) == []
    assert queued_keys(conn, "docs") == []


def test_drain_embeds_every_row_tagged_with_a_model_version(conn: Conn, db_url: str) -> None:
    docs_vectorizer(conn, 60)  # backfilled
    add_docs(conn, 61, 100)  # queued by the trigger
    stats = drain(db_url, batch_size=500)

    assert stats.written == 100
    got = chunks(conn, "docs")
    assert sorted(got) == keys(*range(1, 101))
    version_ids = {c.model_version_id for cs in got.values() for c in cs}
    assert len(version_ids) == 1
    (version_id,) = version_ids
    row = conn.execute(
        "SELECT m.tag, ver.model_version_id FROM autoembed.model_version AS m "
        "JOIN autoembed.vectorizer_version AS ver ON ver.state = 'active' WHERE m.id = %s",
        (version_id,),
    ).fetchone()
    assert row is not None
    tag, active = row
    assert tag.startswith("hash:16")
    assert active == version_id
    # The chunks hold the row's current text.
    assert "Body of document 77 about" in " ".join(c.chunk for c in got[(77,)])
    assert queued_keys(conn, "docs") == []


# ---------------------------------------------------------------- UPDATE


def test_update_of_non_embedded_column_enqueues_nothing(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 30)
    conn.execute("UPDATE docs SET views = views + 1")
    v = vectorizer(conn, "docs")
    assert count(conn, v.inbox) == 0
    assert count(conn, v.queue) == 0


def test_update_setting_embedded_column_to_same_value_enqueues_nothing(
    conn: Conn, db_url: str
) -> None:
    embedded(conn, db_url, 30)
    conn.execute("UPDATE docs SET body = body, title = title, views = views + 1")
    conn.execute("UPDATE docs SET body = 'Body of document 5 about apples' WHERE id = 5")
    v = vectorizer(conn, "docs")
    assert count(conn, v.inbox) == 0
    assert count(conn, v.queue) == 0


def test_update_of_embedded_column_reembeds_only_that_row(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 30)
    before = chunks(conn, "docs")

    conn.execute("UPDATE docs SET body = 'zebras crossing a frozen lake' WHERE id = 7")
    assert queued_keys(conn, "docs") == keys(7)
    stats = drain(db_url, batch_size=500)

    assert stats.written == 1
    after = chunks(conn, "docs")
    assert sorted(after) == sorted(before)
    assert "zebras crossing a frozen lake" in " ".join(c.chunk for c in after[(7,)])
    assert after[(7,)][0].embedded_at > before[(7,)][0].embedded_at
    changed = [k for k in before if after[k] != before[k]]
    assert changed == keys(7)


def test_update_of_title_alone_enqueues_the_row(conn: Conn) -> None:
    make_docs(conn, 5)
    create_vectorizer(conn, "docs", COLUMNS, backfill=False)
    conn.execute("UPDATE docs SET title = 'new title' WHERE id IN (2, 4)")
    assert queued_keys(conn, "docs") == keys(2, 4)


# ---------------------------------------------------------------- DELETE, TRUNCATE


def test_delete_removes_chunks_in_the_same_transaction(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 20)
    with conn.transaction():
        conn.execute("DELETE FROM docs WHERE id = 3 OR id > 15")
        assert sorted(chunks(conn, "docs")) == keys(1, 2, *range(4, 16))
    assert sorted(chunks(conn, "docs")) == keys(1, 2, *range(4, 16))


def test_delete_rolled_back_keeps_chunks(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 5)
    before = chunks(conn, "docs")
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM docs WHERE id = 3")
        assert (3,) not in chunks(conn, "docs")
    assert chunks(conn, "docs") == before


def test_truncate_clears_embeddings_queue_and_inbox(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 20)
    add_docs(conn, 21, 30)
    vid = active_version(conn, "docs")["id"]
    # A worker merges the inbox into the queue and claims part of it.
    conn.execute(
        "SELECT * FROM autoembed.claim_batch(%s, 3, '1 minute', gen_random_uuid())", (vid,)
    )
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 1")
    v = vectorizer(conn, "docs")
    assert count(conn, v.queue) == 10
    assert count(conn, v.inbox) == 1

    conn.execute("TRUNCATE docs")

    assert count(conn, v.embeddings) == 0
    assert count(conn, v.queue) == 0
    assert count(conn, v.inbox) == 0
    s = status(conn, "docs")
    assert (s["embedded_rows"], s["pending"], s["in_flight"]) == (0, 0, 0)


def test_rows_inserted_after_truncate_are_embedded(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 10)
    conn.execute("TRUNCATE docs")
    add_docs(conn, 5, 8)
    drain(db_url, batch_size=500)
    assert sorted(chunks(conn, "docs")) == keys(5, 6, 7, 8)


# ---------------------------------------------------------------- primary key changes


def test_primary_key_change_moves_embeddings(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 10)
    conn.execute("UPDATE docs SET id = 100 WHERE id = 4")

    assert (4,) not in chunks(conn, "docs")
    assert queued_keys(conn, "docs") == keys(100)
    drain(db_url, batch_size=500)

    got = chunks(conn, "docs")
    assert sorted(got) == keys(1, 2, 3, *range(5, 11), 100)
    assert "Body of document 4 about" in " ".join(c.chunk for c in got[(100,)])


def test_swapping_primary_keys_reembeds_both_rows(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 3)
    with conn.transaction():
        conn.execute("UPDATE docs SET id = -1 WHERE id = 1")
        conn.execute("UPDATE docs SET id = 1 WHERE id = 2")
        conn.execute("UPDATE docs SET id = 2 WHERE id = -1")
    drain(db_url, batch_size=500)
    got = chunks(conn, "docs")
    assert "Body of document 2 about" in got[(1,)][0].chunk
    assert "Body of document 1 about" in got[(2,)][0].chunk


# kind -> (DDL, key columns, keys)
KEYED: dict[str, tuple[str, list[str], list[Key]]] = {
    "composite": (
        "CREATE TABLE keyed (tenant int, slug text, body text, PRIMARY KEY (tenant, slug))",
        ["tenant", "slug"],
        [(1, "a"), (1, "b"), (2, "a"), (3, 'it\'s "quoted"')],
    ),
    "text": (
        "CREATE TABLE keyed (slug text PRIMARY KEY, body text)",
        ["slug"],
        [("alpha",), ("beta",), ("Ünïcode key",), ('it\'s "quoted"',)],
    ),
}


@pytest.mark.parametrize("kind", sorted(KEYED))
def test_non_integer_primary_key_end_to_end(conn: Conn, db_url: str, kind: str) -> None:
    ddl, pk, rows = KEYED[kind]
    conn.execute(ddl)
    cols = ", ".join(pk)
    marks = ", ".join(["%s"] * (len(pk) + 1))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO keyed ({cols}, body) VALUES ({marks})",
            [(*k, f"text of row {i}") for i, k in enumerate(rows)],
        )
    create_vectorizer(conn, "keyed", ["body"])
    where = " AND ".join(f"{c} = %s" for c in pk)
    first, second, third, fourth = rows

    drain(db_url, batch_size=500)
    assert sorted(chunks(conn, "keyed")) == sorted(rows)

    conn.execute(f"UPDATE keyed SET body = 'walruses' WHERE {where}", first)
    conn.execute(f"DELETE FROM keyed WHERE {where}", second)
    conn.execute(f"UPDATE keyed SET slug = 'renamed' WHERE {where}", third)
    moved = (*third[:-1], "renamed")
    assert second not in chunks(conn, "keyed")
    assert third not in chunks(conn, "keyed")
    assert queued_keys(conn, "keyed") == sorted([first, moved])

    drain(db_url, batch_size=500)
    got = chunks(conn, "keyed")
    assert sorted(got) == sorted([first, moved, fourth])
    assert got[first][0].chunk == "walruses"
    assert got[moved][0].chunk == "text of row 2"

    query = conn.execute("SELECT embedding FROM autoembed.keyed_embeddings LIMIT 1").fetchone()
    assert query is not None
    hits = conn.execute("SELECT pk FROM autoembed.search('keyed', %s, 10)", query).fetchall()
    assert sorted(tuple(h[0][c] for c in pk) for h in hits) == sorted([first, moved, fourth])


# ---------------------------------------------------------------- NOTIFY


def test_insert_of_10000_rows_sends_one_notification(conn: Conn, db_url: str) -> None:
    vid = docs_vectorizer(conn)
    with listening(db_url) as listener:
        add_docs(conn, 1, 10_000)
        assert notifications(listener) == [("autoembed", str(vid))]
    assert len(queued_keys(conn, "docs")) == 10_000


def test_transaction_of_100_updates_sends_one_notification(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 100)
    vid = vectorizer(conn, "docs").id
    with listening(db_url) as listener:
        with conn.transaction():
            for i in range(1, 101):
                conn.execute("UPDATE docs SET body = %s WHERE id = %s", (f"new body {i}", i))
        assert notifications(listener) == [("autoembed", str(vid))]
    assert queued_keys(conn, "docs") == keys(*range(1, 101))


def test_update_notifications_are_throttled_per_session(conn: Conn, db_url: str) -> None:
    """One-row autocommit UPDATEs wake the dispatcher at most once per 250 ms
    per session (the dispatcher polls for the rest); every change is queued."""
    embedded(conn, db_url, 10)
    wake = ("autoembed", str(vectorizer(conn, "docs").id))
    with listening(db_url) as listener:
        for i in range(1, 6):  # five transactions well within 250 ms
            conn.execute("UPDATE docs SET body = %s WHERE id = %s", (f"quick {i}", i))
        assert notifications(listener) == [wake]
        time.sleep(0.3)
        # a wake-up that is rolled back does not count against the next one
        with conn.transaction():
            conn.execute("UPDATE docs SET body = 'undone' WHERE id = 7")
            raise psycopg.Rollback
        conn.execute("UPDATE docs SET body = 'later' WHERE id = 6")
        assert notifications(listener) == [wake]
    assert queued_keys(conn, "docs") == keys(*range(1, 7))


# ---------------------------------------------------------------- status


def test_status_shows_pending_draining_to_zero(conn: Conn, db_url: str) -> None:
    docs_vectorizer(conn, 40)  # backfill: straight into the queue
    add_docs(conn, 41, 50)  # trigger: into the inbox
    before = status(conn, "docs")
    assert (before["pending"], before["embedded_rows"], before["failed"]) == (50, 0, 0)
    assert before["model_version"] is None

    drain(db_url, batch_size=500)

    after = status(conn, "docs")
    assert after["pending"] == 0
    assert after["in_flight"] == 0
    assert after["failed"] == 0
    assert after["embedded_rows"] == 50
    assert after["chunks"] == sum(len(c) for c in chunks(conn, "docs").values())
    assert after["model_version"].startswith("hash:16")


def test_status_counts_a_row_changed_many_times_once(conn: Conn) -> None:
    docs_vectorizer(conn, 3)  # backfill queues rows 1..3
    for i in range(5):
        conn.execute("UPDATE docs SET body = %s WHERE id = 1", (f"version {i}",))
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 2")
    assert status(conn, "docs")["pending"] == 3


# ---------------------------------------------------------------- other ways to write


def test_upsert_enqueues_inserted_and_changed_rows_only(conn: Conn, db_url: str) -> None:
    embedded(conn, db_url, 3)
    conn.execute(
        "INSERT INTO docs (id, title, body) VALUES "
        "(1, 'Title 1', 'an upserted body'), "  # changed
        "(2, 'Title 2', 'Body of document 2 about engines'), "  # the same text
        "(4, 'Title 4', 'a new row') "  # inserted
        "ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body"
    )
    assert queued_keys(conn, "docs") == keys(1, 4)


def test_merge_enqueues_inserts_and_updates_and_removes_deleted_chunks(
    conn: Conn, db_url: str
) -> None:
    embedded(conn, db_url, 3)
    conn.execute(
        "MERGE INTO docs AS d USING (VALUES (1, 'merged body'), (2, NULL), (5, 'merged new')) "
        "AS s(id, body) ON d.id = s.id "
        "WHEN MATCHED AND s.body IS NULL THEN DELETE "
        "WHEN MATCHED THEN UPDATE SET body = s.body "
        "WHEN NOT MATCHED THEN INSERT (id, body) VALUES (s.id, s.body)"
    )
    assert sorted(chunks(conn, "docs")) == keys(1, 3)  # 1 keeps its chunks until re-embedded
    assert queued_keys(conn, "docs") == keys(1, 5)
    drain(db_url, batch_size=500)
    got = chunks(conn, "docs")
    assert sorted(got) == keys(1, 3, 5)
    assert "merged body" in got[(1,)][0].chunk


def test_generated_text_column_follows_its_inputs(conn: Conn, db_url: str) -> None:
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, data jsonb, "
        "body text GENERATED ALWAYS AS (data ->> 'text') STORED)"
    )
    conn.execute("""INSERT INTO items (id, data) VALUES (1, '{"text": "old words"}')""")
    create_vectorizer(conn, "items", ["body"])
    drain(db_url, batch_size=500)
    conn.execute("""UPDATE items SET data = '{"text": "new words"}' WHERE id = 1""")
    assert queued_keys(conn, "items") == keys(1)
    drain(db_url, batch_size=500)
    assert chunks(conn, "items")[(1,)][0].chunk == "new words"


def test_partitioned_table_end_to_end(conn: Conn, db_url: str) -> None:
    conn.execute(
        "CREATE TABLE parts (region text, id int, body text, PRIMARY KEY (region, id)) "
        "PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu')")
    conn.execute("CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us')")
    conn.execute("INSERT INTO parts VALUES ('eu', 1, 'alpha'), ('us', 2, 'beta')")
    create_vectorizer(conn, "parts", ["body"])
    conn.execute("INSERT INTO parts VALUES ('us', 3, 'gamma')")
    drain(db_url, batch_size=500)
    assert sorted(chunks(conn, "parts")) == [("eu", 1), ("us", 2), ("us", 3)]

    conn.execute("UPDATE parts SET body = 'delta' WHERE id = 3")
    conn.execute("DELETE FROM parts WHERE id = 2")
    assert sorted(chunks(conn, "parts")) == [("eu", 1), ("us", 3)]
    assert queued_keys(conn, "parts") == [("us", 3)]
    drain(db_url, batch_size=500)
    got = chunks(conn, "parts")
    assert sorted(got) == [("eu", 1), ("us", 3)]
    assert got[("us", 3)][0].chunk == "delta"


def test_update_moving_a_row_to_another_partition_moves_its_embeddings(
    conn: Conn, db_url: str
) -> None:
    conn.execute(
        "CREATE TABLE parts (region text, id int, body text, PRIMARY KEY (region, id)) "
        "PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu')")
    conn.execute("CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us')")
    conn.execute("INSERT INTO parts VALUES ('eu', 1, 'alpha'), ('eu', 2, 'beta')")
    create_vectorizer(conn, "parts", ["body"])
    drain(db_url, batch_size=500)

    conn.execute("UPDATE parts SET region = 'us' WHERE id = 1")

    assert sorted(chunks(conn, "parts")) == [("eu", 2)]
    assert queued_keys(conn, "parts") == [("us", 1)]
    drain(db_url, batch_size=500)
    assert sorted(chunks(conn, "parts")) == [("eu", 2), ("us", 1)]
