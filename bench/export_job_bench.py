"""Export as a job: the issue's 250,000 responses to XLSX, timed phase by phase, with the progress it reports.

    .venv/bin/python bench/export_job_bench.py                   # 250,000 responses, XLSX
    .venv/bin/python bench/export_job_bench.py --rows 20000 --format csv

Generates the responses into a SQLite file (bench/export_bench.py's generator), starts the export the way
the exports page does (core.export_jobs.start_export), runs the job in this process while a second thread
reads its progress row every half second, then opens the file with openpyxl (read-only) and counts the rows.
Not a test: tests/test_export_jobs.py checks the same path (at 250,000 rows when CI=true).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import sqlalchemy as sa  # noqa: E402
from export_bench import generate  # noqa: E402

from core.accounts import create_user  # noqa: E402
from core.export_jobs import start_export  # noqa: E402
from core.models import ExportJob, User  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--format", default="xlsx")
    args = parser.parse_args()

    from web import create_app
    from web.state import job_context, portal

    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "bench.db"
        started = time.perf_counter()
        generate(db_path, args.rows)
        seeded = time.perf_counter() - started
        os.environ["RAPPORTAL_INSTANCE_PATH"] = str(Path(folder) / "instance")
        app = create_app({"DATABASE_URL": f"sqlite:///{db_path}", "LOAD_ENTRYPOINTS": False, "SECRET_KEY": "bench"})
        state = portal(app)
        with state.sessions.begin() as session:
            if session.scalar(sa.select(User).where(User.username == "bench-admin")) is None:
                create_user(
                    session, "bench-admin", "Bench", "admin", "a long bench password", actor="bench", address=None
                )
        with state.sessions.begin() as session:
            admin = session.scalar(sa.select(User).where(User.username == "bench-admin"))
            export_id = start_export(session, admin, state.jobs, exporter=args.format, filters={}).id
        samples: list[tuple[float, int, int | None]] = []
        done = threading.Event()

        def watch() -> None:
            begun = time.perf_counter()
            while not done.wait(0.5):
                with state.sessions() as session:
                    row = session.get(ExportJob, export_id)
                    samples.append((round(time.perf_counter() - begun, 1), row.rows_written, row.rows_expected))

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.perf_counter()
        state.jobs.run_until_idle(job_context(app))
        exported = time.perf_counter() - started
        done.set()
        watcher.join()
        with state.sessions() as session:
            row = session.get(ExportJob, export_id)
            path, written, status = Path(row.path), row.rows_written, row.status
        read_rows = None
        read = 0.0
        if args.format == "xlsx":
            import openpyxl

            started = time.perf_counter()
            book = openpyxl.load_workbook(path, read_only=True)
            read_rows = sum(sum(1 for _ in sheet.iter_rows(min_row=2, values_only=True)) for sheet in book.worksheets)
            book.close()
            read = time.perf_counter() - started
        state.db.dispose()
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "format": args.format,
                    "status": status,
                    "rows_written": written,
                    "file_mib": round(path.stat().st_size / 2**20, 1),
                    "seed_seconds": round(seeded, 1),
                    "export_seconds": round(exported, 1),
                    "rows_per_second": round(written / exported) if exported else None,
                    "progress_samples": len(samples),
                    "progress_first_last": [samples[0], samples[-1]] if samples else [],
                    "openpyxl_rows": read_rows,
                    "openpyxl_seconds": round(read, 1),
                    "load_average": os.getloadavg()[0],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
