"""Serving: `rapportal serve` on a fresh instance, /healthz, JSON logs without tokens or answers."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gunicorn.config import Config
from test_production_support import (
    RAPPORTAL,
    Server,
    form_token,
    free_port,
    phq9_answers,
    post_answers,
    prepare_database,
    request,
)

from core.db import make_db_engine
from core.migrations import current_revision, head_revision
from web import create_app
from web.serve import JsonFormatter, JsonLogger, redact


def test_serve_with_nothing_configured_upgrades_the_instance_database_and_prints_the_url(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAPPORTAL_")}
    env["RAPPORTAL_INSTANCE_PATH"] = str(tmp_path / "instance")  # stands in for the checkout's instance folder
    server = Server("", tmp_path / "instance")
    process = subprocess.Popen(
        [str(RAPPORTAL), "serve", "--port", str(server.port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server.process = process
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "is serving on" in line:
                break
        assert f"http://127.0.0.1:{server.port}/" in "".join(lines)
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = request("GET", server.base, "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.05)
        assert (status, json.loads(body)["ok"]) == (200, True)
    finally:
        server.stop()
    db = make_db_engine(f"sqlite:///{tmp_path / 'instance' / 'rapportal.db'}")
    assert current_revision(db) == head_revision()
    db.dispose()


def test_serve_upgrades_an_empty_database_on_the_configured_backend(tmp_path: Path, db_url: str) -> None:
    url = db_url
    with Server(url, tmp_path / "instance", workers=2):
        pass
    db = make_db_engine(url)
    assert current_revision(db) == head_revision()
    db.dispose()


def test_healthz_answers_ok_when_the_database_answers(client) -> None:
    reply = client.get("/healthz")
    assert (reply.status_code, reply.get_json()) == (200, {"ok": True, "database": "ok"})


def test_healthz_answers_503_when_the_database_is_unreachable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    for url in (f"sqlite:///{tmp_path / 'missing' / 'folder' / 'x.db'}", "postgresql://nobody@127.0.0.1:1/none"):
        app = create_app({"DATABASE_URL": url, "LOAD_ENTRYPOINTS": False, "SECRET_KEY": "x"})
        reply = app.test_client().get("/healthz")
        assert (reply.status_code, reply.get_json()["ok"]) == (503, False)
        app.extensions["rapportal"].db.dispose()


def test_server_logs_are_json_lines_without_link_tokens_or_answers(tmp_path: Path, db_url: str) -> None:
    url = db_url
    [token] = prepare_database(url, 1)
    with Server(url, tmp_path / "instance", workers=1) as server:
        status, receipt = post_answers(server.base, token, form_token(server.base, token))
        assert status == 200 and receipt
        assert request("GET", server.base, f"/a/{token}?x={token}")[0] == 200
        request("GET", server.base, "/a/not-a-real-token-at-all-0123456789")
    log = server.log.read_text()
    assert token not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [entry for entry in entries if entry.get("event") == "request"]
    assert {(e["method"], e["path"], e["status"]) for e in requests} >= {
        ("GET", "/a/[redacted]", 200),
        ("POST", "/a/[redacted]", 200),
        ("GET", "/a/[redacted]", 404),
    }
    assert all("x=" not in entry["path"] for entry in requests)
    assert json.dumps(phq9_answers(token)) not in log
    assert receipt not in log
    after_banner = log.split("Rapportal is serving on", 1)[1].splitlines()[1:]
    assert [line for line in after_banner if not line.startswith("{")] == []


def test_error_log_records_have_tokens_redacted_even_in_tracebacks() -> None:
    token = "Zq3x_9-abcDEFghiJKLmnoPQRstuVWxyz012"
    try:
        raise RuntimeError(f"failed on /a/{token}/done")
    except RuntimeError:
        record = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "Exception on /a/%s [POST]", (token,), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert token not in json.dumps(entry)
    assert entry["message"] == "Exception on /a/[redacted] [POST]"
    assert redact(f"kiosk cookie {token}") == "kiosk cookie [redacted]"
    assert redact("ResponseValidationError in phq9_1") == "ResponseValidationError in phq9_1"


def _access_logger(stream: Any) -> JsonLogger:
    config = Config()
    config.set("accesslog", "-")
    config.set("errorlog", "-")
    logger = JsonLogger(config)
    for handler in logger.access_log.handlers:
        if getattr(handler, "_gunicorn", False):  # not pytest's capture handlers
            handler.setStream(stream)
    return logger


def test_access_log_lines_are_the_json_entries_the_formatter_makes_with_the_path_redacted() -> None:
    stream = io.StringIO()
    logger = _access_logger(stream)
    token = "Zq3x_9-abcDEFghiJKLmnoPQRstuVWxyz012"
    reply = SimpleNamespace(status_code=422, sent=5679)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f'/a/{token}/"odd"\\path\u00e9', "REMOTE_ADDR": "10.0.0.7"}
    logger.access(reply, None, environ, timedelta(microseconds=3250))
    logger.access(SimpleNamespace(status_code=404), None, {"PATH_INFO": "/x"}, timedelta(seconds=1))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert token not in stream.getvalue() and stream.getvalue().isascii()  # as json.dumps writes it
    assert datetime.fromisoformat(first.pop("time")).tzinfo is not None
    assert first == {
        "level": "info",
        "logger": "gunicorn.access",
        "message": "request",
        "event": "request",
        "method": "POST",
        "path": '/a/[redacted]/"odd"\\path\u00e9',
        "status": 422,
        "bytes": 5679,
        "duration_ms": 3.2,
        "remote": "10.0.0.7",
    }
    assert (second["method"], second["bytes"], second["remote"], second["duration_ms"]) == ("", None, None, 1000.0)


def test_an_access_log_that_cannot_be_written_does_not_fail_the_request(capsys) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("gone")

    logger = _access_logger(Broken())
    logger.access(SimpleNamespace(status_code=200, sent=1), None, {"PATH_INFO": "/healthz"}, timedelta(0))
    assert "The access log could not be written" in capsys.readouterr().err


def fresh_instance_env(tmp_path: Path, url: str) -> dict[str, str]:
    """The environment of a newcomer's shell: no settings but the instance folder (and the pass's database)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAPPORTAL_")}
    env.update(RAPPORTAL_INSTANCE_PATH=str(tmp_path / "instance"), RAPPORTAL_DATABASE_URL=url)
    return env


def test_serve_says_it_is_serving_only_once_the_port_answers(tmp_path: Path, db_url: str) -> None:
    server = Server(db_url, tmp_path / "instance")
    server.process = subprocess.Popen(
        [str(RAPPORTAL), "serve", "--port", str(server.port), "--workers", "1"],
        env=fresh_instance_env(tmp_path, db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in server.process.stdout:
            if "is serving on" in line:
                break
        else:
            raise AssertionError("serve exited without saying it is serving")
        # No retry loop: the port listens when the line appears, so the request waits for a worker at worst.
        status, body = request("GET", server.base, "/healthz")
        assert (status, json.loads(body)["ok"]) == (200, True)
    finally:
        server.stop()


def test_serve_with_its_port_in_use_says_so_in_one_line_and_exits_non_zero(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(
            [str(RAPPORTAL), "serve", "--port", str(port)],
            env=fresh_instance_env(tmp_path, db_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert done.stderr == f"Error: port {port} on 127.0.0.1 is already in use; choose another with --port\n"
    assert done.stdout == ""  # nothing started: no banner, no setup link, no gunicorn log lines
