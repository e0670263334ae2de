"""Sending links by e-mail through a real SMTP server, consent, the outbox's failures, and reminders.

Every message is read back from the server the test started (aiosmtpd): its recipients, its language,
a link that opens the questionnaire, and nothing clinical in it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from notify_support import SMTP_PASSWORD, USERNAME, MailHandler, start_smtp
from staff_support import csrf, make_world, sign_in, start_session

from core.errors import InvalidInput
from core.models import Assignment, AuditEntry, CareSession, Client, Episode, LinkSending, OutboxMessage
from core.notify import (
    deliver_due,
    in_quiet_hours,
    link_token,
    parse_quiet_hours,
    queue_due_reminders,
    update_contact,
)
from core.plans import rule
from core.tokens import hash_token
from web.state import job_context

CLIENT_EMAIL = "client.one@example.org"


@pytest.fixture
def mail():
    handler = MailHandler()
    controller = start_smtp(handler)
    yield handler, controller.port
    controller.stop()


@pytest.fixture
def app_config(app_config, mail):
    return app_config | {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": mail[1],
        "SMTP_STARTTLS": False,
        "SMTP_SENDER": "Praxis Nord <noreply@praxis-nord.example>",
        "CLINIC_NAME": "Praxis Nord",
        "PUBLIC_URL": "http://portal.example",
    }


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


def _set_contact(app, client_id, *, email=CLIENT_EMAIL, consent=True, language=None, time_zone=None, phone=None):
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        client = session.get(Client, client_id)
        if language:
            client.language = language
        update_contact(
            session,
            client,
            email=email,
            phone=phone,
            consent=consent,
            time_zone=time_zone,
            actor="test",
            address=None,
        )


def _started_session(app, ann, world, *, released: bool = True) -> int:
    """Start the next session; ``released`` also releases its end-of-session SRS, so both links can be sent."""
    start_session(ann, world.episode_id, world.client_id)
    with app.extensions["rapportal"].sessions() as session:
        session_id = session.scalar(sa.select(CareSession.id).order_by(CareSession.id.desc()))
    if released:
        _release(ann, session_id)
    return session_id


def _release(ann, session_id):
    page = ann.get(f"/sessions/{session_id}")
    released = ann.post(f"/sessions/{session_id}/release", data={"csrf_token": csrf(page.text)})
    assert released.status_code == 303


def _send(ann, session_id, channel="email"):
    page = ann.get(f"/sessions/{session_id}")
    return ann.post(f"/sessions/{session_id}/send", data={"csrf_token": csrf(page.text), "channel": channel})


def _run_jobs(app):
    state = app.extensions["rapportal"]
    return state.jobs.run_until_idle(job_context(app))


def _outbox(app):
    with app.extensions["rapportal"].sessions() as session:
        return list(session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))


def _clinical_words(app) -> set[str]:
    """Everything that would tell what was asked: every instrument's id, titles and item wording."""
    words = set()
    for instrument in app.extensions["rapportal"].engine.instruments:
        words |= {instrument.id, instrument.short_title, instrument.title}
    return {w for w in words if w}


def test_email_reaches_the_client_in_their_language_with_a_link_that_works(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id, language="de")
    session_id = _started_session(app, ann, world, released=False)
    sent = _send(ann, session_id)
    assert sent.status_code == 303 and "sent=1" in sent.location  # the ORS at the start of session 1
    _run_jobs(app)
    assert len(handler.received) == 1
    again = _send(ann, session_id)  # the ORS went already and the SRS waits for the end of the session
    assert again.status_code == 303 and "sent=0" in again.location
    _release(ann, session_id)
    sent = _send(ann, session_id)
    assert sent.status_code == 303 and "sent=1" in sent.location  # now the SRS
    _run_jobs(app)
    assert len(handler.received) == 2
    links = []
    for received in handler.received:
        message = received.message
        assert received.recipients == [CLIENT_EMAIL] and message["To"] == CLIENT_EMAIL
        assert "noreply@praxis-nord.example" in message["From"]
        assert message["Content-Language"] == "de"
        assert message["Subject"] == "Ihr Fragebogen von Praxis Nord"
        body = message.get_content()
        assert "Praxis Nord" in body and "Fragebogen" in body
        for word in _clinical_words(app):
            assert not re.search(rf"\b{re.escape(word)}\b", body + message["Subject"], re.I), word
        found = re.findall(r"http://portal\.example(/a/[A-Za-z0-9_-]+)", body)
        assert len(found) == 1
        links.append(found[0])
    assert len(set(links)) == 2
    anonymous = app.test_client()
    for path in links:
        opened = anonymous.get(path)
        assert opened.status_code == 200 and 'name="csrf_token"' in opened.text
    page = ann.get(f"/sessions/{session_id}").text
    assert page.count("sent (") == 2


