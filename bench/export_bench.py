"""Export benchmark: rows/s and peak RSS per format against bare SQLAlchemy Core + csv.

    .venv/bin/python bench/export_bench.py                  # 20,000 responses, quick
    .venv/bin/python bench/export_bench.py --rows 1000000   # the real run
    .venv/bin/python bench/export_bench.py --db FILE --job --formats csv xlsx   # as background jobs

Generates N scored responses (PHQ-9, GAD-7 and SRS, with clients, clinicians and sessions) into
a SQLite file with Core bulk inserts, then exports them in every registered format. Each format
runs in a fresh subprocess so that its peak RSS is its own. The baseline selects the same joined
columns with SQLAlchemy Core and writes them with ``csv.writer``, untouched. With ``--job`` every
format runs as the exports page runs it: ``core.export_jobs.start_export``, then the job in that
process (counting the rows first, writing its progress, fsync, the file moved into place). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from core.db import create_schema, make_db_engine  # noqa: E402
from core.models import Assignment, CareSession, Client, Episode, Response, Score, User  # noqa: E402

BATCH = 20_000
PHQ9_BANDS = [(4, "minimal"), (9, "mild"), (14, "moderate"), (19, "moderately_severe"), (27, "severe")]


def _band(total: int) -> str:
    return next(name for top, name in PHQ9_BANDS if total <= top)


def generate(path: Path, rows: int) -> None:
    """Fill a fresh SQLite file with ``rows`` scored responses, fast (Core executemany)."""
    db = make_db_engine(f"sqlite:///{path}")
    create_schema(db)
    rng = random.Random(1)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    clients = max(1, rows // 20)
    with db.begin() as conn:
        conn.execute(
            sa.insert(User.__table__),
            [
                {"id": i, "username": f"clin{i}", "display_name": f"Clinician {i}", "role": "clinician"}
                for i in range(1, 21)
            ],
        )
        conn.execute(
            sa.insert(Client.__table__),
            [
                {"id": i, "code": f"C{i:07d}", "display_name": f"Client {i}", "clinician_id": 1 + i % 20}
                for i in range(1, clients + 1)
            ],
        )
        conn.execute(sa.insert(Episode.__table__), [{"id": i, "client_id": i} for i in range(1, clients + 1)])
    done = 0
    while done < rows:
        count = min(BATCH, rows - done)
        sessions, assignments, responses, scores = [], [], [], []
        for n in range(done + 1, done + count + 1):
            client = 1 + n % clients
            when = start + timedelta(seconds=n * 30)
            kind = n % 10
            if kind < 5:
                instrument, version = "phq9", "1.0.0"
                answers = {f"phq9_{i}": rng.randint(0, 3) for i in range(1, 10)}
                total = sum(answers.values())
                values = {"total": str(total)}
                band = _band(total)
                flags = (["clinical_cutoff"] if total >= 10 else []) + (["item9_risk"] if answers["phq9_9"] else [])
            elif kind < 8:
                instrument, version = "gad7", "1.0.0"
                answers = {f"gad7_{i}": rng.randint(0, 3) for i in range(1, 8)}
                total = sum(answers.values())
                values = {"total": str(total)}
                band = _band(total) if total < 15 else "severe"
                flags = ["clinical_cutoff"] if total >= 10 else []
            else:
                instrument, version = "srs", "3.0.0"
                answers = {f"srs_{i}": rng.randint(0, 100) / 10 for i in range(1, 5)}
                total_d = sum(round(v * 10) for v in answers.values()) / 10
                values = {"total": f"{total_d:.1f}"}
                band = None
                flags = ["alliance_concern"] if total_d < 36 else []
            sessions.append({"id": n, "episode_id": client, "number": n // clients + 1, "held_at": when})
            assignments.append(
                {
                    "id": n,
                    "client_id": client,
                    "episode_id": client,
                    "session_id": n,
                    "instrument_id": instrument,
                    "instrument_version": version,
                    "token_hash": f"{n:064x}",
                    "created_at": when,
                    "expires_at": when + timedelta(days=7),
                    "completed_at": when,
                }
            )
            responses.append(
                {
                    "id": n,
                    "assignment_id": n,
                    "client_id": client,
                    "episode_id": client,
                    "instrument_id": instrument,
                    "instrument_version": version,
                    "answers": answers,
                    "receipt": f"{n:08X}",
                    "submitted_at": when,
                }
            )
            scores.append(
                {"response_id": n, "complete": True, "values": values, "band": band, "flags": flags, "scored_at": when}
            )
        with db.begin() as conn:
            conn.execute(sa.insert(CareSession.__table__), sessions)
            conn.execute(sa.insert(Assignment.__table__), assignments)
            conn.execute(sa.insert(Response.__table__), responses)
            conn.execute(sa.insert(Score.__table__), scores)
        done += count
        print(f"  generated {done:,} / {rows:,}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    db.dispose()


def run_baseline(path: Path, output: Path) -> int:
    """Bare SQLAlchemy Core + csv: the same joined columns, streamed, written untouched."""
    import csv

    from core.export import export_query
    from core.exporters import ExportSelection

    db = sa.create_engine(f"sqlite:///{path}")
    count = 0
    with db.connect() as conn, open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        result = conn.execution_options(stream_results=True, yield_per=2000).execute(export_query(ExportSelection()))
        writer.writerow(result.keys())
        for row in result:
            writer.writerow(row)
            count += 1
    return count


def run_format(path: Path, name: str, output: Path) -> tuple[int, float]:
    """Run one export; the clock starts after the engine is built (an application builds it once)."""
    from core import ExportSelection, build_engine
    from core.db import make_session_factory
    from core.export import run_export

    engine = build_engine(load_entrypoints=False)
    sessions = make_session_factory(make_db_engine(f"sqlite:///{path}"))
    started = time.perf_counter()
    with open(output, "wb") as handle:
        rows = run_export(sessions, engine, name, ExportSelection(), handle, actor="bench")
    return rows, time.perf_counter() - started


def _job_app(path: Path, work: Path) -> Any:
    from web import create_app

    os.environ["RAPPORTAL_INSTANCE_PATH"] = str(work / "instance")
    settings = {"DATABASE_URL": f"sqlite:///{path}", "LOAD_ENTRYPOINTS": False, "SECRET_KEY": "bench"}
    return create_app(settings | {"EXPORT_FOLDER": str(work / "exports")})


def ensure_admin(path: Path, work: Path) -> None:
    """The administrator who starts the export jobs, made in the parent: hashing a password (argon2 takes
    64 MiB) in a measured child would be its peak memory."""
    from core.accounts import create_user
    from web.state import portal

    state = portal(_job_app(path, work))
    with state.sessions.begin() as session:
        if session.scalar(sa.select(User).where(User.username == "bench-admin")) is None:
            create_user(session, "bench-admin", "Bench", "admin", "a long bench password", actor="bench", address=None)
    state.db.dispose()


def run_job(path: Path, name: str, output: Path) -> tuple[int, float]:
    """Run one export as a background job on the portal's job queue; the clock starts when the job starts."""
    from core.export_jobs import DONE, start_export
    from core.models import ExportJob
    from web.state import job_context, portal

    app = _job_app(path, output.parent)
    state = portal(app)
    with state.sessions.begin() as session:
        admin = session.scalar(sa.select(User).where(User.username == "bench-admin"))
        export_id = start_export(session, admin, state.jobs, exporter=name, filters={}).id
    started = time.perf_counter()
    state.jobs.run_until_idle(job_context(app))
    seconds = time.perf_counter() - started
    with state.sessions() as session:
        row = session.get(ExportJob, export_id)
        if row.status != DONE:
            raise SystemExit(f"the {name} job ended {row.status}: {row.error}")
        os.replace(row.path, output)
        return row.rows_written, seconds


