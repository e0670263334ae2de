"""Crash: SIGKILL the whole server at random moments under load, 20 times; no acknowledged answer lost."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

from test_production_support import (
    Server,
    assert_database_intact,
    assert_exactly_once,
    prepare_database,
    request,
    run_clients,
    start_clients,
)

CYCLES = 20
PER_CYCLE = 300  # answered at a steady pace (start_clients' release), so the server always dies under load
CLIENT_PROCESSES = 8


def test_sigkill_under_load_loses_no_acknowledged_submission_and_leaves_the_database_intact(
    tmp_path: Path, db_url: str
) -> None:
    url = db_url
    rng = random.Random(20)
    fresh = prepare_database(url, CYCLES * PER_CYCLE // 2)
    tokens = list(fresh)
    pending: list[str] = []  # sent but not acknowledged: the next cycle sends them again
    outcomes = []
    interrupted = 0
    server = Server(url, tmp_path / "instance", workers=4)
    for _cycle in range(CYCLES):
        take = max(0, PER_CYCLE - len(pending))
        batch, fresh = pending + fresh[:take], fresh[take:]
        server.start()
        # the clients answer a link every 50 ms each (some 160 a second in all, about 2 s a cycle) and hold their last
        # ones back until after the kill, so it lands while they submit, however fast the server answers
        release = multiprocessing.get_context("fork").Event()
        pool, result = start_clients(server.base, batch, processes=CLIENT_PROCESSES, release=release)
        time.sleep(rng.uniform(0.15, 0.9))
        server.kill()
        release.set()
        cycle_outcomes = [outcome for chunk in result.get(timeout=120) for outcome in chunk]
        pool.join()
        outcomes += cycle_outcomes
        answered = {outcome.token for outcome in cycle_outcomes if outcome.receipt}
        pending = [token for token in batch if token not in answered]
        interrupted += any(outcome.error for outcome in cycle_outcomes)
    # Restart once more: the server comes back healthy and finishes every link the crashes interrupted.
    with server:
        assert request("GET", server.base, "/healthz")[0] == 200
        outcomes += run_clients(server.base, pending, processes=CLIENT_PROCESSES)
    acknowledged = {outcome.token for outcome in outcomes if outcome.receipt}
    print(f"\n{CYCLES} kills, {interrupted} mid-request, {len(acknowledged)} acknowledged submissions")
    assert interrupted >= CYCLES // 2, "the kills did not land under load"
    assert set(pending) <= acknowledged
    state = assert_exactly_once(url, outcomes, tokens)
    assert state.responses == len(acknowledged)
    assert_database_intact(url)
