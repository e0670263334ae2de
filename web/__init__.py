"""Rapportal's web face: the Flask application factory (:mod:`web.app`) and its blueprints."""

from __future__ import annotations

from web.app import create_app

__all__ = ["create_app"]
