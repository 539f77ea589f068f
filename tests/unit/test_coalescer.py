"""dispatcher.Coalescer: how many drain tasks to send for which vectorizer."""

from __future__ import annotations

import pytest

from autoembed.worker.dispatcher import Coalescer
from autoembed.worker.queue import Work


def work(vid: int = 1, claimable: int = 100, live: int = 0, started: int = 0) -> Work:
    return Work(vectorizer_id=vid, claimable=claimable, live_claims=live, drains_started=started)


def test_no_claimable_work_sends_nothing() -> None:
    c = Coalescer(parallelism=4, batch_size=16)
    assert c.decide([], 0.0) == {}
    assert c.decide([work(claimable=0), work(vid=2, claimable=0, live=3)], 0.0) == {}


@pytest.mark.parametrize(
    ("claimable", "live", "expected"),
    [
        (1, 0, 1),  # ceil(1/16) = 1
        (16, 0, 1),
        (17, 0, 2),
        (40, 0, 3),
        (1000, 0, 4),  # capped by parallelism
        (1000, 1, 3),  # minus the live claims
        (40, 2, 1),
    ],
)
def test_signals_fill_up_to_parallelism_batches(claimable: int, live: int, expected: int) -> None:
    c = Coalescer(parallelism=4, batch_size=16)
    assert c.decide([work(claimable=claimable, live=live)], 0.0) == {1: expected}


@pytest.mark.parametrize(("claimable", "live"), [(1000, 4), (1000, 9), (16, 1)])
def test_enough_live_claims_send_nothing(claimable: int, live: int) -> None:
    c = Coalescer(parallelism=4, batch_size=16)
    assert c.decide([work(claimable=claimable, live=live)], 0.0) == {}


def test_vectorizers_are_decided_independently() -> None:
    c = Coalescer(parallelism=2, batch_size=10)
    decided = c.decide([work(1, claimable=5), work(2, claimable=0), work(3, claimable=50)], 0.0)
    assert decided == {1: 1, 3: 2}


def test_signals_waiting_in_the_broker_are_not_sent_again() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(started=7)], 0.0) == {1: 4}
    assert c.waiting(1) == 4
    # A long backfill: sweep after sweep, only one drain has started.
    for t in range(1, 50):
        assert c.decide([work(live=1, started=8)], float(t)) == {}
    assert c.waiting(1) == 3


def test_a_started_drain_frees_a_slot() -> None:
    c = Coalescer(parallelism=2, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(started=0)], 0.0) == {1: 2}
    assert c.decide([work(live=1, started=1)], 1.0) == {}  # one running, one waiting
    # both started and finished; new work arrives: a dip in live claims is
    # believed at the second look
    assert c.decide([work(live=0, started=2)], 2.0) == {}
    assert c.decide([work(live=0, started=2)], 2.5) == {1: 2}


def test_signals_are_debounced() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(claimable=1)], 10.0) == {1: 1}
    assert c.decide([work(claimable=100, started=1)], 10.1) == {}
    assert c.decide([work(claimable=100, started=1)], 10.3) == {1: 4}


def test_lost_signals_are_sent_again_after_redeliver_after() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=30)
    assert c.decide([work()], 0.0) == {1: 4}
    assert c.decide([work()], 29.0) == {}
    assert c.decide([work()], 30.5) == {1: 4}  # nothing started for 30 s: presumed lost
    assert c.decide([work()], 31.0) == {}  # and the clock restarts


def test_a_drain_starting_restarts_the_redelivery_clock() -> None:
    c = Coalescer(parallelism=2, batch_size=16, debounce=0.25, redeliver_after=30)
    assert c.decide([work()], 0.0) == {1: 2}
    assert c.decide([work(live=1, started=1)], 20.0) == {}
    assert c.decide([work(live=1, started=1)], 45.0) == {}  # 25 s since a drain started
    assert c.decide([work(live=1, started=1)], 51.0) == {1: 1}  # 31 s: the waiting one is lost


def test_drains_started_by_others_never_make_waiting_negative() -> None:
    c = Coalescer(parallelism=4, batch_size=16)
    assert c.decide([work(started=0)], 0.0) == {1: 4}
    # an earlier dispatcher's signals started too
    assert c.decide([work(live=4, started=10)], 1.0) == {}
    assert c.waiting(1) == 0
    assert c.decide([work(live=0, started=10)], 2.0) == {}
    assert c.decide([work(live=0, started=10)], 2.5) == {1: 4}


