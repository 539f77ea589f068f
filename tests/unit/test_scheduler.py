"""drain.Scheduler: which version of a vectorizer a worker claims from next
(fresh changes of the active version first; a campaign gets its share), how
large its batches are, and when a claim may take the fresh lane."""

from __future__ import annotations

import pytest

from autoembed.worker.drain import FRESH_SECONDS, Scheduler
from autoembed.worker.queue import VersionConfig

ACTIVE = VersionConfig(101, 1, "hash:16", 16, "active", 7)
BUILDING = VersionConfig(102, 2, "hash:32", 32, "building", None)
RETIRED = VersionConfig(103, 3, "hash:8", 8, "retired", 9)


def turns(share: float, batches: int) -> str:
    """Which version goes first for each of ``batches`` batches when both
    always have work: A (active) or B (the campaign)."""
    s = Scheduler(share, 0.5, 2.0)
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
    s = Scheduler(0.25, 0.5, 2.0)
    assert s.order([RETIRED, BUILDING, ACTIVE]) == [ACTIVE, RETIRED, BUILDING]


def test_credit_does_not_pile_up_while_there_is_no_campaign_work() -> None:
    s = Scheduler(0.25, 0.5, 2.0)
    for _ in range(100):
        s.record(ACTIVE, 16, 1.0)
    assert s.order([ACTIVE, BUILDING])[0] is BUILDING  # one turn owed ...
    s.record(BUILDING, 4, 1.0)
    assert s.order([ACTIVE, BUILDING])[0] is ACTIVE  # ... not a hundred


def test_a_campaign_batch_is_sized_to_take_about_batch_seconds() -> None:
    s = Scheduler(0.25, 0.5, 2.0)
    assert s.batch(BUILDING, 16) == (1, None)  # not measured yet: one row, the backlog
    s.record(BUILDING, 4, 2.0)  # 0.5 s per row
    assert s.batch(BUILDING, 16) == (4, None)
    s.record(BUILDING, 4, 0.4)  # faster now: 0.3 s per row on average
    assert s.batch(BUILDING, 16) == (7, None)
    s.record(BUILDING, 100, 0.1)
    assert s.batch(BUILDING, 16) == (13, None)
    s.record(BUILDING, 100, 0.01)
    assert s.batch(BUILDING, 16) == (16, None)  # never above the worker's batch size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_active_batch_takes_about_its_own_seconds_while_changes_come_in() -> None:
    clock = Clock()
    s = Scheduler(0.25, 0.5, 2.0, clock=clock)
    assert s.batch(ACTIVE, 16)[0] == 16  # no change coming in: full batches
    s.record(ACTIVE, 16, 1.6, fresh=True)  # 0.1 s per row, and a change came in
    assert s.batch(ACTIVE, 16)[0] == 5  # five rows take 0.5 s
    s.record(ACTIVE, 100, 0.1)
    assert s.batch(ACTIVE, 16)[0] == 10
    s.record(ACTIVE, 100, 0.001)
    assert s.batch(ACTIVE, 16)[0] == 16  # never above the worker's batch size
    s.record(ACTIVE, 16, 8.0)  # slow now: 0.25 s per row on average
    assert s.batch(ACTIVE, 16)[0] == 2
    s.record(ACTIVE, 2, 2.0)  # a row costs the whole 0.5 s: full batches amortize it
    assert s.batch(ACTIVE, 16)[0] == 16
    clock.now += FRESH_SECONDS  # no fresh batch since: full batches again
    assert s.batch(ACTIVE, 16)[0] == 16


def test_a_version_not_measured_yet_starts_with_one_row_while_changes_come_in() -> None:
    clock = Clock()
    seen = {ACTIVE.id: clock.now}
    assert Scheduler(0.25, 0.5, 2.0, fresh_seen=seen, clock=clock).batch(ACTIVE, 16)[0] == 1


def test_when_changes_last_came_in_outlives_a_drain() -> None:
    clock, seen = Clock(), {}
    Scheduler(0.25, 0.5, 2.0, {ACTIVE.id: 0.1}, seen, clock).record(ACTIVE, 1, 0.1, fresh=True)
    second = Scheduler(0.25, 0.5, 2.0, {ACTIVE.id: 0.1}, seen, clock)  # the next drain task
    assert second.batch(ACTIVE, 16)[0] == 5


def test_never_two_fresh_batches_in_a_row() -> None:
    s = Scheduler(0.25, 0.5, 2.0)
    windows = []
    for fresh in [False, False, True, False, True, False, False]:
        windows.append(s.batch(ACTIVE, 16)[1])
        s.record(ACTIVE, 4, 0.4, fresh)
    # the fresh lane is asked for unless the batch before was a fresh one;
    # when it had nothing, the claim took the backlog and may ask again
    f = FRESH_SECONDS
    assert windows == [f, f, f, None, f, None, f]


def test_campaign_batches_leave_the_fresh_lanes_turn_alone() -> None:
    s = Scheduler(0.5, 0.5, 2.0)
    s.record(ACTIVE, 1, 0.1, fresh=True)
    s.record(BUILDING, 1, 0.1)
    assert s.batch(ACTIVE, 16)[1] is None
    s.record(ACTIVE, 1, 0.1)
    assert s.batch(ACTIVE, 16)[1] == FRESH_SECONDS


def test_what_one_drain_measured_sizes_the_next_drains_batches() -> None:
    shared: dict[int, float] = {}
    first = Scheduler(0.25, 0.5, 2.0, shared)
    first.record(BUILDING, 4, 2.0)
    second = Scheduler(0.25, 0.5, 2.0, shared)  # the next drain task in this process
    assert second.batch(BUILDING, 16) == (4, None)
