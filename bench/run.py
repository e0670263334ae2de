"""HTTP benchmark: the portal as ``rapportal serve`` runs it, beside a bare Flask baseline, under wrk.

    .venv/bin/python bench/run.py                          # SQLite and PostgreSQL, 5 s per scenario
    .venv/bin/python bench/run.py --backend sqlite --duration 10 --repeat 3

Each backend gets its own temporary instance folder (and, on PostgreSQL, throwaway databases on
127.0.0.1:5432 that are dropped afterwards). ``rapportal demo`` seeds it; then, outside the measured
time, every POST gets a fresh single-use link with its form token, written to a file that
``bench/requests.lua`` replays. Both servers listen on loopback only and run with the same
worker count; they are measured one after the other in the same run, each after the same short
unmeasured warm-up pass (``--warmup`` seconds of wrk; submits warm up on their own fresh links).
After every submit run the stored rows are counted: each success must be exactly one stored
response. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from seeding import install_placeholder_wording  # noqa: E402

from core.accounts import create_user, start_session  # noqa: E402
from core.api_keys import create_api_key  # noqa: E402
from core.care import start_care_session, start_episode  # noqa: E402
from core.models import Client, Response  # noqa: E402
from core.responses import create_assignment, submit_response  # noqa: E402
from core.wording import refresh_wording  # noqa: E402
from web.access import SESSION_COOKIE  # noqa: E402
from web.app import create_app  # noqa: E402
from web.forms import questionnaire_form  # noqa: E402
from web.state import portal  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
LUA = ROOT / "bench" / "requests.lua"
BIN = Path(sys.executable).parent
INSTRUMENTS = ("phq9", "srs")
API_INSTRUMENT = "phq9"
API_BODIES = 200  # distinct scoring requests, cycled
SCENARIOS = ("render", "submit", "api", "staff")
TICK = os.sysconf("SC_CLK_TCK")
os.environ["PYTHONPATH"] = str(ROOT)  # the servers run this checkout's code


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    ok: int
    errors: int
    exhausted: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and all its descendants (gunicorn master and workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def wait_until_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def answers_for(instrument, rng: random.Random) -> dict[str, str]:
    """Form values a client could send: an option of every choice item, a VAS mark for the rest."""
    values = {}
    for item in instrument.items:
        if item.options:
            values[item.id] = str(rng.choice(item.options).value)
        else:
            values[item.id] = f"{rng.uniform(float(item.minimum or 0), float(item.maximum or 10)):.1f}"
    return values


def typed_answers(instrument, rng: random.Random) -> dict[str, object]:
    """Answers as the engine stores them: an option's value, or a number in the item's range."""
    return {
        item.id: rng.choice(item.options).value
        if item.options
        else round(rng.uniform(float(item.minimum or 0), float(item.maximum or 10)), 1)
        for item in instrument.items
    }


class Portal:
    """The portal under test: seeded, links prepared in-process, served by ``rapportal serve``."""

    def __init__(self, instance: Path, url: str, workers: int) -> None:
        # One key sends every API request of the run: its budget (600 a minute by default) is raised
        # so that no request is refused; each request still counts itself in the database.
        self.env = dict(
            os.environ,
            RAPPORTAL_INSTANCE_PATH=str(instance),
            RAPPORTAL_DATABASE_URL=url,
            RAPPORTAL_API_RATE_LIMIT=str(10**9),
        )
        subprocess.run([BIN / "rapportal", "demo"], env=self.env, check=True, capture_output=True)
        os.environ.update(RAPPORTAL_INSTANCE_PATH=str(instance), RAPPORTAL_DATABASE_URL=url)
        self.app = create_app()
        self.port = free_port()
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def links(self, instrument_id: str, count: int, with_bodies: bool, rng: random.Random) -> list[str]:
        """``count`` fresh links as request lines: "GET /a/T" or "POST /a/T body" with a valid form token."""
        lines = []
        with self.app.app_context():
            state = portal()
            with state.sessions.begin() as session:
                refresh_wording(session, state.engine)
                # Ten links per client, as a client answers an instrument about once a session:
                # rules that look back (SRS) then see a realistic history, not thousands of responses.
                clients = [Client(code=f"BENCH-{secrets.token_hex(5)}") for _ in range(count // 10 + 1)]
                made = [
                    create_assignment(session, state.engine, clients[n // 10], instrument_id, allow_placeholder=True)
                    for n in range(count)
                ]
            instrument = state.engine.instruments.get(instrument_id)
            with self.app.test_request_context():
                for assignment, token in made:
                    if not with_bodies:
                        lines.append(f"GET /a/{token}")
                        continue
                    form = questionnaire_form(instrument, None, assignment.token_hash)
                    values = answers_for(instrument, rng) | {"csrf_token": form.csrf_token.current_token}
                    lines.append(f"POST /a/{token} {urllib.parse.urlencode(values)}")
        return lines

    def api_key(self) -> str:
        """A read key of a new clinician, made by core as ``rapportal api-keys create`` makes it."""
        actor = {"actor": "bench", "address": None}
        with self.app.app_context():
            state = portal()
            with state.sessions.begin() as session:
                create_user(session, "bench-api", "Bench API", "clinician", secrets.token_hex(12), **actor)
                return create_api_key(session, owner="bench-api", name="bench", scopes="read", **actor).secret

    def seed_caseload(self, clients: int, sessions: int, rng: random.Random) -> tuple[str, int]:
        """A clinician with ``clients`` clients, the first with ``sessions`` answered PCOMS sessions.

        Returns the clinician's sign-in cookie (made by core, as signing in makes it) and that client's id.
        The licensed instruments get their placeholder text installed as wording (``seeding.py``), as in
        ``client_page.py``; without it the sessions had no questionnaires and the client page no answers (the figures
        before December 7).
        """
        actor = {"actor": "bench", "address": None}
        with self.app.app_context():
            state = portal()
            with state.sessions.begin() as session:
                refresh_wording(session, state.engine)
                install_placeholder_wording(session, state.engine)
                user = create_user(session, "bench-clinician", "Bench", "clinician", secrets.token_hex(12), **actor)
                cookie = start_session(session, user, None)
                people = [Client(code=f"CASE-{n:04d}", clinician_id=user.id) for n in range(clients)]
                session.add_all(people)
                session.flush()
                episode = start_episode(session, state.engine, people[0], title=None, plan="pcoms", **actor)
                for number in range(1, sessions + 1):
                    started = start_care_session(session, state.engine, episode, number=number, **actor)
                    for link in started.links:
                        instrument = state.engine.instruments.get(link.assignment.instrument_id)
                        submit_response(session, state.engine, link.assignment, typed_answers(instrument, rng))
                client_id = people[0].id
                answered = session.scalar(
                    sa.select(sa.func.count()).select_from(Response).where(Response.client_id == client_id)
                )
        if answered < 2 * sessions:  # an ORS and an SRS a session
            raise RuntimeError(f"the client page's client has {answered} answers, not {2 * sessions}")
        return cookie, client_id

    def rows(self) -> tuple[int, int]:
        """Stored responses, and assignments with more than one (must be 0)."""
        with self.app.app_context(), portal().sessions() as session:
            count = session.scalar(sa.select(sa.func.count()).select_from(Response))
            doubled = session.scalar(
                sa.select(sa.func.count()).select_from(
                    sa.select(Response.assignment_id)
                    .group_by(Response.assignment_id)
                    .having(sa.func.count() > 1)
                    .subquery()
                )
            )
        return count, doubled

    def start(self) -> None:
        command = [BIN / "rapportal", "serve", "--workers", str(self.workers), "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(f"http://127.0.0.1:{self.port}/healthz")


class Bare:
    """The baseline: ``bench/bare_app.py`` under gunicorn with the same workers."""

    def __init__(self, url: str, workers: int) -> None:
        self.env = dict(os.environ, BARE_DATABASE_URL=url)
        self.url = url
        subprocess.run(
            [sys.executable, "-c", "import bare_app; bare_app.create_schema()"],
            env=self.env,
            cwd=ROOT / "bench",
            check=True,
        )
        self.port = free_port()
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def _execute(self, sql: str, rows: list[tuple] | None = None):
        if self.url.startswith("postgresql"):
            with psycopg.connect(self.url) as conn:
                if rows:
                    conn.cursor().executemany(sql.replace("?", "%s"), rows)
                    return None
                return conn.execute(sql).fetchone()
        with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
            if rows:
                conn.executemany(sql, rows)
                return None
            return conn.execute(sql).fetchone()

    def links(self, form: str, count: int, with_bodies: bool, instrument, rng: random.Random) -> list[str]:
        tokens = [os.urandom(16).hex() for _ in range(count)]
        self._execute("INSERT INTO links (token, form) VALUES (?, ?)", [(t, form) for t in tokens])
        if not with_bodies:
            return [f"GET /a/{t}" for t in tokens]
        lines = []
        for token in tokens:
            values = {f"q{i}": v for i, v in enumerate(answers_for(instrument, rng).values(), 1)}
            lines.append(f"POST /a/{token} {urllib.parse.urlencode(values | {'csrf_token': token})}")
        return lines

    def rows(self) -> tuple[int, int]:
        return self._execute("SELECT count(*) FROM responses")[0], 0  # UNIQUE (token): no duplicates possible

    def api_key(self, secret: str) -> None:
        """Store the key's hash, as the portal stores its keys (looked up by hash, never the key)."""
        digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        self._execute("INSERT INTO api_keys (secret_hash, owner) VALUES (?, ?)", [(digest, "bench-api")])

    def start(self) -> None:
        command = [BIN / "gunicorn", "--workers", str(self.workers), "--bind", f"127.0.0.1:{self.port}", "bare_app:app"]
        self.process = subprocess.Popen(
            command, env=self.env, cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_up(f"http://127.0.0.1:{self.port}/a/none")  # a 404 answers too


def wrk(
    server, lines: list[str], seconds: float, threads: int, connections: int, cycle: bool, headers: str = ""
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    env = dict(
        os.environ,
        BENCH_REQUESTS=handle.name,
        BENCH_THREADS=str(threads),
        BENCH_CYCLE="1" if cycle else "0",
        BENCH_HEADERS=headers,
    )
    before = tree_cpu_seconds(server.process.pid)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA)]
    out = subprocess.run([*command, f"http://127.0.0.1:{server.port}"], env=env, capture_output=True, text=True)
    cpu = tree_cpu_seconds(server.process.pid) - before
    os.unlink(handle.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    data = json.loads(line[6:])
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    ok = data["requests"] - data["status"]
    return Result(
        rate=ok / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_ms=1000 * cpu / max(1, data["requests"]),
        ok=ok,
        errors=errors,
        exhausted=data["exhausted_threads"],
    )


def median(results: list[Result]) -> Result:
    pick = sorted(results, key=lambda r: r.rate)[len(results) // 2]
    return Result(
        rate=statistics.median(r.rate for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        cpu_ms=statistics.median(r.cpu_ms for r in results),
        ok=pick.ok,
        errors=sum(r.errors for r in results),
        exhausted=sum(r.exhausted for r in results),
    )


def warm_up(server, lines: list[str], submit: bool, args, headers: str) -> None:
    """An unmeasured pass of ``args.warmup`` seconds, so that every worker has its imports, templates and caches."""
    if args.warmup <= 0:
        return
    wrk(server, lines, args.warmup, args.threads, args.connections, cycle=not submit, headers=headers)
    if submit:
        time.sleep(0.5)  # let requests cut off at the warm-up's deadline finish before the rows are counted


def measure(server, prepare, count: int, submit: bool, args, headers: str = "") -> tuple[Result, str]:
    """Run one scenario ``args.repeat`` times on ``server``; for submits, check the rows after each run.

    ``prepare(n)`` makes ``n`` request lines. Before every measured run the server gets the same short warm-up:
    page views replay the run's own lines (they are cycled anyway), submits get fresh single-use links of their own.
    """
    results, checks = [], []
    for _ in range(args.repeat):
        lines = prepare(count)
        if submit:
            warm_up(
                server,
                prepare(max(args.connections, math.ceil(count * args.warmup / args.duration))),
                True,
                args,
                headers,
            )
        else:
            warm_up(server, lines, False, args, headers)
        before, _doubled = server.rows()
        result = wrk(server, lines, args.duration, args.threads, args.connections, cycle=not submit, headers=headers)
        results.append(result)
        if submit:
            time.sleep(0.5)  # let requests cut off at the deadline finish
            after, doubled = server.rows()
            stored = after - before
            # wrk stops at its deadline without waiting: up to one request per connection can be
            # stored without being counted. Fewer rows than successes would be a lost response.
            fine = result.ok <= stored <= result.ok + args.connections and doubled == 0 and result.errors == 0
            checks.append(f"{result.ok} ok/{stored} rows{'' if fine else ' MISMATCH'}")
    return median(results), "; ".join(checks)


def run_backend(backend: str, args) -> list[tuple]:
    rng = random.Random(1)
    workdir = Path(tempfile.mkdtemp(prefix=f"rapportal-bench-{backend}-"))
    made_databases = []
    if backend == "sqlite":
        portal_url, bare_url = f"sqlite:///{workdir}/rapportal.db", f"sqlite:///{workdir}/bare.db"
    else:
        names = [f"bench_{kind}_{os.getpid()}" for kind in ("portal", "bare")]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in names:
                conn.execute(f"CREATE DATABASE {name}")
                made_databases.append(name)
        portal_url, bare_url = (f"postgresql://postgres@127.0.0.1:5432/{name}" for name in names)
    rows = []
    servers = []
    try:
        rapportal = Portal(workdir / "instance", portal_url, args.workers)
        bare = Bare(bare_url, args.workers)
        for server in (rapportal, bare):
            servers.append(server)  # stopped below even if it never answers
            server.start()
        with rapportal.app.app_context():
            instruments = {i: portal(rapportal.app).engine.instruments.get(i) for i in INSTRUMENTS}
        per_run = {"render": 200, "submit_portal": int(args.portal_rate * args.duration)}
        per_run["submit_bare"] = int(args.bare_rate * args.duration)
        for instrument_id in INSTRUMENTS:
            instrument = instruments[instrument_id]
            for scenario, submit in (("render", False), ("submit", True)):
                if scenario not in args.scenarios:
                    continue
                bare_count = per_run["submit_bare"] if submit else per_run["render"]
                portal_count = per_run["submit_portal"] if submit else per_run["render"]
                base, base_check = measure(
                    bare,
                    partial(bare.links, instrument_id, with_bodies=submit, instrument=instrument, rng=rng),
                    bare_count,
                    submit,
                    args,
                )
                mine, mine_check = measure(
                    rapportal,
                    partial(rapportal.links, instrument_id, with_bodies=submit, rng=rng),
                    portal_count,
                    submit,
                    args,
                )
                rows.append((backend, f"{scenario} {instrument_id}", base, mine, base_check, mine_check))
                print_row(rows[-1])
        if "api" in args.scenarios:
            rows.append(measure_api(backend, rapportal, bare, instruments[API_INSTRUMENT], rng, args))
            print_row(rows[-1])
        if "staff" in args.scenarios:
            measure_staff(backend, rapportal, rng, args)
    finally:
        for server in servers:
            if server.process is not None:
                server.process.terminate()
                server.process.wait(timeout=30)
        if made_databases:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for name in made_databases:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rows


def measure_api(backend: str, rapportal: Portal, bare: Bare, instrument, rng: random.Random, args) -> tuple:
    """The stateless scoring API: one key on every request, a PHQ-9 scoring request in JSON, nothing stored.

    The portal checks the key (one SELECT by hash), counts the request against the key's budget (a write),
    validates and scores; the baseline parses the body, SELECTs the key's row by hash and answers.
    """
    secret = rapportal.api_key()
    bare.api_key(secret)
    headers = f"Content-Type: application/json\nAuthorization: Bearer {secret}"
    bodies = [json.dumps({"answers": typed_answers(instrument, rng)}, separators=(",", ":")) for _ in range(API_BODIES)]
    bare_lines = [f"POST /api/score/{instrument.id} {body}" for body in bodies]
    portal_lines = [f"POST /api/v1/instruments/{instrument.id}/score {body}" for body in bodies]
    base, _check = measure(bare, lambda _n: bare_lines, 0, False, args, headers)
    mine, _check = measure(rapportal, lambda _n: portal_lines, 0, False, args, headers)
    return (backend, f"api score {instrument.id}", base, mine, "", "")


def measure_staff(backend: str, rapportal: Portal, rng: random.Random, args) -> None:
    """The clinician's client page and caseload, signed in (the portal only: no baseline)."""
    cookie, client_id = rapportal.seed_caseload(args.caseload, args.sessions, rng)
    if backend == "postgresql":
        # The throwaway database grew from nothing within minutes (the seeding, and the submit runs before this),
        # faster than autovacuum analyses a new database: without fresh statistics the planner took tables of
        # tens of thousands of rows for empty ones and the client page fell from 244 to 132 views/s. A running
        # portal's tables have statistics; give these theirs.
        with psycopg.connect(rapportal.env["RAPPORTAL_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("ANALYZE")
    staff = {
        f"client page ({args.sessions} sessions)": f"GET /clients/{client_id}",
        f"caseload ({args.caseload} clients)": "GET /caseload",
    }
    for scenario, line in staff.items():
        os.environ["BENCH_COOKIE"] = f"{SESSION_COOKIE}={cookie}"
        try:
            lines = [line] * 64  # enough for every wrk thread
            mine, _check = measure(rapportal, lambda _n, lines=lines: lines, 0, False, args)
        finally:
            del os.environ["BENCH_COOKIE"]
        print(
            f"{backend:10} {scenario:27} portal {mine.rate:7.0f}/s p50 {mine.p50_ms:6.1f} p99 {mine.p99_ms:6.1f} ms "
            f"cpu {mine.cpu_ms:5.2f} ms | errors {mine.errors}",
            flush=True,
        )


def print_row(row: tuple) -> None:
    backend, scenario, base, mine, base_check, mine_check = row
    print(
        f"{backend:10} {scenario:14} bare {base.rate:7.0f}/s p50 {base.p50_ms:6.1f} p99 {base.p99_ms:6.1f} ms "
        f"cpu {base.cpu_ms:5.2f} ms | portal {mine.rate:7.0f}/s p50 {mine.p50_ms:6.1f} p99 {mine.p99_ms:6.1f} ms "
        f"cpu {mine.cpu_ms:5.2f} ms | ratio {mine.rate / base.rate:4.0%} p99x {mine.p99_ms / base.p99_ms:4.1f}"
        + (f" | rows: bare {base_check}; portal {mine_check}" if mine_check else "")
        + (f" | EXHAUSTED {base.exhausted + mine.exhausted}" if base.exhausted + mine.exhausted else "")
        + (f" | ERRORS bare {base.errors}, portal {mine.errors}" if base.errors + mine.errors else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians are shown (default 1)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured seconds of wrk before every measured run (default 1; 0: none)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of both servers (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--portal-rate",
        type=float,
        default=1500,  # above what the portal reaches (2026-12: 500-900/s); a run that runs out says EXHAUSTED
        help="links prepared per second of a portal submit run",
    )
    parser.add_argument("--bare-rate", type=float, default=2500, help="links prepared per second of a bare submit run")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="render, submit (PHQ-9 and SRS), api (scoring), staff (client page, caseload); default all",
    )
    parser.add_argument("--caseload", type=int, default=200, help="clients of the caseload scenario (default 200)")
    parser.add_argument("--sessions", type=int, default=50, help="answered sessions on the client page (default 50)")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs, {args.workers} workers, wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
        f" after {args.warmup} s of warm-up"
    )
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run_backend(backend, args)


if __name__ == "__main__":
    main()
