"""The Flask application factory: settings, the engine, the database, then the blueprints."""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Any

from babel import Locale
from flask import Flask, current_app, g, request
from flask_babel import Babel
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from core import build_engine
from core.db import create_schema, make_db_engine, make_read_session_factory, make_session_factory
from core.expected import ExpectedChange, ExpectedSettings
from core.job_runner import JobBroker
from core.jobs import DEFAULT_LEASE_SECONDS, JobQueue, load_job_modules
from web import api, cli, client, fhir, flow, health, pages, staff, state


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the application. ``config`` overrides settings (tests pass theirs here).

    Settings come from ``RAPPORTAL_*`` environment variables (see docs/settings.md).
    """
    app = Flask(
        __name__,
        instance_path=os.environ.get("RAPPORTAL_INSTANCE_PATH") or None,
        instance_relative_config=True,
    )
    app.url_map.converters["int"] = DatabaseInt
    app.config.from_mapping(
        BLOCKED_PLUGINS=[],
        LOAD_ENTRYPOINTS=True,
        DATABASE_URL=None,
        LINK_LIFETIME_DAYS=7,
        DB_RETRY_SECONDS=5,
        LINK_GUESS_LIMIT=30,
        CSRF_TIME_LIMIT=24 * 3600,
        MAX_CONTENT_LENGTH=256 * 1024,
        CLINIC_NAME="Rapportal",
        PROXY_HOPS=0,
        API_RATE_LIMIT=600,
        JOBS_URL=None,  # the broker: empty for SQLite in the instance folder, or redis://... (docs/jobs.md)
        JOBS_QUEUE_NAME="rapportal",
        JOBS_THREADS=2,
        JOBS_SWEEP_SECONDS=15,
        JOBS_LEASE_SECONDS=DEFAULT_LEASE_SECONDS,
        JOBS_KEEP_DONE_DAYS=7,
        JOB_MODULES=[],
        SERVE_WORKER=True,
        EXPORT_KEEP_HOURS=24,
        LANGUAGES=["en", "de", "es"],
        BABEL_TRANSLATION_DIRECTORIES=str(Path(__file__).parent / "translations"),
    )
    app.config.from_prefixed_env("RAPPORTAL")
    if config:
        app.config.from_mapping(config)
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _stored_secret_key(instance / "secret_key")
    if not app.config.get("EXPORT_FOLDER"):
        app.config["EXPORT_FOLDER"] = str(instance / "exports")
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'rapportal.db'}"

    engine = build_engine(
        blocked_plugins=_names(app.config["BLOCKED_PLUGINS"]),
        load_entrypoints=app.config["LOAD_ENTRYPOINTS"],
        extra_plugins=app.config.get("EXTRA_PLUGINS", ()),
    )
    engine.expected = ExpectedChange(
        ExpectedSettings.from_config(
            app.config.get("EXPECTED_MINIMUM_EPISODES"),
            app.config.get("EXPECTED_INTAKE_STEP"),
            app.config.get("EXPECTED_INTAKE_RANGES"),
            app.config.get("EXPECTED_CACHE_SECONDS"),
            app.config.get("EXPECTED_MINIMUM_PER_SESSION"),
        )
    )
    db = make_db_engine(app.config["DATABASE_URL"])
    # `rapportal serve` and `rapportal db upgrade` run the migrations; CREATE_SCHEMA is the tests' fast path.
    if app.config.get("CREATE_SCHEMA", False):
        create_schema(db)
    hops = int(app.config["PROXY_HOPS"])
    if hops:
        # Behind a reverse proxy, the client's address (throttles, audit) and scheme (Secure
        # cookies) come from the X-Forwarded-* headers that the last ``hops`` proxies set.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    load_job_modules()
    load_job_modules(tuple(_names(app.config["JOB_MODULES"])))
    sessions = make_session_factory(db)
    broker = JobBroker(app.config["JOBS_URL"], instance, app.config["JOBS_QUEUE_NAME"])
    state.init_app(
        app,
        state.Portal(
            engine=engine,
            db=db,
            sessions=sessions,
            read_sessions=make_read_session_factory(db),
            jobs=JobQueue(
                sessions,
                dispatch=broker.dispatch,
                engine=engine,
                lease_seconds=float(app.config["JOBS_LEASE_SECONDS"]),
            ),
            job_broker=broker,
        ),
    )
    babel.init_app(app, locale_selector=_select_language)
    cli.init_app(app)
    pages.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(client.bp)
    staff.init_app(app)  # accounts, caseload, admin, audit, kiosk (web/staff.py)
    app.add_template_global(flow.language_notes)  # the client forms' notes on untranslated instruments
    api.init_app(app)  # the JSON API (/api/v1/) and its FHIR face (/fhir/R4/)
    fhir.init_app(app)
    return app


babel = Babel()


def _select_language() -> Locale:
    """A client page follows its assignment's language; other pages the browser's preference."""
    language = g.get("language") or request.accept_languages.best_match(current_app.config["LANGUAGES"]) or "en"
    return _locale(language)


@functools.lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    # Flask-Babel parses the selector's answer anew on every request; a Locale passes through unparsed
    return Locale.parse(language)


class DatabaseInt(IntegerConverter):
    """``<int:...>`` limited to what an id column holds (INTEGER on PostgreSQL): larger is a 404, not a 500."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


def _stored_secret_key(path: Path) -> str:
    """Generate the secret key on first start and keep it (readable by the owner only)."""
    if not path.exists():
        # Several workers may start at once: write a private temp file, then link it into
        # place atomically; whoever loses the race reads the winner's key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
