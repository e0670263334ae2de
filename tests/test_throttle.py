"""Throttle counters: the backoff rule, one row per backoff key, forgetting, and clearing by key or prefix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.models import ThrottleCounter
from core.throttle import (
    Backoff,
    backoff_wait,
    clear_keys,
    count_attempt,
    forget_quiet,
    lock_keys,
    record_failure,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULE = Backoff(free=3, max_wait=20, forget=600)


@pytest.fixture
def session(app):
    with app.extensions["rapportal"].sessions() as session:
        yield session
        session.rollback()


def rows(session):
    return session.execute(sa.select(ThrottleCounter.key, ThrottleCounter.count).order_by(ThrottleCounter.key)).all()


def test_backoff_is_free_then_doubles_up_to_its_cap():
    assert [RULE.wait_after(n) for n in range(9)] == [0, 0, 0, 0, 2, 4, 8, 16, 20]
    assert RULE.wait_after(10**6) == 20  # no overflow however many failures


def test_a_backoff_key_keeps_one_row_with_its_failures(session):
    for seconds in range(5):
        record_failure(session, "k", RULE, T0 + timedelta(seconds=seconds))
    assert rows(session) == [("k", 5)]


def test_the_wait_runs_from_the_last_failure(session):
    for _ in range(5):  # the fifth failure earns 4 seconds
        record_failure(session, "k", RULE, T0)
    assert backoff_wait(session, "k", RULE, T0) == 4
    assert backoff_wait(session, "k", RULE, T0 + timedelta(milliseconds=2500)) == 1.5
    assert backoff_wait(session, "k", RULE, T0 + timedelta(seconds=4)) == 0
    assert backoff_wait(session, "unknown", RULE, T0) == 0


def test_a_counter_quiet_for_its_forget_time_starts_again(session):
    slow = Backoff(free=0, max_wait=10_000, forget=600)
    for _ in range(12):  # 4096 seconds to wait, longer than the forget time
        record_failure(session, "k", slow, T0)
    later = T0 + timedelta(seconds=slow.forget)
    assert backoff_wait(session, "k", slow, later - timedelta(seconds=1)) == 4096 - 599
    assert backoff_wait(session, "k", slow, later) == 0
    assert record_failure(session, "k", slow, later) == 1


def test_clear_keys_by_key_and_by_prefix_leaves_other_counters(session):
    for key in ("a_b:1", "a_b:2", "axb:1", "other"):
        record_failure(session, key, RULE, T0)
    assert clear_keys(session, ["other"], prefix="a_b:") == 3  # "_" is no wildcard
    assert rows(session) == [("axb:1", 1)]


def test_forget_quiet_deletes_only_old_counters_under_its_prefix(session):
    record_failure(session, "signin-old", RULE, T0)
    record_failure(session, "signin-new", RULE, T0 + timedelta(seconds=500))
    record_failure(session, "other-old", RULE, T0)
    count_attempt(session, "link:192.0.2.1", 600, now=T0.timestamp())  # a fixed-window counter
    forget_quiet(session, "signin-", 600, T0 + timedelta(seconds=700))
    assert [key for key, _count in rows(session)] == ["link:192.0.2.1", "other-old", "signin-new"]


def test_lock_keys_can_be_taken_twice_in_one_transaction(session):
    lock_keys(session, ["k", "j", "k"])
    lock_keys(session, ["j"])  # transaction-scoped, re-entrant: no self-deadlock
    record_failure(session, "k", RULE, T0)
    assert rows(session) == [("k", 1)]
