"""The administrator's pages (users, clients, plugins and wording, exports) and the audit trail.

Administrators manage accounts and who treats whom, but see no answers or scores: clinical
data is shown only to a client's assigned clinicians (and leaves the portal only through
audited exports). Auditors see the audit trail and nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import wtforms
from babel import Locale
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import validators as v

from core import ExportSelection, WordingError
from core.accounts import ROLES, AccountError, create_user, end_all_sessions, set_password
from core.audit import record
from core.export import ExportError, iter_export, list_exporters
from core.models import AuditEntry, Client, ClientClinician, User
from core.plugins import describe_plugins
from web.access import ROLE_TITLES, StaffForm, actor, address, allow, choices, core_message, form_status, make_form
from web.state import db_session, portal

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 100


def _clinician_choices(blank: bool = True) -> list[tuple[str, str]]:
    users = db_session().scalars(
        sa.select(User).where(User.role == "clinician", User.active.is_(True)).order_by(User.display_name)
    )
    options = [(str(u.id), f"{u.display_name} ({u.username})") for u in users]
    return choices(([("", _("(none)"))] if blank else []) + options)


# -- users -----------------------------------------------------------------------


class UserForm(StaffForm):
    username = wtforms.StringField(_l("Username"), [v.InputRequired(_l("Enter a username."))])
    display_name = wtforms.StringField(_l("Name"), [v.Optional(), v.Length(max=128)])
    role = wtforms.SelectField(_l("Role"), choices=choices((r, ROLE_TITLES[r]) for r in ROLES), default="clinician")
    password = wtforms.PasswordField(_l("Initial password"), [v.InputRequired(_l("Choose an initial password."))])


class EditUserForm(StaffForm):
    display_name = wtforms.StringField(_l("Name"), [v.InputRequired(_l("Enter a name.")), v.Length(max=128)])
    role = wtforms.SelectField(_l("Role"), choices=choices((r, ROLE_TITLES[r]) for r in ROLES))
    active = wtforms.BooleanField(_l("Account active (can sign in)"))
    password = wtforms.PasswordField(_l("New password (leave empty to keep)"), [v.Optional()])


@bp.route("/users", methods=["GET", "POST"])
@allow("admin")
def users() -> Any:
    session = db_session()
    form = make_form(UserForm)
    status = 200
    if request.method == "POST":
        if form.validate():
            try:
                user = create_user(
                    session,
                    form.username.data,
                    form.display_name.data or "",
                    form.role.data,
                    form.password.data,
                    actor=actor(),
                    address=address(),
                )
            except AccountError as exc:
                form[exc.field].errors = [core_message(exc.message)]
            else:
                session.commit()
                return redirect(url_for("admin.users", created=user.username))
        status = form_status(form)
    listing = session.scalars(sa.select(User).order_by(User.role, User.username)).all()
    return render_template(
        "admin/users.html", form=form, users=listing, created=request.args.get("created"), roles=ROLE_TITLES
    ), status


def _active_admins(session: Any) -> int:
    return session.scalar(sa.select(sa.func.count()).where(User.role == "admin", User.active.is_(True)))


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@allow("admin")
def user(user_id: int) -> Any:
    session = db_session()
    target = session.get(User, user_id)
    if target is None:
        abort(404)
    form = make_form(EditUserForm, obj=target if request.method == "GET" else None)
    status = 200
    if request.method == "POST":
        if form.validate():
            losing_admin = target.role == "admin" and (form.role.data != "admin" or not form.active.data)
            if losing_admin and target.active and _active_admins(session) <= 1:
                form.role.errors = [_("This is the last active administrator: add another one first.")]
            else:
                changes: dict[str, Any] = {}
                for name in ("display_name", "role", "active"):
                    if getattr(target, name) != form[name].data:
                        changes[name] = form[name].data
                        setattr(target, name, form[name].data)
                ok = True
                if form.password.data:
                    try:
                        set_password(session, target, form.password.data)
                        changes["password"] = "reset"
                    except AccountError as exc:
                        form.password.errors = [core_message(exc.message)]
                        ok = False
                if ok:
                    if "role" in changes or changes.get("active") is False:
                        end_all_sessions(session, target.id, "account_changed")
                    record(session, actor(), "user.update", f"user:{target.id}", address(), changes=changes)
                    session.commit()
                    return redirect(url_for("admin.users", updated=target.username))
                session.rollback()
        status = form_status(form)
    return render_template("admin/user.html", form=form, target=target), status


# -- clients ---------------------------------------------------------------------


class EditClientForm(StaffForm):
    display_name = wtforms.StringField(_l("Display name (optional, identifying)"), [v.Optional(), v.Length(max=128)])
    language = wtforms.SelectField(_l("Language of the questionnaires"), choices=[], validate_choice=True)
    clinician = wtforms.SelectField(_l("Main clinician"), choices=[], validate_choice=True)
    further = wtforms.SelectMultipleField(_l("Further clinicians"), choices=[], validate_choice=True)


class ClientForm(EditClientForm):
    """A new client: the edit form plus the code, which never changes afterwards."""

    code = wtforms.StringField(
        _l("Client code (pseudonym)"),
        [
            v.InputRequired(_l("Enter a code.")),
            v.Length(max=64),
            v.Regexp(r"^[A-Za-z0-9._-]+$", message=_l("Use letters, digits and . _ - only.")),
        ],
    )
    language = wtforms.SelectField(_l("Language of the questionnaires"), choices=[], validate_choice=True, default="en")


def _language_choices() -> list[tuple[str, str]]:
    """The portal's languages, each named in itself (Deutsch, Español)."""
    return [(code, Locale.parse(code).get_display_name(code).capitalize()) for code in current_app.config["LANGUAGES"]]


