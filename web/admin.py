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
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from wtforms import validators as v

from core import WordingError
from core.accounts import LAST_ADMIN, ROLES, AccountError, clear_sign_in_throttle, create_user, update_user
from core.audit import browse_audit
from core.clients import clinicians, create_client, list_clients, managed_client, unassigned_clients, update_client
from core.errors import InvalidInput, NotFound
from core.export import list_exporters
from core.export_jobs import ExportFilters, export_status, open_export, recent_exports, start_export
from core.jobs import STATUSES as JOB_STATUSES
from core.jobs import browse_jobs
from core.models import ClientClinician, User
from core.notify import update_contact
from core.plugins import describe_plugins
from core.sites import (
    create_site,
    managed_sites,
    move_client,
    set_supervised,
    set_user_sites,
    site_counts,
    site_ids_of,
    sites,
    supervised_ids,
)
from core.wording import install_wording as store_wording  # the view below is install_wording
from web.access import (
    ROLE_TITLES,
    StaffForm,
    actor,
    address,
    allow,
    choices,
    core_message,
    current_user,
    form_problem,
    form_status,
    make_form,
)
from web.state import db_session, portal
from web.texts import lazy_gettext as _l

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _clinician_choices(blank: bool = True) -> list[tuple[str, str]]:
    options = [(str(u.id), f"{u.display_name} ({u.username})") for u in clinicians(db_session())]
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


def _account_problem(error: AccountError) -> str:
    """A refused account change in the page's language."""
    if error.message == LAST_ADMIN:
        return _("This is the last active administrator: add another one first.")
    return core_message(error.message)


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
            try:
                update_user(
                    session,
                    target,
                    display_name=form.display_name.data,
                    role=form.role.data,
                    active=form.active.data,
                    password=form.password.data or None,
                    actor=actor(),
                    address=address(),
                )
            except AccountError as exc:
                form[exc.field].errors = [_account_problem(exc)]
            else:
                session.commit()
                return redirect(url_for("admin.users", updated=target.username))
        status = form_status(form)
    return _account_page(target, form=form, status=status)


@bp.post("/users/<int:user_id>/clear-sign-in-waits")
@allow("admin")
def clear_sign_in_waits(user_id: int) -> Any:
    session = db_session()
    target = session.get(User, user_id)
    if target is None:
        abort(404)
    form = make_form(StaffForm)
    if not form.validate():
        return form_problem(form)
    clear_sign_in_throttle(session, target, actor(), address())
    session.commit()
    return redirect(url_for("admin.user", user_id=target.id, cleared=1))


def _site_problem(error: InvalidInput) -> str:
    """A refused site change (core.sites) in the page's language."""
    messages = {
        "Use 1 to 128 characters.": _("Use 1 to 128 characters."),
        "A site with this name exists already.": _("A site with this name exists already."),
        "Choose existing sites only.": _("Choose existing sites only."),
        "Choose clinicians only.": _("Choose clinicians only."),
        "Only a supervisor can have clinicians assigned.": _("Only a supervisor can have clinicians assigned."),
    }
    return messages.get(error.message, core_message(error.message))


def _portal_wide() -> bool:
    """Whether the signed-in administrator belongs to no site (only they manage sites and memberships)."""
    return not site_ids_of(db_session(), current_user())


class UserSitesForm(StaffForm):
    sites = wtforms.SelectMultipleField(_l("Sites (none chosen: portal-wide)"), choices=[], validate_choice=True)


class SupervisedForm(StaffForm):
    clinicians = wtforms.SelectMultipleField(_l("Clinicians supervised"), choices=[], validate_choice=True)


def _user_sites_form(target: User, *, posted: bool = False) -> Any:
    """The sites form, bound to the request when ``posted``, else showing the target's sites."""
    session = db_session()
    form = make_form(UserSitesForm)
    form.sites.choices = choices((str(site.id), site.name) for site in sites(session))
    if not posted:
        form.process(formdata=None)  # another of the page's forms was sent: this one shows what is stored
        form.sites.data = [str(i) for i in site_ids_of(session, target)]
    return form


def _supervised_form(target: User, *, posted: bool = False) -> Any:
    """The supervision form, bound to the request when ``posted``, else showing the target's clinicians."""
    session = db_session()
    form = make_form(SupervisedForm)
    form.clinicians.choices = _clinician_choices(blank=False)
    if not posted:
        form.process(formdata=None)
        form.clinicians.data = [str(i) for i in supervised_ids(session, target)]
    return form


