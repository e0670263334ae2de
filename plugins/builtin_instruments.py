"""The instruments that ship with Rapportal: every definition under ``instruments/<id>/``."""

from __future__ import annotations

from pathlib import Path

from core import hookimpl
from core.schemas import INSTRUMENTS_DIR


def _definition_files() -> list[Path]:
    return sorted(path for path in INSTRUMENTS_DIR.glob("*/*.json") if path.name == f"{path.parent.name}.json")


@hookimpl
def register_instruments() -> list[Path]:
    return _definition_files()
