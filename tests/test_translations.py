"""Languages: the portal's catalogs are complete and compiled, and forms follow the assignment's language."""

from __future__ import annotations

import gettext
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from plugin_support import InstrumentFiles

from core.models import Client, Response
from core.responses import create_assignment

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "web" / "translations"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None, "N_": None}
LANGUAGES = ["de", "es"]


def extracted_catalog() -> Catalog:
    """Every marked message in the code and templates, extracted as ``pybabel extract -F babel.cfg`` does."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def msgids(catalog: Catalog) -> set[Any]:
    return {message.id for message in catalog if message.id}


@pytest.fixture(scope="module")
def extracted() -> Catalog:
    return extracted_catalog()


def po_catalog(language: str) -> Catalog:
    with open(TRANSLATIONS / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return read_po(handle, locale=language)


def test_message_template_is_up_to_date(extracted):
    with open(TRANSLATIONS / "messages.pot", "rb") as handle:
        template = read_po(handle)
    assert msgids(extracted) - msgids(template) == set(), "run the pybabel extract command in babel.cfg"
    assert msgids(template) - msgids(extracted) == set(), "messages.pot holds messages no longer in the code"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_marked_message_is_translated_in_each_catalog(extracted, language):
    catalog = po_catalog(language)
    missing = msgids(extracted) - msgids(catalog)
    assert not missing, f"{language}: not in the catalog (pybabel update, then translate): {sorted(map(str, missing))}"
    untranslated = [m.id for m in catalog if m.id and (m.fuzzy or not all(m.string if m.pluralizable else [m.string]))]
    assert not untranslated, f"{language}: untranslated or fuzzy: {untranslated}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_the_placeholders_of_their_message(language):
    problems = []
    for message in po_catalog(language):
        if not message.id:
            continue
        ids = message.id if message.pluralizable else (message.id,)
        strings = message.string if message.pluralizable else (message.string,)
        wanted = set(re.findall(r"%\(\w+\)[sd]", ids[-1]))
        for string in strings:
            if set(re.findall(r"%\(\w+\)[sd]", string)) != wanted:
                problems.append((ids[0], string))
    assert not problems


def compiled_messages(mo_file: BinaryIO) -> tuple[str | None, dict[Any, str]]:
    """What a compiled catalog translates: its Plural-Forms rule and msgid -> msgstr (``(msgid, n)`` for plurals).

    The header entry (msgid "") is left out: its Generated-By and dates describe the Babel version and the day
    the catalog was compiled, not a translation. The plural rule stays, because ngettext picks strings with it.
    """
    translations = gettext.GNUTranslations(mo_file)
    messages = {key: text for key, text in translations._catalog.items() if key != ""}
    return translations.info().get("plural-forms"), messages


def compile_catalog(catalog: Catalog) -> io.BytesIO:
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return compiled


def stale_messages(committed: BinaryIO, fresh: BinaryIO) -> list[str]:
    """How the committed .mo differs from compiling the .po now, one line per message (empty when it matches)."""
    committed_rule, committed_messages = compiled_messages(committed)
    fresh_rule, fresh_messages = compiled_messages(fresh)
    problems = [f"Plural-Forms {committed_rule!r}, the .po says {fresh_rule!r}"] if committed_rule != fresh_rule else []
    for key in sorted(committed_messages.keys() | fresh_messages.keys(), key=str):
        if key not in fresh_messages:
            problems.append(f"{key!r}: no longer in the .po")
        elif key not in committed_messages:
            problems.append(f"{key!r}: not compiled")
        elif committed_messages[key] != fresh_messages[key]:
            problems.append(f"{key!r}: compiled {committed_messages[key]!r}, the .po says {fresh_messages[key]!r}")
    return problems


@pytest.mark.parametrize("language", LANGUAGES)
def test_compiled_catalog_matches_its_po_file(language):
    """The committed .mo translates what compiling the .po gives now (run ``pybabel compile -d web/translations``)."""
    with open(TRANSLATIONS / language / "LC_MESSAGES" / "messages.mo", "rb") as committed:
        problems = stale_messages(committed, compile_catalog(po_catalog(language)))
    assert not problems, f"{language}: run pybabel compile -d web/translations:\n" + "\n".join(problems)


def test_catalog_check_ignores_who_compiled_it_but_not_a_changed_translation():
    """Only messages count: a header from another day and translator passes, a stale msgstr or plural rule fails."""
    catalog = po_catalog("de")
    committed = compile_catalog(catalog).getvalue()
    restamped = po_catalog("de")
    restamped.creation_date = restamped.revision_date = datetime(2001, 2, 3, tzinfo=UTC)
    restamped.last_translator = "someone else"
    assert stale_messages(io.BytesIO(committed), compile_catalog(restamped)) == []

    changed = po_catalog("de")
    message = next(m for m in changed if m.id and not m.pluralizable)
    message.string += " (revised)"
    assert stale_messages(io.BytesIO(committed), compile_catalog(changed)) == [
        f"{message.id!r}: compiled {catalog[message.id].string!r}, the .po says {message.string!r}"
    ]

    new_rule = po_catalog("de")
    new_rule.mime_headers = [("Plural-Forms", "nplurals=2; plural=(n > 1);")]
    assert len(stale_messages(io.BytesIO(committed), compile_catalog(new_rule))) == 1


def test_every_configured_language_has_a_catalog(app):
    for language in app.config["LANGUAGES"]:
        if language != "en":
            assert (TRANSLATIONS / language / "LC_MESSAGES" / "messages.mo").is_file(), language


# --- pages in the assignment's language ----------------------------------------------------------------------------

TRANSLATED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Translation test",
    "type": "object",
    "required": ["tt_often", "tt_line"],
    "additionalProperties": False,
    "properties": {
        "tt_often": {
            "type": ["integer", "null"],
            "enum": [0, 1, None],
            "x-options": [{"value": 0, "label": "Rarely"}, {"value": 1, "label": "Frequently"}],
            "x-text": "English item text",
        },
        "tt_line": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 10,
            "multipleOf": 0.1,
            "x-widget": "vas",
            "x-text": "English line text",
            "x-anchors": ["English left", "English right"],
        },
    },
    "x-instrument": {
        "id": "ttest",
        "version": "1.0.0",
        "language": "en",
        "stem": "English stem",
        "citation": "Written for Rapportal's tests; the translated strings are placeholders, not instrument wording.",
        "licence": {"name": "test only", "notice": "test only", "wording_bundled": True},
    },
    "x-translations": {
        "de": {
            "title": "DE-TITLE",
            "stem": "DE-STEM",
            "items": {"tt_often": "DE-ITEM-1", "tt_line": "DE-ITEM-2"},
            "options": {"Rarely": "DE-OPTION-0", "Frequently": "DE-OPTION-1"},
            "anchors": {"tt_line": ["DE-LEFT", "DE-RIGHT"]},
        }
    },
}


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "ttest.json"
    path.write_text(json.dumps(TRANSLATED), encoding="utf-8")
    return {**app_config, "EXTRA_PLUGINS": [InstrumentFiles(path)]}


def make_link(app: Any, instrument_id: str, language: str) -> str:
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        client = Client(code=f"LANG-{language}-{instrument_id}")
        session.add(client)
        _assignment, token = create_assignment(session, state.engine, client, instrument_id, language=language)
    return token


def html_lang(html: str) -> str:
    return re.search(r'<html lang="([^"]+)"', html).group(1)


def test_form_follows_the_assignment_language_for_instrument_and_portal_text(app, client):
    html = client.get(f"/a/{make_link(app, 'ttest', 'de')}").get_data(as_text=True)
    assert html_lang(html) == "de"
    for text in ("DE-TITLE", "DE-STEM", "DE-ITEM-1", "DE-ITEM-2", "DE-OPTION-0", "DE-OPTION-1", "DE-LEFT", "DE-RIGHT"):
        assert text in html
    for text in ("English item text", "English stem", "Rarely", "English left", "Translation test"):
        assert text not in html
    assert "Meine Antworten senden" in html and "Send my answers" not in html
    assert "Noch nicht markiert" in html  # the VAS's own text comes from the portal catalog
    assert ' lang="en"' not in html  # everything on the page is German


def test_the_browser_language_does_not_override_the_assignment_language(app, client):
    token = make_link(app, "ttest", "de")
    html = client.get(f"/a/{token}", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert html_lang(html) == "de"
    assert "DE-TITLE" in html


def test_english_assignment_shows_the_definition_wording(app, client):
    html = client.get(f"/a/{make_link(app, 'ttest', 'en')}").get_data(as_text=True)
    assert html_lang(html) == "en"
    assert "English item text" in html and "Rarely" in html and "DE-ITEM-1" not in html
    assert "Send my answers" in html


def test_untranslated_instrument_wording_is_marked_with_its_own_language(app, client):
    """Portal text in Spanish; PHQ-9 has no Spanish translation here, so its wording is marked lang="en"."""
    html = client.get(f"/a/{make_link(app, 'phq9', 'es')}").get_data(as_text=True)
    assert html_lang(html) == "es"
    assert "Enviar mis respuestas" in html
    assert re.search(r'<h1 lang="en">', html)
    assert re.search(r'<section class="section" lang="en"', html)


def test_errors_and_receipt_are_in_the_assignment_language(app, client):
    token = make_link(app, "ttest", "de")
    page = client.get(f"/a/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = client.post(f"/a/{token}", data={"csrf_token": csrf, "tt_often": "1", "tt_line": "11"})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "Markieren Sie einen Punkt von 0 bis 10." in html
    assert "1 Frage braucht Ihre Aufmerksamkeit:" in html
    assert "checked" in html  # the chosen option is kept
    done = client.post(f"/a/{token}", data={"csrf_token": csrf, "tt_often": "1", "tt_line": "7,3"})
    assert done.status_code == 200
    assert "Danke: Ihre Antworten sind gespeichert" in done.get_data(as_text=True)
    with app.extensions["rapportal"].sessions() as session:
        [response] = session.scalars(sa.select(Response)).all()
    assert response.answers == {"tt_often": 1, "tt_line": 7.3}
    assert response.language == "de"


@pytest.mark.parametrize(
    ("language", "expected"),
    [("de", "Dieser Link ist abgelaufen"), ("es", "Este enlace ha caducado")],
)
def test_plain_pages_are_translated(app, client, language, expected):
    token = make_link(app, "phq9", language)
    with app.extensions["rapportal"].sessions.begin() as session:
        from core.models import Assignment

        assignment = session.scalar(sa.select(Assignment))
        assignment.expires_at = assignment.created_at.replace(year=2000)
    html = client.get(f"/a/{token}").get_data(as_text=True)
    assert expected in html and html_lang(html) == language


def test_unknown_link_page_follows_the_browser_language(client):
    html = client.get("/a/unknown", headers={"Accept-Language": "es-ES,es;q=0.9"}).get_data(as_text=True)
    assert html_lang(html) == "es"
    assert "Esta página o enlace no es válido" in html


# --- staff pages in the browser's language -------------------------------------------------------------------------


def test_caseload_follows_the_browser_language(app):
    from tests.staff_support import make_world, sign_in

    make_world(app)
    browser = app.test_client()
    browser.environ_base["HTTP_ACCEPT_LANGUAGE"] = "de-DE,de;q=0.9,en;q=0.5"
    assert sign_in(browser, "ann").status_code == 302
    html = browser.get("/caseload").get_data(as_text=True)
    assert html_lang(html) == "de"
    for text in (
        "Ihre Fallübersicht",
        "Ihnen zugewiesene Klient:innen",
        "Offene Warnungen",
        "Abmelden",
        "Behandelnde:r",
    ):
        assert text in html, text
    assert "C-1" in html and "Client One" in html  # codes and names stay as they are
    assert "Your caseload" not in html and "Sign out" not in html


def test_login_page_and_its_refusal_follow_the_browser_language(app):
    from tests.staff_support import csrf, make_world

    make_world(app)
    browser = app.test_client()
    browser.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    page = browser.get("/login").get_data(as_text=True)
    assert html_lang(page) == "es"
    assert "Iniciar sesión" in page and "Nombre de usuario" in page and "Contraseña" in page
    assert "Sign in" not in page and "Username" not in page
    refused = browser.post("/login", data={"csrf_token": csrf(page), "username": "ann", "password": "wrong"})
    assert refused.status_code == 401
    assert "El nombre de usuario o la contraseña no son correctos." in refused.get_data(as_text=True)
    empty = browser.post("/login", data={"csrf_token": csrf(page), "username": "", "password": ""})
    assert empty.status_code == 422
    assert "Introduzca su nombre de usuario." in empty.get_data(as_text=True)