def _client_form(form_class: type[EditClientForm]) -> EditClientForm:
    form = make_form(form_class)
    form.language.choices = _language_choices()
    form.clinician.choices = _clinician_choices()
    form.further.choices = _clinician_choices(blank=False)
    return form


def _set_clinicians(session: Any, client: Client, main: str, further: list[str]) -> None:
    client.clinician_id = int(main) if main else None
    wanted = {int(i) for i in further} - {client.clinician_id}
    existing = {
        row.user_id: row
        for row in session.scalars(sa.select(ClientClinician).where(ClientClinician.client_id == client.id))
    }
    for user_id, row in existing.items():
        if user_id not in wanted:
            session.delete(row)
    for user_id in wanted - set(existing):
        session.add(ClientClinician(client_id=client.id, user_id=user_id))


@bp.route("/clients", methods=["GET", "POST"])
@allow("admin")
def clients() -> Any:
    session = db_session()
    form = _client_form(ClientForm)
    status = 200
    if request.method == "POST":
        if form.validate():
            code = form.code.data.strip()
            if session.scalar(sa.select(Client.id).where(Client.code == code)) is not None:
                form.code.errors = [_("A client with this code exists already.")]
            else:
                client = Client(
                    code=code,
                    display_name=(form.display_name.data or "").strip() or None,
                    language=form.language.data,
                )
                session.add(client)
                session.flush()
                _set_clinicians(session, client, form.clinician.data, form.further.data or [])
                record(
                    session,
                    actor(),
                    "client.create",
                    f"client:{client.id}",
                    address(),
                    clinician=client.clinician_id,
                    further=sorted(form.further.data or []),
                )
                session.commit()
                return redirect(url_for("admin.clients", created=code))
        status = form_status(form)
    rows = session.execute(
        sa.select(Client, User).outerjoin(User, User.id == Client.clinician_id).order_by(Client.code)
    ).all()
    further = {}
    for client_id, name in session.execute(
        sa.select(ClientClinician.client_id, User.display_name).join(User, User.id == ClientClinician.user_id)
    ):
        further.setdefault(client_id, []).append(name)
    return render_template(
        "admin/clients.html", form=form, rows=rows, further=further, created=request.args.get("created")
    ), status


