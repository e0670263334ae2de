"""The ``rapportal`` command line: Flask's CLI group plus Rapportal's own commands."""

from __future__ import annotations

import csv
import errno
import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from core import Engine, ExportSelection, ResponseValidationError, WordingError
from core.accounts import (
    AccountError,
    any_user_exists,
    clear_sign_in_throttle,
    create_user,
    setup_token,
    user_by_username,
)
from core.api_keys import create_api_key, key_state, list_api_keys, revoke_api_key
from core.care import issue_link
from core.clients import create_client, list_clients
from core.errors import DomainError, InvalidInput, NotFound
from core.expected import (
    ExpectedTable,
    clinic_expected_table,
    expected_instrument,
    export_expected_table,
    table_to_json,
)
from core.export import ExportError, count_rows, list_exporters, prepare_export, run_export
from core.instruments import InstrumentDefinitionError, check_examples, load_instrument, placeholder_wording
from core.job_runner import run_worker, settings_sweep_seconds
from core.jobs import STATUSES as JOB_STATUSES
from core.jobs import recent_jobs
from core.migrations import MigrationError, current_revision, head_revision, upgrade
from core.migrations.backup import BackupError, backup_database
from core.models import DEFAULT_SITE_ID, Client, InstrumentWording, Site, User
from core.plugins import describe_plugins
from core.sites import create_site, move_client, set_supervised, set_user_sites, sites
from core.wording import import_wording_folder, refresh_wording
from core.wording import install_wording as store_wording  # the command below is install_wording
from web.serve import check_can_listen, configure_app_logging, serve
from web.state import job_context, portal


def engine() -> Engine:
    return portal().engine


def fail(message: str) -> None:
    """Print an error for a person and exit non-zero (no traceback)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group(cls=AppGroup)
def cli() -> None:
    """Rapportal: session-by-session questionnaires for clinics."""


@cli.group()
def instruments() -> None:
    """List, inspect and check instrument definitions."""


@instruments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_instruments(as_json: bool) -> None:
    """List installed instruments (newest version of each) and definitions that failed to load."""
    eng = engine_with_wording()
    rows = [
        {
            "id": i.id,
            "version": i.version,
            "title": i.title,
            "items": len(i.items),
            "plugin": eng.instruments.plugin_for(i),
            "licence": i.licence.name,
            "wording": _wording_status(i),
            "sendable": i.sendable,
        }
        for i in eng.instruments
    ]
    errors = [str(e) for e in eng.instruments.errors]
    if as_json:
        click.echo(json.dumps({"instruments": rows, "errors": errors}, indent=2))
        return
    for row in rows:
        wording = "" if row["sendable"] else f"  [licensed wording: {row['wording']}]"
        click.echo(f"{row['id']:<10} {row['version']:<8} {row['items']:>3} items  {row['title']}{wording}")
    for error in errors:
        click.echo(f"not loaded: {error}", err=True)


def _wording_status(inst: Any) -> str:
    if inst.licence.wording_bundled:
        return "bundled"
    if inst.wording_placeholder:
        return "placeholder (demo links only)"
    return "installed" if inst.wording_installed else "not installed"


@instruments.command("show")
@click.argument("instrument_id")
@click.option("--version", "version", default=None, help="A specific version (default: newest).")
def show_instrument(instrument_id: str, version: str | None) -> None:
    """Show an instrument's items, scores, bands, flags and licence."""
    try:
        inst = engine_with_wording().instruments.get(instrument_id, version)
    except KeyError:
        fail(f"no instrument {instrument_id!r}{' version ' + version if version else ''} is installed")
    click.echo(f"{inst.title}  ({inst.id} {inst.version}, {inst.language})")
    click.echo(f"Citation: {inst.citation}")
    click.echo(f"Licence:  {inst.licence.name}")
    if not inst.sendable:
        click.echo("Wording:  licensed wording not installed; clients cannot be sent this instrument yet")
    if inst.stem:
        click.echo(f"Stem:     {inst.stem}")
    click.echo("Items:")
    for item in inst.items:
        answers = (
            ", ".join(f"{o.value}={o.label}" for o in item.options) or f"{item.widget} {item.minimum}-{item.maximum}"
        )
        click.echo(f"  {item.id:<10} {item.text or item.topic}  [{answers}]")
    click.echo("Scores:")
    for spec in inst.scoring.scores:
        click.echo(f"  {spec.name:<22} {spec.rule.name:<22} {spec.label}")
    if inst.scoring.bands:
        click.echo(f"Bands (on {inst.scoring.band_score}):")
        for band in inst.scoring.bands:
            click.echo(f"  {band.id:<22} {band.minimum}-{band.maximum}")
    click.echo("Flags: " + ", ".join(inst.scoring.flag_ids))


