"""Caseload, clients, episodes with measurement plans, sessions and their links, charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from staff_support import (
    ORS_ANSWERS,
    SRS_LOW,
    answer,
    csrf,
    links_on,
    make_world,
    page_token,
    release_latest,
    sign_in,
    start_session,
)

from core.models import Assignment, Client, ClientClinician, Episode
from core.plans import BUILTIN_PLANS, PlanError, due_in_session, parse_plan
from web.clinician import _cell


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


# -- plans -------------------------------------------------------------------------


def test_pcoms_plan_sends_ors_first_and_srs_last_every_session():
    rules = BUILTIN_PLANS["pcoms"][1]
    for number in (1, 2, 7):
        assert [r["instrument"] for r in due_in_session(rules, number)] == ["ors", "srs"]


def test_phq9_every_fourth_session_starts_with_the_first():
    rules = BUILTIN_PLANS["pcoms-phq9"][1]
    with_phq9 = [n for n in range(1, 13) if "phq9" in [r["instrument"] for r in due_in_session(rules, n)]]
    assert with_phq9 == [1, 5, 9]
    assert [r["instrument"] for r in due_in_session(rules, 5)] == ["ors", "phq9", "srs"]


def test_custom_plan_text_is_parsed():
    rules = parse_plan("ors start every 1\nsrs end every 1; wai-sr end every 3 from 3", {"ors", "srs", "wai-sr"})
    assert [r["instrument"] for r in due_in_session(rules, 3)] == ["ors", "srs", "wai-sr"]
    assert [r["instrument"] for r in due_in_session(rules, 4)] == ["ors", "srs"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no rules"),
        ("xyz start every 1", "no instrument 'xyz'"),
        ("ors middle every 1", "'start' or 'end'"),
        ("ors start every two", "whole numbers"),
        ("ors start every 0", "1 to 52"),
        ("ors start often", "write it as"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_rule(text, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(text, {"ors"})


# -- caseload ------------------------------------------------------------------------


def test_caseload_lists_only_the_clinicians_own_clients(ann):
    page = ann.get("/caseload").text
    assert "C-1" in page and "C-2" not in page


def test_a_further_clinician_sees_the_client_too(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        session.add(ClientClinician(client_id=world.client_id, user_id=world.users["bob"]))
    bob = app.test_client()
    sign_in(bob, "bob")
    assert "C-1" in bob.get("/caseload").text
    assert bob.get(f"/clients/{world.client_id}").status_code == 200


def test_another_clinicians_client_is_not_found(ann, world):
    assert ann.get(f"/clients/{world.other_client_id}").status_code == 404
    assert ann.get("/clients/99999").status_code == 404


def test_admin_adds_a_client_with_clinicians(app, world):
    admin = app.test_client()
    sign_in(admin, "admin")
    token = page_token(admin, "/admin/clients")
    response = admin.post(
        "/admin/clients",
        data={
            "csrf_token": token,
            "code": "C-9",
            "display_name": "<b>Nine</b>",
            "clinician": str(world.users["ann"]),
            "further": [str(world.users["bob"])],
        },
    )
    assert response.status_code == 303
    listing = admin.get("/admin/clients").text
    assert "&lt;b&gt;Nine&lt;/b&gt;" in listing and "<b>Nine</b>" not in listing
    with app.extensions["rapportal"].sessions() as session:
        client = session.scalar(sa.select(Client).where(Client.code == "C-9"))
        assert client.clinician_id == world.users["ann"]
        assert (
            session.scalar(sa.select(ClientClinician.user_id).where(ClientClinician.client_id == client.id))
            == (world.users["bob"])
        )
    again = admin.post("/admin/clients", data={"csrf_token": token, "code": "C-9", "clinician": ""})
    assert again.status_code == 422 and "exists already" in again.text
    bad = admin.post("/admin/clients", data={"csrf_token": token, "code": "has space", "clinician": ""})
    assert bad.status_code == 422 and "Use letters, digits" in bad.text


def test_admin_reassigns_a_client(app, world):
    admin = app.test_client()
    sign_in(admin, "admin")
    path = f"/admin/clients/{world.client_id}"
    token = page_token(admin, path)
    data = {"csrf_token": token, "clinician": str(world.users["bob"]), "language": "en"}
    assert admin.post(path, data=data).status_code == 303
    ann = app.test_client()
    sign_in(ann, "ann")
    assert ann.get(f"/clients/{world.client_id}").status_code == 404


# -- episodes, sessions and links -------------------------------------------------------


def test_new_episode_keeps_a_copy_of_its_plan_and_ends_the_previous(app, ann, world):
    token = page_token(ann, f"/clients/{world.client_id}")
    response = ann.post(
        f"/clients/{world.client_id}/episodes",
        data={"csrf_token": token, "plan": "custom", "custom": "phq9 start every 2", "title": "Second"},
    )
    assert response.status_code == 303
    with app.extensions["rapportal"].sessions() as session:
        episodes = session.scalars(sa.select(Episode).where(Episode.client_id == world.client_id)).all()
    assert episodes[0].ended_at is not None and episodes[1].ended_at is None
    assert episodes[1].plan == [{"instrument": "phq9", "moment": "start", "every": 2, "first": 1}]


def test_a_bad_custom_plan_is_refused_with_a_message(ann, world):
    token = page_token(ann, f"/clients/{world.client_id}")
    response = ann.post(
        f"/clients/{world.client_id}/episodes", data={"csrf_token": token, "plan": "custom", "custom": "abc start"}
    )
    assert response.status_code == 422 and "no instrument &#39;abc&#39;" in response.text


def test_starting_a_session_creates_its_assignments_and_shows_links_once(app, ann, world):
    response = start_session(ann, world.episode_id, world.client_id)
    assert response.status_code == 200 and response.request.path == "/sessions/1/links"
    links = links_on(response.text)
    assert set(links) == {"ors", "srs"}
    assert response.text.count("data:image/svg+xml") == 2  # a QR code for each, drawn locally
    assert response.headers["Cache-Control"] == "no-store"
    with app.extensions["rapportal"].sessions() as session:
        stored = session.scalars(sa.select(Assignment)).all()
    assert {a.instrument_id for a in stored} == {"ors", "srs"}
    for path in links.values():
        token = path.rsplit("/", 1)[1]
        assert all(token not in (a.token_hash or "") for a in stored)
    session_page = ann.get("/sessions/1").text
    assert not any(path in session_page for path in links.values())  # shown once only
    again = ann.get("/sessions/1/links", follow_redirects=True)  # a reload of the links page
    assert again.request.path == "/sessions/1" and not any(path in again.text for path in links.values())


def test_a_session_skips_instruments_without_licensed_wording(app):
    world = make_world(app)  # no licensed_wording fixture: ORS and SRS cannot be sent
    ann = app.test_client()
    sign_in(ann, "ann")
    response = start_session(ann, world.episode_id, world.client_id)
    assert links_on(response.text) == {}
    assert "licensed wording is not installed" in response.text


def test_a_custom_plan_session_sends_its_instruments(app, world):
    ann = app.test_client()
    sign_in(ann, "ann")
    token = page_token(ann, f"/clients/{world.client_id}")
    ann.post(
        f"/clients/{world.client_id}/episodes",
        data={"csrf_token": token, "plan": "custom", "custom": "phq9 start every 1; gad7 start every 1"},
    )
    with app.extensions["rapportal"].sessions() as session:
        episode_id = session.scalar(sa.select(sa.func.max(Episode.id)))
    response = start_session(ann, episode_id, world.client_id)
    assert set(links_on(response.text)) == {"phq9", "gad7"}


def test_reissuing_a_link_replaces_the_old_one(app, ann, world):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    with app.extensions["rapportal"].sessions() as session:
        ors_id = session.scalar(sa.select(Assignment.id).where(Assignment.instrument_id == "ors"))
    token = page_token(ann, "/sessions/1")
    response = ann.post(f"/assignments/{ors_id}/reissue", data={"csrf_token": token})
    assert response.status_code == 303 and response.location.endswith("/sessions/1/links?reissued=1")
    new = links_on(ann.get(response.location).text)["ors"]
    anonymous = app.test_client()
    assert anonymous.get(links["ors"]).status_code == 404
    assert anonymous.get(new).status_code == 200


def test_an_answered_link_cannot_be_reissued(app, ann, world):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    with app.extensions["rapportal"].sessions() as session:
        ors_id = session.scalar(sa.select(Assignment.id).where(Assignment.instrument_id == "ors"))
    token = page_token(ann, "/sessions/1")
    assert ann.post(f"/assignments/{ors_id}/reissue", data={"csrf_token": token}).status_code == 409


def test_forms_refuse_a_forged_csrf_token(ann, world):
    response = ann.post(f"/episodes/{world.episode_id}/sessions", data={"csrf_token": "1.forged"})
    assert response.status_code == 400 and "csrf_token" in response.text


# -- the client page -------------------------------------------------------------------


def chart_svg(page: str, chart_id: str) -> str:
    """The SVG of one chart on the client page."""
    start = page.index(f'id="{chart_id}"')
    return page[start : page.index("</svg>", start)]


def test_client_page_charts_ors_and_srs_each_with_its_cutoff_band_and_links(app, ann, world, engine):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    release_latest(app, ann)
    answer(app, links["srs"], SRS_LOW)
    page = ann.get(f"/clients/{world.client_id}").text
    ors, srs = chart_svg(page, "chart-ors-total"), chart_svg(page, "chart-srs-total")
    ors_points = re.findall(r'<a href="(/responses/\d+)" aria-label="([^"]+)"', ors)
    srs_points = re.findall(r'<a href="(/responses/\d+)" aria-label="([^"]+)"', srs)
    ors_flags = {flag.id: flag.label for flag in engine.instruments.get("ors").scoring.flags}
    srs_flags = {flag.id: flag.label for flag in engine.instruments.get("srs").scoring.flags}
    # both are past their cutoffs, and the SRS raised an alert: each point says so in the definition's words
    assert [label for _href, label in ors_points] == [f"ORS 18.5 (S1): {ors_flags['clinical_range']} (&lt;= 25)"]
    assert [label for _href, label in srs_points] == [
        f"SRS 32.0 (S1): {srs_flags['alliance_concern']} (&lt; 36); raised an alert (warning)"
    ]
    assert f"&lt;= 25: {ors_flags['clinical_range']}" in ors  # the cutoff line, from the threshold flag
    assert f"&lt; 36: {srs_flags['alliance_concern']}" in srs
    assert "first ORS 18.5 &#177; 5" in ors  # the reliable-change band around the first ORS ("±", as a reference)
    assert page.isascii()  # every character beyond ASCII as a reference (web.progress.ascii_html)
    for band in engine.instruments.get("ors").scoring.bands:
        assert f"<title>{band.label}</title>" in ors  # band shading
    # the text alternative: a row per session, each value linked to its response with its facts, escaped
    table = page[
        page.index('id="chart-ors-total-data"') : page.index("</table>", page.index('id="chart-ors-total-data"'))
    ]
    (ors_href, _label), (srs_href, _label) = ors_points[0], srs_points[0]
    assert re.findall(r"<tr><th scope=\"row\">.*</tr>", table) == [
        f'<tr><th scope="row">S1</th><td><a href="{ors_href}">18.5</a> '
        f'<span class="point-facts">{ors_flags["clinical_range"]} (&lt;= 25)</span></td></tr>'
    ]
    srs_table = page[page.index('id="chart-srs-total-data"') :]
    assert (
        f'<td><a href="{srs_href}">32.0</a> <span class="point-facts">{srs_flags["alliance_concern"]} (&lt; 36); '
        "raised an alert (warning)</span></td>" in srs_table
    )
    for href, _label in ors_points + srs_points:
        assert ann.get(href).status_code == 200
    assert "No answers yet" not in page


def test_the_score_summary_gives_band_labels_and_changes(app, ann, world):
    first = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, first["ors"], ORS_ANSWERS)  # 18.5
    second = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, second["ors"], {"ors_1": "7.0", "ors_2": "7.0", "ors_3": "7.0", "ors_4": "7.0"})  # 28.0
    page = ann.get(f"/clients/{world.client_id}").text
    summary = page[page.index('id="score-summary"') : page.index("</ul>", page.index('id="score-summary"'))]
    row = next(line for line in summary.split("<li") if "ORS" in line)
    assert "28.0" in row and "(S2)" in row
    assert "Non-clinical range (above 25.0)" in row and "non_clinical" not in row
    assert row.count("+9.5") == 2  # since the first and since the previous (the same, with two)
    assert "higher is better" in row


def test_the_client_page_says_no_answers_only_before_any(app, ann, world):
    assert "No answers yet" in ann.get(f"/clients/{world.client_id}").text
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    assert "No answers yet" in ann.get(f"/clients/{world.client_id}").text  # links made, nothing answered
    release_latest(app, ann)
    answer(app, links["srs"], SRS_LOW)
    assert "No answers yet" not in ann.get(f"/clients/{world.client_id}").text


def test_symptom_chart_shades_the_bands_from_the_definition(app, ann, world, engine):
    token = page_token(ann, f"/clients/{world.client_id}")
    ann.post(
        f"/clients/{world.client_id}/episodes",
        data={"csrf_token": token, "plan": "custom", "custom": "phq9 start every 1"},
    )
    with app.extensions["rapportal"].sessions() as session:
        episode_id = session.scalar(sa.select(sa.func.max(Episode.id)))
    links = links_on(start_session(ann, episode_id, world.client_id).text)
    answer(app, links["phq9"], {f"phq9_{i}": "1" for i in range(1, 10)})
    page = ann.get(f"/clients/{world.client_id}?episode={episode_id}").text
    chart = chart_svg(page, "chart-phq9-total")
    for band in engine.instruments.get("phq9").scoring.bands:
        assert f"{band.label}: {band.minimum} to {band.maximum}" in page
        assert f"<title>{band.label}</title>" in chart
    assert "PHQ-9 9 (S1)" in chart
    assert "Mild (5-9)" in page[page.index('id="score-summary"') :]  # 9 is mild: the label, not the id


def test_client_page_escapes_markup_in_answers_and_names(app, ann, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        session.get(Client, world.client_id).display_name = "<script>x()</script>"
    page = ann.get(f"/clients/{world.client_id}").text
    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page


def test_item_level_detail_is_on_the_client_page(app, ann, world):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    page = ann.get(f"/clients/{world.client_id}").text
    assert "Item-level answers" in page and "ors_3" in page and "4.5" in page
    rows = dict(re.findall(r'<th scope="row">(ors_\d) <span class="muted">[^<]*</span></th>(.*?)</tr>', page))
    assert set(rows) == {"ors_1", "ors_2", "ors_3", "ors_4"}
    assert all(re.fullmatch(r"<td>\d+(\.\d+)?</td>", cells) for cells in rows.values())  # one answer each
    held = datetime.now(UTC).strftime("%Y-%m-%d")  # the sessions table: label, page and date made in Python
    assert re.search(rf'<td><a href="/sessions/\d+">Session 1</a></td><td>{held}</td>', page)


def test_an_item_cell_escapes_an_answer_that_is_text_and_dashes_a_missing_one():
    assert _cell("<b>x</b>") == "<td>&lt;b&gt;x&lt;/b&gt;</td>"
    assert _cell(None) == "<td>&ndash;</td>" and _cell(3) == "<td>3</td>" and _cell(4.5) == "<td>4.5</td>"


def test_session_page_csrf_token_matches(ann, world):
    start_session(ann, world.episode_id, world.client_id)
    page = ann.get("/sessions/1")
    assert page.status_code == 200 and csrf(page.text)


def test_a_clients_links_are_made_in_the_clients_language(app, world, licensed_wording):
    admin = app.test_client()
    sign_in(admin, "admin")
    path = f"/admin/clients/{world.client_id}"
    assert 'value="de"' in admin.get(path).text  # the portal's languages are offered
    token = page_token(admin, path)
    data = {"csrf_token": token, "clinician": str(world.users["ann"]), "language": "de"}
    assert admin.post(path, data=data).status_code == 303
    ann = app.test_client()
    sign_in(ann, "ann")
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    page = app.test_client().get(links["ors"]).text
    assert '<html lang="de">' in page and "Meine Antworten senden" in page
    with app.extensions["rapportal"].sessions() as session:
        assert set(session.scalars(sa.select(Assignment.language))) == {"de"}
    refused = admin.post(path, data={**data, "language": "xx"})
    assert refused.status_code == 422
    missing = admin.post(path, data={k: v for k, v in data.items() if k != "language"})
    assert missing.status_code == 422  # an edit never resets the language silently


def test_a_text_beyond_ascii_is_written_with_character_references_that_read_the_same():
    from html import unescape

    from markupsafe import Markup

    from web.progress import ascii_html

    note = Markup("first ORS 18.5 ± 5 · Größe &lt;b&gt;")
    written = ascii_html(note)
    assert written.isascii() and isinstance(written, Markup)
    assert unescape(written) == unescape(note) == "first ORS 18.5 ± 5 · Größe <b>"
    plain = Markup("all ASCII &amp; escaped")
    assert ascii_html(plain) is plain
