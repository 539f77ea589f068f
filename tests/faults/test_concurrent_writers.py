"""Fault 2, concurrent writers: four connections make random inserts,
updates of embedded and non-embedded columns, deletes and primary-key
changes (some several to a transaction) while two Celery workers embed. At
quiescence the embeddings equal a from-scratch embedding of the final table."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from tests.e2e.conftest import StartWorker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size, text

pytestmark = pytest.mark.faults

INITIAL = size(500, 2000)
OPERATIONS = size(800, 5000)
WRITERS = 4


def test_random_writes_from_four_connections_while_workers_run(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    env = {"AUTOEMBED_LEASE_SECONDS": "10", "AUTOEMBED_BATCH_SIZE": "16"}
    workers = [start_worker(db_url, **env) for _ in range(2)]
    make_docs(conn, INITIAL)

    next_id = itertools.count(INITIAL + 1)
    id_lock = threading.Lock()
    done = Counter[str]()
    done_lock = threading.Lock()
    errors: list[BaseException] = []
    per_writer = OPERATIONS // WRITERS

    def new_id() -> int:
        with id_lock:
            return next(next_id)

    def some_id(c: psycopg.Connection[Any], rng: random.Random) -> int:
        row = c.execute(
            "SELECT id FROM docs WHERE id >= %s ORDER BY id LIMIT 1",
            (rng.randint(1, new_id()),),
        ).fetchone()
        return int(row[0]) if row else 1

    def one(c: psycopg.Connection[Any], rng: random.Random) -> str:
        kind = rng.choices(
            ["insert", "update_body", "update_title", "update_views", "delete", "pk_change"],
            weights=[25, 25, 10, 15, 10, 15],
        )[0]
        if kind == "insert":
            c.execute(
                "INSERT INTO docs VALUES (%s, %s, %s, 0)",
                (new_id(), "new", text(rng, long=rng.random() < 0.1)),
            )
        elif kind == "update_body":
            c.execute(
                "UPDATE docs SET body = %s WHERE id = %s",
                (text(rng, long=rng.random() < 0.1), some_id(c, rng)),
            )
        elif kind == "update_title":
            c.execute("UPDATE docs SET title = %s WHERE id = %s", (text(rng), some_id(c, rng)))
        elif kind == "update_views":
            c.execute("UPDATE docs SET views = views + 1 WHERE id = %s", (some_id(c, rng),))
        elif kind == "delete":
            c.execute("DELETE FROM docs WHERE id = %s", (some_id(c, rng),))
        else:
            c.execute("UPDATE docs SET id = %s WHERE id = %s", (new_id(), some_id(c, rng)))
        return kind

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with connect(db_url) as c:
                n = 0
                while n < per_writer:
                    batch = 1 if rng.random() < 0.7 else rng.randint(2, 5)
                    try:
                        with c.transaction():
                            kinds = [one(c, rng) for _ in range(batch)]
                    except (psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
                        with done_lock:
                            done["rolled back"] += 1
                        continue
                    n += batch
                    with done_lock:
                        done.update(kinds)
        except BaseException as e:
            errors.append(e)

    start = time.monotonic()
    threads = [threading.Thread(target=writer, args=(s,)) for s in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    writes_s = time.monotonic() - start

    def describe() -> str:
        return "\n".join(w.describe()[-3000:] for w in workers)

    took = helpers.wait_quiescent(conn, "docs", timeout=size(120, 600), describe=describe)
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "2 concurrent writers",
            result.rows,
            sum(v for k, v in done.items() if k != "rolled back"),
            f"writes from {WRITERS} connections",
            writes_s + took,
            result.missing,
            result.stale,
            result.duplicated,
            {"writes s": round(writes_s, 1), **dict(sorted(done.items()))},
        )
    )
    assert sum(v for k, v in done.items() if k != "rolled back") >= OPERATIONS - WRITERS
    for kind in ("pk_change", "delete", "update_views", "update_body", "insert"):
        assert done[kind] > 0, done
    assert result.ok, result
