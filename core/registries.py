"""Run each ``register_*`` hook once, check what plugins return, and reject duplicates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

T = TypeVar("T")


class PluginRegistrationError(Exception):
    """A plugin returned something the contract does not allow."""


class DuplicateRegistrationError(PluginRegistrationError):
    """Two plugins registered the same name; the message names both."""


def collect(
    pm: pluggy.PluginManager,
    hook_name: str,
    expected: type[T],
    key: Callable[[T], str],
) -> dict[str, T]:
    """Call ``hook_name`` on every plugin and index the results by ``key``.

    Each plugin is called on its own so that errors name the plugin at fault.
    """
    found: dict[str, T] = {}
    owners: dict[str, str] = {}
    for plugin, returned in call_each(pm, hook_name):
        for obj in returned:
            if not isinstance(obj, expected):
                raise PluginRegistrationError(
                    f"plugin {plugin!r} returned {type(obj).__name__} from {hook_name}; expected {expected.__name__}"
                )
            name = key(obj)
            if name in owners:
                raise DuplicateRegistrationError(
                    f"{expected.__name__} {name!r} is registered by both plugin {owners[name]!r} "
                    f"and plugin {plugin!r}; block one of them (RAPPORTAL_BLOCKED_PLUGINS)"
                )
            owners[name] = plugin
            found[name] = obj
    return found


def call_each(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[tuple[str, list[Any]]]:
    """Call a list-returning hook plugin by plugin: ``[(plugin name, its list), ...]``."""
    results = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        returned = impl.function(**kwargs)
        if returned is None:
            continue
        if not isinstance(returned, (list, tuple)):
            raise PluginRegistrationError(
                f"plugin {impl.plugin_name!r} returned {type(returned).__name__} from {hook_name}; expected a list"
            )
        results.append((impl.plugin_name, list(returned)))
    return results
