"""The whole path with real parts: a Celery worker process, a Redis server,
the real all-MiniLM-L6-v2 model, and PostgreSQL.

insert → embedded and searchable with the right row first; update → old
chunks replaced within seconds; delete → gone; and a flushed broker loses
no work (the dispatcher's sweep signals it again).
"""

from __future__ import annotations

import base64
import gc
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from autoembed.embedded import EmbeddedRedis
from autoembed.search import search
from autoembed.worker.embedders import load_embedder
from tests.e2e.conftest import StartWorker, status, wait_embedded

pytestmark = pytest.mark.e2e

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Short texts on distinct topics.
TEXTS = {
    1: "The recipe calls for flour, butter and sugar, baked at 180 degrees until golden brown.",
    2: "The striker scored twice in the second half to win the championship final.",
    3: "Astronomers detected a new exoplanet orbiting a red dwarf star forty light-years away.",
    4: "The central bank raised interest rates again to curb persistent inflation.",
    5: "Regular watering and full sunlight help tomato plants produce more fruit.",
    6: "The violinist performed a Bach partita to a sold-out concert hall.",
    7: "A new vaccine reduced hospital admissions for influenza among elderly patients.",
    8: "Engineers replaced the bridge's rusted steel cables after a safety inspection.",
    9: "The hikers followed a narrow trail along the glacier to reach the mountain summit.",
    10: "The compiler reports a type error when a string is passed where an integer is expected.",
    11: "Volcanic ash from the eruption grounded flights across northern Europe.",
    12: "Our cat sleeps on the sunny windowsill every afternoon, purring quietly.",
    13: "The museum opened an exhibition of medieval manuscripts and illuminated maps.",
    14: "Heavy rainfall caused the river to flood several villages in the valley.",
}
PLANET_QUERY = "a planet discovered circling a small cool star"  # paraphrases row 3
CHESS_TEXT = "The chess grandmaster sacrificed her queen to force checkmate in twelve moves."
CHESS_QUERY = "chess player gives up the most powerful piece to win the game"
FLU_QUERY = "a flu shot kept old people out of hospital"  # paraphrases row 7


def _chunks(conn: psycopg.Connection[Any], row_id: int) -> list[tuple[str, int, Any]]:
    """(chunk, source_seq as int, embedded_at) of one row, in chunk order."""
    return [
        (r[0], int(r[1]), r[2])
        for r in conn.execute(
            "SELECT chunk, source_seq::text, embedded_at FROM autoembed.notes_embeddings "
            "WHERE id = %s ORDER BY chunk_no",
            (row_id,),
        )
    ]


def _embedded_at(conn: psycopg.Connection[Any], except_id: int) -> dict[int, Any]:
    return dict(
        conn.execute(
            "SELECT id, embedded_at FROM autoembed.notes_embeddings WHERE id <> %s", (except_id,)
        ).fetchall()
    )


