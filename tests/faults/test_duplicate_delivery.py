"""Fault 7, duplicate delivery: the same drain task delivered many times at
once. The drain task is sent 50 times at once; Redis delivers every
unacknowledged message again after a visibility timeout of 1 s, while the
first delivery is still running (tasks take longer than that); and once it
has, more rows arrive, the task is sent 50 times more and eight threads of
this process drain the same vectorizer too. No chunk is
duplicated or lost, and every row is written exactly once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer
from tests.e2e.conftest import StartWorker
from tests.faults import helpers
from tests.faults.helpers import Figures, compare_with_fresh, make_docs, size

pytestmark = pytest.mark.faults

ROWS = size(1200, 10_000)
MORE = ROWS // 2
SENDS = 50
THREADS = 8


def _redelivered(logs: str) -> int:
    received = Counter(re.findall(r"Task autoembed\.drain\[([0-9a-f-]+)\] received", logs))
    return sum(n - 1 for n in received.values() if n > 1)


def test_the_same_task_delivered_many_times_at_once(
    conn: psycopg.Connection[Any],
    db_url: str,
    start_worker: StartWorker,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "AUTOEMBED_BATCH_SIZE": "16",
        "AUTOEMBED_HASH_DELAY_MS": "50",
        "AUTOEMBED_TASK_SECONDS": "3",
        "AUTOEMBED_BROKER_TRANSPORT_OPTIONS": json.dumps(
            {
                "visibility_timeout": 1,
                "unacked_restore_interval": 0.5,
                "unacked_restore_throttle": 1,
            }
        ),
    }
    workers = [start_worker(db_url, **env) for _ in range(2)]

    def describe() -> str:
        return "\n".join(w.describe()[-4000:] for w in workers)

    vid = make_docs(conn, ROWS)
    client = helpers.celery_client(redis_server.url)
    helpers.send_drain(client, vid, times=SENDS)
    start = time.monotonic()

    # The threads below embed as slowly as the workers do.
    monkeypatch.setenv("AUTOEMBED_HASH_DELAY_MS", "50")
    # Wait for Redis to hand a message that is still being worked on to a
    # worker a second time.
    deadline = time.monotonic() + 60
    while not _redelivered("".join(w.log() for w in workers)):
        assert time.monotonic() < deadline, f"no message was redelivered\n{describe()}"
        time.sleep(0.1)

    # More rows, 50 more sends, and the threads, all at once.
    conn.execute(
        "INSERT INTO docs SELECT g, 'doc ' || g, 'more words for row ' || g, 0 "
        "FROM generate_series(%s::int, %s::int) AS g",
        (ROWS + 1, ROWS + MORE),
    )
    helpers.send_drain(client, vid, times=SENDS)
    written: list[int] = []
    errors: list[BaseException] = []

    def in_process() -> None:
        try:
            with connect(db_url) as c:
                queue.prepare(c)
                s = drain_vectorizer(c, vid, Settings(database_url=db_url, batch_size=16))
                written.append(s.written)
        except psycopg.Error as e:
            errors.append(e)
            print(f"{e}\nDETAIL {e.diag.message_detail}\nCONTEXT {e.diag.context}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=in_process) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    waited = time.monotonic() - start
    seconds = waited + helpers.wait_quiescent(
        conn, "docs", timeout=size(120, 600), describe=describe
    )
    for w in workers:
        assert w.proc.poll() is None, w.describe()
        w.stop()

    logs = "".join(w.log() for w in workers)
    redelivered = _redelivered(logs)
    by_workers = sum(int(n) for n in re.findall(r"vectorizer \d+: (\d+) rows embedded", logs))
    result = compare_with_fresh(db_url, "docs", "docs", ["title", "body"])
    helpers.record(
        Figures(
            "7 duplicate delivery",
            ROWS + MORE,
            2 * SENDS + redelivered + THREADS,
            f"deliveries ({2 * SENDS} sends, {redelivered} redeliveries, {THREADS} threads)",
            seconds,
            result.missing,
            result.stale,
            result.duplicated,
            {
                "rows written by workers": by_workers,
                "by threads": sum(written),
            },
        )
    )
    # Exactly-once effect: with no change to the table, every row is written once.
    assert by_workers + sum(written) == ROWS + MORE, (by_workers, sum(written))
    assert result.ok, result
