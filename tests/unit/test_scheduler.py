"""drain.Scheduler: which version of a vectorizer a worker claims from next
(fresh changes of the active version first; a campaign gets its share), and
how large a campaign's batches are."""

from __future__ import annotations

import pytest

from autoembed.worker.drain import Scheduler
from autoembed.worker.queue import VersionConfig

ACTIVE = VersionConfig(101, 1, "hash:16", 16, "active", 7)
BUILDING = VersionConfig(102, 2, "hash:32", 32, "building", None)
RETIRED = VersionConfig(103, 3, "hash:8", 8, "retired", 9)


def turns(share: float, batches: int) -> str:
    """Which version goes first for each of ``batches`` batches when both
    always have work: A (active) or B (the campaign)."""
    s = Scheduler(share, 2.0)
    out = ""
    for _ in range(batches):
        first = s.order([BUILDING, ACTIVE])[0]
        out += "A" if first is ACTIVE else "B"
        s.record(first, 10, 1.0)
    return out


@pytest.mark.parametrize(
    ("share", "pattern"),
    [
        (0.0, "AAAAAAAA"),  # the campaign only when there is no fresh work
        (0.25, "AAABAAAB"),  # a quarter of the batches
        (0.5, "ABABABAB"),
        (1.0, "BBBBBBBB"),  # campaign first
    ],
)
def test_the_campaign_gets_its_share_while_fresh_work_waits(share: float, pattern: str) -> None:
    assert turns(share, 8) == pattern


def test_the_active_version_comes_first_and_others_keep_their_order() -> None:
    s = Scheduler(0.25, 2.0)
    assert s.order([RETIRED, BUILDING, ACTIVE]) == [ACTIVE, RETIRED, BUILDING]


def test_credit_does_not_pile_up_while_there_is_no_campaign_work() -> None:
    s = Scheduler(0.25, 2.0)
    for _ in range(100):
        s.record(ACTIVE, 16, 1.0)
    assert s.order([ACTIVE, BUILDING])[0] is BUILDING  # one turn owed ...
    s.record(BUILDING, 4, 1.0)
    assert s.order([ACTIVE, BUILDING])[0] is ACTIVE  # ... not a hundred


def test_a_campaign_batch_is_sized_to_take_about_batch_seconds() -> None:
    s = Scheduler(0.25, 2.0)
    assert s.batch_size(ACTIVE, 16) == 16  # fresh work: the worker's batch size
    assert s.batch_size(BUILDING, 16) == 1  # not measured yet: one row
    s.record(BUILDING, 4, 2.0)  # 0.5 s per row
    assert s.batch_size(BUILDING, 16) == 4
    s.record(BUILDING, 4, 0.4)  # faster now: 0.3 s per row on average
    assert s.batch_size(BUILDING, 16) == 7
    s.record(BUILDING, 100, 0.1)
    assert s.batch_size(BUILDING, 16) == 13
    s.record(BUILDING, 100, 0.01)
    assert s.batch_size(BUILDING, 16) == 16  # never above the worker's batch size


def test_what_one_drain_measured_sizes_the_next_drains_batches() -> None:
    shared: dict[int, float] = {}
    first = Scheduler(0.25, 2.0, shared)
    first.record(BUILDING, 4, 2.0)
    second = Scheduler(0.25, 2.0, shared)  # the next drain task in this process
    assert second.batch_size(BUILDING, 16) == 4
