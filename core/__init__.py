"""Rapportal's engine: the one module plugin authors import from.

from core import hookimpl, ScoringRule, AlertRule, Exporter

Every name in ``__all__`` is the plugin contract, listed in the README's "Writing a plugin" table;
core's submodules are internal and may change.
"""

from __future__ import annotations

from core.alerts import Alert, AlertContext, AlertRule, flag_alert, not_on_track_alert
from core.channels import DeliveryError, NotificationChannel, OutgoingMessage
from core.engine import Engine, build_engine
from core.export import ExportColumn, ExportContext, as_utc, item_label, neutralise_cell, wide_values, write_text_lines
from core.exporters import Exporter, ExportRow, ExportSelection
from core.fhir import questionnaire_entry as fhir_questionnaire_entry
from core.fhir import response_entries as fhir_response_entries
from core.hookspecs import hookimpl
from core.instruments import Band, Instrument, InstrumentDefinitionError, Item, Option, WordingError
from core.plugins import DEFAULT_PLUGINS, get_plugin_manager
from core.progress import Administration, Chart, Progress, ScoreSummary, episode_progress, reliable_change_threshold
from core.registries import DuplicateRegistrationError, PluginRegistrationError
from core.scoring import (
    COMPARISONS,
    NOT_SCORABLE,
    ScoreResult,
    ScoringContext,
    ScoringRule,
    decimal_to_json,
    round_half_up,
    score_response,
)
from core.validation import AnswerError, ResponseValidationError, validate_answers
from core.version import __version__ as __version__
from core.widgets import Widget, WidgetValueError

__all__ = [
    "COMPARISONS",
    "DEFAULT_PLUGINS",
    "NOT_SCORABLE",
    "Administration",
    "Alert",
    "AlertContext",
    "AlertRule",
    "AnswerError",
    "Band",
    "Chart",
    "DeliveryError",
    "DuplicateRegistrationError",
    "Engine",
    "ExportColumn",
    "ExportContext",
    "ExportRow",
    "ExportSelection",
    "Exporter",
    "Instrument",
    "InstrumentDefinitionError",
    "Item",
    "NotificationChannel",
    "Option",
    "OutgoingMessage",
    "PluginRegistrationError",
    "Progress",
    "ResponseValidationError",
    "ScoreResult",
    "ScoreSummary",
    "ScoringContext",
    "ScoringRule",
    "Widget",
    "WidgetValueError",
    "WordingError",
    "as_utc",
    "build_engine",
    "decimal_to_json",
    "episode_progress",
    "fhir_questionnaire_entry",
    "fhir_response_entries",
    "flag_alert",
    "get_plugin_manager",
    "hookimpl",
    "item_label",
    "neutralise_cell",
    "not_on_track_alert",
    "reliable_change_threshold",
    "round_half_up",
    "score_response",
    "validate_answers",
    "wide_values",
    "write_text_lines",
]
