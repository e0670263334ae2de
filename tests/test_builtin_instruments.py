"""The built-in instruments plugin registers every definition shipped under ``instruments/<id>/<id>.json``."""

from __future__ import annotations

from core.schemas import INSTRUMENTS_DIR
from plugins import builtin_instruments


def test_it_registers_one_definition_per_shipped_instrument_folder():
    folders = sorted(path.name for path in INSTRUMENTS_DIR.iterdir() if path.is_dir())
    files = builtin_instruments.register_instruments()
    assert [path.parent.name for path in files] == folders
    assert all(path.is_file() and path.name == f"{path.parent.name}.json" for path in files)


def test_it_leaves_out_the_meta_schema_and_other_files():
    names = {path.name for path in builtin_instruments.register_instruments()}
    assert "meta-schema.json" not in names
    assert {"phq9.json", "ors.json", "wai-sr.json"} <= names
