"""Licensed wording in the database: versioned installs, audited, seen by every process and every host."""

from __future__ import annotations

import copy
import getpass
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from staff_support import (
    ORS_ANSWERS,
    SRS_LOW,
    answer,
    audit_actions,
    links_on,
    make_world,
    page_token,
    release_latest,
    sign_in,
)
from staff_support import start_session as start_care_session

from core import Engine, WordingError, build_engine
from core.db import create_schema, make_db_engine, make_session_factory
from core.instruments import placeholder_wording
from core.models import AuditEntry, InstrumentWording
from core.wording import (
    import_wording_folder,
    install_wording,
    refresh_wording,
    stored_wording,
    wording_history,
)
from web import create_app


def licensed(engine: Engine, instrument_id: str, first_text: str) -> dict[str, Any]:
    """A wording document that is not placeholder-flagged, with a recognisable first item."""
    wording = placeholder_wording(engine.instruments.get(instrument_id))
    wording["placeholder"] = False
    first = engine.instruments.get(instrument_id).items[0].id
    wording["items"][first] = {**wording["items"][first], "text": first_text}
    return wording


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    database = make_db_engine(db_url)
    create_schema(database)
    yield database
    database.dispose()


@pytest.fixture
def sessions(db: sa.Engine) -> Any:
    return make_session_factory(db)


def stored_rows(sessions: Any) -> list[tuple[str, int, bool]]:
    with sessions() as session:
        rows = session.scalars(sa.select(InstrumentWording).order_by(InstrumentWording.id))
        return [(row.instrument_id, row.version, row.placeholder) for row in rows]


def wording_audit(sessions: Any) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "wording.install")))


# -- the core operation ----------------------------------------------------------------


def test_an_install_is_stored_as_version_1_and_applies_once_committed(engine, sessions):
    with sessions.begin() as session:
        version = install_wording(session, engine, "srs", licensed(engine, "srs", "How heard"), actor="test")
        assert not engine.instruments.get("srs").wording_installed  # not before the commit
    assert (version.instrument_id, version.number, version.placeholder) == ("srs", 1, False)
    assert stored_rows(sessions) == [("srs", 1, False)]
    srs = engine.instruments.get("srs")
    assert srs.sendable and srs.item("srs_1").text == "How heard"


def test_every_install_adds_a_version_and_the_newest_applies(engine, sessions):
    for text in ("First", "Second", "Third"):
        with sessions.begin() as session:
            install_wording(session, engine, "srs", licensed(engine, "srs", text), actor="test")
    with sessions() as session:
        history = wording_history(session, "srs")
        newest = stored_wording(session)
    assert [(v.number, v.document["items"]["srs_1"]["text"]) for v in history] == [
        (1, "First"),
        (2, "Second"),
        (3, "Third"),
    ]
    assert [(v.instrument_id, v.number) for v in newest] == [("srs", 3)]
    assert engine.instruments.get("srs").item("srs_1").text == "Third"


def test_the_install_is_audited_with_instrument_version_and_placeholder_flag_never_the_text(engine, sessions):
    with sessions.begin() as session:
        install_wording(session, engine, "ors", licensed(engine, "ors", "Secret licensed text"), actor="user:admin")
    with sessions.begin() as session:
        placeholder = placeholder_wording(engine.instruments.get("ors"))
        install_wording(session, engine, "ors", placeholder, actor="user:admin", address="10.0.0.7")
    entries = wording_audit(sessions)
    assert [(e.actor, e.target, e.detail) for e in entries] == [
        ("user:admin", "instrument:ors", {"instrument": "ors", "version": 1, "placeholder": False}),
        ("user:admin", "instrument:ors", {"instrument": "ors", "version": 2, "placeholder": True}),
    ]
    assert entries[1].address == "10.0.0.7"
    assert "Secret" not in json.dumps([e.detail for e in entries])


