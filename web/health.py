"""``/healthz``: whether this process can reach its database (for load balancers and monitoring)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from web.state import portal

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    """200 ``{"ok": true}`` when the database answers a query, 503 with the reason's kind when not."""
    db = portal().db
    try:
        # A raw connection: no transaction, so a health probe never waits for SQLite's write lock.
        connection = db.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
    except Exception as exc:  # any failure to reach the database means "not healthy"
        current_app.logger.warning("health check failed: %s", type(exc).__name__)
        return {"ok": False, "database": "unreachable"}, 503
    return {"ok": True, "database": "ok"}, 200
