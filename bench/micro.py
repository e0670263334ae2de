"""In-process micro-benchmarks: validation and scoring per instrument, beside the compiled validator alone.

    .venv/bin/python bench/micro.py              # every built-in instrument, about 1 s each
    .venv/bin/python bench/micro.py --seconds 3

For each instrument it prints responses/s of the compiled JSON Schema validator alone
(``instrument.validator.is_valid``), of ``core.validate_answers`` (the same validator, with
item-by-item messages on failure), of ``core.score_response`` (with no history), and of both
together. Answers are valid and drawn at random from each item's options or range. Not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import build_engine, score_response, validate_answers
from core.instruments import Instrument


def sample_answers(instrument: Instrument, rng: random.Random) -> dict[str, object]:
    """One valid response: an option of every choice item, a number in range for the others."""
    answers: dict[str, object] = {}
    for item in instrument.items:
        if item.options:
            answers[item.id] = rng.choice(item.options).value
        else:
            low, high = float(item.minimum or 0), float(item.maximum or 10)
            answers[item.id] = round(rng.uniform(low, high), 1)
    return answers


def rate(work: Callable[[dict[str, object]], object], samples: list[dict[str, object]], seconds: float) -> float:
    """Calls per second of ``work`` over ``samples``, repeated for about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for answers in samples:
            work(answers)
        done += len(samples)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement (default 1)")
    args = parser.parse_args()
    engine = build_engine()
    rng = random.Random(1)
    print(f"{'instrument':10} {'validator alone':>16} {'validate_answers':>17} {'score_response':>15} {'both':>10}")
    for instrument in engine.instruments:
        samples = [sample_answers(instrument, rng) for _ in range(200)]
        for answers in samples:
            validate_answers(instrument, answers)  # every sample is valid, or the figures mean nothing
        validator = instrument.validator
        alone = rate(validator.is_valid, samples, args.seconds)
        validating = rate(lambda a, i=instrument: validate_answers(i, a), samples, args.seconds)
        scoring = rate(lambda a, i=instrument: score_response(i, a), samples, args.seconds)
        both = rate(lambda a, i=instrument: (validate_answers(i, a), score_response(i, a)), samples, args.seconds)
        print(f"{instrument.id:10} {alone:14,.0f}/s {validating:15,.0f}/s {scoring:13,.0f}/s {both:8,.0f}/s")


if __name__ == "__main__":
    main()
