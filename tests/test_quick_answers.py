"""The quick path of a posted questionnaire says "passes" exactly where the WTForms form does.

`web.forms.quick_answers` reads a link's or the kiosk's post without binding the form; whenever it is not sure, the
form decides and words the errors (`PostedAnswers`). These tests post thousands of answers, good and bad, with good,
forged, expired and missing form tokens and with unknown fields, and compare both verdicts and the answers.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from web.forms import (
    CSRF_FIELD,
    PostedAnswers,
    _csrf_mac,
    answers_from,
    has_unknown_fields,
    questionnaire_form,
    quick_answers,
)

ODD_VALUES = ["", "abc", "-1", "99", "1.5", " 1", "1 ", "0x1", "\u0661", "1e1", "nan", "inf", "0", "3", "10",
              "7.3", "10.0", "10.01", "-0.0", "1,5", "true"]  # fmt: skip
CONTEXT = "link-hash"


def _token(app: Any, context: str = CONTEXT, issued: int | None = None) -> str:
    issued = int(time.time()) if issued is None else issued
    return f"{issued}.{_csrf_mac(app.config['SECRET_KEY'].encode(), context, issued)}"


def _post(app: Any, instrument: Any, rng: random.Random) -> MultiDict:
    fields = MultiDict()
    clean = rng.random() < 0.4  # every answer one the form takes (and a good token, below)
    for item in instrument.items:
        good = [str(option.value) for option in item.options] or ["0", "5.5", "10", "7.3"]
        if clean:
            fields.add(item.id, rng.choice(good))
            continue
        roll = rng.random()
        if roll < 0.08:
            continue  # unanswered
        for _ in range(2 if roll > 0.97 else 1):  # now and then the same item twice
            fields.add(item.id, rng.choice(good) if rng.random() < 0.85 else rng.choice(ODD_VALUES))
    roll = 0.0 if clean else rng.random()
    if roll < 0.8:
        fields.add(CSRF_FIELD, _token(app))
    elif roll < 0.85:
        fields.add(CSRF_FIELD, _token(app, context="another-link"))
    elif roll < 0.9:
        fields.add(CSRF_FIELD, _token(app, issued=int(time.time()) - app.config["CSRF_TIME_LIMIT"] - 5))
    elif roll < 0.95:
        fields.add(CSRF_FIELD, _token(app)[:-1] + "0")
    if not clean and rng.random() < 0.05:
        fields.add(rng.choice(["unknown_item", "assignment"]), "1")
    return fields


@pytest.mark.parametrize("instrument_id", ["phq9", "gad7", "core10", "ors", "srs", "wai-sr"])
def test_the_quick_path_passes_exactly_the_posts_the_form_passes_with_the_same_answers(app, instrument_id):
    rng = random.Random(instrument_id)
    instrument = app.extensions["rapportal"].engine.instruments.get(instrument_id)
    passed = 0
    with app.test_request_context("/", method="POST"):
        for _ in range(1500):
            fields = _post(app, instrument, rng)
            form = questionnaire_form(instrument, fields, CONTEXT)
            form_passes = form.validate() and not has_unknown_fields(instrument, fields)
            quick = quick_answers(instrument, fields, CONTEXT)
            assert (quick is not None) == form_passes, (fields, form.errors)
            if form_passes:
                assert quick == answers_from(form, instrument)
                passed += 1
    assert 300 < passed < 1450  # both verdicts were exercised


def test_a_refused_post_gets_the_bound_form_with_its_errors(app):
    instrument = app.extensions["rapportal"].engine.instruments.get("phq9")
    with app.test_request_context("/", method="POST"):
        fields = MultiDict({**{f"phq9_{n}": "1" for n in range(1, 9)}, "phq9_9": "7", CSRF_FIELD: _token(app)})
        posted = PostedAnswers(instrument, fields, CONTEXT)
        assert posted.answers is None and not posted.valid and not posted.unknown
        assert posted.form["phq9_9"].errors or posted.form["phq9_9"].process_errors
        extra = MultiDict({**{f"phq9_{n}": "1" for n in range(1, 10)}, "phq9_10": "1", CSRF_FIELD: _token(app)})
        posted = PostedAnswers(instrument, extra, CONTEXT)
        assert posted.answers is None and posted.valid and posted.unknown
        fine = MultiDict({**{f"phq9_{n}": "2" for n in range(1, 10)}, CSRF_FIELD: _token(app)})
        posted = PostedAnswers(instrument, fine, CONTEXT)
        assert posted.answers == {f"phq9_{n}": 2 for n in range(1, 10)}
        assert "form" not in vars(posted)  # the form was never built
