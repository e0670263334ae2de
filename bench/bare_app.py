"""The baseline of ``bench/run.py``: bare Flask doing the portal's HTTP and database work without the engine.

A link page is one indexed SELECT and one Jinja render of the same number of inputs; a submit is
one transaction (BEGIN IMMEDIATE on SQLite) with the SELECT of the link and one INSERT, on a
connection with the portal's durability settings (WAL, ``synchronous=FULL``). A scoring call
(``POST /api/score/<form>``) parses the JSON body, looks the Bearer key up by its SHA-256 with one
indexed SELECT and answers a small JSON object. Served by gunicorn with the same worker count as
the portal. ``BARE_DATABASE_URL`` names the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask, abort, jsonify, request

FORMS = {"phq9": ("radio", 9, 4), "srs": ("text", 4, 0)}  # widget, items, options per item

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head><body>
<main><h1>{{ title }}</h1><form method="post" action="/a/{{ token }}">
<input type="hidden" name="csrf_token" value="{{ token }}">
{% for item in items %}<fieldset><legend>Item {{ item }}</legend>
{% if widget == "radio" %}{% for value in options %}<label><input type="radio" name="q{{ item }}" value="{{ value }}"
 required> Option {{ value }}</label>{% endfor %}
{% else %}<input type="text" inputmode="decimal" name="q{{ item }}" required>{% endif %}
</fieldset>{% endfor %}<button type="submit">Send</button></form></main></body></html>"""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS links (token TEXT PRIMARY KEY, form TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS responses (id {serial} PRIMARY KEY, token TEXT NOT NULL UNIQUE, "
    "answers TEXT NOT NULL, submitted_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_keys (secret_hash TEXT PRIMARY KEY, owner TEXT NOT NULL)",
)

app = Flask(__name__)
TEMPLATE = app.jinja_env.from_string(PAGE)  # compiled once, as Flask's loader caches the portal's templates
URL = os.environ.get("BARE_DATABASE_URL", "")


def connect() -> Any:
    """A connection with the portal's settings: WAL and synchronous=FULL on SQLite."""
    if URL.startswith("postgresql"):
        return psycopg.connect(URL)
    conn = sqlite3.connect(URL.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create_schema() -> None:
    conn = connect()
    serial = "BIGSERIAL" if URL.startswith("postgresql") else "INTEGER"
    for statement in SCHEMA:
        conn.execute(statement.format(serial=serial))
    conn.commit()
    conn.close()


_connection: list[Any] = []  # one per worker process, like a pool of one


def _db() -> Any:
    if not _connection:
        _connection.append(connect())
    return _connection[0]


def _mark(sql: str) -> str:
    return sql.replace("?", "%s") if URL.startswith("postgresql") else sql


@app.get("/a/<token>")
def answer(token: str) -> Any:
    conn = _db()
    row = conn.execute(_mark("SELECT form FROM links WHERE token = ?"), (token,)).fetchone()
    if URL.startswith("postgresql"):
        conn.rollback()
    if row is None:
        abort(404)
    widget, items, options = FORMS[row[0]]
    return TEMPLATE.render(title=row[0], token=token, widget=widget, items=range(1, items + 1), options=range(options))


@app.post("/a/<token>")
def submit(token: str) -> Any:
    conn = _db()
    answers = json.dumps({key: value for key, value in request.form.items() if key != "csrf_token"})
    if not URL.startswith("postgresql"):
        conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(_mark("SELECT form FROM links WHERE token = ?"), (token,)).fetchone() is None:
            abort(404)
        conn.execute(
            _mark("INSERT INTO responses (token, answers, submitted_at) VALUES (?, ?, ?)"),
            (token, answers, datetime.now(UTC).isoformat()),
        )
        conn.commit() if URL.startswith("postgresql") else conn.execute("COMMIT")
    except BaseException:
        conn.rollback() if URL.startswith("postgresql") else conn.execute("ROLLBACK")
        raise
    return "<!doctype html><p>Thank you. Your answers were saved.</p>"


@app.post("/api/score/<form>")
def score(form: str) -> Any:
    """The scoring API's HTTP work: the JSON body, the key's row by hash, a small JSON answer."""
    scheme, _space, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        abort(401)
    body = request.get_json()
    conn = _db()
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    row = conn.execute(_mark("SELECT owner FROM api_keys WHERE secret_hash = ?"), (digest,)).fetchone()
    if URL.startswith("postgresql"):
        conn.rollback()
    if row is None:
        abort(401)
    answers = body["answers"]
    return jsonify(instrument=form, complete=True, scores={"total": sum(answers.values())}, band=None, flags=[])