@instruments.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def check_instruments(paths: tuple[Path, ...]) -> None:
    """Validate definitions and run their worked examples (all installed ones when no PATH is given)."""
    eng = engine()
    problems: list[str] = []
    if paths:
        loaded = []
        for path in paths:
            try:
                loaded.append(load_instrument(path, eng.scoring_rules))
            except InstrumentDefinitionError as error:
                problems.append(str(error))
    else:
        loaded = eng.instruments.all_versions()
        problems.extend(str(e) for e in eng.instruments.errors)
    for inst in sorted(loaded, key=lambda i: i.key):
        found = check_examples(inst)
        problems.extend(found)
        if not found:
            click.echo(f"ok  {inst.id} {inst.version}: definition valid, {len(inst.examples)} worked examples agree")
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(1)


@instruments.command("install-wording")
@click.argument("instrument_id")
@click.argument("wording_file", type=click.File("r", encoding="utf-8"))
def install_wording(instrument_id: str, wording_file: Any) -> None:
    """Install licensed item wording (a JSON file checked against the instrument's item ids) for every host."""
    try:
        wording = json.load(wording_file)
    except json.JSONDecodeError as exc:
        fail(f"{wording_file.name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except UnicodeDecodeError:
        fail(f"{wording_file.name}: the file is not UTF-8 text")
    except RecursionError:
        fail(f"{wording_file.name}: the file is nested too deeply to be a wording file")
    state = portal()
    try:
        with state.sessions.begin() as session:
            version = store_wording(session, state.engine, instrument_id, wording, actor=cli_actor(), address=None)
    except WordingError as exc:
        fail(f"{wording_file.name}: {exc}")
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot store the wording in {state.db.url!r} (run `rapportal db upgrade` first?): {_db_reason(exc)}")
    kind = "placeholder wording" if version.placeholder else "wording"
    click.echo(f"Installed {kind} version {version.number} for {instrument_id}: every host on this database uses it")


def cli_actor() -> str:
    """Who the audit trail names for a command run on the server."""
    return f"cli:{getpass.getuser()}"


def engine_with_wording() -> Engine:
    """The engine with the licensed wording stored in the database applied (none before the first upgrade)."""
    state = portal()
    try:
        with state.sessions() as session:
            if sa.inspect(session.connection()).has_table(InstrumentWording.__tablename__):
                refresh_wording(session, state.engine)
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot read the installed wording from {state.db.url!r}: {_db_reason(exc)}")
    return state.engine


def import_instance_wording(app: Any) -> None:
    """Copy wording files kept in the instance folder before revision 0005 into the database; say what happened."""
    state = portal(app)
    folder = Path(app.instance_path) / "wording"
    try:
        with state.sessions.begin() as session:
            report = import_wording_folder(session, state.engine, folder, actor=cli_actor())
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot import the wording in {folder} into {state.db.url!r}: {_db_reason(exc)}")
    for line in report:
        click.echo(line, err=True)


def _db_reason(exc: sa.exc.SQLAlchemyError) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())  # one line, even for psycopg's messages


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_plugins(as_json: bool) -> None:
    """List registered plugins with their version and the hooks they implement."""
    infos = describe_plugins(engine().plugin_manager)
    if as_json:
        click.echo(json.dumps([info.__dict__ | {"hooks": list(info.hooks)} for info in infos], indent=2))
        return
    for info in infos:
        click.echo(f"{info.name:<32} {info.version or '-':<8} {', '.join(info.hooks)}")


