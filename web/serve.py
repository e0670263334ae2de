"""``rapportal serve``: the production WSGI server (gunicorn) with JSON logs that never carry tokens.

Client links are ``/a/<token>``: the token is a password for one questionnaire, so every log
line (access and error) has it replaced by ``[redacted]``; query strings are not logged at all.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import socket
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

_LINK_TOKEN = re.compile(r"(/a/)[^/?#\s\"']+")
# Defence in depth: any other URL-safe run long enough to be a token (ours are 32 characters).
_TOKEN_LIKE = re.compile(
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z_-]*[0-9])(?=[0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}(?![A-Za-z0-9_-])"
)


def redact(text: str) -> str:
    """Replace link tokens (and anything shaped like one) in a log message."""
    return _TOKEN_LIKE.sub("[redacted]", _LINK_TOKEN.sub(r"\1[redacted]", text))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and structured ``fields`` if given."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class JsonLogger(GunicornLogger):
    """Gunicorn's logger with JSON lines; the access entry carries method, redacted path, status, time."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """Write the request's line straight to the access log's streams (stdout under ``rapportal serve``).

        The line is what :class:`JsonFormatter` would make of it, but it is put together here: through a log record,
        its caller look-up and the formatter, it cost a link page about a seventh of its CPU under load
        (bench/README.md). Gunicorn's access log handlers are streams (stdout, or a file's ``FileHandler``); it
        adds a syslog handler only with its ``syslog`` setting, which ``serve`` never sets.
        """
        handlers = [handler for handler in self.access_log.handlers if isinstance(handler, logging.StreamHandler)]
        if not handlers:
            return
        remote = environ.get("REMOTE_ADDR")
        sent = getattr(resp, "sent", None)
        line = (
            f'{{"time": "{datetime.now(UTC).isoformat(timespec="milliseconds")}", "level": "info", '
            f'"logger": "{self.access_log.name}", "message": "request", "event": "request", '
            f'"method": {_json_string(environ.get("REQUEST_METHOD", ""))}, '
            f'"path": {_json_string(redact(environ.get("PATH_INFO", "")))}, "status": {int(resp.status_code)}, '
            f'"bytes": {"null" if sent is None else int(sent)}, '
            f'"duration_ms": {round(request_time.total_seconds() * 1000, 1)}, '
            f'"remote": {"null" if remote is None else _json_string(str(remote))}}}'
        )
        for handler in handlers:
            handler.acquire()
            try:
                handler.stream.write(line + handler.terminator)
                handler.flush()
            except Exception:  # as in logging: a log line that cannot be written never fails the request
                self.error("The access log could not be written: %s", traceback.format_exc(limit=1))
            finally:
                handler.release()


def configure_app_logging() -> None:
    """Send the app's own log records (Flask's ``app.logger``, warnings) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # huey logs every job it runs at info ("Executing ...", "... executed in"): with the sweep every 15 s that
    # buries everything else. Our own job log (rapportal.jobs) says what matters; huey keeps its warnings and
    # its consumer's start and stop lines.
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("huey.consumer").setLevel(logging.INFO)


class PortalServer(BaseApplication):
    """Gunicorn running one already-built Flask app, forked into ``workers`` processes."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def _after_fork(_server: Any, worker: Any) -> None:
    # Connections opened by the parent (the start-up upgrade) must never be shared with a child.
    worker.app.application.extensions["rapportal"].db.dispose(close=False)


def check_can_listen(host: str, port: int) -> None:
    """Bind and listen on ``host:port`` as gunicorn will (SO_REUSEADDR), then let go; raise OSError if that fails.

    Gunicorn retries a busy port for five seconds and then exits with JSON log lines; this lets the
    command say in one sentence what is wrong before anything starts.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)


def serve(
    app: Flask, host: str, port: int, workers: int, timeout: int = 30, on_ready: Callable[[], None] | None = None
) -> None:
    """Run gunicorn in this process until it is stopped (SIGTERM/SIGINT: graceful).

    ``on_ready`` runs once gunicorn listens on the port, before the workers start.
    """

    def when_ready(_arbiter: Any) -> None:
        if on_ready is not None:
            on_ready()

    configure_app_logging()
    # The app, its engine and its compiled definitions live as long as the process: keep them out of the
    # garbage collector's scans in every worker (and shared with the master, page for page, after the fork).
    gc.freeze()
    PortalServer(
        app,
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "worker_class": "sync",
            "timeout": timeout,
            "graceful_timeout": timeout,
            "preload_app": True,
            "accesslog": "-",
            "errorlog": "-",
            "logger_class": JsonLogger,
            "post_fork": _after_fork,
            "when_ready": when_ready,
            "proc_name": "rapportal",
        },
    ).run()