@pytest.mark.parametrize(
    ("instrument_id", "change", "reason"),
    [
        ("srs", lambda w: w["items"].pop("srs_3"), "no wording for item(s) srs_3"),
        ("srs", lambda w: w.__setitem__("instrument", "ors"), "the wording file is for 'ors', not 'srs'"),
        ("srs", lambda w: w["items"].__setitem__("srs_1", ""), "srs_1: the text must be a non-empty string"),
        ("phq9", lambda w: None, "phq9 ships its own wording; nothing to install"),
        ("phq10", lambda w: None, "no instrument 'phq10' is installed"),
    ],
)
def test_a_bad_document_is_refused_with_the_reason_and_stores_nothing(engine, sessions, instrument_id, change, reason):
    wording = copy.deepcopy(licensed(engine, "srs", "Text"))
    change(wording)
    with sessions.begin() as session, pytest.raises(WordingError) as refused:
        install_wording(session, engine, instrument_id, wording, actor="test")
    assert str(refused.value) == reason
    assert stored_rows(sessions) == [] and wording_audit(sessions) == []
    assert not engine.instruments.get("srs").wording_installed


def test_a_document_that_is_not_an_object_is_refused(engine, sessions):
    with sessions.begin() as session, pytest.raises(WordingError, match="must be a JSON object"):
        install_wording(session, engine, "srs", ["srs_1"], actor="test")


def test_an_install_whose_transaction_rolls_back_is_not_applied(engine, sessions):
    with sessions() as session:
        install_wording(session, engine, "srs", licensed(engine, "srs", "Never committed"), actor="test")
        session.rollback()
        session.commit()  # a later commit of the same session must not apply it either
    assert stored_rows(sessions) == []
    assert not engine.instruments.get("srs").wording_installed


def test_two_installs_at_the_same_moment_never_share_a_version_number(engine, db, sessions):
    outcome: list[Any] = []
    backend: list[int] = []
    postgresql = db.dialect.name == "postgresql"

    def second_install() -> None:
        try:
            with sessions.begin() as session:
                if postgresql:
                    backend.append(session.scalar(sa.text("SELECT pg_backend_pid()")))
                outcome.append(install_wording(session, engine, "srs", licensed(engine, "srs", "B"), actor="b").number)
        except WordingError as error:
            outcome.append(str(error))

    with sessions() as first:
        install_wording(first, engine, "srs", licensed(engine, "srs", "A"), actor="a")
        thread = threading.Thread(target=second_install)
        thread.start()
        deadline = time.monotonic() + 10
        while postgresql and not _waits_for_a_lock(db, backend) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the second insert waits for the first one's version number
        time.sleep(0.1)
        first.commit()
    thread.join(30)
    if postgresql:  # it read the same newest version, so its insert collides
        assert outcome == ["another installation of srs wording was stored at the same moment; install it again"]
        assert stored_rows(sessions) == [("srs", 1, False)]
    else:  # SQLite: the second transaction waits for the write lock, then takes the next number
        assert outcome == [2]
        assert stored_rows(sessions) == [("srs", 1, False), ("srs", 2, False)]


def _waits_for_a_lock(db: sa.Engine, backend: list[int]) -> bool:
    if not backend:
        return False
    with db.connect() as connection:
        query = sa.text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted")
        return bool(connection.scalar(query, {"pid": backend[0]}))


def test_another_process_picks_up_the_wording_at_its_next_refresh(engine, sessions):
    worker = build_engine(load_entrypoints=False)
    with sessions() as session:
        refresh_wording(session, worker)
    assert not worker.instruments.get("srs").wording_installed
    with sessions.begin() as session:
        install_wording(session, engine, "srs", placeholder_wording(engine.instruments.get("srs")), actor="test")
    assert not worker.instruments.get("srs").wording_installed  # lookups alone never query
    with sessions() as session:
        assert refresh_wording(session, worker)
    srs = worker.instruments.get("srs")
    assert srs.wording_installed and srs.wording_placeholder and not srs.sendable
    assert srs.item("srs_1").anchors == ("[PLACEHOLDER low end]", "[PLACEHOLDER high end]")


