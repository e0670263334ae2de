"""The client page and the caseload of a clinician, and the PDF report of a client with 50 sessions: time, CPU, SQL.

Prints, for the client page of a client with 50 sessions (ORS + SRS each, PCOMS plan) and for the caseload of a
clinician with 200 clients, p50 / p99 over in-process requests (Flask test client; SQLite in a temporary folder, or
a throwaway PostgreSQL database on 127.0.0.1 with ``--backend postgresql``),
the CPU time per view (``time.process_time``) and the number of SQL statements one view runs, so an N+1 query shows
as a count that grows with the sessions. Not a test: nothing asserts a time.

    .venv/bin/python bench/client_page.py [--sessions 50] [--clients 200] [--views 200] [--pdf]
    .venv/bin/python bench/client_page.py --backend postgresql
    .venv/bin/python bench/client_page.py --profile client   # or caseload: writes a pyinstrument profile
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa
from seeding import install_placeholder_wording

from core.accounts import create_user
from core.care import start_care_session
from core.models import Client, Episode
from core.plans import BUILTIN_PLANS
from web.app import create_app

PASSWORD = "a long bench password"


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def build(url: str, sessions: int, clients: int):
    app = create_app(
        {
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "TESTING": True,
            "CREATE_SCHEMA": True,
            "LOAD_ENTRYPOINTS": False,
        }
    )
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        install_placeholder_wording(session, state.engine)
        user = create_user(session, "ann", "Ann", "clinician", PASSWORD, actor="bench", address=None)
        client = Client(code="B-50", clinician_id=user.id)
        session.add(client)
        session.add_all(Client(code=f"CASE-{n:04d}", clinician_id=user.id) for n in range(1, clients))
        session.flush()
        episode = Episode(client_id=client.id, plan_name="pcoms", plan=BUILTIN_PLANS["pcoms"][1])
        session.add(episode)
        session.flush()
        client_id, episode_id = client.id, episode.id
    anonymous = app.test_client()
    for number in range(1, sessions + 1):
        with state.sessions.begin() as session:
            started = start_care_session(
                session, state.engine, session.get(Episode, episode_id), number=number, actor="bench", address=None
            )
            tokens = {link.assignment.instrument_id: link.token for link in started.links}
            started.care.end_released_at = started.care.held_at  # the SRS opens at once, as after "Release"
        for instrument_id, token in tokens.items():
            value = str(3 + (number * 7 % 6))  # 3.0 to 8.0 per item: some sessions past the cutoffs
            answers = {f"{instrument_id}_{i}": f"{value}.0" for i in range(1, 5)}
            page = anonymous.get(f"/a/{token}")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            anonymous.post(f"/a/{token}", data={**answers, "csrf_token": csrf})
    return app, client_id


def measure(staff, url: str, views: int) -> tuple[list[float], list[float]]:
    """Wall-clock milliseconds of each view, sorted, and the CPU milliseconds per view of 10 batches, sorted (on a
    shared machine the fastest batch is the steadiest figure)."""
    times, cpu = [], []
    batch = max(views // 10, 1)
    for start_at in range(0, views, batch):
        started_cpu = time.process_time()
        for _ in range(min(batch, views - start_at)):
            start = time.perf_counter()
            assert staff.get(url).status_code == 200
            times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000 / min(batch, views - start_at))
    return sorted(times), sorted(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200, help="clients of the clinician (the caseload)")
    parser.add_argument("--views", type=int, default=200)
    parser.add_argument("--pdf", action="store_true", help="also time the PDF report (about 3 s each)")
    parser.add_argument("--show", action="store_true", help="print the most repeated SQL statements")
    parser.add_argument("--profile", choices=("client", "caseload"), help="write a pyinstrument profile instead")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            run(args, f"sqlite:///{Path(folder) / 'bench.db'}")
        return
    name = f"client_page_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        run(args, f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run(args: argparse.Namespace, url: str) -> None:
    app, client_id = build(url, args.sessions, args.clients)
    staff = app.test_client()
    login = staff.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    staff.post("/login", data={"csrf_token": csrf, "username": "ann", "password": PASSWORD})
    pages = {"client": f"/clients/{client_id}", "caseload": "/caseload"}
    if args.profile:
        from pyinstrument import Profiler

        staff.get(pages[args.profile])
        with Profiler(interval=0.0005) as profiler:
            for _ in range(args.views):
                staff.get(pages[args.profile])
        out = Path(f"{args.profile}-page.txt")
        out.write_text(profiler.output_text(unicode=True, show_all=False))
        print(f"wrote {out}")
        return
    engine = app.extensions["rapportal"].db
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for name, url in pages.items():
        assert staff.get(url).status_code == 200
        statements.clear()
        staff.get(url)
        queries = len(statements)
        writes = sum(1 for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE"))
        if args.show:
            for text, count in collections.Counter(s.split("WHERE")[0][:120] for s in statements).most_common(8):
                print(count, " ".join(text.split()))
        times, cpu = measure(staff, url, args.views)
        what = f"{args.sessions} sessions (ORS + SRS)" if name == "client" else f"{args.clients} clients"
        print(f"{name} page, {what}: {queries} SQL statements per view ({writes} writing)")
        print(
            f"  p50 {statistics.median(times):.1f} ms, p99 {times[int(len(times) * 0.99) - 1]:.1f} ms,"
            f" CPU per view {statistics.median(cpu):.2f} ms (fastest batch {cpu[0]:.2f} ms) over {args.views} views"
        )
    if args.pdf:
        pdf_times = []
        for _ in range(5):
            start = time.perf_counter()
            response = staff.get(f"/clients/{client_id}/report.pdf")
            pdf_times.append((time.perf_counter() - start) * 1000)
        print(f"PDF report: median {statistics.median(pdf_times):.0f} ms, {len(response.data) // 1024} KiB")


if __name__ == "__main__":
    main()
