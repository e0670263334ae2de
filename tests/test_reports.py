"""Outcome reports: figures on a generated data set equal an independent computation here.

Two sites, three clinicians, a supervisor and a site-limited administrator; ORS episodes with known
intake and last scores, SRS sessions with known totals. The expected figures below are computed from
the published rules directly (ORS: reliable change 5 points, clinical cutoff 25; SRS: cutoff 36, a drop
of 1 from the previous session), not through core.
"""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.accounts import create_user
from core.audit import browse_audit
from core.errors import InvalidInput, NotFound
from core.models import Assignment, AuditEntry, Client, Episode, Response, Score, User
from core.reports import outcome_report, report_choices, report_rows
from core.sites import create_site, set_supervised, set_user_sites

PASSWORD = "a long enough password"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = datetime(2026, 7, 1, tzinfo=UTC)


class Data:
    pass


def _response(session, client, episode, instrument, total, at):
    response = Response(
        client_id=client.id,
        episode_id=episode.id,
        instrument_id=instrument,
        instrument_version="1.0",
        answers={},
        receipt="R",
        submitted_at=at,
    )
    session.add(response)
    session.flush()
    session.add(Score(response_id=response.id, complete=True, values={"total": str(total)}, band=None, flags=[]))


@pytest.fixture
def data(app):
    portal = app.extensions["rapportal"]
    rng = random.Random(12)
    data = Data()
    data.ors = {}  # clinician -> [(client, intake, last)]
    data.srs = {}  # clinician -> [(client, [totals])]
    data.links = {}  # clinician -> [(client, answered)]
    with portal.sessions.begin() as session:
        north = create_site(session, "North", actor="test", address=None)
        south = create_site(session, "South", actor="test", address=None)
        make = lambda name, role: create_user(session, name, name.title(), role, PASSWORD, actor="test", address=None)  # noqa: E731
        ann, bob, cem = make("ann", "clinician"), make("bob", "clinician"), make("cem", "clinician")
        sue, admin_n, admin = make("sue", "supervisor"), make("nadia", "admin"), make("admin", "admin")
        set_user_sites(session, admin_n, [north.id], actor="test", address=None)
        set_user_sites(session, sue, [north.id], actor="test", address=None)
        set_supervised(session, sue, [ann.id, cem.id], actor="test", address=None)
        # ann: 6 clients at North; bob: 5 clients at South; cem: 4 clients at North (one below the minimum 5)
        plan = {ann: (north, 6), bob: (south, 5), cem: (north, 4)}
        for clinician, (site, count) in plan.items():
            for n in range(count):
                client = Client(code=f"{clinician.username}-{n}", clinician_id=clinician.id, site_id=site.id)
                session.add(client)
                session.flush()
                start = SINCE + timedelta(days=10 + n)
                episode = Episode(client_id=client.id, started_at=start)
                session.add(episode)
                session.flush()
                intake, last = rng.randint(8, 30), rng.randint(8, 40)
                _response(session, client, episode, "ors", intake, start)
                _response(session, client, episode, "ors", rng.randint(8, 40), start + timedelta(days=7))
                _response(session, client, episode, "ors", last, start + timedelta(days=14))
                # after the range: must not count
                _response(session, client, episode, "ors", 40, UNTIL + timedelta(days=3))
                totals = [rng.randint(30, 40) for _ in range(3)]
                for k, total in enumerate(totals):
                    _response(session, client, episode, "srs", total, start + timedelta(days=7 * k, hours=1))
                answered = rng.random() < 0.6
                session.add(
                    Assignment(
                        client_id=client.id,
                        instrument_id="ors",
                        instrument_version="1.0",
                        token_hash=f"{client.code}".ljust(64, "x"),
                        created_at=start,
                        expires_at=start + timedelta(days=3),
                        completed_at=start if answered else None,
                    )
                )
                if n == 0:
                    episode.ended_at = start + timedelta(days=20)
                data.ors.setdefault(clinician.id, []).append((client.id, intake, last))
                data.srs.setdefault(clinician.id, []).append((client.id, totals))
                data.links.setdefault(clinician.id, []).append((client.id, answered))
        data.north, data.south = north.id, south.id
        data.users = {user.username: user.id for user in (ann, bob, cem, sue, admin_n, admin)}
        data.clinicians = {ann.id: north.id, bob.id: south.id, cem.id: north.id}
    return data


def _expected(data, clinician_ids):
    ors = [row for c in clinician_ids for row in data.ors[c]]
    srs = [row for c in clinician_ids for row in data.srs[c]]
    links = [row for c in clinician_ids for row in data.links[c]]
    changes = [last - intake for _c, intake, last in ors]
    intakes = [intake for _c, intake, _l in ors]
    sessions = [t for _c, totals in srs for t in totals]
    return {
        "started": len(ors),
        "ended": None,  # one ended episode per clinician: fewer than 5 clients, withheld
        "links": sum(1 for _c, answered in links if answered) / len(links),
        "improved": sum(1 for d in changes if d >= 5) / len(ors),
        "deteriorated": sum(1 for d in changes if d <= -5) / len(ors),
        "significant": sum(1 for _c, i, last in ors if last - i >= 5 and i <= 25 and last > 25) / len(ors),
        "mean_change": statistics.fmean(changes),
        "effect_size": statistics.fmean(changes) / statistics.stdev(intakes),
        "below": sum(1 for t in sessions if t < 36) / len(sessions),
        "drop": sum(1 for _c, t in srs if any(t[k] - t[k + 1] >= 1 for k in range(len(t) - 1))) / len(srs),
    }