def test_a_refresh_with_nothing_new_runs_one_query_and_reads_no_wording(engine, db, sessions):
    with sessions.begin() as session:
        install_wording(session, engine, "srs", licensed(engine, "srs", "Text"), actor="test")
    worker = build_engine(load_entrypoints=False)
    statements: list[str] = []
    sa.event.listen(db, "before_cursor_execute", lambda _c, _cur, statement, *_a: statements.append(statement))
    with sessions() as session:
        assert refresh_wording(session, worker)
        first = len(statements)
        assert not refresh_wording(session, worker)
    queries = [s for s in statements[first:] if "instrument_wordings" in s]
    assert len(queries) == 1 and "count" in queries[0].lower() and "document" not in queries[0]


def test_wording_files_of_an_instance_folder_are_imported_once(engine, sessions, tmp_path):
    folder = tmp_path / "wording"
    folder.mkdir()
    (folder / "srs.json").write_text(json.dumps(licensed(engine, "srs", "From the folder")))
    (folder / "ors.json").write_text('{"instrument": "ors", "items": {}}')
    with sessions.begin() as session:
        report = import_wording_folder(session, engine, folder, actor="cli:admin")
    assert report == [
        f"{folder / 'ors.json'}: not imported: no wording for item(s) ors_1, ors_2, ors_3, ors_4",
        f"{folder / 'srs.json'}: imported as srs wording version 1",
    ]
    assert engine.instruments.get("srs").item("srs_1").text == "From the folder"
    with sessions.begin() as session:
        again = import_wording_folder(session, engine, folder, actor="cli:admin")
    assert again[1] == f"{folder / 'srs.json'}: not imported, the database holds wording for srs already"
    assert stored_rows(sessions) == [("srs", 1, False)]


# -- two hosts, each with its own instance folder, on one database ---------------------------


@pytest.fixture
def hosts(app_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """Two portals as docs/deployment.md runs them: separate instance folders, one database."""
    apps = []
    for name in ("host-a", "host-b"):
        monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / name))
        apps.append(create_app(app_config))
    assert apps[0].instance_path != apps[1].instance_path
    yield apps[0], apps[1]
    for app in apps:
        app.extensions["rapportal"].db.dispose()


def upload(client: Any, instrument_id: str, document: Any) -> Any:
    token = page_token(client, "/admin/plugins")
    return client.post(
        "/admin/plugins/wording",
        data={
            "csrf_token": token,
            "instrument": instrument_id,
            "wording": (io.BytesIO(json.dumps(document).encode()), "wording.json"),
        },
        content_type="multipart/form-data",
    )


def cli_install(app: Any, instrument_id: str, document: Any, tmp_path: Path) -> Any:
    path = tmp_path / f"{instrument_id}-wording.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return app.test_cli_runner().invoke(args=["instruments", "install-wording", instrument_id, str(path)])


def test_wording_uploaded_on_one_host_is_served_by_the_other(hosts):
    host_a, host_b = hosts
    make_world(host_a)
    admin = host_a.test_client()
    sign_in(admin, "admin")
    engine_a = host_a.extensions["rapportal"].engine
    assert upload(admin, "srs", licensed(engine_a, "srs", "Uploaded on host A")).status_code == 302

    admin_b = host_b.test_client()
    sign_in(admin_b, "admin")
    assert admin_b.get("/admin/plugins").text.count("needs licensed wording") == 2  # wai-sr, ors
    listed = host_b.test_cli_runner().invoke(args=["instruments", "list", "--json"])
    rows = {row["id"]: row for row in json.loads(listed.output)["instruments"]}
    assert rows["srs"]["wording"] == "installed" and rows["srs"]["sendable"] is True
    assert ("user:admin", "wording.install", "instrument:srs") in audit_actions(host_b)


