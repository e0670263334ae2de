"""core/jobs.py: jobs are stored, claimed once, retried with backoff, reported when they fail."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core import build_engine
from core.db import create_schema, make_db_engine, make_session_factory
from core.jobs import DONE, FAILED, QUEUED, RUNNING, JobContext, JobQueue, job, periodic_job, recent_jobs
from core.models import Job
from tests.conftest import database_url
from web.state import job_context, portal

CALLS: list[tuple[str, Any]] = []
BARRIER_HITS: list[int] = []


@job("test.record", retries=0)
def _record(ctx: JobContext, *, value: Any) -> None:
    CALLS.append(("record", value))


@job("test.flaky", retries=2, retry_delay_seconds=10)
def _flaky(ctx: JobContext, *, succeed_on: int) -> None:
    CALLS.append(("flaky", ctx.attempt))
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} failed")


@job("test.chain", retries=0)
def _chain(ctx: JobContext, *, left: int) -> None:
    CALLS.append(("chain", left))
    if left:
        ctx.queue.enqueue("test.chain", left=left - 1)


@job("test.slow", retries=0)
def _slow(ctx: JobContext, *, gate: str) -> None:
    BARRIER_HITS.append(1)
    threading.Event().wait(0.2)


@periodic_job("test.tick", every_seconds=60)
def _tick(ctx: JobContext) -> None:
    CALLS.append(("tick", ctx.queue.clock()))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()
    BARRIER_HITS.clear()


@pytest.fixture
def db(tmp_path: Path) -> Any:
    engine = make_db_engine(database_url(tmp_path))
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(db: sa.Engine, clock: Clock) -> JobQueue:
    return JobQueue(make_session_factory(db), clock=clock)


@pytest.fixture
def context(queue: JobQueue) -> JobContext:
    return JobContext(engine=build_engine(load_entrypoints=False), sessions=queue.sessions, settings={}, queue=queue)


def _row(queue: JobQueue, job_id: str) -> Job:
    row = queue.status(job_id)
    assert row is not None
    return row


def test_an_enqueued_job_is_stored_and_runs_once_with_its_arguments(queue: JobQueue, context: JobContext) -> None:
    job_id = queue.enqueue("test.record", value={"a": [1, 2]})
    assert _row(queue, job_id).status == QUEUED
    assert queue.run_until_idle(context) == 1
    assert CALLS == [("record", {"a": [1, 2]})]
    assert _row(queue, job_id).status == DONE
    assert queue.run_until_idle(context) == 0
    assert CALLS == [("record", {"a": [1, 2]})]


def test_unknown_job_names_and_arguments_that_are_not_json_are_refused(queue: JobQueue) -> None:
    with pytest.raises(ValueError, match=r"no job named 'test\.nope'"):
        queue.enqueue("test.nope")
    with pytest.raises(TypeError, match="JSON-able"):
        queue.enqueue("test.record", value=object())
    with queue.sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_a_delayed_job_waits_until_it_is_due(queue: JobQueue, context: JobContext, clock: Clock) -> None:
    queue.enqueue("test.record", delay_seconds=3600, value=1)
    assert queue.run_until_idle(context) == 0
    clock.advance(3599)
    assert queue.run_until_idle(context) == 0
    clock.advance(1)
    assert queue.run_until_idle(context) == 1
    assert CALLS == [("record", 1)]


def test_a_job_enqueued_in_a_transaction_exists_only_if_it_commits(queue: JobQueue, context: JobContext) -> None:
    dispatched: list[str] = []
    queue.dispatch = lambda job_id, run_at: dispatched.append(job_id)
    with queue.sessions() as db, db.begin():
        kept = queue.enqueue("test.record", db=db, value="kept")
        assert dispatched == []  # the broker hears of it only after the commit
    assert dispatched == [kept]
    with queue.sessions() as db:
        db.begin()
        queue.enqueue("test.record", db=db, value="dropped")
        db.rollback()
    assert dispatched == [kept]
    assert queue.run_until_idle(context) == 1
    assert CALLS == [("record", "kept")]


def test_a_failing_job_is_retried_with_doubling_delays_then_succeeds(
    queue: JobQueue, context: JobContext, clock: Clock
) -> None:
    job_id = queue.enqueue("test.flaky", succeed_on=3)
    assert queue.run_until_idle(context) == 1
    row = _row(queue, job_id)
    assert (row.status, row.attempts, row.error) == (QUEUED, 1, "RuntimeError: attempt 1 failed")
    clock.advance(9)
    assert queue.run_until_idle(context) == 0  # the first retry waits 10 s
    clock.advance(1)
    assert queue.run_until_idle(context) == 1
    clock.advance(19)
    assert queue.run_until_idle(context) == 0  # the second waits 20 s
    clock.advance(1)
    assert queue.run_until_idle(context) == 1
    assert [call for call in CALLS] == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    row = _row(queue, job_id)
    assert (row.status, row.attempts, row.error) == (DONE, 3, None)


def test_a_job_that_keeps_failing_is_marked_failed_and_logged(
    queue: JobQueue, context: JobContext, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = queue.enqueue("test.flaky", succeed_on=99)
    with caplog.at_level(logging.WARNING, logger="rapportal.jobs"):
        for _ in range(5):
            queue.run_until_idle(context)
            clock.advance(3600)
    row = _row(queue, job_id)
    assert (row.status, row.attempts) == (FAILED, 3)  # retries=2: three attempts in all
    assert row.error == "RuntimeError: attempt 3 failed"
    assert row.finished_at is not None
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and job_id in failures[0].getMessage() and "after 3 attempts" in failures[0].getMessage()
    with queue.sessions() as db:
        assert [j.id for j in recent_jobs(db, status=FAILED)] == [job_id]


def test_jobs_queued_by_a_job_run_in_the_same_call(queue: JobQueue, context: JobContext) -> None:
    queue.enqueue("test.chain", left=3)
    assert queue.run_until_idle(context) == 4
    assert [value for _, value in CALLS] == [3, 2, 1, 0]


def test_run_until_idle_stops_at_its_limit(queue: JobQueue, context: JobContext) -> None:
    queue.enqueue("test.chain", left=10)
    assert queue.run_until_idle(context, limit=3) == 3


def test_a_claimed_job_cannot_be_claimed_again_until_its_lease_expires(queue: JobQueue, clock: Clock) -> None:
    job_id = queue.enqueue("test.record", value=1)
    first = queue.claim(job_id, worker="a")
    assert first is not None and first.status == RUNNING and first.worker == "a"
    assert queue.claim(job_id, worker="b") is None
    clock.advance(queue.lease_seconds - 1)
    assert queue.claim(job_id, worker="b") is None
    clock.advance(2)  # worker "a" died: its lease ran out
    second = queue.claim(job_id, worker="b")
    assert second is not None and second.worker == "b" and second.attempts == 2


def test_two_workers_racing_for_the_same_jobs_run_each_once(tmp_path: Path) -> None:
    engine = make_db_engine(database_url(tmp_path))
    create_schema(engine)
    try:
        queues = [JobQueue(make_session_factory(engine)) for _ in range(2)]
        ids = [queues[0].enqueue("test.record", value=n) for n in range(40)]
        contexts = [
            JobContext(engine=build_engine(load_entrypoints=False), sessions=q.sessions, settings={}, queue=q)
            for q in queues
        ]
        start = threading.Barrier(2)
        ran = [0, 0]

        def work(n: int) -> None:
            start.wait()
            for job_id in ids:  # both try every job, in the same order
                if queues[n].run_job(contexts[n], job_id) is not None:
                    ran[n] += 1

        threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(ran) == 40
        assert sorted(value for _, value in CALLS) == list(range(40))
    finally:
        engine.dispose()


def test_a_periodic_job_runs_once_per_period_however_many_workers_ask(
    queue: JobQueue, context: JobContext, clock: Clock, db: sa.Engine
) -> None:
    other = JobQueue(make_session_factory(db), clock=clock)
    other_context = JobContext(engine=context.engine, sessions=other.sessions, settings={}, queue=other)
    assert "test.tick" in queue.run_periodic(context)
    assert "test.tick" not in other.run_periodic(other_context)
    clock.advance(30)
    assert "test.tick" not in queue.run_periodic(context)
    clock.advance(30)
    assert "test.tick" in other.run_periodic(other_context)
    assert [name for name, _ in CALLS] == ["tick", "tick"]


def test_the_app_holds_a_job_queue_on_its_database(app: Any) -> None:
    state = portal(app)
    job_id = state.jobs.enqueue("test.record", value="from the app")
    with app.app_context():
        context = job_context()
    assert context.settings["CLINIC_NAME"] == app.config["CLINIC_NAME"]
    assert state.jobs.run_until_idle(context) == 1
    assert CALLS == [("record", "from the app")]
    with state.sessions() as db:
        assert db.get(Job, job_id).status == DONE
