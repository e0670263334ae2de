"""Rapportal's version, in a module of its own so that core submodules can read it without importing ``core``.

It must match ``version`` in ``pyproject.toml`` (a test compares them).
"""

from __future__ import annotations

__version__ = "0.1.0"