def test_a_link_made_on_one_host_is_answered_on_the_other(hosts, tmp_path):
    host_a, host_b = hosts
    world = make_world(host_a)
    engine_b = host_b.extensions["rapportal"].engine
    for instrument_id in ("ors", "srs"):
        result = cli_install(
            host_b, instrument_id, licensed(engine_b, instrument_id, f"{instrument_id} text"), tmp_path
        )
        assert result.exit_code == 0, result.output
    ann = host_a.test_client()
    sign_in(ann, "ann")
    links = links_on(start_care_session(ann, world.episode_id, world.client_id).text)
    assert set(links) == {"ors", "srs"}  # host A sends them: it sees host B's install
    assert "ors text" in host_b.test_client().get(links["ors"]).text
    assert answer(host_b, links["ors"], ORS_ANSWERS).status_code == 200
    release_latest(host_a, ann)
    assert answer(host_b, links["srs"], SRS_LOW).status_code == 200


def test_a_new_version_replaces_the_old_one_for_new_links(hosts, tmp_path):
    host_a, host_b = hosts
    world = make_world(host_a)
    engine_a = host_a.extensions["rapportal"].engine
    for instrument_id in ("ors", "srs"):
        assert (
            cli_install(host_a, instrument_id, licensed(engine_a, instrument_id, "Version one"), tmp_path).exit_code
            == 0
        )
    ann = host_a.test_client()
    sign_in(ann, "ann")
    first = links_on(start_care_session(ann, world.episode_id, world.client_id).text)
    assert "Version one" in host_b.test_client().get(first["ors"]).text

    admin_b = host_b.test_client()
    sign_in(admin_b, "admin")
    assert upload(admin_b, "ors", licensed(engine_a, "ors", "Version two")).status_code == 302
    answer(host_a, first["ors"], ORS_ANSWERS)
    release_latest(host_a, ann)
    answer(host_a, first["srs"], SRS_LOW)
    second = links_on(start_care_session(ann, world.episode_id, world.client_id).text)
    for host in (host_a, host_b):
        page = host.test_client().get(second["ors"]).text
        assert "Version two" in page and "Version one" not in page
    with host_a.extensions["rapportal"].sessions() as session:
        assert [v.number for v in wording_history(session, "ors")] == [1, 2]


def test_the_install_is_audited_from_the_command_line_and_from_the_web(hosts, tmp_path):
    host_a, host_b = hosts
    make_world(host_a)
    engine_a = host_a.extensions["rapportal"].engine
    result = cli_install(host_b, "wai-sr", licensed(engine_a, "wai-sr", "From the command line"), tmp_path)
    assert result.exit_code == 0, result.output
    assert "Installed wording version 1 for wai-sr" in result.output
    admin = host_a.test_client()
    sign_in(admin, "admin")
    assert upload(admin, "wai-sr", licensed(engine_a, "wai-sr", "From the web")).status_code == 302
    with host_a.extensions["rapportal"].sessions() as session:
        entries = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "wording.install")).all()
    assert [(e.actor, e.target, e.detail["version"]) for e in entries] == [
        (f"cli:{getpass.getuser()}", "instrument:wai-sr", 1),
        ("user:admin", "instrument:wai-sr", 2),
    ]
    assert engine_a.instruments.get("wai-sr").items[0].text == "From the web"


def test_a_bad_file_is_refused_on_the_command_line_and_the_web_and_stores_nothing(hosts, tmp_path):
    host_a, host_b = hosts
    make_world(host_a)
    result = cli_install(host_b, "srs", '{"instrument": "ors", "items": {}}', tmp_path)
    assert result.exit_code == 1
    assert "the wording file is for 'ors', not 'srs'" in result.output and "Traceback" not in result.output
    admin = host_a.test_client()
    sign_in(admin, "admin")
    response = upload(admin, "srs", {"instrument": "srs", "items": {"srs_1": "only one"}})
    assert response.status_code == 422 and "no wording for item(s) srs_2, srs_3, srs_4" in response.text
    with host_a.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count(InstrumentWording.id))) == 0
    assert "wording.install" not in {action for _actor, action, _target in audit_actions(host_a)}


