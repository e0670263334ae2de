"""Seeding shared by the benchmarks that need answered care sessions (``run.py``'s staff scenario, ``client_page.py``)."""

from __future__ import annotations

import sqlalchemy.orm as so

from core import Engine
from core.instruments import placeholder_wording
from core.wording import install_wording


def install_placeholder_wording(session: so.Session, engine: Engine) -> None:
    """Install each licensed instrument's placeholder text as its wording.

    A care session's links need installed wording (the demo's placeholder wording makes demo links only): without
    it, sessions are started without questionnaires and a client page has no answers.
    """
    for instrument in engine.instruments:
        if not instrument.licence.wording_bundled:
            wording = placeholder_wording(instrument)
            wording["placeholder"] = False
            install_wording(session, engine, instrument.id, wording, actor="bench")
