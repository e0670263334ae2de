"""Triage on the client page and the caseload: alert order, one note for several alerts, caseload by urgency."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from staff_support import audit_actions, make_world, page_token, sign_in
from triage_support import INFO_MESSAGE, deteriorating_client

from core.errors import InvalidInput, NotFound
from core.models import Alert, AuditEntry, Client, User
from core.triage import acknowledge_alerts, caseload_order, count_by_severity, triage_order


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


@pytest.fixture
def triage(app, ann, world):
    return deteriorating_client(app, ann, world.client_id)


def _open(app, client_id):
    with app.extensions["rapportal"].sessions() as session:
        return [
            (a.id, a.severity, a.rule)
            for a in triage_order(
                session.scalars(sa.select(Alert).where(Alert.client_id == client_id, Alert.acknowledged_at.is_(None)))
            )
        ]


def test_alerts_are_ordered_urgent_then_warning_then_info_newest_first(app, triage):
    found = _open(app, triage.client_id)
    severities = [severity for _id, severity, _rule in found]
    assert severities == sorted(severities, key=["urgent", "warning", "info"].index)
    assert severities[0] == "urgent" and severities[-1] == "info" and "warning" in severities
    urgent_ids = [alert_id for alert_id, severity, _rule in found if severity == "urgent"]
    assert urgent_ids == sorted(urgent_ids, reverse=True)  # session 3's item 9 before session 2's


def test_the_client_page_opens_on_the_status_strip_then_charts_then_alerts(app, ann, triage):
    page = ann.get(f"/clients/{triage.client_id}").text
    strip, chart, alerts = (page.index(mark) for mark in ('id="status"', 'id="chart-ors-total"', 'id="client-alerts"'))
    assert strip < chart < alerts
    status = page[strip:chart]
    assert "PHQ-9" in status and "ORS" in status and "12.0" in status  # latest ORS
    assert "since intake" in status and "-6.5" in status  # 12.0 - 18.5
    counts = dict(re.findall(r'class="count-(\w+) nonzero".*?<strong>(\d+)</strong>', status, re.S))
    assert counts == {"urgent": "2", "warning": str(len(_open(app, triage.client_id)) - 3), "info": "1"}


def test_each_alert_message_carries_its_values_and_session(app, ann, triage):
    page = ann.get(f"/clients/{triage.client_id}").text
    items = re.findall(r'<li class="staff-alert severity-(\w+)".*?</li>', page, re.S)
    assert items[0] == "urgent"
    first = page[page.index('class="staff-alert severity-urgent"') :]
    first = first[: first.index("</li>")]
    assert "item 9 answered 2" in first and "in session 3" in first and "session 3," in first
    assert "Urgent" in first and 'class="severity-icon"' in first  # text and icon, not colour alone
    assert INFO_MESSAGE in page


def test_chart_points_that_raised_an_alert_are_marked_in_the_chart_and_the_table(app, ann, triage):
    page = ann.get(f"/clients/{triage.client_id}").text
    phq9 = page[page.index('id="chart-phq9-total"') :]
    phq9 = phq9[: phq9.index("</svg>")]
    assert phq9.count('class="alert-ring"') == 2  # sessions 2 and 3
    assert "raised an alert (urgent)" in page[page.index('id="chart-phq9-total-data"') :]


def test_one_note_acknowledges_several_alerts_with_one_audit_entry_each(app, ann, triage):
    chosen = [alert_id for alert_id, _s, _r in _open(app, triage.client_id)][:3]
    token = page_token(ann, f"/clients/{triage.client_id}")
    response = ann.post(
        f"/clients/{triage.client_id}/alerts/acknowledge",
        data={"csrf_token": token, "alert": chosen, "note": "Safety plan made together"},
    )
    assert response.status_code == 303
    with app.extensions["rapportal"].sessions() as session:
        closed = session.scalars(sa.select(Alert).where(Alert.id.in_(chosen))).all()
        assert {a.note for a in closed} == {"Safety plan made together"}
        entries = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "alert.acknowledge")).all()
        assert sorted(e.detail["alert"] for e in entries) == sorted(chosen)
        for entry in entries:  # who, what, which record: no rule, note or message
            text = repr(entry.detail) + (entry.target or "")
            assert "Safety" not in text and "phq9" not in text and "item" not in text
    assert ("user:ann", "alert.acknowledge", f"client:{triage.client_id}") in audit_actions(app)


@pytest.mark.parametrize(("data", "field"), [({"note": "seen"}, "alert"), ({"alert": ["1"], "note": " "}, "note")])
def test_acknowledging_without_alerts_or_note_is_refused_naming_the_field(app, ann, triage, data, field):
    token = page_token(ann, f"/clients/{triage.client_id}")
    response = ann.post(f"/clients/{triage.client_id}/alerts/acknowledge", data={"csrf_token": token, **data})
    assert response.status_code == 422 and field in response.text
    assert len(_open(app, triage.client_id)) >= 5


def test_acknowledge_alerts_refuses_another_clinicians_client_and_mixed_clients(app, world, triage):
    ids = [a for a, _s, _r in _open(app, triage.client_id)]
    with app.extensions["rapportal"].sessions() as session:
        bob = session.get(User, world.users["bob"])
        ann = session.get(User, world.users["ann"])
        with pytest.raises(NotFound):
            acknowledge_alerts(session, bob, ids, note="mine", actor="user:bob", address=None)
        with pytest.raises(InvalidInput) as refused:
            acknowledge_alerts(session, ann, [], note="x", actor="user:ann", address=None)
        assert refused.value.field == "alert"
        with pytest.raises(NotFound):
            acknowledge_alerts(session, ann, [*ids, 999999], note="x", actor="user:ann", address=None)
        with pytest.raises(NotFound):  # posted under another client's address
            acknowledge_alerts(
                session, ann, ids, client_id=world.other_client_id, note="x", actor="user:ann", address=None
            )
        session.rollback()


def test_the_caseload_lists_urgent_first_then_warnings_then_the_rest(app, ann, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        ann_id = world.users["ann"]
        quiet = Client(code="A-QUIET", clinician_id=ann_id)
        warned = Client(code="B-WARN", clinician_id=ann_id)
        urgent = Client(code="Z-URGENT", clinician_id=ann_id)
        session.add_all([quiet, warned, urgent])
        session.flush()
        from core.models import Response

        for client, severity in ((warned, "warning"), (urgent, "urgent"), (urgent, "info")):
            response = Response(
                client_id=client.id,
                instrument_id="ors",
                instrument_version="1",
                answers={},
                receipt=f"R{client.id}{severity[0]}",
            )
            session.add(response)
            session.flush()
            session.add(Alert(response_id=response.id, client_id=client.id, rule="r", severity=severity, message="m"))
    page = ann.get("/caseload").text
    order = re.findall(r'data-client="([^"]+)"', page)
    assert order.index("Z-URGENT") < order.index("B-WARN") < order.index("A-QUIET")
    assert order.index("B-WARN") < order.index("C-1")  # C-1 has no alerts here


def test_caseload_order_ranks_by_most_severe_then_count_then_code():
    clients = [Client(id=n, code=code) for n, code in enumerate(["D", "C", "B", "A"], start=1)]
    alerts = [
        Alert(id=1, client_id=1, severity="warning"),
        Alert(id=2, client_id=2, severity="urgent"),
        Alert(id=3, client_id=3, severity="warning"),
        Alert(id=4, client_id=3, severity="warning"),
    ]
    from datetime import UTC, datetime

    for alert in alerts:
        alert.created_at = datetime(2026, 3, 12, tzinfo=UTC)
    assert [c.code for c in caseload_order(clients, alerts)] == ["C", "B", "D", "A"]
    assert count_by_severity(alerts) == {"urgent": 1, "warning": 3, "info": 0}