def test_parallelism_and_batch_size_are_at_least_one() -> None:
    c = Coalescer(parallelism=0, batch_size=0)
    assert c.decide([work(claimable=5)], 0.0) == {1: 1}


def test_a_drain_between_two_batches_is_not_topped_up() -> None:
    """One worker drains with 3 signals waiting: for a moment between two
    batches it holds no claim. That alone sends nothing; a shortfall that
    lasts (a drain ended while work remains) is topped up at the next look."""
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(claimable=1000)], 0.0) == {1: 4}
    assert c.decide([work(claimable=1000, live=1, started=1)], 0.5) == {}
    assert c.decide([work(claimable=1000, live=0, started=1)], 1.0) == {}  # between batches
    assert c.decide([work(claimable=1000, live=1, started=1)], 1.5) == {}
    assert c.decide([work(claimable=1000, live=0, started=4)], 2.0) == {}  # all 4 ran and ended
    assert c.decide([work(claimable=1000, live=0, started=4)], 2.5) == {1: 4}


def test_a_dip_not_yet_believed_is_listed_for_a_second_look() -> None:
    """A worker killed mid-batch: its claim is dead, so live claims dip. The
    dispatcher looks again at once (unconfirmed) instead of at the next sweep."""
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(claimable=1000, live=2, started=2)], 0.0) == {1: 2}
    assert c.decide([work(claimable=1000, live=1, started=4)], 1.0) == {}
    assert c.unconfirmed() == {1}
    assert c.decide([work(claimable=1000, live=1, started=4)], 1.25) == {1: 3}
    assert c.unconfirmed() == set()


def test_a_dip_with_no_work_left_needs_no_second_look() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work(claimable=1000, live=2, started=2)], 0.0) == {1: 2}
    assert c.decide([work(claimable=1000, live=1, started=4)], 1.0) == {}
    assert c.decide([work(claimable=0, live=1, started=4)], 1.25) == {}
    assert c.unconfirmed() == set()


def test_signals_the_broker_no_longer_holds_are_sent_again_after_lost_after() -> None:
    """Redis flushed: the 4 signals waiting in it are gone. The broker holding
    none of them for lost_after seconds is enough; no 60 s redelivery wait."""
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60, lost_after=3)
    assert c.decide([work()], 0.0, in_broker=0) == {1: 4}
    assert c.decide([work()], 5.0, in_broker=0) == {}  # first look: suspected
    assert c.suspects_loss
    assert c.decide([work()], 6.0, in_broker=0) == {}  # not for lost_after yet
    assert c.decide([work()], 8.0, in_broker=0) == {1: 4}
    assert not c.suspects_loss
    assert c.waiting(1) == 4


def test_signals_the_broker_still_holds_are_never_sent_twice() -> None:
    """Workers busy: the signals wait in the broker, sweep after sweep."""
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60, lost_after=3)
    assert c.decide([work()], 0.0, in_broker=0) == {1: 4}
    for t in range(5, 55, 5):
        assert c.decide([work()], float(t), in_broker=4) == {}
        assert not c.suspects_loss


def test_only_the_signals_missing_from_the_broker_are_sent_again() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60, lost_after=1)
    assert c.decide([work(1), work(2)], 0.0, in_broker=0) == {1: 4, 2: 4}
    assert c.decide([work(1), work(2)], 5.0, in_broker=5) == {}
    assert c.decide([work(1), work(2)], 6.0, in_broker=5) == {1: 3}  # 3 lost, oldest first
    assert c.total_waiting() == 8


def test_a_short_count_that_comes_back_is_not_a_loss() -> None:
    """A message a worker took is out of the broker until its drain starts."""
    c = Coalescer(parallelism=2, batch_size=16, debounce=0.25, redeliver_after=60, lost_after=3)
    assert c.decide([work()], 0.0, in_broker=0) == {1: 2}
    assert c.decide([work()], 5.0, in_broker=1) == {}
    assert c.decide([work(live=1, started=1)], 6.0, in_broker=1) == {}
    assert not c.suspects_loss
    assert c.decide([work(live=1, started=1)], 10.0, in_broker=1) == {}


def test_signals_the_broker_refused_are_not_counted_as_waiting() -> None:
    c = Coalescer(parallelism=4, batch_size=16, debounce=0.25, redeliver_after=60)
    assert c.decide([work()], 0.0) == {1: 4}
    c.unsent(1, 4)
    assert c.waiting(1) == 0
    assert c.decide([work()], 1.0) == {1: 4}