def _account_page(
    target: User,
    *,
    form: Any = None,
    sites_form: Any = None,
    supervised_form: Any = None,
    status: int = 200,
) -> Any:
    """The account page; each of its forms is the one given (refused, with errors) or a fresh one."""
    session = db_session()
    if form is None:
        form = make_form(EditUserForm)
        form.process(formdata=None, obj=target)
    target_sites = set(site_ids_of(session, target))
    supervised = set(supervised_ids(session, target)) if target.role == "supervisor" else set()
    page = render_template(
        "admin/user.html",
        form=form,
        target=target,
        clear_form=make_form(StaffForm),
        cleared=request.args.get("cleared") == "1",
        portal_wide=_portal_wide(),
        sites_form=sites_form or _user_sites_form(target),
        supervised_form=supervised_form or _supervised_form(target),
        site_names=[site.name for site in sites(session) if site.id in target_sites],
        supervised_names=[u.display_name for u in clinicians(session) if u.id in supervised],
        saved=request.args.get("saved"),
    )
    return page, status


def _save_for_account(user_id: int, make: Any, field: str, save: Any, saved: str, page_form: str) -> Any:
    """The account page's sites and supervision forms: parse, call ``save`` (core.sites), redirect or re-show."""
    session = db_session()
    target = session.get(User, user_id)
    if target is None:
        abort(404)
    if not _portal_wide():
        abort(403)
    form = make(target, posted=True)
    if form.validate():
        try:
            save(session, target, [int(i) for i in form[field].data or []], actor=actor(), address=address())
        except InvalidInput as exc:
            session.rollback()
            form[field].errors = [_site_problem(exc)]
        else:
            session.commit()
            return redirect(url_for("admin.user", user_id=target.id, saved=saved), 303)
    return _account_page(target, status=form_status(form), **{page_form: form})


@bp.post("/users/<int:user_id>/sites")
@allow("admin")
def user_sites(user_id: int) -> Any:
    return _save_for_account(user_id, _user_sites_form, "sites", set_user_sites, "sites", "sites_form")


@bp.post("/users/<int:user_id>/supervised")
@allow("admin")
def user_supervised(user_id: int) -> Any:
    return _save_for_account(user_id, _supervised_form, "clinicians", set_supervised, "supervised", "supervised_form")


# -- sites -----------------------------------------------------------------------


class SiteForm(StaffForm):
    name = wtforms.StringField(_l("Name of the site"))


@bp.route("/sites", methods=["GET", "POST"])
@allow("admin")
def site_list() -> Any:
    """Every site with its counts for a portal-wide administrator; a site-limited one sees theirs, read-only."""
    session = db_session()
    portal_wide = _portal_wide()
    form = make_form(SiteForm)
    status = 200
    if request.method == "POST":
        if not portal_wide:
            abort(403)
        if form.validate():
            try:
                site = create_site(session, form.name.data or "", actor=actor(), address=address())
            except InvalidInput as exc:
                session.rollback()
                form.name.errors = [_site_problem(exc)]
            else:
                session.commit()
                return redirect(url_for("admin.site_list", created=site.name), 303)
        status = form_status(form)
    shown = managed_sites(session, current_user())
    return render_template(
        "admin/sites.html",
        form=form,
        sites=shown,
        counts=site_counts(session, shown),
        portal_wide=portal_wide,
        created=request.args.get("created"),
    ), status


# -- clients ---------------------------------------------------------------------


class EditClientForm(StaffForm):
    display_name = wtforms.StringField(_l("Display name (optional, identifying)"), [v.Optional(), v.Length(max=128)])
    language = wtforms.SelectField(_l("Language of the questionnaires"), choices=[], validate_choice=True)
    clinician = wtforms.SelectField(_l("Main clinician"), choices=[], validate_choice=True)
    further = wtforms.SelectMultipleField(_l("Further clinicians"), choices=[], validate_choice=True)
    site = wtforms.SelectField(_l("Site"), choices=[], validate_choice=True)


class ContactForm(StaffForm):
    """A client's contact details and consent to contact (core.notify.update_contact)."""

    email = wtforms.EmailField(_l("E-mail address"), [v.Optional(), v.Length(max=254)])
    phone = wtforms.StringField(_l("Mobile phone (international form, +49 ...)"), [v.Optional(), v.Length(max=32)])
    consent = wtforms.BooleanField(_l("The client agreed to receive their questionnaire links and reminders"))
    time_zone = wtforms.StringField(_l("Time zone (empty: the portal's default)"), [v.Optional(), v.Length(max=64)])


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
    sites = managed_sites(db_session(), current_user())
    form.site.choices = choices((str(site.id), site.name) for site in sites)
    if not form.site.data and sites:  # not sent: the first of the administrator's sites
        form.site.data = str(sites[0].id)
    return form


