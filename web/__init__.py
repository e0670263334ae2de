"""Rapportal's web face: the Flask application factory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from core import build_engine

EXTENSION_KEY = "rapportal"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the application. ``config`` overrides settings (tests pass theirs here).

    Settings come from ``RAPPORTAL_*`` environment variables (see docs/settings.md).
    """
    app = Flask(__name__, instance_path=os.environ.get("RAPPORTAL_INSTANCE_PATH") or None, instance_relative_config=True)
    app.config.from_mapping(BLOCKED_PLUGINS=[], LOAD_ENTRYPOINTS=True)
    app.config.from_prefixed_env("RAPPORTAL")
    if config:
        app.config.from_mapping(config)
    blocked = app.config["BLOCKED_PLUGINS"]
    if isinstance(blocked, str):
        blocked = [name.strip() for name in blocked.split(",") if name.strip()]
    app.extensions[EXTENSION_KEY] = build_engine(
        blocked_plugins=blocked,
        wording_dir=Path(app.instance_path) / "wording",
        load_entrypoints=app.config["LOAD_ENTRYPOINTS"],
        extra_plugins=app.config.get("EXTRA_PLUGINS", ()),
    )
    return app