@cli.command("score")
@click.argument("instrument_id")
@click.option(
    "--input", "input_file", type=click.File("r", encoding="utf-8"), default="-", help="JSON file (default: stdin)."
)
@click.option("--version", "version", default=None, help="A specific instrument version (default: newest).")
def score(instrument_id: str, input_file: Any, version: str | None) -> None:
    """Score {"answers": {...}, "history": [...]} read as JSON; print the result as JSON."""
    try:
        payload = json.load(input_file)
    except json.JSONDecodeError as exc:
        fail(f"input is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})")
    if not isinstance(payload, dict) or "answers" not in payload:
        fail('input must be a JSON object {"answers": {item: value|null}, "history": [earlier answers]}')
    history = payload.get("history", [])
    if not isinstance(history, list):
        fail('"history" must be a list of earlier answer objects, oldest first')
    unknown = sorted(set(payload) - {"answers", "history"})
    if unknown:
        fail(f"unexpected key(s) {', '.join(unknown)}: only 'answers' and 'history' are read")
    try:
        result = engine().score(instrument_id, payload["answers"], history, version=version)
    except KeyError:
        fail(f"no instrument {instrument_id!r}{' version ' + version if version else ''} is installed")
    except ResponseValidationError as exc:
        where = "answers"
        for index, entry in enumerate(history):
            if entry is exc.answers:
                where = f"history[{index}]"
        lines = "\n".join(f"  {e}" for e in exc.errors)
        fail(f"{where} do not fit {instrument_id}:\n{lines}")
    click.echo(json.dumps(result.to_json(), indent=2))


@cli.command("demo")
@click.option("--base-url", default=None, help="Where the portal is served (default: the serve command's address).")
@click.option("--clinician", default=None, metavar="USERNAME", help="Assign the demo client to this clinician.")
def demo(base_url: str | None, clinician: str | None) -> None:
    """Create a demo client with a link for every instrument and print the links.

    Licensed instruments without installed wording get clearly marked placeholder wording,
    usable for demo links only: real clients can never be sent it.
    """
    state = portal()
    eng = state.engine
    try:
        upgrade(state.db)  # a demo on a fresh checkout needs the tables too
    except MigrationError as exc:
        fail(str(exc))
    if base_url is None:
        config = current_app.config
        base_url = f"http://{config.get('HOST') or '127.0.0.1'}:{config.get('PORT') or 8000}"
    import_instance_wording(current_app)
    with state.sessions.begin() as session:
        refresh_wording(session, eng)
        for inst in list(eng.instruments):
            if not inst.wording_installed:
                store_wording(session, eng, inst.id, placeholder_wording(inst), actor=cli_actor(), address=None)
    with state.sessions.begin() as session:
        client = create_client(
            session,
            code=f"DEMO-{secrets.token_hex(3).upper()}",
            display_name="Demo client",
            language="en",
            languages=current_app.config["LANGUAGES"],
            clinician_id=_clinician_id(session, clinician),
            actor=cli_actor(),
            address=None,
        )
        code = client.code
        links = []
        for inst in eng.instruments:
            link = issue_link(session, eng, client, inst.id, allow_placeholder=True, actor=cli_actor(), address=None)
            links.append((inst, f"{base_url.rstrip('/')}/a/{link.token}"))
    # Say where the demo wrote: it uses whatever instance and database the settings point at.
    click.echo(f"Instance folder: {current_app.instance_path}")
    click.echo(f"Database:        {portal().db.url._replace(password=None).render_as_string(hide_password=False)}")
    click.echo(f"Demo client {code}. Open a link on a phone or in a browser:")
    for inst, link in links:
        note = "  (placeholder wording)" if inst.wording_placeholder else ""
        click.echo(f"  {inst.short_title:<8} {link}{note}")


def _clinician_id(session: Any, username: str | None) -> int | None:
    """The id of an active clinician account, for --clinician; a clear error when there is none."""
    if username is None:
        return None
    user = session.scalar(sa.select(User).where(User.username == username.strip().lower()))
    if user is None or user.role != "clinician" or not user.active:
        fail(f"--clinician {username!r}: no active clinician has this username (see the Users page)")
    return user.id


@cli.group("clients")
def clients_group() -> None:
    """Add and list clients (the administrator's Clients page, from the server)."""