def test_insert_update_delete_with_real_worker_broker_and_model(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, views int)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO notes (id, body) VALUES (%s, %s)", list(TEXTS.items()))
    worker = start_worker(db_url)

    # The backfill reaches the worker through NOTIFY → dispatcher → Redis → task.
    conn.execute("SELECT autoembed.create_vectorizer('notes', ARRAY['body'])")
    took = wait_embedded(conn, "notes", len(TEXTS), worker, timeout=120)
    print(f"\n[e2e] {len(TEXTS)} rows embedded by the worker in {took:.1f}s (incl. model load)")

    stored = conn.execute(
        "SELECT id, chunk, vector_dims(embedding) FROM autoembed.notes_embeddings ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1]) for r in stored] == sorted(TEXTS.items()), "one chunk per short row"
    assert {r[2] for r in stored} == {384}, "every stored vector has 384 dimensions"

    versions = conn.execute(
        "SELECT DISTINCT mv.model, mv.weights_digest, mv.dimensions, mv.tag "
        "FROM autoembed.notes_embeddings AS e "
        "JOIN autoembed.model_version AS mv ON mv.id = e.model_version_id"
    ).fetchall()
    assert len(versions) == 1, f"vectors of one model version, got {versions}"
    model, digest, dims, tag = versions[0]
    assert model == MODEL
    assert re.fullmatch(r"[0-9a-f]{64}", digest), f"a sha256 weights digest, got {digest!r}"
    assert dims == 384
    assert "all-MiniLM-L6-v2" in tag
    assert f"@sha256:{digest[:16]}" in tag, tag
    assert status(conn, "notes")["embedded"] == len(TEXTS)
    # The worker process and this process derive the same version from the weights.
    assert load_embedder(MODEL).version().tag == tag

    # (a) a paraphrase finds its row first
    hits = search(conn, "notes", PLANET_QUERY, k=5)
    assert hits[0].pk == {"id": 3}, [(h.pk, round(h.score, 3)) for h in hits]
    assert hits[0].chunk == TEXTS[3]

    # (b) an update to another topic replaces the row's chunks within seconds
    (_, seq_before, _), *rest = _chunks(conn, 3)
    assert not rest
    others_before = _embedded_at(conn, except_id=3)
    t = time.monotonic()
    conn.execute("UPDATE notes SET body = %s WHERE id = 3", (CHESS_TEXT,))
    chunks = _chunks(conn, 3)
    while [c[0] for c in chunks] != [CHESS_TEXT] and time.monotonic() - t < 20:
        time.sleep(0.02)
        chunks = _chunks(conn, 3)
    reembed = time.monotonic() - t
    print(f"[e2e] UPDATE → re-embedded by the worker in {reembed:.2f}s")
    assert [c[0] for c in chunks] == [CHESS_TEXT], (
        f"row 3 not re-embedded within 20s: {chunks}\n{worker.describe()}"
    )
    assert reembed < 10, f"re-embedding took {reembed:.1f}s\n{worker.describe()}"
    assert chunks[0][1] > seq_before, "the new chunk was made from the newer change"
    assert conn.execute(
        "SELECT count(*) FROM autoembed.notes_embeddings WHERE chunk = %s", (TEXTS[3],)
    ).fetchone() == (0,), "the old chunk is gone"
    hits = search(conn, "notes", CHESS_QUERY, k=5)
    assert hits[0].pk == {"id": 3}, [(h.pk, round(h.score, 3)) for h in hits]
    assert search(conn, "notes", PLANET_QUERY, k=5)[0].pk != {"id": 3}
    assert _embedded_at(conn, except_id=3) == others_before, "only the updated row was re-embedded"

    # An update of a column that is not embedded enqueues nothing.
    before_views = _embedded_at(conn, except_id=0)  # every row
    conn.execute("UPDATE notes SET views = 42")
    assert status(conn, "notes")["pending"] == 0

    # (c) a delete removes the row's chunks
    assert search(conn, "notes", FLU_QUERY, k=3)[0].pk == {"id": 7}
    conn.execute("DELETE FROM notes WHERE id = 7")
    assert _chunks(conn, 7) == []
    assert {"id": 7} not in [h.pk for h in search(conn, "notes", FLU_QUERY, k=20)]
    time.sleep(1.5)  # a sweep later, nothing has brought it back or re-embedded anything
    assert _chunks(conn, 7) == []
    del before_views[7]
    assert _embedded_at(conn, except_id=0) == before_views
    final = status(conn, "notes")
    assert final["embedded"] == len(TEXTS) - 1
    assert (final["pending"], final["in_flight"], final["failed"]) == (0, 0, 0), final
    assert worker.proc.poll() is None, worker.describe()
    worker.assert_clean_log()


def test_embedded_redis_leaves_no_file_open(tmp_path: Path) -> None:
    """The server's log file belongs to the child; the parent must close its copy."""
    server = EmbeddedRedis(tmp_path / "redis")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server.start()
        pid = server.pid
        server.stop()
        gc.collect()
    assert pid is not None
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], "the server's log file stays open in the parent process"


def _signalled_ids(broker: redis.Redis) -> list[int]:
    """Vectorizer ids of the drain messages waiting in the Celery queue."""
    ids = []
    for raw in broker.lrange("autoembed", 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(int(args[0]))
    return ids


def test_flushed_broker_loses_no_work(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker, broker: redis.Redis
) -> None:
    """FLUSHALL while a signal waits in Redis: the work is in Postgres, so the
    dispatcher's sweep signals it again and it is embedded all the same."""
    conn.execute("CREATE TABLE busy (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO busy SELECT g, 'busy row ' || g FROM generate_series(1, 400) AS g")
    conn.execute("CREATE TABLE later (id int PRIMARY KEY, body text)")
    later_id = conn.execute(
        "SELECT autoembed.create_vectorizer('later', ARRAY['body'], model => 'hash:64')"
    ).fetchone()
    assert later_id is not None
    # One worker process, kept busy by 'busy' (100 ms per batch of 8 rows), so
    # the signal for 'later' has to wait in Redis.
    worker = start_worker(
        db_url,
        AUTOEMBED_HASH_DELAY_MS="100",
        AUTOEMBED_BATCH_SIZE="8",
        AUTOEMBED_PARALLELISM="1",
        AUTOEMBED_REDELIVER_SECONDS="5",
    )
    conn.execute("SELECT autoembed.create_vectorizer('busy', ARRAY['body'], model => 'hash:64')")
    deadline = time.monotonic() + 20
    while status(conn, "busy")["embedded"] == 0:
        assert time.monotonic() < deadline, f"the worker never started\n{worker.describe()}"
        time.sleep(0.05)

    conn.execute("INSERT INTO later SELECT g, 'later row ' || g FROM generate_series(1, 50) AS g")
    deadline = time.monotonic() + 5
    while later_id[0] not in _signalled_ids(broker):
        assert time.monotonic() < deadline, (
            f"no signal for 'later' waiting in Redis (queue: {_signalled_ids(broker)}, "
            f"busy: {status(conn, 'busy')})\n{worker.describe()}"
        )
        time.sleep(0.02)
    broker.flushall()
    assert broker.llen("autoembed") == 0
    # The one worker process was still busy at the flush, so it had not read
    # the signal for 'later': that signal is lost.
    assert status(conn, "busy")["pending"] > 0, f"'busy' finished too soon\n{worker.describe()}"
    assert status(conn, "later")["embedded"] == 0

    took = wait_embedded(conn, "later", 50, worker, timeout=90)
    print(f"\n[e2e] broker flushed with a signal in it: all 50 rows embedded {took:.1f}s later")
    wait_embedded(conn, "busy", 400, worker, timeout=60)
    assert worker.proc.poll() is None, worker.describe()
    worker.assert_clean_log()
