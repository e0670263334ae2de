"""The engine: one object that holds the plugin manager and every registry built from it.

Build one per application (or script) with :func:`build_engine`; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy

from core.alerts import Alert, AlertContext, AlertRule, evaluate_alerts
from core.channels import NotificationChannel
from core.expected import ExpectedChange
from core.exporters import Exporter
from core.instruments import (
    Instrument,
    InstrumentDefinitionError,
    InstrumentRegistry,
    load_instrument,
)
from core.plugins import get_plugin_manager
from core.progress import chart_specs
from core.registries import PluginRegistrationError, call_each, collect
from core.scoring import ScoreResult, ScoringRule, score_response
from core.validation import validate_answers
from core.widgets import Widget


class Engine:
    """Registries of instruments, scoring rules, exporters, alert rules, widgets and notification channels."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.plugin_manager = pm
        self.scoring_rules: dict[str, ScoringRule] = collect(pm, "register_scoring_rules", ScoringRule, _name)
        self.exporters: dict[str, Exporter] = collect(pm, "register_exporters", Exporter, _name)
        self.alert_rules: dict[str, AlertRule] = collect(pm, "register_alert_rules", AlertRule, _name)
        self.widgets: dict[str, Widget] = collect(pm, "register_widgets", Widget, _name)
        self.channels: dict[str, NotificationChannel] = collect(
            pm, "register_notification_channels", NotificationChannel, _name
        )
        self.instruments = InstrumentRegistry()  # licensed wording: see core/wording.py
        self.expected = ExpectedChange()  # the clinic's expected change; the app replaces it with its settings
        for plugin, paths in call_each(pm, "register_instruments"):
            for path in paths:
                if not isinstance(path, Path):
                    raise PluginRegistrationError(
                        f"plugin {plugin!r} returned {type(path).__name__} from register_instruments; expected Path"
                    )
                self.load_definition(path, plugin)

    def load_definition(self, path: Path, plugin: str) -> Instrument | None:
        """Load one definition; a broken file is recorded in ``instruments.errors`` and skipped."""
        try:
            instrument = load_instrument(path, self.scoring_rules)
            self.check_instrument(instrument)
        except InstrumentDefinitionError as error:
            self.instruments.errors.append(error)
            return None
        self.instruments.add(instrument, plugin)
        return instrument

    def check_instrument(self, instrument: Instrument) -> None:
        """What a loaded definition needs beyond itself: installed widgets, and charts of scores it has."""
        self._check_widgets(instrument)
        chart_specs(instrument)

    def _check_widgets(self, instrument: Instrument) -> None:
        """Every item needs an installed widget, or its form could not be drawn.

        Skipped when no widget plugin is registered at all (scoring-only use, such as the CLI
        with ``plugins.widgets`` blocked).
        """
        if not self.widgets:
            return
        for item in instrument.items:
            if item.widget not in self.widgets:
                known = ", ".join(sorted(self.widgets))
                raise InstrumentDefinitionError(
                    instrument.source,
                    f"/properties/{item.id}",
                    f"no widget {item.widget!r} is installed (known: {known})",
                )

    # -- scoring ---------------------------------------------------------------

    def score(
        self,
        instrument_id: str,
        answers: Mapping[str, Any],
        history: Sequence[Mapping[str, Any]] = (),
        version: str | None = None,
    ) -> ScoreResult:
        """Validate and score one response (raises ``ResponseValidationError``, ``KeyError``)."""
        instrument = self.instruments.get(instrument_id, version)
        validate_answers(instrument, answers)
        for entry in history:
            validate_answers(instrument, entry)
        return score_response(instrument, answers, history)

    def alerts_for(self, context: AlertContext) -> list[Alert]:
        """Every alert the context's response raises, in rule-name order."""
        return evaluate_alerts(self.alert_rules, context)

    def alert_titles(self) -> dict[str, str]:
        """Each alert rule's title for clinicians; flag-based rules take theirs from the newest definition."""
        titles = {}
        for name, rule in self.alert_rules.items():
            only = rule.instruments[0] if len(rule.instruments) == 1 else None
            instrument = self.instruments.get(only) if only in self.instruments else None
            titles[name] = rule.title_for(instrument)
        return titles


def _name(obj: Any) -> str:
    return obj.name


def build_engine(
    blocked_plugins: Iterable[str] = (),
    load_entrypoints: bool = True,
    extra_plugins: Iterable[object] = (),
) -> Engine:
    """Build a plugin manager and an engine from it. ``extra_plugins`` registers objects by hand."""
    pm = get_plugin_manager(blocked=blocked_plugins, load_entrypoints=load_entrypoints)
    for plugin in extra_plugins:
        # name hand-registered plugins readably (a module's name, else the class name)
        pm.register(plugin, name=getattr(plugin, "__name__", None) or type(plugin).__name__)
    pm.check_pending()
    return Engine(pm)
