"""Stored data for the export tests, created through the real submission path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import Exporter, hookimpl
from core.models import CareSession, Client, Episode, Response, Score, User
from core.responses import create_assignment, submit_by_token

INJECTIONS = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "  =1+1",
    '"=1+1',
    "'=1+1",
]

NOTES_DEFINITION: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Session notes (test instrument)",
    "type": "object",
    "required": ["mood", "change", "comment"],
    "additionalProperties": False,
    "properties": {
        "mood": {
            "type": ["integer", "null"],
            "enum": [0, 1, 2, 3, 4, None],
            "x-text": "How is your mood?",
            "x-options": [
                {"value": 0, "label": "Very low"},
                {"value": 1, "label": "Low"},
                {"value": 2, "label": "So-so"},
                {"value": 3, "label": "Good"},
                {"value": 4, "label": "Very good"},
            ],
        },
        "change": {
            "type": ["number", "null"],
            "minimum": -5,
            "maximum": 5,
            "multipleOf": 0.5,
            "x-text": "How much did things change since last time?",
        },
        "comment": {"type": ["string", "null"], "maxLength": 500, "x-text": "Anything else?", "x-optional": True},
    },
    "x-instrument": {
        "id": "notes",
        "version": "1.0.0",
        "citation": "Test instrument; not for clinical use.",
        "licence": {"name": "Test", "notice": "Made up for the test suite.", "wording_bundled": True},
    },
    "x-scoring": {
        "scores": [
            {"name": "total", "label": "Mood plus change", "rule": "sum", "params": {"items": ["mood", "change"]}}
        ]
    },
}


class NotesPlugin:
    """A throwaway plugin that registers the free-text test instrument."""

    __name__ = "tests.notes_instrument"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notes.json"
        self.path.write_text(json.dumps(NOTES_DEFINITION), encoding="utf-8")

    @hookimpl
    def register_instruments(self) -> list[Path]:
        return [self.path]


def _write_tsv(rows: Any, stream: Any, context: Any) -> None:
    stream.write(b"response\tclient\n")
    for row in rows:
        stream.write(f"{row.response_id}\t{row.client}\n".encode())


class ThirdPartyExporter:
    """An exporter from outside the tree, as a package would register it."""

    __name__ = "acme_exports"

    @hookimpl
    def register_exporters(self) -> list[Exporter]:
        return [
            Exporter(
                name="acme-tsv",
                title="ACME tab-separated",
                extension="tsv",
                media_type="text/tab-separated-values",
                write=_write_tsv,
            )
        ]


@dataclass
class Seeded:
    """What the seed stored: response ids by label."""

    ids: dict[str, int]


PHQ9_FULL = dict(zip([f"phq9_{i}" for i in range(1, 10)], [1, 2, 3, 0, 1, 2, 0, 1, 1], strict=True))
PHQ9_PRORATED = dict(zip([f"phq9_{i}" for i in range(1, 10)], [1, 2, 1, 1, 1, 1, 1, None, None], strict=True))
GAD7 = {f"gad7_{i}": v for i, v in zip(range(1, 8), [3, 3, 2, 2, 1, 1, 0], strict=True)}
SRS = {"srs_1": 9.4, "srs_2": 8.0, "srs_3": 7.3, "srs_4": 9.9}


def seed(app: Any) -> Seeded:
    """Two clinicians, two clients, PHQ-9, GAD-7, SRS and free-text notes, submitted through links."""
    portal = app.extensions["rapportal"]
    eng = portal.engine
    plan: list[tuple[str, str, dict[str, Any]]] = []
    with portal.sessions.begin() as session:
        alice = User(username="alice", display_name="Dr Alice Able", role="clinician")
        bob = User(username="bob", display_name="Dr Bob Baker", role="clinician")
        carol = Client(code="C-001", display_name="Carol Client", clinician=alice)
        dan = Client(code="=D-002", display_name="Dan Doe", clinician=bob)
        session.add_all([alice, bob, carol, dan])
        episode = Episode(client=carol)
        session.add(episode)
        session.flush()
        care = CareSession(episode_id=episode.id, number=3)
        session.add(care)
        session.flush()

        def link(label: str, client: Client, instrument: str, answers: dict[str, Any], **kw: Any) -> None:
            _assignment, token = create_assignment(session, eng, client, instrument, **kw)
            plan.append((label, token, answers))

        link("phq9_full", carol, "phq9", PHQ9_FULL, episode_id=episode.id, care_session_id=care.id)
        link("phq9_prorated", carol, "phq9", PHQ9_PRORATED, episode_id=episode.id)
        link("gad7", dan, "gad7", GAD7)
        link("srs", carol, "srs", SRS, episode_id=episode.id, care_session_id=care.id)
        for index, text in enumerate(INJECTIONS):
            link(f"notes_{index}", dan, "notes", {"mood": index % 5, "change": -2.5, "comment": text})
    ids = {}
    for label, token, answers in plan:
        ids[label] = submit_by_token(portal.sessions, eng, token, answers).response_id
    return Seeded(ids)


def set_submitted(app: Any, response_id: int, when: datetime) -> None:
    """Move a response in time (date-range tests only)."""
    with app.extensions["rapportal"].sessions.begin() as session:
        session.execute(sa.update(Response).where(Response.id == response_id).values(submitted_at=when))


def stored(app: Any) -> dict[int, tuple[Response, Score]]:
    """Every stored response with its score, as the database has them."""
    with app.extensions["rapportal"].sessions() as session:
        rows = session.execute(sa.select(Response, Score).join(Score, Score.response_id == Response.id)).all()
        return {response.id: (response, score) for response, score in rows}


def decimal(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))
