"""A worker killed in the middle of a batch of 200 reminders: after a restart no client got two.

`rapportal worker` runs as a real process against the pass's database (SQLite, or PostgreSQL with
RAPPORTAL_TEST_DATABASE_URL) and a real SMTP server started here; it is SIGKILLed once a part of the batch
has arrived, started again, and the test counts what the server received per client and step.

Delivery is at most once (docs/notifications.md): a message whose row was recorded as sent, and whose
final dot the killed worker had not yet written, is on record and never arrives. That gap is one message
per worker thread at the most, each recorded as sent before the kill; every other client gets exactly one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from notify_support import MailHandler, start_smtp

from core import build_engine
from core.db import make_db_engine, make_session_factory
from core.migrations import upgrade
from core.models import Client, LinkSending, OutboxMessage
from core.notify import link_token
from core.responses import create_assignment
from core.tokens import hash_token, new_token

RAPPORTAL = Path(sys.executable).with_name("rapportal")
SECRET = "restart-test-secret"
BATCH = 200


def _prepare(url: str) -> None:
    """200 consenting clients whose first message went out two hours ago; each is due one reminder now."""
    db = make_db_engine(url)
    try:
        upgrade(db)
        engine = build_engine(load_entrypoints=False)
        sent = datetime.now(UTC) - timedelta(hours=2)
        with make_session_factory(db).begin() as session:
            for number in range(BATCH):
                client = Client(
                    code=f"R-{number:04d}", email=f"client{number:04d}@example.org", contact_consent=True, language="en"
                )
                session.add(client)
                session.flush()
                assignment, _token = create_assignment(session, engine, client, "phq9", language="en")
                nonce = new_token()
                assignment.token_hash = hash_token(link_token(SECRET, nonce))
                session.add(
                    LinkSending(
                        assignment_id=assignment.id,
                        client_id=client.id,
                        channel="email",
                        nonce=nonce,
                        base_url="http://portal.example",
                        remind_after_hours=1,
                        remind_max=1,
                        reminders_done=False,
                        created_at=sent,
                    )
                )
                session.add(
                    OutboxMessage(
                        assignment_id=assignment.id,
                        client_id=client.id,
                        channel="email",
                        step=0,
                        status="sent",
                        due_at=sent,
                        sent_at=sent,
                        created_at=sent,
                    )
                )
    finally:
        db.dispose()


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(RAPPORTAL), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.timeout(400)
def test_a_killed_worker_sends_each_reminder_once_at_most_and_the_rest_after_a_restart(tmp_path, db_url):
    url = db_url
    _prepare(url)
    handler = MailHandler()
    smtp = start_smtp(handler)
    env = {
        **os.environ,
        "RAPPORTAL_DATABASE_URL": url,
        "RAPPORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
        "RAPPORTAL_SECRET_KEY": SECRET,
        "RAPPORTAL_LOAD_ENTRYPOINTS": "false",
        "RAPPORTAL_SMTP_HOST": "127.0.0.1",
        "RAPPORTAL_SMTP_PORT": str(smtp.port),
        "RAPPORTAL_SMTP_STARTTLS": "false",
        "RAPPORTAL_SMTP_SENDER": "noreply@clinic.example",
        "RAPPORTAL_NOTIFY_CLAIM_TIMEOUT_SECONDS": "3",  # the killed worker's claim is stale after 3 s
        "RAPPORTAL_JOBS_SWEEP_SECONDS": "1",
    }
    log = tmp_path / "worker.log"
    try:
        worker = _worker(env, log)
        try:
            started = _wait(lambda: len(handler.received) >= 20, 120)
            assert started, f"the worker sent {len(handler.received)} messages; log:\n{log.read_text()[-3000:]}"
            os.kill(worker.pid, signal.SIGKILL)
            killed_at = datetime.now(UTC)
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
        at_kill = len(handler.received)
        # the restarted worker must have something to deliver: at most one message per thread is in the gap
        assert at_kill < BATCH - WORKER_THREADS, "the batch was all but finished before the kill: nothing was tested"
        restarted = _worker(env, log)
        try:
            # the batch is done when every message is on record as sent; then let a duplicate, if any, arrive
            done = _wait(lambda: _statuses(url) == [(0, "sent", BATCH), (1, "sent", BATCH)], 180)
            time.sleep(3)
        finally:
            restarted.send_signal(signal.SIGINT)
            try:
                restarted.wait(20)
            except subprocess.TimeoutExpired:
                restarted.kill()
        assert done, f"{_statuses(url)} after the restart; log:\n{log.read_text()[-3000:]}"
    finally:
        smtp.stop()
    per_client = Counter(recipient for r in handler.received for recipient in r.recipients)
    assert set(per_client.values()) == {1}, [who for who, n in per_client.items() if n != 1]
    assert all(r.message["Subject"].startswith("Reminder:") for r in handler.received)
    links = [re.search(r"/a/\S+", r.message.get_content()).group(0) for r in handler.received]
    assert len(set(links)) == len(links)
    # the at-most-once gap: what never arrived was recorded as sent by the killed worker, one per thread at most
    never_arrived = _reminders_sent_at(url, set(_everyone()) - set(per_client))
    assert len(never_arrived) <= WORKER_THREADS, never_arrived
    assert all(sent_at <= killed_at for sent_at in never_arrived.values()), (killed_at, never_arrived)


WORKER_THREADS = 2  # `rapportal worker`'s default (RAPPORTAL_JOBS_THREADS)


def _everyone() -> list[str]:
    return [f"client{number:04d}@example.org" for number in range(BATCH)]


def _statuses(url: str) -> list[tuple[int, str, int]]:
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            rows = connection.execute(
                sa.select(OutboxMessage.step, OutboxMessage.status, sa.func.count())
                .group_by(OutboxMessage.step, OutboxMessage.status)
                .order_by(OutboxMessage.step, OutboxMessage.status)
            ).all()
    finally:
        db.dispose()
    return [tuple(row) for row in rows]


def _reminders_sent_at(url: str, emails: set[str]) -> dict[str, datetime]:
    """When the reminder to each of these addresses was recorded as sent."""
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            rows = connection.execute(
                sa.select(Client.email, OutboxMessage.sent_at)
                .join(OutboxMessage, OutboxMessage.client_id == Client.id)
                .where(OutboxMessage.step == 1, Client.email.in_(emails))
            ).all()
    finally:
        db.dispose()
    return {email: sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC) for email, sent_at in rows}
