"""A Celery worker's pool process, the one that embeds, loads the models in
use when it starts rather than when its first task needs them: the first
change after a worker starts is embedded without waiting for a model to load
(all-MiniLM-L6-v2, offline; it takes seconds to load on a CPU)."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import StartWorker, wait_embedded

pytestmark = pytest.mark.e2e

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOADED = re.compile(
    r"/(ForkPoolWorker-\d+)\] model " + re.escape(MODEL) + r" loaded at start in ([0-9.]+) s"
)


def test_the_first_change_after_a_start_waits_for_no_model(
    conn: psycopg.Connection[Any], db_url: str, start_worker: StartWorker
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => %s)", (MODEL,))
    worker = start_worker(db_url)

    # No change yet, so no task: only the start loads the model.
    deadline = time.monotonic() + 120
    while (found := LOADED.search(worker.log())) is None:
        assert time.monotonic() < deadline, worker.describe()
        assert "Task autoembed.drain" not in worker.log(), worker.describe()
        time.sleep(0.1)
    load_seconds = float(found.group(2))

    conn.execute("INSERT INTO docs VALUES (1, 'the first change after the worker started')")
    latency = wait_embedded(conn, "docs", 1, worker, timeout=120)

    # Lazily, the first change would wait for the whole load (and more).
    assert latency < load_seconds, (latency, load_seconds, worker.describe())
    log = worker.log()
    embedded = re.search(r"/(ForkPoolWorker-\d+)\] vectorizer \d+: 1 rows embedded", log)
    assert embedded is not None, worker.describe()
    assert embedded.group(1) == found.group(1)  # the process that embeds loaded it
    assert embedded.start() > found.start()
    assert len(LOADED.findall(log)) == 1
    worker.assert_clean_log()