def _client_fields(form: EditClientForm) -> dict[str, Any]:
    """What the client forms say, as the arguments of core.clients.create_client / update_client."""
    return {
        "display_name": form.display_name.data,
        "language": form.language.data,
        "languages": current_app.config["LANGUAGES"],
        "clinician_id": int(form.clinician.data) if form.clinician.data else None,
        "further_ids": [int(i) for i in form.further.data or []],
        "actor": actor(),
        "address": address(),
    }


def _refused(form: Any, exc: InvalidInput) -> None:
    form[exc.field].errors = [core_message(exc.message)]


@bp.route("/clients", methods=["GET", "POST"])
@allow("admin")
def clients() -> Any:
    session = db_session()
    form = _client_form(ClientForm)
    status = 200
    if request.method == "POST":
        if form.validate():
            try:
                client = create_client(
                    session, code=form.code.data, site_id=int(form.site.data), **_client_fields(form)
                )
            except InvalidInput as exc:
                session.rollback()
                _refused(form, exc)
            else:
                session.commit()
                return redirect(url_for("admin.clients", created=client.code), 303)
        status = form_status(form)
    rows = list_clients(session, viewer=current_user(), actor=actor(), address=address())
    session.commit()
    further = {}
    for client_id, name in session.execute(
        sa.select(ClientClinician.client_id, User.display_name).join(User, User.id == ClientClinician.user_id)
    ):
        further.setdefault(client_id, []).append(name)
    return render_template(
        "admin/clients.html",
        form=form,
        rows=rows,
        further=further,
        unassigned=unassigned_clients(session, current_user()),
        created=request.args.get("created"),
    ), status


@bp.route("/clients/<int:client_id>", methods=["GET", "POST"])
@allow("admin")
def client(client_id: int) -> Any:
    session = db_session()
    try:
        found = managed_client(session, current_user(), client_id)
    except NotFound:
        abort(404)
    form = _client_form(EditClientForm)
    if "site" not in request.form:
        form.site.data = str(found.site_id)  # a form without the field keeps the client where they are
    if request.method == "GET":
        form.display_name.data = found.display_name
        form.language.data = found.language
        form.clinician.data = str(found.clinician_id or "")
        form.site.data = str(found.site_id)
        form.further.data = [
            str(i)
            for i in session.scalars(sa.select(ClientClinician.user_id).where(ClientClinician.client_id == found.id))
        ]
        return render_template("admin/client.html", form=form, client=found, contact_form=_contact_form(found))
    if form.validate():
        try:
            update_client(session, found, **_client_fields(form))
            if int(form.site.data) != found.site_id:
                move_client(session, current_user(), found, int(form.site.data), actor=actor(), address=address())
        except InvalidInput as exc:
            session.rollback()
            _refused(form, exc)
        else:
            session.commit()
            return redirect(url_for("admin.clients", updated=found.code), 303)
    return render_template(
        "admin/client.html", form=form, client=found, contact_form=_contact_form(found)
    ), form_status(form)


def _contact_form(client: Any, form: Any = None) -> Any:
    if form is not None:
        return form
    form = make_form(ContactForm)
    form.email.data, form.phone.data = client.email, client.phone
    form.consent.data, form.time_zone.data = client.contact_consent, client.time_zone
    return form


@bp.post("/clients/<int:client_id>/contact")
@allow("admin")
def client_contact(client_id: int) -> Any:
    """Change a client's contact details and consent to contact; audited without the values."""
    session = db_session()
    try:
        found = managed_client(session, current_user(), client_id)
    except NotFound:
        abort(404)
    contact = make_form(ContactForm)
    if contact.validate():
        try:
            update_contact(
                session,
                found,
                email=contact.email.data,
                phone=contact.phone.data,
                consent=bool(contact.consent.data),
                time_zone=contact.time_zone.data,
                actor=actor(),
                address=address(),
            )
        except InvalidInput as exc:
            session.rollback()
            _refused(contact, exc)
        else:
            session.commit()
            return redirect(url_for("admin.client", client_id=found.id, contact=1), 303)
    form = _client_form(EditClientForm)
    form.display_name.data, form.language.data = found.display_name, found.language
    form.clinician.data, form.site.data = str(found.clinician_id or ""), str(found.site_id)
    return render_template("admin/client.html", form=form, client=found, contact_form=contact), form_status(contact)


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
    session = db_session()
    try:
        store_wording(session, portal().engine, instrument_id, wording, actor=actor(), address=address())
    except WordingError as exc:
        session.rollback()
        form.wording.errors = [_("The wording does not fit %(id)s: %(reason)s", id=instrument_id, reason=exc)]
        return _plugins_page(form, 422)
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
    return _exports_page(_export_form())