@bp.route("/clients/<int:client_id>", methods=["GET", "POST"])
@allow("admin")
def client(client_id: int) -> Any:
    session = db_session()
    found = session.get(Client, client_id)
    if found is None:
        abort(404)
    current_further = [
        str(i) for i in session.scalars(sa.select(ClientClinician.user_id).where(ClientClinician.client_id == found.id))
    ]
    form = _client_form(EditClientForm)
    if request.method == "GET":
        form.display_name.data = found.display_name
        form.language.data = found.language
        form.clinician.data = str(found.clinician_id or "")
        form.further.data = current_further
        return render_template("admin/client.html", form=form, client=found)
    if not form.validate():
        return render_template("admin/client.html", form=form, client=found), form_status(form)
    found.display_name = (form.display_name.data or "").strip() or None
    found.language = form.language.data
    _set_clinicians(session, found, form.clinician.data, form.further.data or [])
    record(
        session,
        actor(),
        "client.update",
        f"client:{found.id}",
        address(),
        clinician=found.clinician_id,
        further=sorted(form.further.data or []),
    )
    session.commit()
    return redirect(url_for("admin.clients", updated=found.code))


# -- plugins and licensed wording ---------------------------------------------------


class WordingForm(StaffForm):
    instrument = wtforms.SelectField(_l("Instrument"), choices=[], validate_choice=True)
    wording = wtforms.FileField(_l("Wording file (JSON)"))


def _licensed_choices() -> list[tuple[str, str]]:
    return choices(
        (i.id, f"{i.short_title} ({i.id})") for i in portal().engine.instruments if not i.licence.wording_bundled
    )


def _plugins_page(form: Any, status: int = 200, installed: str | None = None) -> Any:
    engine = portal().engine
    instruments = sorted(engine.instruments, key=lambda i: i.id)
    return render_template(
        "admin/plugins.html",
        plugins=describe_plugins(engine.plugin_manager),
        instruments=instruments,
        errors=[str(e) for e in engine.instruments.errors],
        form=form,
        installed=installed,
    ), status


@bp.get("/plugins")
@allow("admin")
def plugins() -> Any:
    form = make_form(WordingForm)
    form.instrument.choices = _licensed_choices()
    return _plugins_page(form, installed=request.args.get("installed"))


@bp.post("/plugins/wording")
@allow("admin")
def install_wording() -> Any:
    form = make_form(WordingForm)
    form.instrument.choices = _licensed_choices()
    if not form.validate():
        return _plugins_page(form, form_status(form))
    upload = request.files.get("wording")
    if upload is None or not upload.filename:
        form.wording.errors = [_("Choose the wording file to upload.")]
        return _plugins_page(form, 422)
    raw = upload.read()
    try:
        wording = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        form.wording.errors = [_("The file is not UTF-8 text.")]
        return _plugins_page(form, 422)
    except RecursionError:
        form.wording.errors = [_("The file is nested too deeply to be a wording file.")]
        return _plugins_page(form, 422)
    except json.JSONDecodeError as exc:
        form.wording.errors = [
            _(
                "The file is not valid JSON (line %(line)s, column %(column)s: %(reason)s).",
                line=exc.lineno,
                column=exc.colno,
                reason=exc.msg,
            )
        ]
        return _plugins_page(form, 422)
    instrument_id = form.instrument.data
    try:
        portal().engine.install_wording(instrument_id, wording)
    except WordingError as exc:
        form.wording.errors = [_("The wording does not fit %(id)s: %(reason)s", id=instrument_id, reason=exc)]
        return _plugins_page(form, 422)
    session = db_session()
    placeholder = bool(isinstance(wording, dict) and wording.get("placeholder"))
    record(session, actor(), "wording.install", f"instrument:{instrument_id}", address(), placeholder=placeholder)
    session.commit()
    return redirect(url_for("admin.plugins", installed=instrument_id))


# -- exports -----------------------------------------------------------------------


LATEST_DATE = date(9998, 12, 31)  # one more day must still be a date
MAX_AUDIT_PAGE = 1_000_000


def _sensible_date(form: Any, field: Any) -> None:
    if field.data is not None and field.data > LATEST_DATE:
        raise v.ValidationError(_("Use a date up to 9998-12-31."))


