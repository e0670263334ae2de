"""The staff side of the portal: accounts, caseload, administration, audit trail and kiosk.

:func:`init_app` registers the blueprints and the access check. Licensed wording installed
through the plugins page is picked up by every process: the instrument registry checks the
wording file's modification time on each lookup (core/instruments.py).
"""

from __future__ import annotations

from flask import Flask

from web import access, admin, api_keys, auth, clinician, kiosk, reports


def init_app(app: Flask) -> None:
    access.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(clinician.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api_keys.bp)  # the API keys page (web/api_keys.py)
    app.register_blueprint(kiosk.bp)
    reports.init_app(app)
