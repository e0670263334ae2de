"""Rapportal's engine: the one module plugin authors import from.

from core import hookimpl, ScoringRule, AlertRule, Exporter
"""

from __future__ import annotations

from core.alerts import Alert, AlertRule, flag_alert
from core.engine import Engine, build_engine
from core.exporters import Exporter, ExportRow, ExportSelection
from core.hookspecs import hookimpl
from core.instruments import Instrument, InstrumentDefinitionError, WordingError
from core.plugins import DEFAULT_PLUGINS, get_plugin_manager
from core.registries import DuplicateRegistrationError, PluginRegistrationError
from core.scoring import ScoreResult, ScoringContext, ScoringRule, score_response
from core.validation import AnswerError, ResponseValidationError, validate_answers
from core.widgets import Widget, WidgetValueError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PLUGINS",
    "Alert",
    "AlertRule",
    "AnswerError",
    "DuplicateRegistrationError",
    "Engine",
    "ExportRow",
    "ExportSelection",
    "Exporter",
    "Instrument",
    "InstrumentDefinitionError",
    "PluginRegistrationError",
    "ResponseValidationError",
    "ScoreResult",
    "ScoringContext",
    "ScoringRule",
    "Widget",
    "WidgetValueError",
    "WordingError",
    "build_engine",
    "flag_alert",
    "get_plugin_manager",
    "hookimpl",
    "score_response",
    "validate_answers",
]