def test_the_client_language_decides_the_message_language(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id, language="es")
    _send(ann, _started_session(app, ann, world))
    _run_jobs(app)
    assert {r.message["Subject"] for r in handler.received} == {"Su cuestionario de Praxis Nord"}
    assert {r.message["Content-Language"] for r in handler.received} == {"es"}


def test_a_sent_link_replaces_the_copied_one_and_is_sent_once_per_channel(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id)
    page = start_session(ann, world.episode_id, world.client_id).text
    copied = re.findall(r'value="https?://[^"]+(/a/[^"]+)" readonly', page)
    with app.extensions["rapportal"].sessions() as session:
        session_id = session.scalar(sa.select(CareSession.id))
    _release(ann, session_id)
    _send(ann, session_id)
    again = _send(ann, session_id)
    assert again.status_code == 303 and "sent=0" in again.location
    _run_jobs(app)
    assert len(handler.received) == 2
    assert copied and all(app.test_client().get(path).status_code == 404 for path in copied)


def test_without_consent_nothing_is_sent(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id, consent=False)
    session_id = _started_session(app, ann, world)
    assert "has not agreed to be contacted" in ann.get(f"/sessions/{session_id}").text
    refused = _send(ann, session_id)
    assert refused.status_code == 409 and "agreed to be contacted" in refused.text
    _run_jobs(app)
    assert handler.received == [] and _outbox(app) == []


def test_consent_withdrawn_after_sending_stops_the_queued_message(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id)
    _send(ann, _started_session(app, ann, world))
    _set_contact(app, world.client_id, consent=False)
    _run_jobs(app)
    assert handler.received == []
    assert {(m.status, m.error) for m in _outbox(app)} == {("skipped", "no_consent")}


def test_an_unknown_channel_is_refused_naming_the_field(app, ann, world):
    _set_contact(app, world.client_id)
    refused = _send(ann, _started_session(app, ann, world), channel="pigeon")
    assert refused.status_code == 422 and "channel" in refused.text


def test_a_refused_recipient_is_shown_on_the_session_page(app, ann, world, mail):
    handler, _port = mail
    handler.refuse[CLIENT_EMAIL] = "550 5.1.1 Mailbox does not exist"
    _set_contact(app, world.client_id)
    session_id = _started_session(app, ann, world)
    _send(ann, session_id)
    _run_jobs(app)
    assert handler.received == []
    assert {m.status for m in _outbox(app)} == {"failed"}
    page = ann.get(f"/sessions/{session_id}").text
    assert page.count("Delivery failed:") == 2 and "550 5.1.1 Mailbox does not exist" in page


def test_an_unreachable_server_is_retried_then_reported(app, ann, world, mail):
    _set_contact(app, world.client_id)
    app.config["SMTP_PORT"] = 1  # nothing listens there
    _send(ann, _started_session(app, ann, world))
    state = app.extensions["rapportal"]
    later = datetime.now(UTC)
    for _attempt in range(4):
        deliver_due(state.sessions, state.engine, app.config, now=later)
        later += timedelta(hours=1)
    messages = _outbox(app)
    assert {(m.status, m.attempts) for m in messages} == {("failed", 4)}
    assert all("cannot reach the SMTP server" in m.error for m in messages)