@clients_group.command("create")
@click.argument("code")
@click.option("--name", "display_name", default=None, help="Display name (identifying; optional).")
@click.option("--language", default="en", show_default=True, help="Language of the client's questionnaires.")
@click.option("--clinician", default=None, metavar="USERNAME", help="The main clinician.")
@click.option("--further", multiple=True, metavar="USERNAME", help="A further clinician (repeatable).")
@click.option("--site", "site_name", default=None, metavar="NAME", help="The client's site (default: Main site).")
def create_client_command(
    code: str,
    display_name: str | None,
    language: str,
    clinician: str | None,
    further: tuple[str, ...],
    site_name: str | None,
) -> None:
    """Add a client with a pseudonymous CODE; audited like the web page's Add client."""
    with portal().sessions.begin() as session:
        site_id = _site_id(session, site_name) if site_name else DEFAULT_SITE_ID
        try:
            client = create_client(
                session,
                code=code,
                site_id=site_id,
                display_name=display_name,
                language=language,
                languages=current_app.config["LANGUAGES"],
                clinician_id=_clinician_id(session, clinician),
                further_ids=[_clinician_id(session, name) for name in further],
                actor=cli_actor(),
                address=None,
            )
        except DomainError as exc:
            fail(str(exc))
        click.echo(f"Created client {client.code}")
        if client.clinician_id is None:
            click.echo("Warning: no main clinician, so no clinician can see this client yet (--clinician).", err=True)


@clients_group.command("list")
def list_clients_command() -> None:
    """List clients by code with their main clinician (no display names: those identify people)."""
    with portal().sessions.begin() as session:
        for client, clinician in list_clients(session, actor=cli_actor(), address=None):
            click.echo(f"{client.code:<24} {clinician.username if clinician else '(no clinician)'}")


@cli.group("sites")
def sites_group() -> None:
    """Sites (clinics): create and list them, put people at sites, assign supervisors, move clients."""


def _site_id(session: Any, name: str) -> int:
    found = session.scalar(sa.select(Site.id).where(Site.name == name.strip()))
    if found is None:
        fail(f"site {name!r}: there is no such site (rapportal sites list)")
    return found


def _account(session: Any, username: str) -> User:
    user = session.scalar(sa.select(User).where(User.username == username.strip().lower()))
    if user is None:
        fail(f"{username!r}: there is no such account")
    return user


@sites_group.command("list")
def list_sites_command() -> None:
    """List the sites with how many clients each has."""
    with portal().sessions.begin() as session:
        counts = dict(session.execute(sa.select(Client.site_id, sa.func.count()).group_by(Client.site_id)).all())
        for site in sites(session):
            click.echo(f"{site.name:<32} {counts.get(site.id, 0)} clients")


@sites_group.command("create")
@click.argument("name")
def create_site_command(name: str) -> None:
    """Add a site called NAME."""
    with portal().sessions.begin() as session:
        try:
            create_site(session, name, actor=cli_actor(), address=None)
        except DomainError as exc:
            fail(str(exc))
    click.echo(f"Created site {name.strip()}")


@sites_group.command("assign")
@click.argument("username")
@click.argument("site_names", nargs=-1)
def assign_sites_command(username: str, site_names: tuple[str, ...]) -> None:
    """Put USERNAME at exactly these sites (none: portal-wide)."""
    with portal().sessions.begin() as session:
        user = _account(session, username)
        set_user_sites(session, user, [_site_id(session, n) for n in site_names], actor=cli_actor(), address=None)
    click.echo(f"{user.username}: {', '.join(site_names) or 'portal-wide'}")


@sites_group.command("supervise")
@click.argument("supervisor")
@click.argument("clinicians", nargs=-1)
def supervise_command(supervisor: str, clinicians: tuple[str, ...]) -> None:
    """Assign exactly these CLINICIANS (usernames) to SUPERVISOR."""
    with portal().sessions.begin() as session:
        user = _account(session, supervisor)
        try:
            set_supervised(
                session, user, [_account(session, n).id for n in clinicians], actor=cli_actor(), address=None
            )
        except DomainError as exc:
            fail(str(exc))
    click.echo(f"{user.username} supervises: {', '.join(clinicians) or 'nobody'}")


