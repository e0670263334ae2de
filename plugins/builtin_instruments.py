"""The instruments that ship with Rapportal: every definition under ``instruments/<id>/``."""

from __future__ import annotations

from pathlib import Path

from core import hookimpl

# The definitions are the top-level ``instruments`` data folder, which sits next to ``plugins/`` in a
# checkout and in an installed wheel, the way a third-party plugin ships its files next to its module.
_DEFINITIONS = Path(__file__).resolve().parent.parent / "instruments"


def _definition_files() -> list[Path]:
    return sorted(path for path in _DEFINITIONS.glob("*/*.json") if path.name == f"{path.parent.name}.json")


@hookimpl
def register_instruments() -> list[Path]:
    return _definition_files()