def test_a_message_is_never_delivered_twice(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id)
    session_id = _started_session(app, ann, world)
    _send(ann, session_id)
    state = app.extensions["rapportal"]
    _run_jobs(app)
    for _again in range(3):  # the sweep, a re-delivered job, another worker
        deliver_due(state.sessions, state.engine, app.config)
        for message in _outbox(app):
            state.jobs.enqueue("notify.deliver", message_id=message.id)
        _run_jobs(app)
    assert len(handler.received) == 2


def test_contact_changes_are_audited_without_the_values(app, world):
    _set_contact(app, world.client_id, phone="+49 30 1234567", time_zone="Europe/Berlin")
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "client.contact")).one()
        client = session.get(Client, world.client_id)
    assert entry.target == f"client:{world.client_id}"
    assert entry.detail == {"email": True, "phone": True, "consent": True, "time_zone": True}
    assert CLIENT_EMAIL not in str(entry.detail) and "1234567" not in str(entry.detail)
    assert client.phone == "+49301234567" and client.contact_consent_at is not None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"email": "not an address"}, "email"),
        ({"phone": "0301234567"}, "phone"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"email": None, "consent": True}, "consent"),
    ],
)
def test_contact_details_are_checked(app, world, values, field):
    arguments = {"email": CLIENT_EMAIL, "phone": None, "consent": True, "time_zone": None} | values
    with app.extensions["rapportal"].sessions() as session:
        client = session.get(Client, world.client_id)
        with pytest.raises(InvalidInput) as refused:
            update_contact(session, client, **arguments, actor="test", address=None)
    assert refused.value.field == field


def test_the_admin_client_page_edits_contact_and_consent(app, world):
    admin = app.test_client()
    sign_in(admin, "admin")
    path = f"/admin/clients/{world.client_id}"
    token = csrf(admin.get(path).text)
    bad = admin.post(f"{path}/contact", data={"csrf_token": token, "email": "nope", "consent": "y"})
    assert bad.status_code == 422 and "e-mail address such as" in bad.text
    saved = admin.post(
        f"{path}/contact",
        data={"csrf_token": token, "email": CLIENT_EMAIL, "consent": "y", "time_zone": "Europe/Madrid"},
    )
    assert saved.status_code == 303
    page = admin.get(saved.location).text
    assert CLIENT_EMAIL in page and "Europe/Madrid" in page and "checked" in page
    assert admin.post(f"{path}/contact", data={"email": CLIENT_EMAIL}).status_code == 400  # no CSRF token
    with app.extensions["rapportal"].sessions() as session:
        assert session.get(Client, world.client_id).contact_consent is True


def test_clinicians_cannot_change_contact_details(app, ann, world):
    page = ann.get(f"/sessions/{_started_session(app, ann, world)}")
    refused = ann.post(f"/admin/clients/{world.client_id}/contact", data={"csrf_token": csrf(page.text)})
    assert refused.status_code in (403, 404)


# -- reminders ----------------------------------------------------------------------------------


def _reminding_world(app, world, *, hours=24, times=2, time_zone=None):
    """Client C-1 with consent, an episode whose ORS rule reminds; returns the assignment id once sent."""
    state = app.extensions["rapportal"]
    _set_contact(app, world.client_id, time_zone=time_zone)
    with state.sessions.begin() as session:
        episode = session.get(Episode, world.episode_id)
        episode.plan = [rule("ors", "start", remind_after_hours=hours, remind_max=times)]


def _sent_ors(app, ann, world):
    session_id = _started_session(app, ann, world)
    _send(ann, session_id)
    _run_jobs(app)
    with app.extensions["rapportal"].sessions() as session:
        message = session.scalars(sa.select(OutboxMessage)).one()
        return session_id, message.assignment_id, message.sent_at.replace(tzinfo=UTC)


