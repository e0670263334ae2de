"""Build the plugin manager: specs, third-party entry points, then the built-ins."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

import core.hookspecs as hookspecs
from core.version import __version__

#: Built-in plugins are ordinary plugin modules, registered exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.scoring_rules",
    "plugins.builtin_instruments",
    "plugins.alert_rules",
    "plugins.export_csv",
    "plugins.export_jsonl",
    "plugins.export_xlsx",
    "plugins.export_fhir",
    "plugins.export_sav",
    "plugins.export_codebook",
    "plugins.widgets",
    "plugins.notify_email",
    "plugins.notify_sms_http",
)


def get_plugin_manager(blocked: Iterable[str] = (), load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Return a new plugin manager with the hook specs, installed plugins and built-ins.

    :param blocked: plugin names (entry-point names, or built-in module names such as
        ``plugins.alert_rules``) that must not be registered.
    :param load_entrypoints: load third-party plugins from the ``rapportal`` entry-point group.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    pm.check_pending()
    return pm


@dataclass(frozen=True)
class PluginInfo:
    """What ``rapportal plugins`` and the admin page show about one registered plugin."""

    name: str
    version: str | None
    distribution: str | None
    hooks: tuple[str, ...]


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """List registered plugins with their distribution, version and implemented hooks."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        if dist is not None:
            infos.append(PluginInfo(name, dist.version, dist.project_name, hooks))
        elif name in DEFAULT_PLUGINS:
            infos.append(PluginInfo(name, __version__, "rapportal", hooks))
        else:  # registered by hand, e.g. from a script or a test
            infos.append(PluginInfo(name, getattr(plugin, "__version__", None), None, hooks))
    return sorted(infos, key=lambda info: info.name)
