"""Outcome reports for supervision: the page with charts and the CSV download.

:func:`core.reports.outcome_report` chooses, computes and audits; this module parses the query, draws
the shares with :func:`web.charts.share_chart` and writes the CSV. No instrument is named here.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request
from flask_babel import gettext as _

from core.errors import InvalidInput, NotFound
from core.export import neutralise_cell
from core.reports import DEFAULT_MINIMUM_CLIENTS, Figure, OutcomeReport, outcome_report, report_choices, report_rows
from web.access import actor, address, allow, current_user
from web.charts import share_chart
from web.state import db_session, portal

bp = Blueprint("reports", __name__)


def init_app(app: Flask) -> None:
    app.config.setdefault("REPORT_MINIMUM_CLIENTS", DEFAULT_MINIMUM_CLIENTS)
    app.register_blueprint(bp)


def _query() -> tuple[dict[str, Any], list[str]]:
    """The report asked for in the query string (scope, since, until), and what is wrong with it."""
    args, problems = request.args, []
    scope = args.get("scope", "").strip()
    chosen: dict[str, Any] = {}
    kind, _sep, number = scope.partition(":")
    if kind in ("clinician", "site") and number.isdigit() and len(number) <= 9:
        chosen[f"{kind}_id"] = int(number)
    elif scope != "portal":
        problems.append(_("scope: choose a report from the list."))
    today = datetime.now(UTC).date()
    days = {}
    for name, default in (("since", today - timedelta(days=365)), ("until", today)):
        value = args.get(name, "").strip()
        try:
            days[name] = date.fromisoformat(value) if value else default
        except ValueError:
            problems.append(_("%(field)s: '%(value)s' is not a date in the form YYYY-MM-DD.", field=name, value=value))
            days[name] = default
        if days[name] > date(9998, 12, 31):
            problems.append(_("%(field)s: use a date up to 9998-12-31.", field=name))
            days[name] = default
    chosen["since"] = datetime(days["since"].year, days["since"].month, days["since"].day, tzinfo=UTC)
    # the range includes its last day
    chosen["until"] = datetime(days["until"].year, days["until"].month, days["until"].day, tzinfo=UTC) + timedelta(1)
    return chosen, problems


def _report(download: bool) -> tuple[OutcomeReport | None, list[str], int]:
    if not request.args.get("scope"):
        return None, [], 200
    chosen, problems = _query()
    if problems:
        return None, problems, 422
    session = db_session()
    try:
        report = outcome_report(
            session,
            portal().engine,
            current_user(),
            **chosen,
            minimum=int(current_app.config["REPORT_MINIMUM_CLIENTS"]),
            download=download,
            actor=actor(),
            address=address(),
        )
    except InvalidInput as exc:
        session.rollback()
        field = "until" if exc.field == "until" else exc.field
        return None, [f"{field}: " + _("The last day must not be before the first.")], 422
    except NotFound:
        session.rollback()
        return None, [_("There is no such report.")], 404
    session.commit()
    return report, [], 200


def _charts(report: OutcomeReport) -> list[Any]:
    withheld = _("too few to report")
    charts = []
    for change in report.changes:
        rows = [
            (label, figure.value)
            for label, figure in (
                (_("Reliable improvement"), change.reliable_improvement),
                (_("Reliable deterioration"), change.reliable_deterioration),
                (_("Clinically significant improvement"), change.clinically_significant_improvement),
            )
            if figure is not None
        ]
        charts.append(share_chart(f"change-{change.instrument}", change.title, rows, withheld))
    for bond in report.alliance:
        rows = [(_("Episodes with an alliance drop"), bond.alliance_drop.value)]
        if bond.below_cutoff is not None:
            rows.insert(0, (_("Sessions below the cutoff"), bond.below_cutoff.value))
        charts.append(share_chart(f"alliance-{bond.instrument}", bond.title, rows, withheld))
    return charts


@bp.get("/reports")
@allow("admin", "clinician", "supervisor")
def reports() -> Any:
    report, problems, status = _report(download=False)
    choices = report_choices(db_session(), current_user())
    return render_template(
        "reports/report.html",
        choices=choices,
        report=report,
        charts=_charts(report) if report else [],
        problems=problems,
        args=request.args,
        shown=_shown,
        timedelta1=timedelta(days=1),
    ), status


@bp.get("/reports/csv")
@allow("admin", "clinician", "supervisor")
def download() -> Any:
    report, problems, status = _report(download=True)
    if report is None:
        problems = problems or [_("scope: choose a report from the list.")]
        return render_template(
            "auth/problem.html", problems=[("", "", p) for p in problems]
        ), status if status >= 400 else 422
    out = io.StringIO()
    writer = csv.writer(out)
    for row in report_rows(report):
        writer.writerow([neutralise_cell(cell) for cell in row])
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="rapportal-outcome-report.csv"'},
    )


def _shown(figure: Figure | None, percent: bool = False) -> str:
    """A figure for the page: 'too few to report' when withheld, a dash when it cannot be computed."""
    if figure is None:
        return ""
    if figure.withheld:
        return _("too few to report")
    if figure.value is None:
        return "-"
    if percent:
        return f"{figure.value * 100:.0f} %"
    return f"{figure.value:.2f}".rstrip("0").rstrip(".")
