"""Helpers for the production tests: a real `rapportal serve` on loopback, client processes, checks.

No tests here. Every server is started through the README's command (`rapportal serve`) against
the backend of the current pass (SQLite, or PostgreSQL when RAPPORTAL_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import build_engine
from core.db import make_db_engine, make_session_factory
from core.migrations import upgrade
from core.models import Alert, Assignment, AuditEntry, Client, Response, Score
from core.responses import create_assignment
from core.tokens import hash_token

RAPPORTAL = Path(sys.executable).with_name("rapportal")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
RECEIPT = re.compile(r'data-receipt="([0-9A-F]{8})"')
PHQ9_ITEMS = [f"phq9_{n}" for n in range(1, 10)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(url: str, count: int, instrument: str = "phq9") -> list[str]:
    """Upgrade the database and create ``count`` links (one client each); return their tokens."""
    db = make_db_engine(url)
    try:
        upgrade(db)
        engine = build_engine(load_entrypoints=False)
        tokens = []
        with make_session_factory(db).begin() as session:
            offset = session.scalar(sa.select(sa.func.count(Client.id)))
            for number in range(count):
                client = Client(code=f"LOAD-{offset + number:06d}")
                session.add(client)
                tokens.append(create_assignment(session, engine, client, instrument)[1])
        return tokens
    finally:
        db.dispose()


class Server:
    """`rapportal serve` in its own process group, so a crash test can SIGKILL all of it at once."""

    def __init__(self, url: str, instance: Path, workers: int = 4, job_worker: bool = True) -> None:
        self.url, self.instance, self.workers, self.job_worker = url, instance, workers, job_worker
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = instance / "server.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        self.instance.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            RAPPORTAL_DATABASE_URL=self.url,
            RAPPORTAL_INSTANCE_PATH=str(self.instance),
            RAPPORTAL_LOAD_ENTRYPOINTS="false",
            RAPPORTAL_SECRET_KEY="production-test-secret",
            RAPPORTAL_LINK_GUESS_LIMIT="100000",
            RAPPORTAL_SERVE_WORKER="true" if self.job_worker else "false",
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(RAPPORTAL), "serve", "--port", str(self.port), "--workers", str(self.workers)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if request("GET", self.base, "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the master and every worker: no graceful anything."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        # A SIGKILLed process runs no more code; its workers may linger as zombies until reaped.
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_until_group_gone()

    def _wait_until_group_gone(self) -> None:
        assert self.process is not None
        for _ in range(200):
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def request(method: str, base: str, path: str, body: dict[str, str] | None = None) -> tuple[int, str]:
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        headers = {"Connection": "close"}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def phq9_answers(token: str) -> dict[str, str]:
    """Answers derived from the token, so a check can recompute exactly what was sent."""
    rng = random.Random(token)
    return {item: str(rng.randint(0, 3)) for item in PHQ9_ITEMS}


def form_token(base: str, token: str) -> str:
    """The form's CSRF token; raises :class:`AlreadyAnswered` when the link shows a receipt instead."""
    status, page = request("GET", base, f"/a/{token}")
    if status != 200:
        raise RuntimeError(f"GET form answered {status}")
    found = CSRF.search(page)
    if not found:
        receipt = RECEIPT.search(page)
        if receipt:
            raise AlreadyAnswered(receipt.group(1))
        raise RuntimeError("no csrf_token on the form")
    return found.group(1)


class AlreadyAnswered(Exception):
    """The link was answered before (by a request whose reply the client never got)."""

    def __init__(self, receipt: str) -> None:
        super().__init__(receipt)
        self.receipt = receipt


def post_answers(base: str, token: str, csrf: str) -> tuple[int, str | None]:
    status, page = request("POST", base, f"/a/{token}", {**phq9_answers(token), "csrf_token": csrf})
    receipt = RECEIPT.search(page)
    return status, receipt.group(1) if receipt else None


@dataclass
class Outcome:
    """What one client saw for one link: ``receipt`` is set only for an acknowledged submission."""

    token: str
    status: int | None
    receipt: str | None
    error: str | None = None


def submit_links(base: str, tokens: list[str], stop_on_connection_error: bool = False) -> list[Outcome]:
    """One client: answer each link in turn (GET the form, POST the answers)."""
    outcomes = []
    for token in tokens:
        try:
            status, receipt = post_answers(base, token, form_token(base, token))
            outcomes.append(Outcome(token, status, receipt if status == 200 else None))
        except AlreadyAnswered as answered:
            outcomes.append(Outcome(token, 200, answered.receipt))
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            outcomes.append(Outcome(token, None, None, f"{type(exc).__name__}: {exc}"))
            if stop_on_connection_error:
                break
    return outcomes


# The event a pool's clients wait on (start_clients(release=...)): set before the pool forks, so that they inherit it
# (an event cannot be sent to a pool's process as an argument), and cleared again at once in the test's process.
_RELEASE: Any = None


def _submit_chunk(args: tuple[str, list[str], bool, float]) -> list[Outcome]:
    base, tokens, stop_on_connection_error, pace = args
    if _RELEASE is None:
        return submit_links(base, tokens, stop_on_connection_error)
    # Until released: a link every ``pace`` seconds, and the last one held back, so that submissions still arrive
    # when the test does what it waits for, however fast the server answers.
    outcomes: list[Outcome] = []
    for token in tokens[:-1]:
        if not _RELEASE.is_set():
            time.sleep(pace)
        outcomes += submit_links(base, [token], stop_on_connection_error)
        if stop_on_connection_error and outcomes[-1].error:
            return outcomes
    _RELEASE.wait(timeout=300)
    return outcomes + submit_links(base, tokens[-1:], stop_on_connection_error)


