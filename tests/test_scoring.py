"""Scoring against every published boundary in shared/INSTRUMENTS.md, on exact decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from plugin_support import InstrumentFiles

from core import ScoreResult, ScoringRule, build_engine, hookimpl
from core.instruments import check_examples
from core.scoring import decimal_to_json
from plugins.scoring_rules import reliable_change_threshold


def answers(prefix: str, values) -> dict:
    return {f"{prefix}_{n}": value for n, value in enumerate(values, start=1)}


def with_total(prefix: str, count: int, total: int, top: int) -> dict:
    """Answers that add up to ``total``: fill items with ``top`` from the first, then the remainder."""
    values = []
    left = total
    for _ in range(count):
        values.append(min(top, left))
        left -= values[-1]
    assert left == 0
    return answers(prefix, values)


@pytest.mark.parametrize("instrument_id", ["phq9", "gad7", "core10", "wai-sr", "srs", "ors"])
def test_worked_examples_of_every_builtin_agree(engine, instrument_id):
    instrument = engine.instruments.get(instrument_id)
    assert len(instrument.examples) >= 4
    assert check_examples(instrument) == []


PHQ9_BANDS = [
    (0, "minimal"),
    (4, "minimal"),
    (5, "mild"),
    (9, "mild"),
    (10, "moderate"),
    (14, "moderate"),
    (15, "moderately_severe"),
    (19, "moderately_severe"),
    (20, "severe"),
    (27, "severe"),
]


@pytest.mark.parametrize(("total", "band"), PHQ9_BANDS)
def test_phq9_band_edges(engine, total, band):
    # item 9 kept at 0 by filling from the first item, except at the very top
    result = engine.score("phq9", with_total("phq9", 9, total, 3))
    assert result.scores["total"] == total
    assert result.band == band
    assert ("clinical_cutoff" in result.flags) == (total >= 10)


def test_phq9_item9_flag_stands_at_a_minimal_total(engine):
    result = engine.score("phq9", answers("phq9", [0] * 8 + [1]))
    assert result.band == "minimal"
    assert result.flags == ("item9_risk",)


def test_phq9_proration_limit_is_two_missing_items(engine):
    two_missing = engine.score("phq9", answers("phq9", [1, 1, 1, 1, 1, 1, 1, None, None]))
    assert two_missing.scores["total"] == Decimal("9.0")
    assert "prorated" in two_missing.flags and not two_missing.complete
    three_missing = engine.score("phq9", answers("phq9", [1, 1, 1, 1, 1, 1, None, None, None]))
    assert three_missing.scores["total"] is None and three_missing.band is None
    assert three_missing.flags == ("not_scorable",)


def test_phq9_prorated_total_is_rounded_half_up_to_one_decimal(engine):
    # mean of 3,3,3,3,3,3,2 = 20/7; x 9 = 25.714... -> 25.7
    result = engine.score("phq9", answers("phq9", [3, 3, 3, 3, 3, 3, 2, None, None]))
    assert result.scores["total"] == Decimal("25.7")


def test_prorated_decimal_total_falls_in_the_band_it_lies_in(engine):
    # mean of 2,2,2,2,1,1,1 (11/7) x 9 = 14.14 -> 14.1: moderate, not a gap
    result = engine.score("phq9", answers("phq9", [2, 2, 2, 2, 1, 1, 1, None, None]))
    assert result.scores["total"] == Decimal("14.1")
    assert result.band == "moderate"


GAD7_BANDS = [
    (0, "minimal"),
    (4, "minimal"),
    (5, "mild"),
    (9, "mild"),
    (10, "moderate"),
    (14, "moderate"),
    (15, "severe"),
    (21, "severe"),
]


@pytest.mark.parametrize(("total", "band"), GAD7_BANDS)
def test_gad7_band_edges(engine, total, band):
    result = engine.score("gad7", with_total("gad7", 7, total, 3))
    assert (result.scores["total"], result.band) == (total, band)
    assert ("clinical_cutoff" in result.flags) == (total >= 10)


def test_gad7_any_missing_item_is_not_scorable(engine):
    result = engine.score("gad7", answers("gad7", [0, 0, 0, 0, 0, 0, None]))
    assert result.flags == ("not_scorable",) and result.scores["total"] is None


def core10_with_total(total: int) -> dict:
    """Reversed items 2 and 3 at 4 (keyed 0); the rest filled to reach ``total``, item 6 last."""
    order = [1, 4, 5, 7, 8, 9, 10, 6]
    values = {n: 0 for n in range(1, 11)}
    values[2] = values[3] = 4
    left = total
    for n in order:
        values[n] = min(4, left)
        left -= values[n]
    assert left == 0
    return {f"core10_{n}": values[n] for n in range(1, 11)}


CORE10_BANDS = [
    (0, "healthy"),
    (5, "healthy"),
    (6, "low"),
    (10, "low"),
    (11, "mild"),
    (14, "mild"),
    (15, "moderate"),
    (19, "moderate"),
    (20, "moderate_severe"),
    (24, "moderate_severe"),
    (25, "severe"),
    (28, "severe"),
]


@pytest.mark.parametrize(("total", "band"), CORE10_BANDS)
def test_core10_band_edges_and_cutoff(engine, total, band):
    result = engine.score("core10", core10_with_total(total))
    assert (result.scores["total"], result.band) == (total, band)
    assert ("clinical_cutoff" in result.flags) == (total >= 11)
    assert "item6_risk" not in result.flags


def test_core10_reverses_items_2_and_3(engine):
    base = core10_with_total(0)
    assert engine.score("core10", {**base, "core10_2": 0}).scores["total"] == 4
    assert engine.score("core10", {**base, "core10_3": 3}).scores["total"] == 1


def test_core10_item6_flag_is_any_answer_above_zero(engine):
    base = core10_with_total(0)
    assert "item6_risk" not in engine.score("core10", {**base, "core10_6": 0}).flags
    assert "item6_risk" in engine.score("core10", {**base, "core10_6": 1}).flags


def test_core10_one_missing_item_is_prorated_two_are_not_scorable(engine):
    one = engine.score("core10", {**core10_with_total(9), "core10_10": None})
    assert one.scores["total"] == Decimal("10.0") and "prorated" in one.flags  # 10 x 9 / 9
    two = engine.score("core10", {**core10_with_total(9), "core10_10": None, "core10_9": None})
    assert two.scores["total"] is None and "not_scorable" in two.flags


def test_wai_sr_subscales_and_means(engine):
    result = engine.score("wai-sr", answers("wai", [5, 5, 1, 2, 1, 2, 1, 2, 1, 5, 2, 5]))
    assert result.scores["task"] == 20 and result.scores["goal"] == 8 and result.scores["bond"] == 4
    assert result.scores["total"] == 32
    assert result.scores["total_mean"] == Decimal("2.67")
    assert result.scores["task_mean"] == Decimal("5.00")
    assert result.band is None and result.flags == ()


def srs(values) -> dict:
    return answers("srs", values)


def ors(values) -> dict:
    return answers("ors", values)


def test_srs_cutoff_is_strictly_below_36(engine):
    assert "alliance_concern" not in engine.score("srs", srs([9.0, 9.0, 9.0, 9.0])).flags
    assert "alliance_concern" in engine.score("srs", srs([9.0, 9.0, 9.0, 8.9])).flags


def test_srs_drop_of_exactly_one_point_against_the_previous_srs(engine):
    history = [srs([10.0, 10.0, 10.0, 10.0]), srs([9.5, 9.5, 9.5, 9.5])]  # previous 38.0
    assert "alliance_drop" in engine.score("srs", srs([9.5, 9.5, 9.5, 8.5]), history).flags  # 37.0
    assert "alliance_drop" not in engine.score("srs", srs([9.5, 9.5, 9.5, 8.6]), history).flags  # 37.1


def test_srs_without_history_has_no_drop(engine):
    assert "alliance_drop" not in engine.score("srs", srs([1.0, 1.0, 1.0, 1.0])).flags


def test_vas_tenths_add_exactly(engine):
    result = engine.score("srs", srs([0.1, 0.2, 0.3, 0.4]))
    assert result.scores["total"] == Decimal("1.0")
    assert decimal_to_json(result.scores["total"]) == 1.0


def test_vas_value_with_two_decimals_is_refused(engine):
    from core import ResponseValidationError

    with pytest.raises(ResponseValidationError) as excinfo:
        engine.score("srs", srs([7.25, 5.0, 5.0, 5.0]))
    assert excinfo.value.by_item() == {"srs_1": "must be in steps of 0.1 (got 7.25)"}


def test_ors_clinical_cutoff_edges(engine):
    at = engine.score("ors", ors([6.2, 6.3, 6.2, 6.3]))  # 25.0
    above = engine.score("ors", ors([6.2, 6.3, 6.3, 6.3]))  # 25.1
    assert (at.band, "clinical_range" in at.flags) == ("clinical", True)
    assert (above.band, "clinical_range" in above.flags) == ("non_clinical", False)


@pytest.mark.parametrize(
    ("current", "flag"),
    [
        ([6.0, 6.0, 6.0, 7.0], "reliable_improvement"),  # 25.0 - 20.0 = +5.0 exactly
        ([6.0, 6.0, 6.0, 6.9], None),  # +4.9
        ([4.0, 4.0, 4.0, 3.0], "reliable_deterioration"),  # -5.0 exactly
        ([4.0, 4.0, 4.0, 3.1], None),  # -4.9
    ],
)
def test_ors_reliable_change_of_exactly_five_points(engine, current, flag):
    result = engine.score("ors", ors(current), [ors([5.0, 5.0, 5.0, 5.0])])
    change_flags = {"reliable_improvement", "reliable_deterioration"} & set(result.flags)
    assert change_flags == ({flag} if flag else set())


def test_ors_change_is_against_the_first_ors_not_the_previous(engine):
    history = [ors([5.0, 5.0, 5.0, 5.0]), ors([1.0, 1.0, 1.0, 1.0])]
    result = engine.score("ors", ors([6.0, 6.0, 6.0, 7.0]), history)
    assert result.scores["change_from_baseline"] == Decimal("5.0")


def test_ors_clinically_significant_improvement_needs_both_conditions(engine):
    baseline = [ors([5.0, 5.0, 5.0, 5.0])]  # 20.0, clinical
    crosses = engine.score("ors", ors([6.3, 6.3, 6.3, 6.2]), baseline)  # 25.1: +5.1, leaves the range
    stays = engine.score("ors", ors([6.2, 6.3, 6.2, 6.3]), baseline)  # 25.0: +5.0, still clinical
    assert "clinically_significant_improvement" in crosses.flags
    assert "clinically_significant_improvement" not in stays.flags
    started_high = engine.score("ors", ors([9.0, 9.0, 9.0, 9.0]), [ors([7.0, 7.0, 7.0, 7.0])])
    assert "reliable_improvement" in started_high.flags
    assert "clinically_significant_improvement" not in started_high.flags


def test_first_ors_has_no_change_score(engine):
    result = engine.score("ors", ors([5.0, 5.0, 5.0, 5.0]))
    assert result.scores["change_from_baseline"] is None
    assert "not_scorable" not in result.flags


def test_jacobson_truax_published_check():
    # SD 12.90, alpha .91: SEM 3.87, S_diff 5.47, 1.96 x S_diff = 10.73
    assert round(reliable_change_threshold("12.90", "0.91"), 2) == Decimal("10.73")
    assert round(reliable_change_threshold("12.90", "0.91", 1), 2) == Decimal("5.47")


def test_reliable_change_rule_with_sd_and_reliability(tmp_path):
    import json

    from core.schemas import INSTRUMENTS_DIR

    document = json.loads((INSTRUMENTS_DIR / "phq9" / "phq9.json").read_text())
    document["x-instrument"]["version"] = "9.0.0"
    document["x-examples"] = []
    document["x-scoring"]["flags"].append(
        {
            "id": "jt_improvement",
            "rule": "reliable_change",
            "params": {
                "score": "total",
                "direction": "improvement",
                "higher_is_better": False,
                "sd": 4.8,
                "reliability": 0.9,
            },
        }
    )
    path = tmp_path / "phq9.json"
    path.write_text(json.dumps(document))

    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(path)])
    # threshold 1.96 x sqrt(2) x 4.8 x sqrt(0.1) = 4.207...: a drop of 5 is reliable, 4 is not
    before = [with_total("phq9", 9, 15, 3)]
    assert "jt_improvement" in engine.score("phq9", with_total("phq9", 9, 10, 3), before, version="9.0.0").flags
    assert "jt_improvement" not in engine.score("phq9", with_total("phq9", 9, 11, 3), before, version="9.0.0").flags


def test_a_plugin_scoring_rule_is_used_by_name(tmp_path):
    import json

    from core.schemas import INSTRUMENTS_DIR

    def highest(params, ctx):
        values = [ctx.answers[i] for i in params["items"] if ctx.answers[i] is not None]
        return max(values) if values else None

    document = json.loads((INSTRUMENTS_DIR / "gad7" / "gad7.json").read_text())
    document["x-instrument"]["version"] = "2.0.0"
    document["x-examples"] = []
    document["x-scoring"]["scores"].append(
        {"name": "worst", "rule": "highest", "params": {"items": ["gad7_1", "gad7_2"]}}
    )
    path = tmp_path / "gad7.json"
    path.write_text(json.dumps(document))

    class Rules:
        @hookimpl
        def register_scoring_rules(self):
            return [ScoringRule("highest", "score", highest, {"type": "object"}, "The highest answer.")]

        @hookimpl
        def register_instruments(self):
            return [path]

    engine = build_engine(load_entrypoints=False, extra_plugins=[Rules()])
    result = engine.score("gad7", answers("gad7", [1, 3, 0, 0, 0, 0, 0]), version="2.0.0")
    assert result.scores["worst"] == 3


def test_result_json_shape(engine):
    result = engine.score("ors", ors([4.0, 4.0, 4.0, 4.0]), [ors([5.0, 5.0, 5.0, 5.0])])
    assert isinstance(result, ScoreResult)
    assert result.to_json() == {
        "instrument": "ors",
        "version": "1.0.0",
        "complete": True,
        "scores": {"total": 16.0, "change_from_baseline": -4.0},
        "band": "clinical",
        "flags": ["clinical_range"],
    }


def test_only_instruments_with_change_rules_look_back(engine):
    uses = {i.id: i.scoring.uses_history for i in engine.instruments}
    assert uses == {"core10": False, "gad7": False, "phq9": False, "ors": True, "srs": True, "wai-sr": True}


def test_a_submission_loads_no_history_when_no_rule_looks_back(app, monkeypatch):
    import core.responses
    from core.models import Client

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("history loaded for an instrument without change rules")

    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        _assignment, token = core.responses.create_assignment(session, portal.engine, Client(code="H-1"), "phq9")
    monkeypatch.setattr(core.responses, "earlier_responses", must_not_be_called)
    submission = core.responses.submit_by_token(portal.sessions, portal.engine, token, answers("phq9", [1] * 9))
    assert submission.created
