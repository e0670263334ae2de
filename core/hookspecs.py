"""The plugin contract: every hook a Rapportal plugin may implement.

Hooks are grouped by the moment they fire. ``register_*`` hooks run once, when an
:class:`core.engine.Engine` is built, and return lists of frozen dataclasses; the
registries validate what comes back and reject duplicates, naming both plugins.
Past-tense hooks are events: they are told something happened and return nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from core.alerts import AlertRule
    from core.channels import NotificationChannel
    from core.exporters import Exporter
    from core.scoring import ScoreResult, ScoringRule
    from core.widgets import Widget

PROJECT_NAME = "rapportal"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's function as the implementation of the hook of the same name (``@hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------
# Registration: run once when the engine is built
# ---------------------------------------------------------------------------


@hookspec
def register_instruments() -> list[Path]:
    """Return instrument definition files (JSON) that this plugin provides.

    Each path names one definition document; it is validated against the meta-schema
    when the engine is built. A broken file is reported and skipped, never fatal.

    :return: paths to ``*.json`` instrument definitions.

    .. versionadded:: 0.1
    """


@hookspec
def register_scoring_rules() -> list[ScoringRule]:
    """Return scoring rules that instrument definitions may name in their ``x-scoring`` block.

    :return: :class:`core.scoring.ScoringRule` objects; names must be unique across plugins.

    .. versionadded:: 0.1
    """


@hookspec
def register_exporters() -> list[Exporter]:
    """Return export targets (CSV, Excel, FHIR, ...) offered by the CLI and the admin pages.

    :return: :class:`core.exporters.Exporter` objects; names must be unique across plugins.

    .. versionadded:: 0.1
    """


@hookspec
def register_alert_rules() -> list[AlertRule]:
    """Return alert rules that turn a scored response into clinician alerts.

    Each rule's ``evaluate(context)`` is called while the response is stored, with a
    :class:`core.alerts.AlertContext`: the instrument version in force, the ``ScoreResult``, the
    answers, the session number (or None) and the client's earlier scores in the episode, loaded
    only when the rule reads them, and ``load_expected(score)``, the clinic's expected change of a
    score (:class:`core.expected.ExpectedTable` or None). :func:`core.alerts.flag_alert` builds a rule
    that fires on a scoring flag and words its message from the flag's label and parameters;
    :func:`core.alerts.not_on_track_alert` one that compares a score with the expected change.

    :return: :class:`core.alerts.AlertRule` objects; names must be unique across plugins.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``evaluate`` receives an ``AlertContext`` instead of the bare ``ScoreResult`` (read
       ``context.result``); ``flag_alert`` takes an optional ``advice`` instead of a title and
       message, and its rules are titled from the definition (``AlertRule.flag``).
    """


@hookspec
def register_widgets() -> list[Widget]:
    """Return form widgets: every item is drawn by the widget its ``x-widget`` names (or its default one).

    :return: :class:`core.widgets.Widget` objects; names must be unique across plugins.

    .. versionadded:: 0.1
    """


@hookspec
def register_notification_channels() -> list[NotificationChannel]:
    """Return channels that send clients their links and reminders (e-mail, SMS, ...).

    A channel receives a rendered message holding only the link and the clinic's name, and the
    portal's settings; see :class:`core.channels.NotificationChannel` for the delivery contract.

    :return: :class:`core.channels.NotificationChannel` objects; names must be unique across plugins.

    .. versionadded:: 0.3
    """


# ---------------------------------------------------------------------------
# Events: fire after something happened; return nothing
# ---------------------------------------------------------------------------


@hookspec
def response_submitted(instrument_id: str, version: str, response_id: int, result: ScoreResult) -> None:
    """Tell plugins that a response was validated, scored and is being stored.

    Fires inside the submission's database transaction, before it commits: raising an
    exception rolls the whole submission back and the client is shown an error.

    :param instrument_id: id of the instrument that was answered.
    :param version: version of the instrument definition.
    :param response_id: database id of the stored response.
    :param result: the scoring result stored with it.

    .. versionadded:: 0.1
    """
