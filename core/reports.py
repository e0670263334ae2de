"""Outcome reports for supervision: per clinician, per site and for the whole portal, over a date range.

Every figure is computed from the instrument definitions, by rule name, so a plugin instrument is
reported like a built-in: an instrument with ``reliable_change`` / ``clinically_significant_change``
flags is a change measure, one with a ``drop_from_previous`` flag an alliance measure. The flag's own
rule decides each episode, applied to the stored scores. ``docs/sites.md`` gives every definition and
formula. A figure computed from fewer clients than the minimum is withheld (``value`` is None).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.clients import visible_client_ids
from core.engine import Engine
from core.errors import InvalidInput, NotFound
from core.instruments import FlagSpec, Instrument
from core.models import Assignment, Client, Episode, Response, Score, Site, Supervision, User
from core.scope import site_client_ids, user_site_ids
from core.scoring import ScoringContext, decimal_scores

DEFAULT_MINIMUM_CLIENTS = 5


@dataclass(frozen=True)
class Figure:
    """One figure and how many episodes (or sessions, links) and clients it is computed from.

    ``value`` is None when it is withheld (fewer clients than the minimum) or cannot be computed.
    """

    value: Decimal | None
    count: int
    clients: int
    withheld: bool = False


@dataclass(frozen=True)
class ChangeOutcome:
    """A change measure: episodes with an intake and a later administration, and what changed."""

    instrument: str
    title: str
    score: str
    episodes: int
    reliable_improvement: Figure | None  # None: the definition has no such rule
    reliable_deterioration: Figure | None
    clinically_significant_improvement: Figure | None
    mean_change: Figure
    effect_size: Figure


@dataclass(frozen=True)
class AllianceOutcome:
    """An alliance measure: sessions below its cutoff and episodes with a drop."""

    instrument: str
    title: str
    below_cutoff: Figure | None  # None: the definition has no threshold flag
    alliance_drop: Figure


@dataclass(frozen=True)
class OutcomeReport:
    scope: str  # clinician | site | portal
    name: str
    since: datetime
    until: datetime
    minimum: int
    episodes_started: Figure
    episodes_ended: Figure
    links_answered: Figure
    changes: tuple[ChangeOutcome, ...]
    alliance: tuple[AllianceOutcome, ...]


@dataclass(frozen=True)
class ReportChoices:
    """The reports a user may open: clinicians' (supervisors, clinicians), sites' and the portal's (admins)."""

    clinicians: list[User]
    sites: list[Site]
    portal: bool

    @property
    def any(self) -> bool:
        return bool(self.clinicians or self.sites or self.portal)


def report_choices(session: so.Session, user: User) -> ReportChoices:
    """Which reports ``user`` may open (none for auditors and inactive accounts)."""
    if not user.active:
        return ReportChoices([], [], False)
    if user.role == "clinician":
        return ReportChoices([user], [], False)
    if user.role == "supervisor":
        supervised = sa.select(Supervision.clinician_id).where(Supervision.supervisor_id == user.id)
        clinicians = session.scalars(sa.select(User).where(User.id.in_(supervised)).order_by(User.display_name))
        return ReportChoices(list(clinicians), [], False)
    if user.role == "admin":
        own = list(session.scalars(user_site_ids(user)))
        query = sa.select(Site).order_by(Site.name)
        if own:
            query = query.where(Site.id.in_(own))
        return ReportChoices([], list(session.scalars(query)), not own)
    return ReportChoices([], [], False)


def outcome_report(
    session: so.Session,
    engine: Engine,
    user: User,
    *,
    clinician_id: int | None = None,
    site_id: int | None = None,
    since: datetime,
    until: datetime,
    minimum: int = DEFAULT_MINIMUM_CLIENTS,
    download: bool = False,
    actor: str,
    address: str | None,
) -> OutcomeReport:
    """The report of one clinician, one site, or (neither given) the portal; audited as ``report.view``
    (``report.download`` for the CSV). :class:`NotFound` for a report ``user`` may not open."""
    if since >= until:
        raise InvalidInput("The end of the range must be after its start.", "until")
    choices = report_choices(session, user)
    if clinician_id is not None:
        clinician = next((c for c in choices.clinicians if c.id == clinician_id), None)
        if clinician is None:
            raise NotFound("There is no such clinician report.", "clinician")
        base = visible_client_ids(user) if user.role in ("clinician", "supervisor") else site_client_ids(user)
        clients = sa.select(Client.id).where(Client.id.in_(base), Client.clinician_id == clinician.id)
        scope, name, target = "clinician", clinician.display_name, f"user:{clinician.id}"
    elif site_id is not None:
        site = next((s for s in choices.sites if s.id == site_id), None)
        if site is None:
            raise NotFound("There is no such site report.", "site")
        clients = sa.select(Client.id).where(Client.id.in_(site_client_ids(user)), Client.site_id == site.id)
        scope, name, target = "site", site.name, f"site:{site.id}"
    else:
        if not choices.portal:
            raise NotFound("There is no such report.", "scope")
        clients = site_client_ids(user)
        scope, name, target = "portal", "", None
    report = _compute(session, engine, clients, since, until, minimum, scope, name)
    period = {"since": since.date().isoformat(), "until": until.date().isoformat()}
    record(session, actor, "report.download" if download else "report.view", target, address, scope=scope, **period)
    return report


