"""Expected change from the clinic's completed episodes (core/expected.py): on a generated data set of several
hundred ORS episodes, the in-app figures equal an independent computation (type-7 percentiles from
``statistics.quantiles(method="inclusive")``) at the boundaries of the intake ranges and at the minimum count;
the "not on track" alert; the band or the fallback note on the client page; the figures recomputed from a CSV
export."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any

import pytest
import sqlalchemy as sa
from staff_support import make_world, sign_in

from core.expected import (
    EpisodeSeries,
    ExpectedSettings,
    IntakeRange,
    expected_curves,
    intake_ranges,
    percentile,
)
from core.models import Alert, Assignment, AuditEntry, CareSession, Client, Episode, Response, Score
from core.plans import BUILTIN_PLANS
from core.responses import create_assignment, submit_response

MINIMUM = 30
PER_SESSION = 10
START = datetime(2026, 1, 5, 9, tzinfo=UTC)
FIRST_ID = 100_001  # generated rows; rows the tests add later get ids of their own (no clash below 100 000)


# ---------------------------------------------------------------------------
# The generated data set
# ---------------------------------------------------------------------------


@dataclass
class Generated:
    """What the generator wrote, kept in plain Python for the independent computation."""

    # (episode key, ended, [(session number, total), ...] in submission order)
    episodes: list[tuple[str, bool, list[tuple[int, Decimal]]]] = field(default_factory=list)


def _intakes(rng: random.Random) -> list[Decimal]:
    """Intake totals that put exactly MINIMUM completed episodes in 15-20, MINIMUM - 1 in 20-25, and many in
    10-15 and 25-30, with intakes on the range boundaries (10.0, 14.9, 15.0, 19.9, 20.0, 24.9, 25.0, 40.0, 0.0)."""
    at_15 = [Decimal("15.0"), Decimal("19.9")] + [Decimal(rng.randint(150, 199)) / 10 for _ in range(MINIMUM - 2)]
    at_20 = [Decimal("20.0"), Decimal("24.9")] + [Decimal(rng.randint(200, 249)) / 10 for _ in range(MINIMUM - 3)]
    at_10 = [Decimal("10.0"), Decimal("14.9")] + [Decimal(rng.randint(100, 149)) / 10 for _ in range(148)]
    at_25 = [Decimal("25.0")] + [Decimal(rng.randint(250, 299)) / 10 for _ in range(139)]
    edges = [Decimal("0.0"), Decimal("40.0"), Decimal("35.0"), Decimal("5.0")]
    return at_15 + at_20 + at_10 + at_25 + edges


def _trajectory(rng: random.Random, intake: Decimal) -> list[tuple[int, Decimal]]:
    """Sessions 1..n (n 2-8) rising on average, with a skipped session now and then and, sometimes, a second
    ORS in the same session (only the first counts)."""
    values = [(1, intake)]
    current = intake
    for number in range(2, rng.randint(2, 8) + 1):
        current = min(Decimal(40), max(Decimal(0), current + Decimal(rng.randint(-30, 50)) / 10))
        if rng.random() < 0.1:
            continue
        values.append((number, current))
        if rng.random() < 0.05:
            values.append((number, min(Decimal(40), current + Decimal(3))))
    if len({number for number, _value in values}) < 2:
        values.append((2, intake))
    return values


def generate(app: Any, seed: int = 11) -> Generated:
    """Several hundred ORS episodes written straight into the tables as the submission path stores them (one
    bulk insert per table, ids from FIRST_ID up), plus episodes that must not count: still open, a single
    session, and SRS answers."""
    rng = random.Random(seed)
    out = Generated()
    plan = BUILTIN_PLANS["pcoms"][1]
    rows: dict[str, list[dict[str, Any]]] = {"episodes": [], "sessions": [], "assignments": [], "responses": []}
    scores: list[dict[str, Any]] = []
    owner = FIRST_ID

    def episode_with(values: list[tuple[int, Decimal]], ended: bool, instrument: str = "ors") -> None:
        episode = FIRST_ID + len(rows["episodes"])
        started = START + timedelta(hours=len(rows["episodes"]))
        rows["episodes"].append(
            {
                "id": episode,
                "client_id": owner,
                "plan_name": "pcoms",
                "plan": plan,
                "started_at": started,
                "ended_at": started + timedelta(days=90) if ended else None,
            }
        )
        care_ids: dict[int, int] = {}
        for position, (number, total) in enumerate(values):
            when = started + timedelta(days=7 * number, minutes=position)
            if number not in care_ids:
                care_ids[number] = FIRST_ID + len(rows["sessions"])
                rows["sessions"].append(
                    {"id": care_ids[number], "episode_id": episode, "number": number, "held_at": when}
                )
            counter = FIRST_ID + len(rows["responses"])
            rows["assignments"].append(
                {
                    "id": counter,
                    "client_id": owner,
                    "episode_id": episode,
                    "session_id": care_ids[number],
                    "instrument_id": instrument,
                    "instrument_version": "1.0.0",
                    "language": "en",
                    "token_hash": f"gen{counter:061d}",
                    "created_at": when,
                    "expires_at": when + timedelta(days=7),
                    "completed_at": when,
                }
            )
            rows["responses"].append(
                {
                    "id": counter,
                    "assignment_id": counter,
                    "client_id": owner,
                    "episode_id": episode,
                    "instrument_id": instrument,
                    "instrument_version": "1.0.0",
                    "language": "en",
                    "answers": {},
                    "receipt": f"R{counter}",
                    "submitted_at": when,
                }
            )
            scores.append(
                {
                    "response_id": counter,
                    "complete": True,
                    "values": {"total": str(total)},
                    "band": None,
                    "flags": [],
                    "scored_at": when,
                }
            )
        if instrument == "ors":
            out.episodes.append((str(episode), ended, values))

    for intake in _intakes(rng):
        episode_with(_trajectory(rng, intake), ended=True)
    # not completed: open episodes in the boundary range, and an ended one with one session only
    for _ in range(5):
        episode_with(_trajectory(rng, Decimal("17.0")), ended=False)
    episode_with([(1, Decimal("18.0"))], ended=True)
    # another instrument's totals never count for the ORS
    for _ in range(10):
        episode_with([(1, Decimal("20.0")), (2, Decimal("39.0"))], ended=True, instrument="srs")
    with app.extensions["rapportal"].sessions.begin() as session:
        session.execute(sa.insert(Client), [{"id": owner, "code": "GEN-0", "language": "en", "created_at": START}])
        for model, key in ((Episode, "episodes"), (CareSession, "sessions"), (Assignment, "assignments")):
            session.execute(sa.insert(model), rows[key])
        session.execute(sa.insert(Response), rows["responses"])
        session.execute(sa.insert(Score), scores)
    return out


# ---------------------------------------------------------------------------
# The independent computation
# ---------------------------------------------------------------------------

ORS_RANGES = [(Fraction(low), Fraction(low + 5)) for low in range(0, 40, 5)]


def independent(
    generated: Generated, minimum: int = MINIMUM, per_session: int = PER_SESSION
) -> dict[tuple[Fraction, Fraction], Any]:
    """By hand from the generator's own lists: completed = ended with two or more session numbers; the first
    value in each session; intake = session 1; ranges [low, low + 5), the last one [35, 40]; a range needs
    ``minimum`` episodes, a session ``per_session`` scores; quartiles by linear interpolation
    (statistics.quantiles, method "inclusive" = R type 7)."""
    result: dict[tuple[Fraction, Fraction], Any] = {}
    groups: dict[tuple[Fraction, Fraction], list[dict[int, Fraction]]] = {r: [] for r in ORS_RANGES}
    for _key, ended, values in generated.episodes:
        first: dict[int, Fraction] = {}
        for number, total in values:
            first.setdefault(number, Fraction(str(total)))
        if not ended or len(first) < 2:
            continue
        intake = first[min(first)]
        for low, high in ORS_RANGES:
            if low <= intake < high or (high == 40 and intake == 40):
                groups[(low, high)].append(first)
                break
    for key, members in groups.items():
        sessions: dict[int, Any] = {}
        if len(members) >= minimum:
            numbers = sorted({n for one in members for n in one})
            for number in numbers:
                values = sorted(one[number] for one in members if number in one)
                if len(values) >= per_session:
                    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
                    sessions[number] = (len(values), q2, q1, q3)
        result[key] = (len(members), sessions)
    return result


def in_app(app: Any) -> dict[tuple[Fraction, Fraction], Any]:
    state = app.extensions["rapportal"]
    instrument = state.engine.instruments.get("ors")
    with state.sessions() as session:
        table = state.engine.expected.table(session, instrument, "total")
    assert table is not None and table.direction == "higher_is_better"
    return {
        (Fraction(str(c.intake.low)), Fraction(str(c.intake.high))): (
            c.episodes,
            {
                p.session: (p.count, Fraction(str(p.median)), Fraction(str(p.p25)), Fraction(str(p.p75)))
                for p in c.points
            },
        )
        for c in table.curves
    }


@pytest.fixture
def generated(app: Any) -> Generated:
    return generate(app)


# ---------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------


def test_the_data_set_has_several_hundred_completed_episodes(generated):
    completed = [e for e in generated.episodes if e[1] and len({n for n, _v in e[2]}) >= 2]
    assert len(completed) >= 300


def test_every_figure_equals_the_independent_computation(app, generated):
    assert in_app(app) == independent(generated)


def test_a_range_with_exactly_the_minimum_has_figures_and_one_short_of_it_has_none(app, generated):
    figures = in_app(app)
    episodes, sessions = figures[(Fraction(15), Fraction(20))]
    assert episodes == MINIMUM and sessions[1][0] == MINIMUM  # minimum + 0: shown
    episodes, sessions = figures[(Fraction(20), Fraction(25))]
    assert episodes == MINIMUM - 1 and sessions == {}  # minimum - 1: not shown


def test_intakes_on_a_boundary_belong_to_the_range_that_starts_there(app, generated):
    ranges = intake_ranges(app.extensions["rapportal"].engine.instruments.get("ors"), "total", ExpectedSettings())
    by_value = {value: next(r for r in ranges if r.contains(Decimal(value))) for value in ("15.0", "19.9", "20.0")}
    assert by_value["15.0"] == by_value["19.9"] == IntakeRange(Decimal(15), Decimal(20))
    assert by_value["20.0"] == IntakeRange(Decimal(20), Decimal(25))
    assert ranges[-1] == IntakeRange(Decimal(35), Decimal(40), last=True) and ranges[-1].contains(Decimal(40))
    assert ranges[0].low == 0 and len(ranges) == 8


def test_a_session_with_fewer_scores_than_the_session_minimum_is_left_out(app, generated):
    _episodes, sessions = in_app(app)[(Fraction(15), Fraction(20))]
    reached = {
        number: len({key for key, _n in pairs})
        for number, pairs in _sessions_of(generated, Fraction(15), Fraction(20)).items()
    }
    assert {n for n, count in reached.items() if count >= PER_SESSION} == set(sessions)
    assert any(count < PER_SESSION for count in reached.values())  # the data set has such a session
    assert all(count >= PER_SESSION for count, *_rest in sessions.values())


def _sessions_of(generated: Generated, low: Fraction, high: Fraction) -> dict[int, list[tuple[str, int]]]:
    found: dict[int, list[tuple[str, int]]] = {}
    for key, ended, values in generated.episodes:
        if ended and low <= Fraction(str(values[0][1])) < high and len({n for n, _v in values}) >= 2:
            for number, _value in values:
                found.setdefault(number, []).append((key, number))
    return found


class TestTheMinimumsAreSettings:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "EXPECTED_MINIMUM_EPISODES": 29, "EXPECTED_MINIMUM_PER_SESSION": 20}

    def test_29_episodes_are_enough_now_and_a_session_needs_20(self, app, generated):
        figures = in_app(app)
        assert figures == independent(generated, minimum=29, per_session=20)
        assert figures[(Fraction(20), Fraction(25))][1]  # 29 of 29: shown now
        assert all(count >= 20 for _e, sessions in figures.values() for count, *_rest in sessions.values())


def test_configured_intake_ranges_replace_the_steps(engine):
    settings = ExpectedSettings.from_config(ranges={"ors": [0, 10, 25, 40]})
    ranges = intake_ranges(engine.instruments.get("ors"), "total", settings)
    assert [(r.low, r.high, r.last) for r in ranges] == [(0, 10, False), (10, 25, False), (25, 40, True)]
    phq9 = intake_ranges(engine.instruments.get("phq9"), "total", settings)  # not configured: steps of 5 over 0-27
    assert [(r.low, r.high) for r in phq9][-2:] == [(20, 25), (25, 27)]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"minimum": 0}, "EXPECTED_MINIMUM_EPISODES"),
        ({"step": "-5"}, "EXPECTED_INTAKE_STEP"),
        ({"ranges": {"ors": [10, 5]}}, "EXPECTED_INTAKE_RANGES"),
        ({"cache_seconds": -1}, "EXPECTED_CACHE_SECONDS"),
    ],
)
def test_an_unusable_setting_is_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ExpectedSettings.from_config(**kwargs)


def test_the_percentile_is_type_7_on_small_cases():
    values = [Decimal(v) for v in ("1", "2", "3", "4")]
    assert percentile(values, Decimal("0.25")) == Decimal("1.75")
    assert percentile(values, Decimal("0.5")) == Decimal("2.5")
    assert percentile(values, Decimal("0.75")) == Decimal("3.25")
    assert percentile([Decimal(7)], Decimal("0.25")) == 7


def test_only_the_first_score_in_a_session_counts():
    series = [EpisodeSeries(str(n), {1: Decimal(10), 2: Decimal(12)}) for n in range(3)]
    (curve,) = expected_curves(series, [IntakeRange(Decimal(0), Decimal(40), last=True)], 3, 3)
    assert [(p.session, p.count, p.median) for p in curve.points] == [(1, 3, 10), (2, 3, 12)]


def test_a_plugin_instrument_without_a_direction_gets_no_curve(app, generated):
    state = app.extensions["rapportal"]
    wai = state.engine.instruments.get("wai-sr")
    with state.sessions() as session:
        assert state.engine.expected.table(session, wai, "goal") is None  # charted with others
        assert state.engine.expected.table(session, wai, "total") is not None


# ---------------------------------------------------------------------------
# The alert rule
# ---------------------------------------------------------------------------


def _ors(total: Decimal) -> dict[str, float]:
    """Four ORS lines (tenths) that add up to ``total``."""
    tenths = int(total * 10)
    parts = [tenths // 4 + (1 if n < tenths % 4 else 0) for n in range(4)]
    return {f"ors_{n + 1}": part / 10 for n, part in enumerate(parts)}


TENTH = Decimal("0.1")


def _client_with_sessions(app: Any, totals: list[Decimal]) -> tuple[int, list[int]]:
    """A client whose open episode has an ORS in sessions 1..n; returns the client id and the response ids."""
    state = app.extensions["rapportal"]
    ids = []
    with state.sessions.begin() as session:
        client = session.scalar(sa.select(Client).where(Client.code == "C-1"))
        episode = Episode(client_id=client.id, plan_name="pcoms", plan=BUILTIN_PLANS["pcoms"][1])
        session.add(episode)
        session.flush()
        for number, total in enumerate(totals, 1):
            care = CareSession(episode_id=episode.id, number=number)
            session.add(care)
            session.flush()
            assignment, _token = create_assignment(
                session, state.engine, client, "ors", episode_id=episode.id, care_session_id=care.id,
                allow_placeholder=True,
            )  # fmt: skip
            ids.append(submit_response(session, state.engine, assignment, _ors(total)).response_id)
        return client.id, ids


def _figures(app: Any, low: int, session_number: int) -> Any:
    state = app.extensions["rapportal"]
    with state.sessions() as session:
        table = state.engine.expected.table(session, state.engine.instruments.get("ors"), "total")
    return table.curve_for(Decimal(low)).at(session_number)


@pytest.fixture
def world(app, licensed_wording, generated):
    return make_world(app)


def _alerts(app: Any, response_id: int) -> list[Alert]:
    with app.extensions["rapportal"].sessions() as session:
        return list(session.scalars(sa.select(Alert).where(Alert.response_id == response_id)))


def test_a_score_below_the_expected_band_raises_not_on_track(app, world):
    point = _figures(app, 16, 3)
    low = (point.p25 - Decimal("0.5")).quantize(TENTH, rounding=ROUND_FLOOR)
    _client, ids = _client_with_sessions(app, [Decimal("16.0"), Decimal("16.0"), low])
    (alert,) = [a for a in _alerts(app, ids[-1]) if a.rule == "not_on_track"]
    assert alert.severity == "warning"
    assert alert.message.startswith(f"ORS {low} in session 3: outside the expected range")
    assert "completed episodes with an intake of 15-20 (intake 16.0)" in alert.message


def test_a_score_inside_the_band_raises_nothing(app, world):
    point = _figures(app, 16, 3)
    inside = point.p25.quantize(TENTH, rounding=ROUND_CEILING)
    assert inside <= point.p75
    _client, ids = _client_with_sessions(app, [Decimal("16.0"), Decimal("16.0"), inside])
    assert "not_on_track" not in [a.rule for a in _alerts(app, ids[-1])]


def test_no_alert_while_the_intake_range_has_too_few_episodes(app, world):
    _client, ids = _client_with_sessions(app, [Decimal("22.0"), Decimal("4.0")])  # 29 episodes in 20-25
    assert "not_on_track" not in [a.rule for a in _alerts(app, ids[-1])]


def test_the_audit_entry_of_the_submission_names_no_rule(app, world):
    point = _figures(app, 16, 2)
    _client, _ids = _client_with_sessions(app, [Decimal("16.0"), (point.p25 - 2).quantize(TENTH, rounding=ROUND_FLOOR)])
    with app.extensions["rapportal"].sessions() as session:
        details = [json.dumps(e.detail) for e in session.scalars(sa.select(AuditEntry))]
    assert not any("not_on_track" in d or "expected" in d for d in details)


# ---------------------------------------------------------------------------
# The client page
# ---------------------------------------------------------------------------


def test_the_chart_shows_the_expected_band_and_its_figures(app, client, world):
    client_id, _ids = _client_with_sessions(app, [Decimal("16.0"), Decimal("20.0")])
    sign_in(client, "ann")
    page = client.get(f"/clients/{client_id}")
    assert page.status_code == 200
    # a bar at each of the two sessions, in the chart's wide drawing and in its narrow (phone) one
    assert page.text.count('class="chart-expected"') == 2 * 2
    point = _figures(app, 16, 2)
    assert "Expected change: median and 25th to 75th percentile of 30 completed episodes" in page.text
    assert f"S2: expected {_shown(point.p25)} to {_shown(point.p75)}, median {_shown(point.median)}" in page.text


def _shown(value: Decimal) -> str:
    """A figure as the page prints it: to two decimals at most."""
    return str(value.quantize(Decimal("0.01"))) if value.as_tuple().exponent < -2 else str(value)


def test_the_chart_says_why_the_band_is_missing(app, client, world):
    client_id, _ids = _client_with_sessions(app, [Decimal("22.0"), Decimal("23.0")])
    sign_in(client, "ann")
    page = client.get(f"/clients/{client_id}")
    assert 'class="chart-expected"' not in page.text
    assert "Expected change not shown yet: 29 of 30 completed episodes needed for an intake of 20-25" in page.text
    assert "Reliable-change band" in page.text and "&lt;= 25" in page.text  # the published cutoff and band stay


def test_the_band_and_note_are_translated(app, client, world):
    client_id, _ids = _client_with_sessions(app, [Decimal("22.0"), Decimal("23.0")])
    sign_in(client, "ann")
    page = client.get(f"/clients/{client_id}", headers={"Accept-Language": "de"})
    assert "29 von 30" in page.text


# ---------------------------------------------------------------------------
# Reproducible from an export
# ---------------------------------------------------------------------------


def test_the_figures_recomputed_from_a_csv_export_equal_the_in_app_figures(app, runner, generated, tmp_path):
    export = tmp_path / "export.csv"
    done = runner.invoke(args=["export", "--format", "csv", "--output", str(export)])
    assert done.exit_code == 0, done.output
    from_export = runner.invoke(args=["expected-change", "--instrument", "ors", "--from-export", str(export), "--json"])
    from_db = runner.invoke(args=["expected-change", "--instrument", "ors", "--json"])
    assert from_export.exit_code == 0 and from_db.exit_code == 0, from_export.output + from_db.output
    assert _as_numbers(json.loads(from_export.output)) == _as_numbers(json.loads(from_db.output))
    recomputed = {
        (Fraction(r["low"]), Fraction(r["high"])): (
            r["episodes"],
            {
                s["session"]: (s["count"], Fraction(s["median"]), Fraction(s["p25"]), Fraction(s["p75"]))
                for s in r["sessions"]
            },
        )
        for r in json.loads(from_export.output)["ranges"]
    }
    assert recomputed == independent(generated)


def _as_numbers(document: dict) -> dict:
    for entry in document["ranges"]:
        for point in entry["sessions"]:
            for key in ("median", "p25", "p75"):
                point[key] = Decimal(point[key])
    return document


def test_the_database_figures_command_is_audited_without_figures(app, runner, generated):
    done = runner.invoke(args=["expected-change", "--instrument", "ors"])
    assert done.exit_code == 0, done.output
    assert "intake 15-20: 30 completed episodes" in done.output
    assert "intake 20-25: 29 completed episodes: 29 of 30 episodes needed" in done.output
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "expected.view")).one()
    assert entry.target == "instrument:ors" and entry.detail == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instrument", "nope"], "instrument: No instrument 'nope' is installed."),
        (["--instrument", "ors", "--score", "change_from_baseline"], "score: Choose one of: total."),
        (["--instrument", "ors", "--from-export", "/no/such/file.csv"], "cannot read /no/such/file.csv"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(runner, args, message):
    done = runner.invoke(args=["expected-change", *args])
    assert done.exit_code == 1
    assert message in done.output and "Traceback" not in done.output


def test_an_export_without_the_episode_columns_is_refused(runner, tmp_path):
    export = tmp_path / "old.csv"
    export.write_text("response_id,client,session,instrument,submitted_at,score_total\n1,C,1,ors,2026-01-01,20.0\n")
    done = runner.invoke(args=["expected-change", "--instrument", "ors", "--from-export", str(export)])
    assert done.exit_code == 1 and "export: the export has no column 'episode'" in done.output