@sites_group.command("move-client")
@click.argument("code")
@click.argument("site_name")
def move_client_command(code: str, site_name: str) -> None:
    """Move the client with CODE to the site SITE_NAME (audited)."""
    with portal().sessions.begin() as session:
        client = session.scalar(sa.select(Client).where(Client.code == code))
        if client is None:
            fail(f"client {code!r}: there is no such client")
        try:
            move_client(session, None, client, _site_id(session, site_name), actor=cli_actor(), address=None)
        except DomainError as exc:
            fail(str(exc))
    click.echo(f"Moved {code} to {site_name}")


@cli.command("serve", with_appcontext=False)
@click.option("--host", default=None, help="Address to listen on (RAPPORTAL_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (RAPPORTAL_PORT, default 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (RAPPORTAL_WORKERS, default 4).")
@click.option(
    "--no-job-worker",
    is_flag=True,
    help="Start no job worker beside gunicorn (one runs elsewhere: `rapportal worker`).",
)
def serve_command(host: str | None, port: int | None, workers: int | None, no_job_worker: bool) -> None:
    """Upgrade the database if needed, then serve the portal with gunicorn and a job worker beside it."""
    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    host = host or app.config.get("HOST") or "127.0.0.1"
    port = port or int(app.config.get("PORT") or 8000)
    workers = workers or int(app.config.get("WORKERS") or 4)
    revision = _upgrade_database(app)
    import_instance_wording(app)  # wording kept in the instance folder before revision 0005
    try:
        check_can_listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is already in use; choose another with --port")
        fail(f"cannot listen on {host} port {port}: {exc.strerror or exc}")
    db = portal(app).db
    db.dispose()
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    click.echo(f"Database {db.url!r} at revision {revision}")
    _print_setup_link(app, f"http://{shown}:{port}")

    job_worker = None if no_job_worker else start_serve_worker(app)
    beside = " and a job worker" if job_worker else ""

    def announce() -> None:
        click.echo(
            f"Rapportal is serving on http://{shown}:{port}/ ({workers} workers{beside}; Ctrl+C stops it)", err=True
        )

    try:
        serve(app, host, port, workers, on_ready=announce)
    finally:
        stop_serve_worker(job_worker)


def _upgrade_database(app: Any) -> str | None:
    """Apply the migrations the database lacks (an empty one gets every table), or exit with one line saying why not."""
    db = portal(app).db
    try:
        return upgrade(db)
    except (MigrationError, sa.exc.SQLAlchemyError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())  # one line, even for psycopg's messages
        fail(f"cannot bring the database {db.url!r} up to date: {reason}")
    raise AssertionError  # unreachable: fail() exits


def _print_setup_link(app: Any, base_url: str) -> bool:
    """Print the one-time first-administrator link while no account exists; return whether it did."""
    with portal(app).sessions() as session:
        if any_user_exists(session):
            return False
    link = f"{base_url.rstrip('/')}/setup/{setup_token(app.config['SECRET_KEY'])}"
    click.echo(f"No accounts yet: create the first administrator at {link}")
    return True


@cli.command("setup-link")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True, help="Where the portal is served.")
def setup_link(base_url: str) -> None:
    """Print the one-time address that creates the first administrator (only while no account exists)."""
    if not current_app.config.get("CREATE_SCHEMA"):  # tests make their tables with create_all instead
        _upgrade_database(current_app)  # a fresh instance has no tables yet: make them as `serve` does
    if not _print_setup_link(current_app, base_url):
        fail("accounts exist already: the setup link works only before the first account is created")


@cli.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "clinician", "auditor"]), default="clinician", show_default=True)
@click.option("--name", "display_name", default="", help="Display name (default: the username).")
@click.password_option("--password", envvar="RAPPORTAL_NEW_PASSWORD", help="Asked for when not given.")
def create_user_command(username: str, role: str, display_name: str, password: str) -> None:
    """Create an account (for example the first administrator) from the server's command line."""
    if not current_app.config.get("CREATE_SCHEMA"):  # tests make their tables with create_all instead
        _upgrade_database(current_app)  # a fresh instance has no tables yet: make them as `serve` does
    with portal().sessions.begin() as session:
        try:
            user = create_user(
                session, username, display_name, role, password, actor=f"cli:{getpass.getuser()}", address=None
            )
        except AccountError as exc:
            fail(f"{exc.field}: {exc.message}")
        click.echo(f"Created {role} {user.username}")


