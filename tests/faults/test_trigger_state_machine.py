"""Fault 8, trigger semantics: a Hypothesis state machine runs random
sequences of inserts, updates of the embedded and of another column,
deletes, primary-key changes, truncates, single batches, claims that see
their rows change before they complete, and full drains, against a model
(a dict: key -> text). After every step:

* no key outside the model has chunks (a delete or key change removes them
  in the same transaction);
* every key whose chunks are not exactly those of its current text (chunk
  texts and vectors) is queued (inbox or queue) and not failed: nothing
  stale is forgotten;
* after a full drain the queue is empty and every key's chunks are exact.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.pipeline import Pipeline
from tests.faults import helpers
from tests.faults.helpers import Figures, size
from tests.integration.helpers import queued_keys

pytestmark = pytest.mark.faults

Conn = psycopg.Connection[Any]
EXAMPLES = size(25, 300)
STEPS = size(30, 60)

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu"]
short = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
long = st.integers(130, 300).map(lambda n: " ".join(WORDS[i % 8] for i in range(n)))
bodies = st.one_of(short, short, short, long, st.sampled_from([None, "", "  \n "]))
keys = st.integers(1, 12)


def test_trigger_state_machine(db_url: str) -> None:
    counter = itertools.count()
    stats = {"examples": 0, "steps": 0}
    with connect(db_url) as conn, connect(db_url) as wconn:
        queue.prepare(wconn)

        class Triggers(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                self.name = f"sm{next(counter)}"
                conn.execute(f"CREATE TABLE {self.name} (id int PRIMARY KEY, body text, note text)")
                row = conn.execute(
                    "SELECT autoembed.create_vectorizer(%s::regclass, ARRAY['body'], model => %s)",
                    (self.name, helpers.MODEL),
                ).fetchone()
                assert row is not None
                self.vid = int(row[0])
                self.emb = helpers.tables(conn, self.name)[0]
                pipe = helpers.active_pipeline(wconn, self.vid, Settings(lease_seconds=30))
                assert pipe is not None
                self.pipe: Pipeline = pipe
                self.model: dict[int, str | None] = {}
                stats["examples"] += 1

            def teardown(self) -> None:
                conn.execute("SELECT autoembed.drop_vectorizer(%s)", (self.name,))
                conn.execute(f"DROP TABLE {self.name}")

            # ------------------------------------------------------- writes

            def _write(self, op: str, k: int, body: str | None, k2: int) -> None:
                """Apply one change to the table and the model."""
                t = self.name
                if op == "insert" and k not in self.model:
                    conn.execute(f"INSERT INTO {t} VALUES (%s, %s, 'n')", (k, body))
                    self.model[k] = body
                elif op == "update" and k in self.model:
                    conn.execute(f"UPDATE {t} SET body = %s WHERE id = %s", (body, k))
                    self.model[k] = body
                elif op == "note" and k in self.model:
                    conn.execute(f"UPDATE {t} SET note = note || 'x' WHERE id = %s", (k,))
                elif op == "delete" and k in self.model:
                    conn.execute(f"DELETE FROM {t} WHERE id = %s", (k,))
                    del self.model[k]
                elif op == "rekey" and k in self.model and k2 not in self.model:
                    conn.execute(f"UPDATE {t} SET id = %s WHERE id = %s", (k2, k))
                    self.model[k2] = self.model.pop(k)

            @rule(k=keys, body=bodies)
            def insert(self, k: int, body: str | None) -> None:
                self._write("insert", k, body, 0)

            @rule(rows=st.lists(st.tuples(keys, bodies), min_size=2, max_size=8))
            def insert_many(self, rows: list[tuple[int, str | None]]) -> None:
                fresh = dict(r for r in rows if r[0] not in self.model)
                if fresh:
                    with conn.cursor() as cur:
                        cur.execute(
                            f"INSERT INTO {self.name} (id, body) "
                            "SELECT * FROM unnest(%s::int[], %s::text[])",
                            (list(fresh), list(fresh.values())),
                        )
                    self.model.update(fresh)

            @rule(k=keys, body=bodies)
            def update_body(self, k: int, body: str | None) -> None:
                self._write("update", k, body, 0)

            @rule(k=keys)
            def update_note(self, k: int) -> None:
                self._write("note", k, None, 0)

            @rule(k=keys)
            def delete(self, k: int) -> None:
                self._write("delete", k, None, 0)

            @rule(k=keys, k2=keys)
            def change_key(self, k: int, k2: int) -> None:
                self._write("rekey", k, None, k2)

            @rule(k=keys, k2=keys, body=bodies)
            def in_one_transaction(self, k: int, k2: int, body: str | None) -> None:
                """Delete a key and insert it again, then update and re-key."""
                with conn.transaction():
                    self._write("delete", k, None, 0)
                    self._write("insert", k, body, 0)
                    self._write("update", k2, body, 0)
                    self._write("rekey", k2, None, k)

            @rule()
            def truncate(self) -> None:
                conn.execute(f"TRUNCATE {self.name}")
                self.model.clear()

            # ------------------------------------------------------ workers

            @rule(batch=st.integers(1, 4))
            def one_batch(self, batch: int) -> None:
                self.pipe.batch_size = batch
                self.pipe.run_batch()

            @rule(
                batch=st.integers(1, 4),
                op=st.sampled_from(["update", "delete", "rekey", "note", "insert"]),
                which=st.integers(0, 3),
                body=bodies,
                k2=keys,
            )
            def claim_then_change(
                self, batch: int, op: str, which: int, body: str | None, k2: int
            ) -> None:
                """A worker claims and embeds; the row changes before it writes."""
                token = uuid.uuid4()
                claimed = queue.claim(wconn, self.pipe.version.id, batch, 30, token)
                if not claimed:
                    return
                k = json.loads(claimed[which % len(claimed)].key)["id"]
                self._write(op, k, body, k2)
                keys_, item, no, chunks = [], [], [], []
                for c in claimed:
                    keys_.append(c.key)
                    for n, piece in enumerate(self.pipe.chunk(c.document)):
                        item.append(len(keys_) - 1)
                        no.append(n)
                        chunks.append(piece)
                vectors = list(self.pipe.embedder.embed(chunks)) if chunks else []
                queue.complete(
                    wconn,
                    self.pipe.version.id,
                    token,
                    self.pipe.model_version_id,
                    keys_,
                    item,
                    no,
                    chunks,
                    vectors,
                )

            @rule()
            def drain_all(self) -> None:
                drain_vectorizer(wconn, self.vid, Settings(lease_seconds=30))
                assert queued_keys(conn, self.name) == [], "a full drain leaves nothing queued"
                stale = self._stale()
                assert not stale, f"after a full drain, keys not exactly embedded: {stale}"

            # --------------------------------------------------- invariants

            def _stored(self) -> dict[int, list[tuple[str, list[float]]]]:
                out: dict[int, list[tuple[str, list[float]]]] = {}
                for k, chunk, vec in conn.execute(
                    f"SELECT id, chunk, embedding::text FROM autoembed.{self.emb} "
                    "ORDER BY id, chunk_no"
                ):
                    out.setdefault(k, []).append((chunk, json.loads(vec)))
                return out

            def _stale(self) -> list[int]:
                """Keys of the model whose chunks are not those of their text."""
                stored = self._stored()
                bad = []
                for k, body in self.model.items():
                    want = self.pipe.chunk(body)
                    got = stored.get(k, [])
                    if [c for c, _ in got] != want:
                        bad.append(k)
                    elif want:
                        vecs = self.pipe.embedder.embed(want)
                        if not np.allclose(vecs, np.array([v for _, v in got]), atol=1e-6):
                            bad.append(k)
                return bad

            @invariant()
            def no_chunks_for_rows_that_are_gone(self) -> None:
                stats["steps"] += 1
                gone = set(self._stored()) - set(self.model)
                assert not gone, f"chunks of deleted or re-keyed rows: {sorted(gone)}"

            @invariant()
            def every_stale_row_is_queued(self) -> None:
                queued = {k[0] for k in queued_keys(conn, self.name)}
                missed = set(self._stale()) - queued
                assert not missed, f"rows not exactly embedded and not queued: {sorted(missed)}"
                failed = conn.execute(
                    "SELECT count(*) FROM autoembed.failed_rows(%s)", (self.name,)
                ).fetchone()
                assert failed == (0,)

        start = time.monotonic()
        run_state_machine_as_test(
            Triggers,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=not helpers.FULL,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
        seconds = time.monotonic() - start
    helpers.record(
        Figures(
            "8 trigger semantics (Hypothesis)",
            12,
            stats["steps"],
            f"steps in {stats['examples']} examples",
            seconds,
            0,
            0,
            0,
            {"keys": "1..12"},
        )
    )