def _report(app, username, **scope):
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        user = session.scalar(sa.select(User).where(User.username == username))
        return outcome_report(
            session,
            portal.engine,
            user,
            since=SINCE,
            until=UNTIL,
            minimum=5,
            actor=f"user:{username}",
            address=None,
            **scope,
        )


def _figures(report):
    ors = next(change for change in report.changes if change.instrument == "ors")
    srs = next(bond for bond in report.alliance if bond.instrument == "srs")
    return {
        "started": report.episodes_started.value,
        "ended": report.episodes_ended.value,
        "links": report.links_answered.value,
        "improved": ors.reliable_improvement.value,
        "deteriorated": ors.reliable_deterioration.value,
        "significant": ors.clinically_significant_improvement.value,
        "mean_change": ors.mean_change.value,
        "effect_size": ors.effect_size.value,
        "below": srs.below_cutoff.value,
        "drop": srs.alliance_drop.value,
    }


def _close(found, expected):
    assert set(found) == set(expected)
    for name, value in expected.items():
        if value is None:
            assert found[name] is None, name
        else:
            assert found[name] is not None, name
            assert float(found[name]) == pytest.approx(value), name


def test_a_supervisors_clinician_report_equals_the_independent_computation(app, data):
    ann = data.users["ann"]
    _close(_figures(_report(app, "sue", clinician_id=ann)), _expected(data, [ann]))


def test_the_site_report_covers_every_clinician_at_the_site(app, data):
    north = [c for c, site in data.clinicians.items() if site == data.north]
    _close(_figures(_report(app, "nadia", site_id=data.north)), _expected(data, north))


def test_the_portal_report_covers_every_site(app, data):
    _close(_figures(_report(app, "admin")), _expected(data, list(data.clinicians)))


def test_a_figure_from_fewer_clients_than_the_minimum_is_withheld_and_five_is_enough(app, data):
    small = _report(app, "sue", clinician_id=data.users["cem"])  # 4 clients
    assert small.episodes_started.withheld and small.episodes_started.value is None
    assert small.episodes_started.clients == 4
    assert all(change.mean_change.value is None for change in small.changes)
    assert ["episodes", "", "started", "", "4", "4", "True"] in list(report_rows(small))
    enough = _report(app, "admin", clinician_id=None, site_id=data.south)  # bob: exactly 5 clients
    assert not enough.episodes_started.withheld and enough.episodes_started.value == 5


def test_a_supervisor_opens_only_their_clinicians_and_a_site_limited_admin_only_their_sites(app, data):
    with pytest.raises(NotFound):
        _report(app, "sue", clinician_id=data.users["bob"])
    with pytest.raises(NotFound):
        _report(app, "nadia", site_id=data.south)
    with pytest.raises(NotFound):
        _report(app, "nadia")  # no portal report for a site-limited administrator
    with pytest.raises(NotFound):
        _report(app, "ann", clinician_id=data.users["bob"])


def test_reports_are_audited_without_figures(app, data):
    _report(app, "admin", site_id=data.north)
    with app.extensions["rapportal"].sessions.begin() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "report.view")).one()
    assert entry.actor == "user:admin" and entry.target == f"site:{data.north}"
    assert entry.detail == {"scope": "site", "since": "2026-01-01", "until": "2026-07-01"}


def test_a_range_that_ends_before_it_starts_is_refused_naming_the_field(app, data):
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        admin = session.scalar(sa.select(User).where(User.username == "admin"))
        with pytest.raises(InvalidInput) as refused:
            outcome_report(session, portal.engine, admin, since=UNTIL, until=SINCE, actor="x", address=None)
    assert refused.value.field == "until"


def test_report_choices_follow_the_role(app, data):
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        users = {u.username: u for u in session.scalars(sa.select(User))}
        sue = report_choices(session, users["sue"])
        nadia = report_choices(session, users["nadia"])
        admin = report_choices(session, users["admin"])
        assert [u.username for u in sue.clinicians] == ["ann", "cem"] and not sue.sites and not sue.portal
        assert [s.name for s in nadia.sites] == ["North"] and not nadia.portal and not nadia.clinicians
        assert {s.name for s in admin.sites} == {"Main site", "North", "South"} and admin.portal


def test_a_site_limited_administrator_finds_no_audit_entry_about_another_sites_clients(app, data):
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        nadia = session.scalar(sa.select(User).where(User.username == "nadia"))
        south_clients = {
            f"client:{i}" for i in session.scalars(sa.select(Client.id).where(Client.site_id == data.south))
        }
        for target in sorted(south_clients):
            session.add(AuditEntry(actor="user:bob", action="client.view", target=target, detail={}))
        session.add(AuditEntry(actor="user:bob", action="password.change", target="user:2", detail={}))
        session.add(AuditEntry(actor="user:sue", action="password.change", target="user:4", detail={}))
        session.flush()
        entries, _more = browse_audit(session, contains={}, viewer="user:nadia", viewer_user=nadia, address=None)
    targets = {entry.target for entry in entries}
    assert not targets & south_clients
    assert "user:4" in targets and "user:2" not in targets  # sue shares North with nadia; bob does not
