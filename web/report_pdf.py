"""The printable client report: the client page's facts laid out for paper and turned into PDF by WeasyPrint.

Client code, episode, the charts (the same SVG as the page, wide layout), the latest scores with their bands, and
every alert of the episode with its note. Made on the server from HTML with Pango doing the text; nothing outside
the portal is fetched (the URL fetcher refuses every URL, the page's CSS and SVG are inline).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from flask import render_template
from weasyprint import HTML

from core.triage import ClientReport
from web.progress import client_progress


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
    raise ValueError(f"the report fetches nothing: {url}")


def render_report_html(
    report: ClientReport, titles: Mapping[str, str], sessions: Mapping[int, int], alerted: Mapping[int, str]
) -> str:
    """The report as one HTML page with inline CSS and SVG."""
    return render_template(
        "clinician/report.html",
        report=report,
        client=report.client,
        episode=report.episode,
        alerts=report.alerts,
        titles=titles,
        sessions=sessions,
        made_at=report.made_at.astimezone(UTC),
        **client_progress(report.responses, alerted),
    )


def render_report_pdf(
    report: ClientReport, titles: Mapping[str, str], sessions: Mapping[int, int], alerted: Mapping[int, str]
) -> bytes:
    """The report as PDF bytes."""
    html = render_report_html(report, titles, sessions, alerted)
    return HTML(string=html, url_fetcher=_no_fetch).write_pdf()