# -- the computation -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Administration:
    response_id: int
    client_id: int
    episode_id: int
    instrument: str
    scores: dict[str, Decimal | None]


def _figure(value: Decimal | None, count: int, clients: set[int] | int, minimum: int) -> Figure:
    number = clients if isinstance(clients, int) else len(clients)
    if number < minimum:
        return Figure(None, count, number, withheld=True)
    return Figure(value, count, number)


def _share(hits: int, count: int, clients: set[int], minimum: int) -> Figure:
    return _figure(Decimal(hits) / Decimal(count) if count else None, count, clients, minimum)


def _compute(
    session: so.Session,
    engine: Engine,
    clients: sa.Select[tuple[int]],
    since: datetime,
    until: datetime,
    minimum: int,
    scope: str,
    name: str,
) -> OutcomeReport:
    started = session.execute(
        sa.select(Episode.id, Episode.client_id).where(
            Episode.client_id.in_(clients), Episode.started_at >= since, Episode.started_at < until
        )
    ).all()
    ended = session.execute(
        sa.select(Episode.id, Episode.client_id).where(
            Episode.client_id.in_(clients), Episode.ended_at >= since, Episode.ended_at < until
        )
    ).all()
    links = session.execute(
        sa.select(Assignment.client_id, Assignment.completed_at).where(
            Assignment.client_id.in_(clients), Assignment.created_at >= since, Assignment.created_at < until
        )
    ).all()
    # episodes open at some time in the range; their administrations up to the end of the range
    in_range = sa.select(Episode.id).where(
        Episode.client_id.in_(clients),
        Episode.started_at < until,
        sa.or_(Episode.ended_at.is_(None), Episode.ended_at >= since),
    )
    rows = session.execute(
        sa.select(Response.id, Response.client_id, Response.episode_id, Response.instrument_id, Score.values)
        .join(Score, Score.response_id == Response.id)
        .where(Response.episode_id.in_(in_range), Response.submitted_at < until)
        .order_by(Response.submitted_at, Response.id)
    ).all()
    series: dict[str, dict[int, list[_Administration]]] = {}
    for response_id, client_id, episode_id, instrument_id, values in rows:
        one = _Administration(response_id, client_id, episode_id, instrument_id, decimal_scores(values))
        series.setdefault(instrument_id, {}).setdefault(episode_id, []).append(one)
    changes, alliance = [], []
    for instrument_id in sorted(series):
        try:
            instrument = engine.instruments.get(instrument_id)
        except KeyError:
            continue  # no longer installed: nothing says how to read its scores
        change = _change_outcome(instrument, series[instrument_id], minimum)
        if change is not None:
            changes.append(change)
        bond = _alliance_outcome(instrument, series[instrument_id], minimum)
        if bond is not None:
            alliance.append(bond)
    answered = [client for client, completed in links if completed is not None]
    return OutcomeReport(
        scope=scope,
        name=name,
        since=since,
        until=until,
        minimum=minimum,
        episodes_started=_figure(Decimal(len(started)), len(started), {c for _e, c in started}, minimum),
        episodes_ended=_figure(Decimal(len(ended)), len(ended), {c for _e, c in ended}, minimum),
        links_answered=_share(len(answered), len(links), {c for c, _done in links}, minimum),
        changes=tuple(changes),
        alliance=tuple(alliance),
    )


def _flags(instrument: Instrument, rule: str) -> list[FlagSpec]:
    return [flag for flag in instrument.scoring.flags if flag.rule.name == rule] if instrument.scoring else []


def _raised(
    instrument: Instrument, flag: FlagSpec, current: _Administration, earlier: Sequence[_Administration]
) -> bool:
    """Whether the flag's own rule raises it on ``current`` after ``earlier`` (oldest first)."""
    context = ScoringContext(
        instrument=instrument,
        answers={},
        scores=dict(current.scores),
        history=[dict(one.scores) for one in earlier],
    )
    return bool(flag.rule.compute(flag.params, context))


