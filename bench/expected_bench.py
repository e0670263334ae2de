"""Expected-change benchmark: how long one computation of the ORS table takes for a clinic of N completed episodes.

    .venv/bin/python bench/expected_bench.py                     # 1,000 and 10,000 episodes
    .venv/bin/python bench/expected_bench.py --episodes 50000

Generates N ended ORS episodes of 2-12 sessions into a SQLite file with Core bulk inserts, then times
``load_series`` (the query and the parsing) and ``build_table`` (grouping and percentiles) separately, the median
of five runs each. A process recomputes the table at most once per ``EXPECTED_CACHE_SECONDS`` (60 s by default)
per instrument; every other client-page view and submission reads the cached table. Not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
import sqlalchemy.orm as so  # noqa: E402

from core import build_engine  # noqa: E402
from core.db import create_schema, make_db_engine  # noqa: E402
from core.expected import ExpectedSettings, build_table, load_series  # noqa: E402
from core.models import Assignment, CareSession, Client, Episode, Response, Score  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)


def seed(db: sa.Engine, episodes: int) -> int:
    rng = random.Random(1)
    rows: dict[str, list[dict]] = {"episodes": [], "sessions": [], "assignments": [], "responses": [], "scores": []}
    for episode in range(1, episodes + 1):
        started = START + timedelta(minutes=episode)
        rows["episodes"].append(
            {"id": episode, "client_id": 1, "started_at": started, "ended_at": started + timedelta(days=90)}
        )
        total = Decimal(rng.randint(50, 350)) / 10
        for number in range(1, rng.randint(2, 12) + 1):
            ident = len(rows["responses"]) + 1
            when = started + timedelta(days=7 * number)
            rows["sessions"].append({"id": ident, "episode_id": episode, "number": number, "held_at": when})
            rows["assignments"].append(
                {
                    "id": ident,
                    "client_id": 1,
                    "episode_id": episode,
                    "session_id": ident,
                    "instrument_id": "ors",
                    "instrument_version": "1.0.0",
                    "token_hash": f"{ident:064d}",
                    "expires_at": when,
                    "completed_at": when,
                }
            )
            rows["responses"].append(
                {
                    "id": ident,
                    "assignment_id": ident,
                    "client_id": 1,
                    "episode_id": episode,
                    "instrument_id": "ors",
                    "instrument_version": "1.0.0",
                    "answers": {},
                    "receipt": "R",
                    "submitted_at": when,
                }
            )
            rows["scores"].append(
                {"response_id": ident, "complete": True, "values": {"total": str(total)}, "flags": []}
            )
            total = min(Decimal(40), max(Decimal(0), total + Decimal(rng.randint(-20, 30)) / 10))
    with db.begin() as conn:
        conn.execute(sa.insert(Client), [{"id": 1, "code": "BENCH"}])
        for model, key in (
            (Episode, "episodes"),
            (CareSession, "sessions"),
            (Assignment, "assignments"),
            (Response, "responses"),
            (Score, "scores"),
        ):
            conn.execute(sa.insert(model), rows[key])
    return len(rows["responses"])


def run(episodes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = make_db_engine(f"sqlite:///{Path(folder) / 'bench.db'}")
        create_schema(db)
        responses = seed(db, episodes)
        instrument = build_engine(load_entrypoints=False).instruments.get("ors")
        settings = ExpectedSettings()
        loads, builds = [], []
        for _ in range(5):
            with so.Session(db) as session:
                began = time.perf_counter()
                series = load_series(session, "ors", "total")
                loads.append(time.perf_counter() - began)
            began = time.perf_counter()
            build_table(instrument, "total", series, settings)
            builds.append(time.perf_counter() - began)
        db.dispose()
    print(
        f"{episodes:>7} episodes, {responses:>7} responses: load_series {statistics.median(loads) * 1000:8.1f} ms, "
        f"build_table {statistics.median(builds) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, action="append", help="episode count (repeatable)")
    for count in parser.parse_args().episodes or [1_000, 10_000]:
        run(count)


if __name__ == "__main__":
    main()