@cli.group("db")
def db_group() -> None:
    """Upgrade, inspect and back up the database."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Create the tables in an empty database, or apply the revisions it lacks."""
    try:
        reached = upgrade(portal().db, revision)
    except MigrationError as exc:
        fail(str(exc))
    if reached == head_revision():
        import_instance_wording(current_app)  # wording kept in the instance folder before revision 0005
    click.echo(f"Database at revision {reached}")


@db_group.command("current")
def db_current() -> None:
    """Print the database's revision; exit status 1 when it is not the newest."""
    current, head = current_revision(portal().db), head_revision()
    if current == head:
        click.echo(f"{current} (head)")
        return
    click.echo(f"{current or 'empty'} (newest is {head}: run `rapportal db upgrade`)")
    sys.exit(1)


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(file: Path) -> None:
    """Write a consistent backup while the portal runs (SQLite copy, or pg_dump custom format)."""
    db = portal().db
    try:
        written = backup_database(db.url.render_as_string(hide_password=False), file)
    except BackupError as exc:
        fail(str(exc))
    click.echo(f"Backup of {db.url!r} written to {written}")


def init_app(app: Any) -> None:
    """Make the commands reachable from ``app.cli`` too (Flask's test runner and ``flask`` itself)."""
    for name, command in cli.commands.items():
        app.cli.commands.setdefault(name, command)


@cli.command("export")
@click.option("--format", "format_name", metavar="NAME", help="Export format (see --list).")
@click.option("--list", "list_formats", is_flag=True, help="List the export formats and exit.")
@click.option("--instrument", "instruments", multiple=True, metavar="ID", help="Only this instrument (repeatable).")
@click.option("--since", metavar="DATE", help="Submitted on or after DATE (YYYY-MM-DD, UTC).")
@click.option("--until", metavar="DATE", help="Submitted on or before DATE (YYYY-MM-DD, UTC, whole day).")
@click.option("--clinician", "clinicians", multiple=True, metavar="USER", help="Only this clinician's clients.")
@click.option("--client", "clients", multiple=True, metavar="CODE", help="Only this client (repeatable).")
@click.option("--identifying", is_flag=True, help="Add client and clinician display names (default: pseudonymised).")
@click.option("--output", "output", type=click.Path(path_type=Path, dir_okay=False), help="File to write.")
def export(
    format_name: str | None,
    list_formats: bool,
    instruments: tuple[str, ...],
    since: str | None,
    until: str | None,
    clinicians: tuple[str, ...],
    clients: tuple[str, ...],
    identifying: bool,
    output: Path | None,
) -> None:
    """Export scored responses (pseudonymised unless --identifying); the export is audited."""
    state = portal()
    if list_formats:
        for exporter in list_exporters(state.engine):
            click.echo(f"{exporter.name:<12} .{exporter.extension:<6} {exporter.title}")
        return
    if not format_name or output is None:
        fail("give --format NAME and --output FILE (or --list to see the formats)")

    def day(value: str | None, option: str) -> datetime | None:
        if value is None:
            return None
        try:
            return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            fail(f"{option} {value!r} is not a date in the form YYYY-MM-DD")
        raise AssertionError  # unreachable: fail() exits

    start, end = day(since, "--since"), day(until, "--until")
    selection = ExportSelection(
        instruments=instruments,
        since=start,
        until=end + timedelta(days=1) if end else None,
        clinicians=clinicians,
        clients=clients,
        identifying=identifying,
    )
    if start and end and start > end:
        fail("--since is after --until")
    try:
        plan = prepare_export(state.engine, format_name, selection)
    except ExportError as exc:
        fail(str(exc))
    target = output.resolve()
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed into place on success
            dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
        )
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    temp = Path(handle.name)
    try:
        expected = count_rows(state.db, selection)
        with (
            handle,
            click.progressbar(
                length=expected, label=f"Exporting {expected} responses", file=sys.stderr, show_pos=True
            ) as bar,
        ):
            done = [0]

            def progress(rows: int) -> None:
                bar.update(rows - done[0])
                done[0] = rows

            count = run_export(
                state.sessions,
                state.engine,
                format_name,
                selection,
                handle,
                actor=f"cli:{getpass.getuser()}",
                plan=plan,
                progress=progress,
            )
            bar.update(count - done[0])
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except (OSError, ExportError) as exc:
        temp.unlink(missing_ok=True)
        fail(f"export to {output} failed: {exc}")
    except sa.exc.SQLAlchemyError as exc:
        temp.unlink(missing_ok=True)
        fail(f"export to {output} failed: database error: {getattr(exc, 'orig', None) or exc}")
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    click.echo(f"Wrote {count} responses to {output} ({plan.exporter.title})")


