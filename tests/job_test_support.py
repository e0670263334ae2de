"""Jobs for the worker tests (tests/test_job_runner.py); worker processes load this module via RAPPORTAL_JOB_MODULES.

Each job appends one line to a file named in its arguments; ``O_APPEND`` writes of one short line
do not interleave, so the file says exactly which job acted how many times, from which process.
"""

from __future__ import annotations

import os
import time

from core.jobs import JobContext, job


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job("test.effect", retries=0)
def effect(ctx: JobContext, *, path: str, value: int, seconds: float = 0.0) -> None:
    """Act once: after ``seconds``, write ``value`` and this process's id."""
    if seconds:
        time.sleep(seconds)
    append_line(path, f"{value} {os.getpid()}")


@job("test.slow_effect", retries=1)
def slow_effect(ctx: JobContext, *, path: str, value: int, seconds: float) -> None:
    """Write "started", wait, then write "finished" (a worker killed in between leaves only "started")."""
    append_line(path, f"started {value} {os.getpid()}")
    time.sleep(seconds)
    append_line(path, f"finished {value} {os.getpid()}")