def child(args: argparse.Namespace) -> None:
    output = Path(args.output)
    if args.child.startswith("job:"):
        rows, seconds = run_job(Path(args.db), args.child.removeprefix("job:"), output)
    elif args.child == "baseline":
        started = time.perf_counter()
        rows = run_baseline(Path(args.db), output)
        seconds = time.perf_counter() - started
    else:
        rows, seconds = run_format(Path(args.db), args.child, output)
    peak_kib = _peak_rss_kib()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_kib / 1024, "bytes": output.stat().st_size}))


def _peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM: starts afresh at exec, unlike ru_maxrss on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(db: Path, name: str, out_dir: Path) -> dict[str, float]:
    output = out_dir / f"export-{name}.out"
    command = [sys.executable, __file__, "--child", name, "--db", str(db), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    output.unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="responses to generate (default 20,000)")
    parser.add_argument("--db", help="SQLite file to use (generated when missing)")
    parser.add_argument("--formats", nargs="*", help="formats to run (default: every registered one)")
    parser.add_argument("--job", action="store_true", help="run every format as a background export job")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="rapportal-bench-"))
    db = Path(args.db) if args.db else work / "bench.db"
    if not db.exists():
        started = time.perf_counter()
        generate(db, args.rows)
        print(f"generated {args.rows:,} responses in {time.perf_counter() - started:.0f} s ({db})")
    from core import build_engine
    from core.export import list_exporters

    names = args.formats or [e.name for e in list_exporters(build_engine(load_entrypoints=False))]
    if args.job:
        ensure_admin(db, work)
        names = [f"job:{name}" for name in names]
    baseline = measure(db, "baseline", work)
    base_rate = baseline["rows"] / baseline["seconds"]
    print(f"{'format':<14} {'rows':>10} {'seconds':>8} {'rows/s':>9} {'vs base':>8} {'peak RSS':>9} {'output':>9}")
    print(
        f"{'baseline':<14} {baseline['rows']:>10,} {baseline['seconds']:>8.1f} {base_rate:>9,.0f} {'100%':>8} "
        f"{baseline['peak_mib']:>6.0f} MiB {baseline['bytes'] / 2**20:>5.0f} MiB"
    )
    for name in names:
        result = measure(db, name, work)
        rate = result["rows"] / result["seconds"] if result["seconds"] else 0.0
        print(
            f"{name:<14} {result['rows']:>10,} {result['seconds']:>8.1f} {rate:>9,.0f} {rate / base_rate:>8.0%} "
            f"{result['peak_mib']:>6.0f} MiB {result['bytes'] / 2**20:>5.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
