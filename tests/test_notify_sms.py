"""The example SMS channel: a JSON POST to a configurable endpoint (a real HTTP server started here)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from staff_support import csrf, make_world, sign_in, start_session

from core.models import CareSession, Client, OutboxMessage
from core.notify import update_contact
from web.state import job_context

PHONE = "+4915112345678"


class _Provider(BaseHTTPRequestHandler):
    received: list[tuple[dict, dict]] = []
    answer: dict = {"status": "queued"}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((body, dict(self.headers)))
        reply = json.dumps(type(self).answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def provider():
    _Provider.received, _Provider.answer = [], {"status": "queued"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Provider, f"http://127.0.0.1:{server.server_address[1]}/messages"
    server.shutdown()


@pytest.fixture
def app_config(app_config, provider):
    return app_config | {"SMS_HTTP_URL": provider[1], "SMS_HTTP_TOKEN": "provider-token", "SMS_SENDER": "Praxis"}


@pytest.fixture
def sent_by_sms(app, licensed_wording):
    world = make_world(app)
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        client = session.get(Client, world.client_id)
        update_contact(
            session, client, email=None, phone=PHONE, consent=True, time_zone=None, actor="test", address=None
        )
    ann = app.test_client()
    sign_in(ann, "ann")
    start_session(ann, world.episode_id, world.client_id)
    with state.sessions() as session:
        session_id = session.scalar(sa.select(CareSession.id))
    page = ann.get(f"/sessions/{session_id}").text
    released = ann.post(f"/sessions/{session_id}/release", data={"csrf_token": csrf(page)})
    assert released.status_code == 303  # the SRS too: both links go out
    page = ann.get(f"/sessions/{session_id}").text
    assert "Send by SMS" in page and "Send by E-mail" not in page  # e-mail is not configured here

    def send():
        posted = ann.post(f"/sessions/{session_id}/send", data={"csrf_token": csrf(page), "channel": "sms"})
        assert posted.status_code == 303
        state.jobs.run_until_idle(job_context(app))
        return ann.get(f"/sessions/{session_id}").text

    return send


def test_sms_posts_json_with_only_the_link_and_the_clinic(app, provider, sent_by_sms):
    sent_by_sms()
    received = provider[0].received
    assert len(received) == 2
    for body, headers in received:
        assert body["to"] == PHONE and body["from"] == "Praxis"
        assert headers["Authorization"] == "Bearer provider-token"
        assert headers["Idempotency-Key"] == body["reference"]
        assert re.fullmatch(
            r"Rapportal: please answer your questionnaire: http://localhost/a/[A-Za-z0-9_-]+", body["text"]
        )
        path = body["text"].rsplit("localhost", 1)[1]
        assert app.test_client().get(path).status_code == 200


def test_a_refusal_reported_by_the_provider_shows_on_the_session_page(app, provider, sent_by_sms):
    provider[0].answer = {"status": "rejected", "error": "unknown subscriber"}
    page = sent_by_sms()
    assert page.count("unknown subscriber") == 2
    with app.extensions["rapportal"].sessions() as session:
        assert set(session.scalars(sa.select(OutboxMessage.status))) == {"failed"}
