"""`rapportal worker` processes: each job acts once however many workers and messages, and jobs survive a restart.

These start real worker processes through the README's command against the pass's database
(SQLite, or PostgreSQL with RAPPORTAL_TEST_DATABASE_URL), with huey on SQLite in the instance
folder and, when RAPPORTAL_TEST_REDIS_URL is set, on Redis (required when CI=true).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import job_test_support  # noqa: F401 - registers the test jobs in this process too
import pytest
import sqlalchemy as sa
from test_production_support import RAPPORTAL, free_port

from core.jobs import DONE, QUEUED
from core.migrations import upgrade
from core.models import Job
from web import create_app
from web.state import portal

TESTS = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("RAPPORTAL_TEST_REDIS_URL")


def _brokers() -> list[Any]:
    redis = pytest.param(
        "redis",
        marks=pytest.mark.skipif(
            not REDIS_URL and os.environ.get("CI") != "true", reason="RAPPORTAL_TEST_REDIS_URL is not set"
        ),
    )
    return ["sqlite", redis]


class Setup:
    """One portal's settings, shared by the test's own app (which enqueues) and its worker processes."""

    def __init__(self, tmp_path: Path, db_url: str, broker: str) -> None:
        if broker == "redis":
            assert REDIS_URL, "CI=true: set RAPPORTAL_TEST_REDIS_URL (a Redis server for the broker tests)"
        self.settings = {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "DATABASE_URL": db_url,
            "LOAD_ENTRYPOINTS": "false",
            "JOB_MODULES": "job_test_support",
            "JOBS_SWEEP_SECONDS": "1",
            "JOBS_LEASE_SECONDS": "3",
            "JOBS_URL": REDIS_URL if broker == "redis" else "",
            "JOBS_QUEUE_NAME": f"rapportal-test-{secrets.token_hex(4)}",  # a Redis shared with other runs
        }
        self.effects = tmp_path / "effects.txt"
        self.workers: list[subprocess.Popen[str]] = []
        self.logs = tmp_path

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAPPORTAL_")}
        env.update({f"RAPPORTAL_{key}": value for key, value in self.settings.items()})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        return env

    def app(self) -> Any:
        os.environ["RAPPORTAL_INSTANCE_PATH"] = self.settings["INSTANCE_PATH"]
        config = {key: value for key, value in self.settings.items() if key != "INSTANCE_PATH"}
        config["LOAD_ENTRYPOINTS"] = False
        config["SECRET_KEY"] = "test-secret-key"
        app = create_app(config)
        upgrade(portal(app).db)
        return app

    def start_worker(self, threads: int = 3) -> subprocess.Popen[str]:
        log = open(self.logs / f"worker-{len(self.workers)}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [str(RAPPORTAL), "worker", "--threads", str(threads)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        log.close()
        self.workers.append(process)
        return process

    def effects_seen(self) -> list[str]:
        return self.effects.read_text().splitlines() if self.effects.exists() else []

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def status(self) -> str:
        engine = sa.create_engine(self.settings["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as connection:
                rows = connection.execute(sa.select(Job.name, Job.status, Job.attempts, Job.error)).all()
        finally:
            engine.dispose()
        return "\n".join(map(str, Counter(rows).most_common(10)))

    def worker_logs(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture(params=_brokers())
def setup(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[Setup]:
    found = Setup(tmp_path, db_url, request.param)
    yield found
    found.stop_all()


def _wait_for(condition: Any, seconds: float, setup: Setup, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        running = [process for process in setup.workers if process.poll() is None]
        assert running, f"every worker exited; worker logs:\n{setup.worker_logs()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}; worker logs:\n{setup.worker_logs()[-2000:]}\n{setup.status()}"
        time.sleep(0.1)


def _statuses(app: Any, ids: list[str]) -> Counter[str]:
    with portal(app).sessions() as session:
        return Counter(session.scalars(sa.select(Job.status).where(Job.id.in_(ids))))


@pytest.mark.timeout(180)
def test_two_worker_processes_run_each_job_once_even_when_its_message_comes_twice(setup: Setup) -> None:
    app = setup.app()
    queue = portal(app).jobs
    ids = [queue.enqueue("test.effect", path=str(setup.effects), value=n, seconds=0.02) for n in range(60)]
    for job_id in ids:  # a second message for every job, as a lost reply or two sweeps would send
        queue.redispatch(job_id)
    setup.start_worker()
    setup.start_worker()
    _wait_for(lambda: _statuses(app, ids)[DONE] == 60, 120, setup, "the workers did not finish the 60 jobs")
    time.sleep(1.5)  # let any duplicate message be taken and refused
    lines = setup.effects_seen()
    values = Counter(int(line.split()[0]) for line in lines)
    assert values == Counter(range(60)), "a job acted twice or not at all"
    assert len({line.split()[1] for line in lines}) == 2, "both workers should have taken jobs"
    portal(app).db.dispose()


@pytest.mark.timeout(180)
def test_queued_jobs_survive_a_worker_killed_mid_job_and_run_once_after_the_restart(setup: Setup) -> None:
    app = setup.app()
    queue = portal(app).jobs
    path = str(setup.effects)
    slow = queue.enqueue("test.slow_effect", path=path, value=0, seconds=4)
    worker = setup.start_worker(threads=1)
    _wait_for(lambda: any(line.startswith("started 0") for line in setup.effects_seen()), 60, setup, "no start")
    quick = [queue.enqueue("test.effect", path=path, value=n) for n in range(1, 21)]
    os.killpg(worker.pid, signal.SIGKILL)  # mid-job, with 20 jobs queued behind it
    worker.wait()
    with portal(app).sessions() as session:
        assert session.get(Job, slow).status == "running"
        assert {session.get(Job, job_id).status for job_id in quick} == {QUEUED}
    setup.start_worker(threads=1)
    _wait_for(
        lambda: _statuses(app, [slow, *quick])[DONE] == 21, 120, setup, "the restarted worker did not finish the jobs"
    )
    lines = setup.effects_seen()
    assert Counter(line for line in lines if line.startswith("finished")).total() == 1
    assert Counter(int(line.split()[0]) for line in lines if line[0].isdigit()) == Counter(range(1, 21))
    with portal(app).sessions() as session:
        row = session.get(Job, slow)
        assert (row.status, row.attempts) == (DONE, 2)  # the killed attempt counts
    portal(app).db.dispose()


@pytest.mark.timeout(180)
def test_serve_runs_a_job_worker_beside_gunicorn_and_stops_it_with_the_server(tmp_path: Path, db_url: str) -> None:
    setup = Setup(tmp_path, db_url, "sqlite")
    app = setup.app()
    port = free_port()
    server = subprocess.Popen(
        [str(RAPPORTAL), "serve", "--port", str(port), "--workers", "1"],
        env=setup.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in server.stdout:
            if "is serving on" in line:
                assert "and a job worker" in line
                break
        job_id = portal(app).jobs.enqueue("test.effect", path=str(setup.effects), value=7)
        deadline = time.monotonic() + 60
        while not setup.effects_seen():
            assert time.monotonic() < deadline and server.poll() is None, "the job did not run beside serve"
            time.sleep(0.1)
        value, pid = setup.effects_seen()[0].split()
        assert value == "7" and int(pid) != server.pid  # a worker process of its own
        server.send_signal(signal.SIGTERM)  # to the server only: it stops its worker itself
        server.wait(60)
        deadline = time.monotonic() + 40
        while _alive(int(pid)):
            assert time.monotonic() < deadline, "the job worker outlived the server"
            time.sleep(0.1)
        with portal(app).sessions() as session:
            assert session.get(Job, job_id).status == DONE
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        portal(app).db.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie waiting for its parent counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def test_served_logs_keep_huey_to_its_warnings_and_its_consumer_lines():
    """Every job run at info would bury the log (the sweep runs every 15 s); start and stop lines stay."""
    import logging

    from web.serve import configure_app_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_app_logging()
        assert not logging.getLogger("huey").isEnabledFor(logging.INFO)
        assert logging.getLogger("huey").isEnabledFor(logging.WARNING)
        assert logging.getLogger("huey.consumer").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("huey").setLevel(logging.NOTSET)
        logging.getLogger("huey.consumer").setLevel(logging.NOTSET)
