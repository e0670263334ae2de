"""The worker: huey carries "job X is due" messages; the ``jobs`` table decides who runs what.

huey (SqliteHuey in the instance folder by default, RedisHuey with ``RAPPORTAL_JOBS_URL=redis://...``)
provides the consumer (worker threads, signal handling, restarting a dead worker thread), the
schedule of delayed messages and, with Redis, instant hand-out to workers on several hosts.
Its guarantees stop short of ours, so the database closes the gaps:

- huey removes a message from its queue *before* running it: a worker killed mid-task loses the
  message. Here a message carries only a job id; the job's row stays ``running`` with a lease, and
  the sweep (every ``JOBS_SWEEP_SECONDS``, and when a worker starts) hands out due rows again,
  including those whose lease ran out.
- huey may deliver a message twice (a retry after a lost reply, two sweeps, a duplicate from the
  sweep and the broker): the conditional UPDATE in :meth:`core.jobs.JobQueue.claim` lets one run it.
- huey's retries and periodic tasks live in each consumer's memory and run on every host; ours are
  rows (``jobs.run_at``, ``job_schedules``) claimed once across all hosts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import huey
from huey.consumer import Consumer

from core.jobs import JobContext, JobQueue

log = logging.getLogger("rapportal.jobs")

RUN_JOB = "rapportal.run_job"
DEFAULT_SWEEP_SECONDS = 15


class JobBroker:
    """A huey instance that carries job ids; built lazily, so a process that never enqueues opens nothing."""

    def __init__(self, url: str | None, instance_path: Path, name: str = "rapportal") -> None:
        self.url = url or ""
        self.path = Path(instance_path) / "jobs-queue.db"
        self.name = name
        self._huey: huey.Huey | None = None
        self._lock = threading.Lock()
        self._worker_queue: JobQueue | None = None
        self._worker_context: JobContext | None = None

    @property
    def huey(self) -> huey.Huey:
        with self._lock:
            if self._huey is None:
                self._huey = self._make()
            return self._huey

    def _make(self) -> huey.Huey:
        if self.url.startswith(("redis://", "rediss://", "unix://")):
            instance: huey.Huey = huey.RedisHuey(self.name, url=self.url, results=False, utc=True)
        elif self.url in ("", "sqlite") or self.url.startswith("sqlite:///"):
            path = Path(self.url[len("sqlite:///") :]) if self.url.startswith("sqlite:///") else self.path
            path.parent.mkdir(parents=True, exist_ok=True)
            instance = huey.SqliteHuey(self.name, filename=str(path), results=False, utc=True, fsync=True, timeout=30)
        else:
            raise ValueError(
                f"RAPPORTAL_JOBS_URL {self.url!r} is neither redis://... nor sqlite:///... (or empty for the default)"
            )
        instance.task(name=RUN_JOB)(self._run_job)
        return instance

    def _run_job(self, job_id: str) -> None:
        queue, context = self._worker_queue, self._worker_context
        if queue is None or context is None:
            raise RuntimeError("this process is not a worker")
        queue.run_job(context, job_id)

    def dispatch(self, job_id: str, run_at: datetime) -> None:
        """Tell the workers that job ``job_id`` is due at ``run_at`` (``JobQueue.dispatch``)."""
        task = self.huey._registry.string_to_task(RUN_JOB)
        self.huey.enqueue(task(args=(job_id,), eta=run_at))

    def consumer(self, queue: JobQueue, context: JobContext, *, threads: int) -> Consumer:
        """A huey consumer that runs this process's jobs with ``threads`` worker threads."""
        self._worker_queue, self._worker_context = queue, context
        return self.huey.create_consumer(workers=threads, worker_type="thread", periodic=False, max_delay=2.0)


def sweep(queue: JobQueue) -> int:
    """Hand every claimable job to the broker again (lost messages, dead workers); returns how many."""
    ids = queue.due_job_ids(limit=1000)
    for job_id in ids:
        queue.redispatch(job_id)
    return len(ids)


class Sweeper(threading.Thread):
    """Every ``interval`` seconds: re-dispatch claimable jobs and queue the periodic jobs that are due."""

    def __init__(self, queue: JobQueue, interval: float, stop: threading.Event, parent_pid: int | None = None) -> None:
        super().__init__(name="job-sweeper", daemon=True)
        self.queue = queue
        self.interval = interval
        self.stop = stop
        self.parent_pid = parent_pid

    def run(self) -> None:
        while True:
            try:
                self.queue.enqueue_periodic()
                sweep(self.queue)
            except Exception:
                log.warning("the job sweep failed; trying again in %.0f s", self.interval, exc_info=True)
            if self.stop.wait(self.interval):
                return
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("the serving process is gone; the worker stops")
                self.stop.set()
                return


def run_worker(
    broker: JobBroker,
    queue: JobQueue,
    context: JobContext,
    *,
    threads: int = 2,
    sweep_seconds: float = DEFAULT_SWEEP_SECONDS,
    parent_pid: int | None = None,
) -> None:
    """Run a worker in this process until SIGINT or SIGTERM (huey's consumer: graceful on SIGINT)."""
    if queue.dispatch is None:
        queue.dispatch = broker.dispatch
    consumer = broker.consumer(queue, context, threads=threads)
    stop = threading.Event()
    sweeper = Sweeper(queue, sweep_seconds, stop, parent_pid)
    consumer.start()
    sweeper.start()  # its first round hands out whatever was due while no worker ran
    log.info("worker started: %d threads, broker %s", threads, broker.url or broker.path)
    try:
        while True:
            try:
                consumer.loop()
            except Exception:  # huey's ConsumerStopped, after a signal
                break
            if stop.is_set():
                consumer.stop(graceful=True)
                break
    finally:
        stop.set()
        sweeper.join(timeout=5)
    log.info("worker stopped")


def settings_sweep_seconds(settings: Mapping[str, Any]) -> float:
    return float(settings.get("JOBS_SWEEP_SECONDS") or DEFAULT_SWEEP_SECONDS)


__all__ = ["JobBroker", "run_worker", "sweep"]