@cli.command("unlock-user")
@click.argument("username")
def unlock_user(username: str) -> None:
    """Clear an account's sign-in waits after failed sign-ins, so its owner can try again at once (audited)."""
    with portal().sessions.begin() as session:
        try:
            user = user_by_username(session, username)
        except AccountError as exc:
            fail(f"{exc.field}: {exc.message}")
        cleared = clear_sign_in_throttle(session, user, actor=f"cli:{getpass.getuser()}", address=None)
        click.echo(f"Cleared the sign-in waits of {user.username} ({cleared} counters)")


# -- background jobs (docs/jobs.md) ---------------------------------------------------------------------------


@cli.command("worker")
@click.option("--threads", type=int, default=None, help="Jobs run at once (RAPPORTAL_JOBS_THREADS, default 2).")
@click.option("--parent-pid", type=int, default=None, hidden=True)  # `serve`: stop when the server is gone
def worker_command(threads: int | None, parent_pid: int | None) -> None:
    """Run background jobs (exports, messages, periodic clean-ups) until stopped (Ctrl+C or SIGTERM)."""
    app = current_app
    threads = threads or int(app.config["JOBS_THREADS"])
    if threads < 1:
        fail("--threads must be at least 1")
    _upgrade_database(app)
    state = portal()
    configure_app_logging()
    try:
        run_worker(
            state.job_broker,
            state.jobs,
            job_context(app),
            threads=threads,
            sweep_seconds=settings_sweep_seconds(app.config),
            parent_pid=parent_pid,
        )
    except ValueError as exc:  # a RAPPORTAL_JOBS_URL of the wrong kind
        fail(str(exc))


def start_serve_worker(app: Any) -> subprocess.Popen[bytes] | None:
    """`rapportal serve` starts a worker beside gunicorn, unless RAPPORTAL_SERVE_WORKER is false."""
    if not app.config["SERVE_WORKER"] or str(app.config["SERVE_WORKER"]).lower() in ("0", "false", "no"):
        return None
    command = [sys.executable, "-c", "from web.main import main; main()", "worker", "--parent-pid", str(os.getpid())]
    return subprocess.Popen(command, env=os.environ.copy())


def stop_serve_worker(process: subprocess.Popen[bytes] | None, wait_seconds: float = 30) -> None:
    """Ask the worker to finish its jobs (SIGINT), and stop it (SIGTERM) if it takes longer than ``wait_seconds``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(wait_seconds)
    except subprocess.TimeoutExpired:
        process.terminate()  # its jobs' leases run out and another worker takes them up again
        process.wait()


@cli.group("jobs")
def jobs_group() -> None:
    """Look at background jobs."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def jobs_list(status: str | None, as_json: bool) -> None:
    """The newest jobs: status, attempts and the last error (failed jobs stay until removed)."""
    try:
        with portal().sessions() as session:
            rows = recent_jobs(session, status=status, limit=100)
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot read the jobs (run `rapportal db upgrade` first?): {_db_reason(exc)}")
    for row in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "name": row.name,
                        "status": row.status,
                        "attempts": row.attempts,
                        "created_at": row.created_at.isoformat(),
                        "error": row.error,
                    }
                )
            )
        else:
            when = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{row.id}  {when}  {row.status:<8} {row.attempts}x  {row.name}  {row.error or ''}".rstrip())


@jobs_group.command("run")
def jobs_run() -> None:
    """Run the jobs that are due in this process until none is left (no worker needed; for maintenance)."""
    app = current_app
    ran = portal().jobs.run_until_idle(job_context(app))
    click.echo(f"Ran {ran} jobs")


# -- expected change (docs/expected-change.md) ----------------------------------------------