def run_clients(base: str, tokens: list[str], processes: int = 8, stop_on_connection_error: bool = False):
    """``processes`` concurrent client processes share the links; returns every outcome."""
    chunks = [tokens[index::processes] for index in range(processes)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        results = pool.map(_submit_chunk, [(base, chunk, stop_on_connection_error, 0.0) for chunk in chunks])
    return [outcome for chunk in results for outcome in chunk]


def start_clients(base: str, tokens: list[str], processes: int = 8, release: Any = None, pace: float = 0.05):
    """Like :func:`run_clients` but returns at once: ``.get()`` on the result waits.

    With ``release`` (a ``multiprocessing`` event of the fork context) each client answers a link every ``pace``
    seconds and holds its last one back until the event is set, then answers the rest at once.
    """
    global _RELEASE
    chunks = [tokens[index::processes] for index in range(processes)]
    _RELEASE = release
    try:
        pool = multiprocessing.get_context("fork").Pool(processes)  # the processes start here, with _RELEASE
    finally:
        _RELEASE = None
    result = pool.map_async(_submit_chunk, [(base, chunk, True, pace) for chunk in chunks])
    pool.close()
    return pool, result


@dataclass
class StoredState:
    """Per link: the receipts stored for it, and per response: its scores and audit entries."""

    receipts: dict[str, list[str]]
    answers: dict[str, dict[str, Any]]
    responses: int
    scores_per_response: Counter[int]
    audits_per_response: Counter[str]
    completed_without_response: int


def stored_state(url: str, tokens: Iterable[str]) -> StoredState:
    hashes = {hash_token(token): token for token in tokens}
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            rows = connection.execute(
                sa.select(Assignment.token_hash, Response.receipt, Response.answers).join(
                    Response, Response.assignment_id == Assignment.id
                )
            ).all()
            receipts: dict[str, list[str]] = {}
            answers: dict[str, dict[str, Any]] = {}
            for token_hash, receipt, stored in rows:
                if token_hash in hashes:
                    receipts.setdefault(hashes[token_hash], []).append(receipt)
                    answers[hashes[token_hash]] = stored
            scores = Counter(connection.scalars(sa.select(Score.response_id)).all())
            audits = Counter(
                connection.scalars(sa.select(AuditEntry.target).where(AuditEntry.action == "response.submit")).all()
            )
            responses = connection.scalar(sa.select(sa.func.count(Response.id)))
            orphans = connection.scalar(
                sa.select(sa.func.count(Assignment.id)).where(
                    Assignment.completed_at.is_not(None), ~Assignment.response.has()
                )
            )
    finally:
        db.dispose()
    return StoredState(receipts, answers, responses, scores, audits, orphans)


def assert_exactly_once(url: str, outcomes: list[Outcome], tokens: list[str]) -> StoredState:
    """Every acknowledged submission stored once with the receipt the client saw; nothing half-stored."""
    state = stored_state(url, tokens)
    acknowledged = {o.token: o.receipt for o in outcomes if o.receipt}
    lost = [token for token in acknowledged if token not in state.receipts]
    wrong = [token for token, receipt in acknowledged.items() if state.receipts.get(token, [receipt])[0] != receipt]
    duplicated = [token for token, receipts in state.receipts.items() if len(receipts) != 1]
    assert (lost, wrong, duplicated) == ([], [], []), f"lost {len(lost)}, wrong receipt {len(wrong)}, dup {duplicated}"
    changed = [t for t in state.answers if {k: str(v) for k, v in state.answers[t].items()} != phq9_answers(t)]
    assert changed == [], f"{len(changed)} responses stored answers other than those sent"
    assert state.responses == sum(state.scores_per_response.values()), "a response without exactly one score"
    assert set(state.scores_per_response.values()) <= {1}
    assert sum(state.audits_per_response.values()) == state.responses, "audit entries do not match responses"
    assert set(state.audits_per_response.values()) <= {1}, "a response audited twice"
    assert state.completed_without_response == 0, "an assignment marked completed without its response"
    return state


def table_checksums(url: str) -> dict[str, tuple[int, str]]:
    """Row count and SHA-256 over every row (primary-key order) of each table, backend-neutral."""
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            metadata = sa.MetaData()
            metadata.reflect(connection)
            sums = {}
            for name, table in sorted(metadata.tables.items()):
                digest = hashlib.sha256()
                count = 0
                order = list(table.primary_key.columns) or list(table.columns)
                for row in connection.execute(sa.select(table).order_by(*order)):
                    digest.update(json.dumps([_neutral(value) for value in row], default=str).encode())
                    count += 1
                sums[name] = (count, digest.hexdigest())
            return sums
    finally:
        db.dispose()


def _neutral(value: Any) -> Any:
    # SQLite hands back naive datetimes and JSON as text, PostgreSQL aware ones and dicts.
    if hasattr(value, "tzinfo") and hasattr(value, "isoformat"):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def assert_database_intact(url: str) -> None:
    """SQLite: integrity and foreign key checks. PostgreSQL: B-tree index checks (amcheck) and keys."""
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            if db.dialect.name == "sqlite":
                assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            else:
                connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public")
                indexes = connection.exec_driver_sql(
                    "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' "
                    "AND c.relnamespace = current_schema()::regnamespace"
                ).scalars()
                for oid in indexes:
                    connection.exec_driver_sql(f"SELECT public.bt_index_check({oid}, true)")
            orphans = {
                "scores": sa.select(sa.func.count()).select_from(Score).where(~Score.response.has()),
                "alerts": sa.select(sa.func.count())
                .select_from(Alert)
                .where(Alert.response_id.not_in(sa.select(Response.id))),
            }
            for name, query in orphans.items():
                assert connection.scalar(query) == 0, f"{name} without their response"
            connection.rollback()
    finally:
        db.dispose()
