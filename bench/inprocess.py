"""CPU per request of the link pages, in one process: the portal and the bare baseline through Flask's test client.

    .venv/bin/python bench/inprocess.py                      # SQLite, 400 requests per scenario
    .venv/bin/python bench/inprocess.py --profile render-phq9   # and a pyinstrument profile of one scenario
    .venv/bin/python bench/inprocess.py --backend postgresql     # both databases made and dropped on 127.0.0.1

No HTTP server, no load generator and no concurrency: each request runs to its end in this process, so the figure
is the server-side CPU of the portal's own layers against the same work in ``bench/bare_app.py`` (both include
the test client's small cost). Use it while profiling; ``run.py`` under wrk gives the figures that count. The
requests are prepared as ``run.py`` prepares them (fresh single-use links with their form tokens), and after each
submit scenario every request must have stored exactly one row. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg
from run import INSTRUMENTS, PG_ADMIN, Bare, Portal  # bench/ is on the path when this runs


def _requests(lines: list[str]) -> list[tuple[str, str, dict[str, str] | None]]:
    parsed = []
    for line in lines:
        method, path, *body = line.split(" ", 2)
        parsed.append((method, path, dict(urllib.parse.parse_qsl(body[0])) if body else None))
    return parsed


def statements_per_request(db, client, requests, expect: int) -> float:
    """SQL statements sent per request (``BEGIN`` included, ``COMMIT`` and ``ROLLBACK`` not)."""
    import sqlalchemy as sa

    sent = []

    def count(_conn, _cursor, statement, *_args):
        sent.append(statement)

    sa.event.listen(db, "before_cursor_execute", count)
    try:
        cpu_per_request(client, requests, expect)
    finally:
        sa.event.remove(db, "before_cursor_execute", count)
    return len(sent) / len(requests)


def cpu_per_request(client, requests, expect: int, profile: str | None = None) -> float:
    """Milliseconds of this process's CPU per request; every reply must have status ``expect``."""
    profiler = None
    if profile:
        from pyinstrument import Profiler  # only for --profile: pip install pyinstrument

        profiler = Profiler(interval=0.0005)
        profiler.start()
    start = time.process_time()
    for method, path, body in requests:
        reply = client.open(path, method=method, data=body)
        if reply.status_code != expect:
            raise RuntimeError(f"{method} {path}: {reply.status_code}")
    spent = time.process_time() - start
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, show_all=False), encoding="utf-8")
    return spent * 1000 / len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="requests per scenario (default 400)")
    parser.add_argument("--profile", default="", help="scenario to profile, e.g. render-phq9 or submit-srs")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rapportal-inprocess-"))
    if args.backend == "sqlite":
        measure(args, workdir, f"sqlite:///{workdir}/rapportal.db", f"sqlite:///{workdir}/bare.db")
        return
    names = [f"inprocess_{kind}_{os.getpid()}" for kind in ("portal", "bare")]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")
    try:
        measure(args, workdir, *(f"postgresql://postgres@127.0.0.1:5432/{name}" for name in names))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def measure(args: argparse.Namespace, workdir: Path, portal_url: str, bare_url: str) -> None:
    """Every scenario on one backend: the bare app, then the portal, each on its own database."""
    rng = random.Random(1)
    os.environ["BARE_DATABASE_URL"] = bare_url
    mine = Portal(workdir / "instance", portal_url, workers=1)
    bare = Bare(os.environ["BARE_DATABASE_URL"], workers=1)
    import bare_app  # reads BARE_DATABASE_URL when imported

    portal_client, bare_client = mine.app.test_client(), bare_app.app.test_client()
    with mine.app.app_context():
        from web.state import portal

        instruments = {i: portal(mine.app).engine.instruments.get(i) for i in INSTRUMENTS}
        db = portal(mine.app).db
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {args.count} requests per scenario, {args.backend}")
    for instrument_id in INSTRUMENTS:
        for scenario, submit in (("render", False), ("submit", True)):
            name = f"{scenario}-{instrument_id}"
            bare_lines = _requests(bare.links(instrument_id, args.count, submit, instruments[instrument_id], rng))
            portal_lines = _requests(mine.links(instrument_id, args.count + 20, submit, rng))
            statements = statements_per_request(db, portal_client, portal_lines[-20:], 200)
            portal_lines = portal_lines[:-20]
            for client, lines in ((bare_client, bare_lines), (portal_client, portal_lines)):
                cpu_per_request(client, lines[:20], 200)  # templates compiled, caches filled
            before = (bare.rows()[0], mine.rows()[0])
            base = cpu_per_request(bare_client, bare_lines[20:], 200)
            ours = cpu_per_request(
                portal_client, portal_lines[20:], 200, f"{name}.txt" if args.profile == name else None
            )
            if submit:
                stored = (bare.rows()[0] - before[0], mine.rows()[0] - before[1])
                if stored != (args.count - 20, args.count - 20) or mine.rows()[1]:
                    raise RuntimeError(f"{name}: rows {stored}, expected {args.count - 20} each")
            print(
                f"{name:14} bare {base:5.2f} ms | portal {ours:5.2f} ms | portal/bare {ours / base:4.1f}x"
                f" | portal SQL statements per request {statements:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