@cli.command("expected-change")
@click.option("--instrument", "instrument_id", required=True, help="Instrument id, such as the one of the ORS.")
@click.option("--score", default=None, help="Score name (default: the instrument's charted score with a direction).")
@click.option(
    "--from-export",
    "export_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Recompute from a wide CSV export (rapportal export --format csv) instead of the database.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def expected_change(instrument_id: str, score: str | None, export_file: Path | None, as_json: bool) -> None:
    """The clinic's expected change by intake range and session: median and 25th-75th percentile."""
    state = portal()
    try:
        instrument, chosen = expected_instrument(state.engine.instruments, instrument_id, score)
        if export_file is None:
            with state.sessions.begin() as session:
                table = clinic_expected_table(
                    session, state.engine.expected, instrument, chosen, actor=f"cli:{getpass.getuser()}", address=None
                )
        else:
            try:
                with export_file.open(encoding="utf-8-sig", newline="") as handle:
                    table = export_expected_table(
                        csv.DictReader(handle), instrument, chosen, state.engine.expected.settings
                    )
            except OSError as exc:
                fail(f"cannot read {export_file}: {exc.strerror or exc}")
    except DomainError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(table_to_json(table), indent=2))
        return
    _print_expected(table)


def _print_expected(table: ExpectedTable) -> None:
    click.echo(f"{table.instrument} {table.score} ({table.direction.replace('_', ' ')})")
    for curve in table.curves:
        status = "" if curve.enough else f": {curve.episodes} of {curve.minimum} episodes needed"
        click.echo(f"intake {curve.intake.text}: {curve.episodes} completed episodes{status}")
        for point in curve.points:
            click.echo(
                f"  session {point.session}: median {point.median}, 25th-75th percentile {point.p25} to {point.p75}"
                f" ({point.count} episodes)"
            )


# -- API keys (issue 13) ---------------------------------------------------------------


@cli.group("api-keys")
def api_keys() -> None:
    """Keys for the JSON API and the FHIR face (docs/api.md)."""


@api_keys.command("create")
@click.option("--owner", required=True, metavar="USERNAME", help="The account the key acts as.")
@click.option("--scopes", default="read", show_default=True, help="Comma-separated: read, write, export.")
@click.option("--name", default="", help="What the key is for (shown in the list).")
@click.option("--expires", default=None, metavar="YYYY-MM-DD", help="The day (UTC) the key stops working.")
def api_keys_create(owner: str, scopes: str, name: str, expires: str | None) -> None:
    """Create a key and print it once (only its hash is kept)."""
    expires_at = None
    if expires:
        try:
            expires_at = datetime.strptime(expires, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            fail(f"--expires: {expires!r} is not a day as YYYY-MM-DD")
    with portal().sessions.begin() as session:
        try:
            issued = create_api_key(
                session,
                owner=owner,
                name=name,
                scopes=scopes,
                expires_at=expires_at,
                actor=f"cli:{getpass.getuser()}",
                address=None,
            )
        except InvalidInput as exc:
            fail(f"{'--' + exc.field if exc.field else 'input'}: {exc.message}")
        key_id = issued.key.id
    click.echo(issued.secret)
    click.echo(f"Key {key_id} for {owner} ({scopes}); it is shown only now.", err=True)


@api_keys.command("list")
def api_keys_list() -> None:
    """Every key: id, prefix, owner, scopes, state, expiry (never a secret; audited)."""
    with portal().sessions.begin() as session:
        for found in list_api_keys(session, actor=f"cli:{getpass.getuser()}", address=None):
            expiry = found.expires_at.date().isoformat() if found.expires_at else "-"
            click.echo(
                f"{found.id}\t{found.prefix}…\t{found.owner.username}\t{','.join(found.scopes)}\t"
                f"{key_state(found)}\t{expiry}\t{found.name}"
            )


@api_keys.command("revoke")
@click.argument("key_id", type=click.IntRange(1, 2**31 - 1))
def api_keys_revoke(key_id: int) -> None:
    """Revoke a key at once."""
    with portal().sessions.begin() as session:
        try:
            changed = revoke_api_key(session, key_id, actor=f"cli:{getpass.getuser()}", address=None)
        except NotFound as exc:
            fail(exc.message)
    click.echo(f"Revoked key {key_id}" if changed else f"Key {key_id} was revoked already")