def test_reminders_follow_the_plan_rule_and_stop_after_the_last(app, ann, world, mail):
    handler, _port = mail
    _reminding_world(app, world)
    _session_id, _assignment, sent = _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=23)) == 0
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=24, minutes=1)) == 1
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=30)) == 0
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=48, minutes=1)) == 1
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=96)) == 0
    subjects = [r.message["Subject"] for r in handler.received]
    assert subjects == [
        "Your questionnaire from Praxis Nord",
        "Reminder: your questionnaire from Praxis Nord",
        "Reminder: your questionnaire from Praxis Nord",
    ]
    assert [m.step for m in _outbox(app)] == [0, 1, 2]


def test_reminders_stop_once_the_link_is_answered(app, ann, world, mail):
    handler, _port = mail
    _reminding_world(app, world)
    _session_id, assignment_id, sent = _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        session.get(Assignment, assignment_id).completed_at = sent + timedelta(hours=1)
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=25)) == 0
    with state.sessions() as session:
        assert session.scalars(sa.select(LinkSending)).one().reminders_done is True
    assert len(handler.received) == 1


def test_reminders_stop_once_the_link_expires(app, ann, world, mail):
    handler, _port = mail
    _reminding_world(app, world, hours=24 * 8)
    _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    assert deliver_due(state.sessions, state.engine, app.config, now=datetime.now(UTC) + timedelta(days=9)) == 0
    assert len(handler.received) == 1


def test_a_reminder_due_in_quiet_hours_waits_for_the_clients_morning(app, ann, world, mail):
    handler, _port = mail
    app.config["QUIET_HOURS"] = "21:00-08:00"
    _reminding_world(app, world, hours=1, times=1, time_zone="America/New_York")
    _session_id, _assignment, sent = _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    zone = ZoneInfo("America/New_York")
    # a day after sending, at 23:30 and 07:59 on the client's clock: quiet, so it waits
    day = (sent + timedelta(days=1)).astimezone(zone).date()
    night = datetime(day.year, day.month, day.day, 23, 30, tzinfo=zone)
    dawn = night + timedelta(hours=8, minutes=29)
    for quiet in (night, dawn):
        assert deliver_due(state.sessions, state.engine, app.config, now=quiet.astimezone(UTC)) == 0
    morning = night + timedelta(hours=8, minutes=31)  # 08:01 in New York
    assert deliver_due(state.sessions, state.engine, app.config, now=morning.astimezone(UTC)) == 1
    assert len(handler.received) == 2


def test_the_default_time_zone_applies_to_a_client_without_one(app, ann, world, mail):
    app.config["QUIET_HOURS"] = "22:00-07:00"
    app.config["DEFAULT_TIME_ZONE"] = "Asia/Tokyo"
    _reminding_world(app, world, hours=1, times=1)
    _session_id, _assignment, sent = _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    tokyo_night = datetime.combine((sent + timedelta(days=1)).date(), datetime.min.time(), ZoneInfo("Asia/Tokyo"))
    assert deliver_due(state.sessions, state.engine, app.config, now=tokyo_night.astimezone(UTC)) == 0
    noon = tokyo_night + timedelta(hours=12)
    assert deliver_due(state.sessions, state.engine, app.config, now=noon.astimezone(UTC)) == 1


def test_quiet_hours_parse_and_wrap_around_midnight():
    quiet = parse_quiet_hours("21:00-08:00")
    berlin = ZoneInfo("Europe/Berlin")
    assert in_quiet_hours(datetime(2026, 6, 1, 22, 0, tzinfo=berlin), berlin, quiet)
    assert in_quiet_hours(datetime(2026, 6, 1, 7, 59, tzinfo=berlin), berlin, quiet)
    assert not in_quiet_hours(datetime(2026, 6, 1, 8, 0, tzinfo=berlin), berlin, quiet)
    assert not in_quiet_hours(datetime(2026, 6, 1, 20, 59, tzinfo=berlin), berlin, quiet)
    day_quiet = parse_quiet_hours("12:00-13:00")
    assert in_quiet_hours(datetime(2026, 6, 1, 12, 30, tzinfo=berlin), berlin, day_quiet)
    assert parse_quiet_hours("") is None
    with pytest.raises(InvalidInput) as refused:
        parse_quiet_hours("9pm to 8am")
    assert refused.value.field == "QUIET_HOURS"