def test_each_request_reads_the_wording_store_once_and_lookups_never(hosts, tmp_path):
    host_a, host_b = hosts
    world = make_world(host_a)
    engine_a = host_a.extensions["rapportal"].engine
    for instrument_id in ("ors", "srs"):
        assert cli_install(host_a, instrument_id, licensed(engine_a, instrument_id, "Text"), tmp_path).exit_code == 0
    ann = host_a.test_client()
    sign_in(ann, "ann")
    link = links_on(start_care_session(ann, world.episode_id, world.client_id).text)["ors"]
    statements: list[str] = []
    db_b = host_b.extensions["rapportal"].db
    sa.event.listen(db_b, "before_cursor_execute", lambda _c, _cur, statement, *_a: statements.append(statement))
    client = host_b.test_client()
    for _ in range(3):
        assert client.get(link).status_code == 200
    reads = [s for s in statements if "instrument_wordings" in s]
    assert len(reads) == 3 + 1  # one check per request, plus reading the newest versions once


# -- the command line: files, upgrades from an instance folder, the demo ---------------------------


def test_install_wording_refuses_a_file_that_is_not_utf8_text(app, runner, tmp_path):
    path = tmp_path / "srs.json"
    path.write_bytes(b'{"instrument": "srs", "stem": "\xff"}')
    result = runner.invoke(args=["instruments", "install-wording", "srs", str(path)])
    assert result.exit_code == 1 and "the file is not UTF-8 text" in result.output and "Traceback" not in result.output
    assert stored_rows(app.extensions["rapportal"].sessions) == []


def upgraded_host(app_config: dict[str, Any], instance: Path, monkeypatch: pytest.MonkeyPatch, wording: Any) -> Any:
    """A host from before revision 0005: its wording file in its own instance folder, then `db upgrade`."""
    (instance / "wording").mkdir(parents=True)
    (instance / "wording" / "srs.json").write_text(json.dumps(wording))
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(instance))
    return create_app({**app_config, "CREATE_SCHEMA": False})


def test_db_upgrade_imports_the_wording_an_instance_folder_held(app_config, tmp_path, monkeypatch):
    engine = build_engine(load_entrypoints=False)
    first = upgraded_host(app_config, tmp_path / "a", monkeypatch, licensed(engine, "srs", "Host A's file"))
    second = upgraded_host(app_config, tmp_path / "b", monkeypatch, licensed(engine, "srs", "Host B's file"))
    try:
        result = first.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "srs.json: imported as srs wording version 1" in result.output
        again = second.test_cli_runner().invoke(args=["db", "upgrade"])
        assert "srs.json: not imported, the database holds wording for srs already" in again.output
        page = second.test_cli_runner().invoke(args=["instruments", "show", "srs"])
        assert "Host A's file" in page.output and "Host B's file" not in page.output
        assert (f"cli:{getpass.getuser()}", "wording.install", "instrument:srs") in audit_actions(second)
    finally:
        for app in (first, second):
            app.extensions["rapportal"].db.dispose()


def test_demo_installs_its_placeholder_wording_in_the_database_audited(app_config, tmp_path, monkeypatch):
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "demo"))
    app = create_app({**app_config, "CREATE_SCHEMA": False})
    try:
        assert app.test_cli_runner().invoke(args=["demo"]).exit_code == 0
        assert app.test_cli_runner().invoke(args=["demo"]).exit_code == 0  # a second demo adds nothing
        assert stored_rows(app.extensions["rapportal"].sessions) == [
            ("ors", 1, True),
            ("srs", 1, True),
            ("wai-sr", 1, True),
        ]
        entries = wording_audit(app.extensions["rapportal"].sessions)
        assert {(e.actor, e.detail["placeholder"]) for e in entries} == {(f"cli:{getpass.getuser()}", True)}
    finally:
        app.extensions["rapportal"].db.dispose()