def _change_outcome(
    instrument: Instrument, episodes: dict[int, list[_Administration]], minimum: int
) -> ChangeOutcome | None:
    reliable = [f for f in _flags(instrument, "reliable_change") if f.params.get("against", "baseline") == "baseline"]
    significant = _flags(instrument, "clinically_significant_change")
    if not reliable and not significant:
        return None
    score = (reliable or significant)[0].params["score"]
    improvement = [f for f in reliable if f.params["direction"] == "improvement" and f.params["score"] == score]
    deterioration = [f for f in reliable if f.params["direction"] == "deterioration" and f.params["score"] == score]
    significant = [f for f in significant if f.params["score"] == score]
    pairs = []
    for administrations in episodes.values():
        scored = [one for one in administrations if one.scores.get(score) is not None]
        if len(scored) >= 2:
            pairs.append((scored[0], scored[-1]))
    clients = {first.client_id for first, _last in pairs}

    def share(flags: list[FlagSpec]) -> Figure | None:
        if not flags:
            return None
        hits = sum(1 for first, last in pairs if _raised(instrument, flags[0], last, [first]))
        return _share(hits, len(pairs), clients, minimum)

    changes = [last.scores[score] - first.scores[score] for first, last in pairs]
    intakes = [first.scores[score] for first, _last in pairs]
    mean_change = Decimal(statistics.fmean(changes)) if changes else None
    spread = Decimal(statistics.stdev(intakes)) if len(intakes) >= 2 else None
    effect = mean_change / spread if mean_change is not None and spread else None
    return ChangeOutcome(
        instrument=instrument.id,
        title=instrument.title,
        score=score,
        episodes=len(pairs),
        reliable_improvement=share(improvement),
        reliable_deterioration=share(deterioration),
        clinically_significant_improvement=share(significant),
        mean_change=_figure(mean_change, len(pairs), clients, minimum),
        effect_size=_figure(effect, len(pairs), clients, minimum),
    )


def _alliance_outcome(
    instrument: Instrument, episodes: dict[int, list[_Administration]], minimum: int
) -> AllianceOutcome | None:
    drops = _flags(instrument, "drop_from_previous")
    if not drops:
        return None
    cutoffs = [f for f in _flags(instrument, "threshold") if f.params["score"] == drops[0].params["score"]]
    sessions = [one for administrations in episodes.values() for one in administrations]
    clients = {one.client_id for one in sessions}
    below = None
    if cutoffs:
        hits = sum(1 for one in sessions if _raised(instrument, cutoffs[0], one, []))
        below = _share(hits, len(sessions), clients, minimum)
    dropped = sum(
        1
        for administrations in episodes.values()
        if any(_raised(instrument, drops[0], one, administrations[:n]) for n, one in enumerate(administrations) if n)
    )
    return AllianceOutcome(
        instrument=instrument.id,
        title=instrument.title,
        below_cutoff=below,
        alliance_drop=_share(dropped, len(episodes), clients, minimum),
    )


def report_rows(report: OutcomeReport) -> Iterable[list[str]]:
    """The report as CSV rows: measure, instrument, figure, value (empty when withheld), count, clients."""
    yield ["measure", "instrument", "figure", "value", "count", "clients", "withheld"]

    def row(measure: str, instrument: str, figure_name: str, figure: Figure | None) -> list[str]:
        if figure is None:
            return []
        value = "" if figure.value is None else str(round(figure.value, 4))
        return [measure, instrument, figure_name, value, str(figure.count), str(figure.clients), str(figure.withheld)]

    rows = [
        row("episodes", "", "started", report.episodes_started),
        row("episodes", "", "ended", report.episodes_ended),
        row("links", "", "answered_share", report.links_answered),
    ]
    for change in report.changes:
        rows += [
            row("change", change.instrument, "reliable_improvement_share", change.reliable_improvement),
            row("change", change.instrument, "reliable_deterioration_share", change.reliable_deterioration),
            row(
                "change",
                change.instrument,
                "clinically_significant_improvement_share",
                change.clinically_significant_improvement,
            ),
            row("change", change.instrument, "mean_change", change.mean_change),
            row("change", change.instrument, "effect_size", change.effect_size),
        ]
    for bond in report.alliance:
        rows += [
            row("alliance", bond.instrument, "sessions_below_cutoff_share", bond.below_cutoff),
            row("alliance", bond.instrument, "episodes_with_drop_share", bond.alliance_drop),
        ]
    yield from (one for one in rows if one)
