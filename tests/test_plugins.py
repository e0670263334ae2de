"""The plugin manager factory and the registries built from it."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest

from core import (
    DEFAULT_PLUGINS,
    AlertRule,
    DuplicateRegistrationError,
    PluginRegistrationError,
    ScoringRule,
    build_engine,
    get_plugin_manager,
    hookimpl,
)
from core.plugins import describe_plugins


def test_manager_registers_every_default_plugin_by_module_name():
    pm = get_plugin_manager(load_entrypoints=False)
    assert {name for name, _ in pm.list_name_plugin()} == set(DEFAULT_PLUGINS)


def test_each_call_builds_a_new_manager():
    assert get_plugin_manager(load_entrypoints=False) is not get_plugin_manager(load_entrypoints=False)


def test_blocked_builtin_is_not_registered_and_its_instruments_are_absent():
    engine = build_engine(blocked_plugins=["plugins.builtin_instruments"], load_entrypoints=False)
    assert len(engine.instruments) == 0
    assert "sum" in engine.scoring_rules


def test_misspelled_hook_is_caught_by_check_pending():
    class Misspelled:
        @hookimpl
        def register_instrument(self):  # missing the final "s"
            return []

    with pytest.raises(pluggy.PluginValidationError):
        build_engine(load_entrypoints=False, extra_plugins=[Misspelled()])


def _rule(name: str) -> ScoringRule:
    return ScoringRule(name=name, kind="score", compute=lambda p, c: None, parameters={}, description="test")


def test_duplicate_scoring_rule_names_both_plugins():
    class Shadow:
        @hookimpl
        def register_scoring_rules(self):
            return [_rule("sum")]

    with pytest.raises(DuplicateRegistrationError) as excinfo:
        build_engine(load_entrypoints=False, extra_plugins=[Shadow()])
    message = str(excinfo.value)
    assert "'sum'" in message and "plugins.scoring_rules" in message and "Shadow" in message


def test_duplicate_instrument_version_names_both_plugins():
    from core.schemas import INSTRUMENTS_DIR

    class Copycat:
        @hookimpl
        def register_instruments(self):
            return [INSTRUMENTS_DIR / "phq9" / "phq9.json"]

    with pytest.raises(DuplicateRegistrationError) as excinfo:
        build_engine(load_entrypoints=False, extra_plugins=[Copycat()])
    assert "plugins.builtin_instruments" in str(excinfo.value) and "Copycat" in str(excinfo.value)


def test_plugin_returning_a_dict_instead_of_a_dataclass_is_refused():
    class Loose:
        @hookimpl
        def register_alert_rules(self):
            return [{"name": "x"}]

    with pytest.raises(PluginRegistrationError, match="returned dict from register_alert_rules; expected AlertRule"):
        build_engine(load_entrypoints=False, extra_plugins=[Loose()])


def test_plugin_returning_a_string_path_is_refused():
    class Stringly:
        @hookimpl
        def register_instruments(self):
            return ["phq9.json"]

    with pytest.raises(PluginRegistrationError, match="expected Path"):
        build_engine(load_entrypoints=False, extra_plugins=[Stringly()])


def test_alert_rules_from_a_plugin_are_registered_alongside_builtins():
    class Extra:
        @hookimpl
        def register_alert_rules(self):
            return [AlertRule("always", "Always", "info", lambda result: "hello")]

    engine = build_engine(load_entrypoints=False, extra_plugins=[Extra()])
    assert "always" in engine.alert_rules and "srs_alliance_concern" in engine.alert_rules


def test_describe_plugins_lists_hooks_and_versions():
    infos = {info.name: info for info in describe_plugins(get_plugin_manager(load_entrypoints=False))}
    assert infos["plugins.scoring_rules"].hooks == ("register_scoring_rules",)
    assert infos["plugins.builtin_instruments"].distribution == "rapportal"


def test_core_does_not_import_flask():
    core_dir = Path(__file__).resolve().parent.parent / "core"
    offenders = [p.name for p in core_dir.glob("*.py") if "flask" in p.read_text().lower().replace("no flask", "")]
    assert offenders == []
