"""A client over three sessions whose open alerts have every severity: for the triage, PDF and browser tests.

Session 1 is fine; in session 2 the ORS falls reliably (warning), the SRS is below its cutoff (warning) and PHQ-9
item 9 is answered 2 (urgent); session 3 repeats the urgent item 9. An ``info`` alert, as a clinic's own plugin
rule would raise one, is added to session 1's ORS, since no built-in rule is informational.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from staff_support import ORS_ANSWERS, answer, links_on, page_token, release_latest, start_session

from core.models import Alert, Episode, Response

SRS_FINE = {"srs_1": "9.5", "srs_2": "9.5", "srs_3": "9.5", "srs_4": "9.5"}  # 38.0
SRS_LOW = {"srs_1": "7.0", "srs_2": "7.0", "srs_3": "7.0", "srs_4": "7.0"}  # 28.0: below 36
ORS_WORSE = {"ors_1": "3.0", "ors_2": "3.0", "ors_3": "3.0", "ors_4": "3.0"}  # 12.0: 6.5 below 18.5
PHQ9_MILD = {**{f"phq9_{i}": "1" for i in range(1, 9)}, "phq9_9": "0"}  # 8, item 9 not at all
PHQ9_RISK = {**{f"phq9_{i}": "2" for i in range(1, 9)}, "phq9_9": "2"}  # 18, item 9 answered 2
INFO_MESSAGE = "Clinic note rule: ORS answered on paper first."


@dataclass
class Triage:
    client_id: int
    episode_id: int
    info_alert_id: int


def deteriorating_client(app: Any, clinician: Any, client_id: int) -> Triage:
    """Build the episode above through the clinician's pages and the client's links."""
    token = page_token(clinician, f"/clients/{client_id}")
    clinician.post(
        f"/clients/{client_id}/episodes",
        data={
            "csrf_token": token,
            "plan": "custom",
            "custom": "ors start every 1\nphq9 start every 1\nsrs end every 1",
        },
    )
    with app.extensions["rapportal"].sessions() as session:
        episode_id = session.scalar(sa.select(sa.func.max(Episode.id)))
    for ors, phq9, srs in (
        (ORS_ANSWERS, PHQ9_MILD, SRS_FINE),
        (ORS_WORSE, PHQ9_RISK, SRS_LOW),
        (None, PHQ9_RISK, None),
    ):
        links = links_on(start_session(clinician, episode_id, client_id).text)
        for instrument, answers in (("ors", ors), ("phq9", phq9), ("srs", srs)):
            if instrument == "srs":
                release_latest(app, clinician)  # the end-of-session SRS opens once the clinician releases it
            if answers is not None:
                assert answer(app, links[instrument], answers).status_code in (200, 303)
    with app.extensions["rapportal"].sessions.begin() as session:
        first_ors = session.scalar(
            sa.select(Response.id).where(Response.client_id == client_id, Response.instrument_id == "ors").limit(1)
        )
        info = Alert(
            response_id=first_ors, client_id=client_id, rule="clinic_note", severity="info", message=INFO_MESSAGE
        )
        session.add(info)
        session.flush()
        info_id = info.id
    return Triage(client_id, episode_id, info_id)