@bp.post("/exports")
@allow("admin")
def start_export_view() -> Any:
    form = _export_form()
    if not form.validate():
        return _exports_page(form, form_status(form))
    since, until = form.since.data, form.until.data
    if since and until and since > until:
        form.until.errors = [_("This date is before the 'on or after' date.")]
        return _exports_page(form, 422)
    filters = ExportFilters(
        instruments=tuple(form.instruments.data or ()),
        since=since,
        until=until,
        identifying=bool(form.identifying.data),
    )
    session = db_session()
    try:
        started = start_export(
            session, current_user(), portal().jobs, exporter=form.format.data, filters=filters, address=address()
        )
    except InvalidInput as exc:
        session.rollback()
        field = form.format if exc.field == "exporter" else getattr(form, exc.field or "", form.format)
        field.errors = [core_message(exc.message)]
        return _exports_page(form, 422)
    session.commit()
    return redirect(url_for("admin.export_progress", export_id=started.id), 303)


EXPORT_STATUS_TITLES = {
    "queued": _l("Waiting for a worker"),
    "running": _l("Being written"),
    "done": _l("Ready to download"),
    "failed": _l("Failed"),
}


def export_status_title(export: Any) -> str:
    if export.status == "done" and export.expired:
        return str(_l("Expired"))
    return str(EXPORT_STATUS_TITLES.get(export.status, export.status))


def _exports_page(form: Any, status: int = 200) -> Any:
    started = recent_exports(db_session(), current_user())
    page = render_template("admin/exports.html", form=form, exports=started, export_status_title=export_status_title)
    return page, status


@bp.get("/exports/<int:export_id>")
@allow("admin")
def export_progress(export_id: int) -> Any:
    export = export_status(db_session(), current_user(), export_id)
    return render_template(
        "admin/export_progress.html", export=export, percent=_percent(export), export_status_title=export_status_title
    )


def _percent(export: Any) -> int | None:
    if export.status == "done":
        return 100
    if not export.rows_expected:
        return None
    return min(99, int(100 * export.rows_written / export.rows_expected))


@bp.get("/exports/<int:export_id>/download")
@allow("admin")
def download_export(export_id: int) -> Any:
    session = db_session()
    path, filename, media_type = open_export(session, current_user(), export_id, address=address())
    session.commit()
    return send_file(path, mimetype=media_type, as_attachment=True, download_name=filename, max_age=0)


# -- background jobs ---------------------------------------------------------------


@bp.get("/jobs")
@allow("admin")
def jobs() -> Any:
    status = request.args.get("status", "").strip() or None
    session = db_session()
    try:
        rows = browse_jobs(session, current_user(), status=status)
    except InvalidInput as exc:
        problems = [_("status: %(reason)s", reason=exc.message)]
        return _jobs_page([], None, problems), 422
    return _jobs_page(rows, status, [])


JOB_STATUS_TITLES = {
    "queued": _l("Queued"),
    "running": _l("Running"),
    "done": _l("Done"),
    "failed": _l("Failed"),
}


def _jobs_page(rows: list[Any], status: str | None, problems: list[str]) -> str:
    titles = {name: str(title) for name, title in JOB_STATUS_TITLES.items()}
    return render_template(
        "admin/jobs.html", jobs=rows, status=status, statuses=JOB_STATUSES, problems=problems, job_status_titles=titles
    )


# -- audit trail -------------------------------------------------------------------


@bp.get("/audit")
@allow("admin", "auditor")
def audit() -> Any:
    session = db_session()
    args = request.args
    contains = {name: args.get(name, "").strip()[:128] for name in ("actor", "action", "target")}
    contains = {name: value for name, value in contains.items() if value}
    shown: dict[str, str] = dict(contains)
    bounds: dict[str, datetime] = {}
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
        shown[name] = value
        bounds["since" if name == "since" else "before"] = day if name == "since" else day + timedelta(days=1)
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
            "admin/audit.html", entries=[], filters=shown, problems=problems, page=1, more=False
        ), 422
    entries, more = browse_audit(
        session,
        contains=contains,
        page=page,
        viewer=actor(),
        viewer_user=current_user(),
        address=address(),
        **bounds,
    )
    session.commit()
    return render_template("admin/audit.html", entries=entries, more=more, filters=shown, problems=[], page=page)
