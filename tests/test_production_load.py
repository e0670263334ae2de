"""Load: 1,600 submissions from 8 client processes through 4 gunicorn workers, none lost or doubled.

Runs on the backend of the current pass (SQLite, or PostgreSQL with RAPPORTAL_TEST_DATABASE_URL).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

from test_production_support import (
    Outcome,
    Server,
    assert_database_intact,
    assert_exactly_once,
    form_token,
    post_answers,
    prepare_database,
    run_clients,
)

SUBMISSIONS = 1600
CLIENT_PROCESSES = 8
SERVER_WORKERS = 4
PAIRS = 500


def test_every_acknowledged_submission_is_stored_exactly_once_under_load(tmp_path: Path, db_url: str) -> None:
    url = db_url
    tokens = prepare_database(url, SUBMISSIONS)
    with Server(url, tmp_path / "instance", workers=SERVER_WORKERS) as server:
        started = time.monotonic()
        outcomes = run_clients(server.base, tokens, processes=CLIENT_PROCESSES)
        elapsed = time.monotonic() - started
    statuses = Counter(outcome.status for outcome in outcomes)
    print(f"\n{SUBMISSIONS} submissions in {elapsed:.1f} s ({SUBMISSIONS / elapsed:.0f}/s), statuses {dict(statuses)}")
    assert statuses == {200: SUBMISSIONS}, [o.error for o in outcomes if o.status != 200][:5]
    state = assert_exactly_once(url, outcomes, tokens)
    assert state.responses == SUBMISSIONS
    assert_database_intact(url)


def _submit_pairs(base: str, tokens: list[str]) -> list[tuple[str, list[tuple[int, str | None]]]]:
    """For each link, two identical POSTs released at the same instant from two threads."""
    results = []
    for token in tokens:
        csrf = form_token(base, token)
        barrier = threading.Barrier(2)
        seen: list[tuple[int, str | None]] = []

        def post(token: str = token, csrf: str = csrf, barrier: threading.Barrier = barrier, seen=seen) -> None:
            barrier.wait()
            seen.append(post_answers(base, token, csrf))

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results.append((token, seen))
    return results


def _pairs_chunk(args: tuple[str, list[str]]):
    return _submit_pairs(*args)


def test_concurrent_identical_submissions_store_one_response_with_one_receipt(tmp_path: Path, db_url: str) -> None:
    url = db_url
    tokens = prepare_database(url, PAIRS)
    with Server(url, tmp_path / "instance", workers=SERVER_WORKERS) as server:
        chunks = [(server.base, tokens[index::CLIENT_PROCESSES]) for index in range(CLIENT_PROCESSES)]
        with multiprocessing.get_context("fork").Pool(CLIENT_PROCESSES) as pool:
            results = [pair for chunk in pool.map(_pairs_chunk, chunks) for pair in chunk]
    assert len(results) == PAIRS
    statuses = Counter(status for _token, seen in results for status, _receipt in seen)
    assert statuses == {200: 2 * PAIRS}
    differing = [token for token, seen in results if len({receipt for _status, receipt in seen}) != 1]
    assert differing == [], f"{len(differing)} pairs were told different receipts"
    outcomes = [Outcome(token, 200, seen[0][1]) for token, seen in results]
    state = assert_exactly_once(url, outcomes, tokens)
    assert state.responses == PAIRS