def test_a_lost_sweep_is_made_up_by_the_next_one(app, ann, world, mail):
    handler, _port = mail
    _reminding_world(app, world, hours=1, times=1)
    _session_id, _assignment, sent = _sent_ors(app, ann, world)
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:  # the run at +1 h queued the reminder, then its worker died
        queue_due_reminders(session, app.config, now=sent + timedelta(hours=1, minutes=1))
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=5)) == 1
    assert len(handler.received) == 2


def test_a_reissued_link_gets_no_reminder_with_the_old_token(app, ann, world, mail):
    handler, _port = mail
    _reminding_world(app, world, hours=1, times=1)
    session_id, assignment_id, sent = _sent_ors(app, ann, world)
    page = ann.get(f"/sessions/{session_id}")
    ann.post(f"/assignments/{assignment_id}/reissue", data={"csrf_token": csrf(page.text)})
    state = app.extensions["rapportal"]
    assert deliver_due(state.sessions, state.engine, app.config, now=sent + timedelta(hours=2)) == 0
    assert len(handler.received) == 1


def test_the_link_token_is_derived_never_stored(app, ann, world, mail):
    handler, _port = mail
    _set_contact(app, world.client_id)
    _send(ann, _started_session(app, ann, world))
    _run_jobs(app)
    tokens = {re.search(r"/a/([A-Za-z0-9_-]+)", r.message.get_content()).group(1) for r in handler.received}
    with app.extensions["rapportal"].sessions() as session:
        sendings = list(session.scalars(sa.select(LinkSending)))
        hashes = set(session.scalars(sa.select(Assignment.token_hash)))
    assert {link_token("test-secret-key", s.nonce) for s in sendings} == tokens
    assert {hash_token(t) for t in tokens} <= hashes
    assert not any(t in s.nonce for t in tokens for s in sendings)


# -- STARTTLS and AUTH ---------------------------------------------------------------------------


@pytest.fixture
def tls_mail(tmp_path):
    handler = MailHandler()
    controller = start_smtp(handler, tls_folder=tmp_path)
    yield handler, controller.port, tmp_path / "smtp-cert.pem"
    controller.stop()


def _tls_settings(app, tls_mail, password=SMTP_PASSWORD):
    _handler, port, cert = tls_mail
    app.config.update(
        SMTP_PORT=port, SMTP_STARTTLS=True, SMTP_USERNAME=USERNAME, SMTP_PASSWORD=password, SMTP_CA_FILE=str(cert)
    )


def test_email_goes_through_starttls_and_authentication(app, ann, world, tls_mail):
    handler, _port, _cert = tls_mail
    _tls_settings(app, tls_mail)
    _set_contact(app, world.client_id)
    _send(ann, _started_session(app, ann, world))
    _run_jobs(app)
    assert len(handler.received) == 2
    assert all(r.authenticated and r.recipients == [CLIENT_EMAIL] for r in handler.received)


def test_a_wrong_smtp_password_is_reported_not_sent(app, ann, world, tls_mail):
    handler, _port, _cert = tls_mail
    _tls_settings(app, tls_mail, password="wrong")
    _set_contact(app, world.client_id)
    session_id = _started_session(app, ann, world)
    _send(ann, session_id)
    _run_jobs(app)
    assert handler.received == []
    assert all("refused the login: 535" in m.error for m in _outbox(app))
    assert "refused the login" in ann.get(f"/sessions/{session_id}").text


def test_an_untrusted_certificate_is_refused(app, ann, world, tls_mail):
    handler, _port, _cert = tls_mail
    _tls_settings(app, tls_mail)
    app.config["SMTP_CA_FILE"] = ""  # the system's CAs do not know the test certificate
    _set_contact(app, world.client_id)
    _send(ann, _started_session(app, ann, world))
    _run_jobs(app)
    assert handler.received == []
    assert all("CERTIFICATE_VERIFY_FAILED" in m.error for m in _outbox(app))