class ExportForm(StaffForm):
    format = wtforms.SelectField(_l("Format"), choices=[], validate_choice=True)
    instruments = wtforms.SelectMultipleField(_l("Instruments (none chosen: all)"), choices=[], validate_choice=True)
    since = wtforms.DateField(_l("Submitted on or after"), [v.Optional(), _sensible_date], format="%Y-%m-%d")
    until = wtforms.DateField(_l("Submitted on or before"), [v.Optional(), _sensible_date], format="%Y-%m-%d")
    identifying = wtforms.BooleanField(_l("Include display names (identifying)"))


def _export_form() -> Any:
    engine = portal().engine
    form = make_form(ExportForm)
    form.format.choices = choices((e.name, f"{e.title} (.{e.extension})") for e in list_exporters(engine))
    form.instruments.choices = choices((i.id, i.short_title) for i in sorted(engine.instruments, key=lambda i: i.id))
    return form


@bp.get("/exports")
@allow("admin")
def exports() -> Any:
    return render_template("admin/exports.html", form=_export_form())


@bp.post("/exports")
@allow("admin")
def download_export() -> Any:
    form = _export_form()
    if not form.validate():
        return render_template("admin/exports.html", form=form), form_status(form)
    since, until = form.since.data, form.until.data
    if since and until and since > until:
        form.until.errors = [_("This date is before the 'on or after' date.")]
        return render_template("admin/exports.html", form=form), 422
    selection = ExportSelection(
        instruments=tuple(form.instruments.data or ()),
        since=datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None,
        until=datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1) if until else None,
        identifying=bool(form.identifying.data),
    )
    state = portal()
    try:
        plan, chunks = iter_export(
            state.sessions, state.engine, form.format.data, selection, actor=actor(), address=address()
        )
    except ExportError as exc:
        form.format.errors = [str(exc)]
        return render_template("admin/exports.html", form=form), 422
    return Response(
        stream_with_context(chunks),
        mimetype=plan.exporter.media_type,
        headers={"Content-Disposition": f'attachment; filename="{plan.filename}"'},
    )


# -- audit trail -------------------------------------------------------------------


@bp.get("/audit")
@allow("admin", "auditor")
def audit() -> Any:
    session = db_session()
    args = request.args
    query = sa.select(AuditEntry)
    filters: dict[str, str] = {}
    for name, column in (("actor", AuditEntry.actor), ("action", AuditEntry.action), ("target", AuditEntry.target)):
        value = args.get(name, "").strip()[:128]
        if value:
            filters[name] = value
            query = query.where(column.contains(value, autoescape=True))
    problems = []
    for name in ("since", "until"):
        value = args.get(name, "").strip()
        if not value:
            continue
        try:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            problems.append(_("%(field)s: '%(value)s' is not a date in the form YYYY-MM-DD.", field=name, value=value))
            continue
        if day.date() > LATEST_DATE:
            problems.append(_("%(field)s: use a date up to 9998-12-31.", field=name))
            continue
        filters[name] = value
        query = (
            query.where(AuditEntry.at >= day)
            if name == "since"
            else query.where(AuditEntry.at < day + timedelta(days=1))
        )
    try:
        page = max(1, int(args.get("page", "1")))
    except ValueError:
        problems.append(_("page: must be a whole number."))
        page = 1
    if page > MAX_AUDIT_PAGE:
        problems.append(_("page: must be at most %(max)s.", max=MAX_AUDIT_PAGE))
        page = 1
    if problems:
        return render_template(
            "admin/audit.html", entries=[], filters=filters, problems=problems, page=1, more=False
        ), 422
    rows = session.scalars(
        query.order_by(AuditEntry.id.desc()).offset((page - 1) * AUDIT_PAGE_SIZE).limit(AUDIT_PAGE_SIZE + 1)
    ).all()
    record(session, actor(), "audit.view", None, address(), filters=filters, page=page)
    session.commit()
    return render_template(
        "admin/audit.html",
        entries=rows[:AUDIT_PAGE_SIZE],
        more=len(rows) > AUDIT_PAGE_SIZE,
        filters=filters,
        problems=[],
        page=page,
    )
