"""Browser fixtures: one headless Debian Chromium per session, the real app served per test, axe-core, screenshots.

The browser suite may skip on a laptop without chromium or Playwright, but fails when ``CI=true``: there a
missing browser is a broken build, not a reason to skip.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from core.models import Client
from core.responses import create_assignment

CHROMIUM = os.environ.get("RAPPORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def axe_source() -> str:
    try:
        import axe_playwright_python
    except ImportError:
        _unavailable("axe-playwright-python is not installed (pip install -e '.[test]')")
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The test's app served on a free local port from a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


class PageWatch:
    """Console errors, failed requests and attempts to reach outside the portal, collected during a test."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, context: Any, page: Any) -> None:
        def route(request_route: Any) -> None:
            host = urlsplit(request_route.request.url).hostname
            if host in ("127.0.0.1", "localhost"):
                request_route.continue_()
            else:
                self.problems.append(f"request outside the portal: {request_route.request.url}")
                request_route.abort()

        context.route("**/*", route)
        page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"console: {msg.text}"))
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))


def _new_page(browser: Any, request: Any, **context_options: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, **context_options)
    context.set_default_timeout(10_000)  # a broken page fails in seconds, not at the 30 s default
    page = context.new_page()
    watch = PageWatch()
    watch.attach(context, page)
    page.watch = watch
    yield page
    context.close()
    # A 4xx page logs "Failed to load resource" in the console: that is the status under test, not a fault.
    problems = [p for p in watch.problems if "Failed to load resource" not in p]
    assert not problems, f"{request.node.name}: {problems}"


@pytest.fixture
def page(browser: Any, request: Any) -> Iterator[Any]:
    yield from _new_page(browser, request)


@pytest.fixture
def page_without_js(browser: Any, request: Any) -> Iterator[Any]:
    yield from _new_page(browser, request, java_script_enabled=False)


@pytest.fixture
def check_accessibility(axe_source: str) -> Any:
    """Run axe-core on the page as it is now; fail on any serious or critical violation."""

    def check(page: Any, where: str) -> list[dict[str, Any]]:
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.evaluate(axe_source)  # through CDP, so the page's CSP does not apply
        results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [v for v in results["violations"] if v["impact"] in ("serious", "critical")]
        report = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
            f" {[n.get('failureSummary', '') for n in v['nodes']][:1]}"
            for v in serious
        ]
        assert not serious, f"axe on {where}:\n" + "\n".join(report)
        return results["violations"]

    return check


@pytest.fixture
def screenshot() -> Any:
    """Keep full-page screenshots at phone and desktop size under test-artifacts/screenshots/."""

    def take(page: Any, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        before = page.viewport_size
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(size)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        page.set_viewport_size(before)

    return take


@pytest.fixture
def make_link(app: Any) -> Any:
    """Create an assignment for a (pseudonymous) test client and return its link token."""

    def make(instrument_id: str, **kwargs: Any) -> str:
        state = app.extensions["rapportal"]
        with state.sessions.begin() as session:
            client = session.scalar(sa.select(Client).where(Client.code == "BROWSER-1"))
            if client is None:
                client = Client(code="BROWSER-1")
                session.add(client)
            _assignment, token = create_assignment(session, state.engine, client, instrument_id, **kwargs)
        return token

    return make


def receipt_on(page: Any) -> str:
    text = page.locator(".receipt").inner_text()
    assert re.fullmatch(r"[0-9A-F]{8}", text), text
    return text
