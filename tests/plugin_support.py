"""Throwaway plugins for tests: pass them to ``build_engine(extra_plugins=...)`` or ``EXTRA_PLUGINS``."""

from __future__ import annotations

from pathlib import Path

from core import hookimpl


class InstrumentFiles:
    """A plugin that registers the given instrument definition files, as an installed package would."""

    def __init__(self, *paths: Path) -> None:
        self.paths = list(paths)

    @hookimpl
    def register_instruments(self) -> list[Path]:
        return self.paths
