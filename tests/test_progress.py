"""Progress views come from the definition: charted scores, cutoff lines, bands, reliable-change bands, summary."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from plugin_support import InstrumentFiles

from core import Administration, InstrumentDefinitionError, build_engine, episode_progress, reliable_change_threshold
from core.instruments import build_instrument
from core.progress import chart_specs, score_range


def distress_document(bands: dict | None = None, flags: list | None = None) -> dict:
    """A small plugin-style instrument: three 0-4 items, a summed total and a mean, nothing charted by default."""
    items = ["d_1", "d_2", "d_3"]
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Acme Distress",
        "type": "object",
        "required": items,
        "additionalProperties": False,
        "properties": {
            item: {"type": ["integer", "null"], "minimum": 0, "maximum": 4, "x-text": f"Item {n}"}
            for n, item in enumerate(items, 1)
        },
        "x-instrument": {
            "id": "acme-distress",
            "version": "1.0.0",
            "short_title": "AD",
            "citation": "Acme, 2026.",
            "licence": {"name": "CC0", "notice": "Public domain.", "wording_bundled": True},
        },
        "x-scoring": {
            "scores": [
                {"name": "total", "label": "Total (0-12)", "rule": "sum", "params": {"items": items}},
                {"name": "item_mean", "label": "Item mean", "rule": "mean", "params": {"items": items}},
            ],
            "flags": flags or [],
        },
    }
    if bands:
        document["x-scoring"]["bands"] = bands
    return document


BANDS = {
    "score": "total",
    "ranges": [
        {"id": "low", "label": "Low (0-4)", "min": 0, "max": 4},
        {"id": "very_high", "label": "Very high (5-12)", "min": 5, "max": 12},
    ],
}


def load(engine, document):
    return build_instrument(document, "test.json", engine.scoring_rules)


def given(*totals, band=None, score="total"):
    """Administrations in sessions 1, 2, ... with these values of ``score``."""
    return [
        Administration(n, "1.0.0", {score: None if t is None else Decimal(str(t))}, band, session_number=n)
        for n, t in enumerate(totals, 1)
    ]


# -- charts from the built-in definitions -------------------------------------------


def test_ors_chart_has_its_band_shading_cutoff_line_and_reliable_change_band(engine):
    ors = engine.instruments.get("ors")
    [chart] = episode_progress(ors, given("18.5", "24.0")).charts
    assert (chart.id, chart.title, chart.direction) == ("total", "ORS total by session", "higher_is_better")
    assert [(p.value, p.administration.session_number) for p in chart.series[0].points] == [
        (Decimal("18.5"), 1),
        (Decimal("24.0"), 2),
    ]
    assert [(b.id, b.label, b.low, b.high) for b in chart.bands] == [
        (band.id, band.label, band.minimum, band.maximum) for band in ors.scoring.bands
    ]
    [line] = chart.lines
    assert (line.flag, line.op, line.value, line.label) == ("clinical_range", "<=", 25, ors.scoring.flags[0].label)
    [band] = chart.change_bands  # improvement and deterioration share one band: first +/- 5
    assert (band.first, band.amount, band.low, band.high) == (Decimal("18.5"), 5, Decimal("13.5"), Decimal("23.5"))
    assert band.flags == ("reliable_improvement", "reliable_deterioration")
    assert (chart.y_min, chart.y_max) == (0, 40)


def test_srs_chart_takes_its_range_from_the_items_and_its_line_from_the_flag(engine):
    srs = engine.instruments.get("srs")
    [chart] = episode_progress(srs, given("32.0")).charts
    assert (chart.y_min, chart.y_max) == (0, 40)  # four 0-10 lines
    assert [(line.op, line.value) for line in chart.lines] == [("<", 36)]
    assert chart.bands == () and chart.change_bands == ()


def test_wai_sr_charts_its_subscales_together_and_its_total_alone(engine):
    wai = engine.instruments.get("wai-sr")
    one = Administration(
        1, "1.0.0", {"total": Decimal(48), "goal": Decimal(12), "task": Decimal(16), "bond": Decimal(20)}
    )
    subscales, total = episode_progress(wai, [one]).charts
    assert [s.score for s in subscales.series] == ["goal", "task", "bond"]
    assert [s.label for s in subscales.series] == ["Goal (4-20)", "Task (4-20)", "Bond (4-20)"]
    assert (subscales.y_min, subscales.y_max) == (4, 20)
    assert [s.score for s in total.series] == ["total"] and (total.y_min, total.y_max) == (12, 60)


def test_a_copied_definition_with_another_cutoff_moves_the_line(engine):
    document = json.loads(Path(engine.instruments.get("srs").source).read_text())
    document["x-scoring"]["flags"][0]["params"]["value"] = 34
    [chart] = episode_progress(load(engine, document), given("32.0")).charts
    assert [line.value for line in chart.lines] == [34]


# -- defaults without an annotation ----------------------------------------------------


def test_without_an_annotation_the_band_score_is_charted_with_its_bands(engine):
    instrument = load(engine, distress_document(bands=BANDS))
    [spec] = chart_specs(instrument)
    assert (spec.id, spec.scores, spec.title) == ("total", ("total",), "AD: Total (0-12)")
    [chart] = episode_progress(instrument, given(3, 9)).charts
    assert [b.label for b in chart.bands] == ["Low (0-4)", "Very high (5-12)"]
    assert chart.direction is None and chart.series[0].label == "AD"


def test_without_bands_the_first_score_is_charted_on_the_range_of_its_items(engine):
    instrument = load(engine, distress_document())
    [chart] = episode_progress(instrument, given(3)).charts
    assert chart.series[0].score == "total" and (chart.y_min, chart.y_max) == (0, 12)
    assert score_range(instrument, "item_mean") == (0, 4)


def test_a_mean_of_items_ranges_over_the_item_means(engine):
    items = {"a": (1, 5), "b": (1, 5), "c": (0, 4)}
    document = distress_document()
    document["required"] = list(items)
    document["properties"] = {
        item: {"type": ["integer", "null"], "minimum": low, "maximum": high, "x-text": item}
        for item, (low, high) in items.items()
    }
    document["x-scoring"]["scores"] = [{"name": "m", "rule": "mean", "params": {"items": list(items)}}]
    assert score_range(load(engine, document), "m") == (Decimal(2) / 3, Decimal(14) / 3)


def test_the_axis_widens_to_show_a_value_outside_the_range(engine):
    instrument = load(engine, distress_document())
    [chart] = episode_progress(instrument, given(3, 15)).charts
    assert (chart.y_min, chart.y_max) == (0, 15)


def test_a_score_of_unknown_range_is_drawn_over_its_values(engine):
    document = distress_document()
    document["x-scoring"]["scores"].append(
        {"name": "change", "rule": "change_from_baseline", "params": {"score": "total"}}
    )
    document["x-presentation"] = {"charts": [{"id": "change", "scores": ["change"]}]}
    [chart] = episode_progress(load(engine, document), given(-2, 3, score="change")).charts
    assert (chart.y_min, chart.y_max) == (-2, 3)


def test_a_chart_without_any_value_is_left_out(engine):
    instrument = load(engine, distress_document())
    found = episode_progress(instrument, given(None))
    assert found.charts == () and found.summary == ()


# -- the annotation ------------------------------------------------------------------------


def test_the_annotation_chooses_scores_title_range_and_direction(engine):
    document = distress_document(bands=BANDS)
    document["x-presentation"] = {
        "charts": [
            {
                "id": "mean",
                "title": "Mean by session",
                "scores": ["item_mean"],
                "range": [0, 5],
                "direction": "lower_is_better",
            }
        ]
    }
    [chart] = episode_progress(load(engine, document), given("2.5", score="item_mean")).charts
    assert (chart.id, chart.title, chart.y_min, chart.y_max) == ("mean", "Mean by session", 0, 5)
    assert chart.direction == "lower_is_better" and chart.bands == ()  # the bands belong to the total


@pytest.mark.parametrize(
    ("chart", "pointer", "reason"),
    [
        ({"id": "x", "scores": ["total", "nope"]}, "/x-presentation/charts/0/scores/1", "no score named 'nope'"),
        ({"id": "x", "scores": ["total"], "range": [10, 0]}, "/x-presentation/charts/0/range", "must rise"),
    ],
)
def test_a_bad_annotation_names_the_pointer(engine, chart, pointer, reason):
    document = distress_document()
    document["x-presentation"] = {"charts": [chart]}
    with pytest.raises(InstrumentDefinitionError) as raised:
        chart_specs(load(engine, document))
    assert raised.value.pointer == pointer and reason in raised.value.reason


def test_two_charts_with_one_id_are_refused(engine):
    document = distress_document()
    document["x-presentation"] = {"charts": [{"id": "x", "scores": ["total"]}, {"id": "x", "scores": ["item_mean"]}]}
    with pytest.raises(InstrumentDefinitionError, match="chart 'x' is defined twice"):
        chart_specs(load(engine, document))


def test_the_meta_schema_refuses_an_unknown_presentation_key(engine):
    document = distress_document()
    document["x-presentation"] = {"charts": [{"id": "x", "scores": ["total"], "colour": "red"}]}
    with pytest.raises(InstrumentDefinitionError) as raised:
        load(engine, document)
    assert raised.value.pointer == "/x-presentation/charts/0"


def test_an_installed_definition_with_a_bad_annotation_is_reported_and_skipped(tmp_path):
    document = distress_document()
    document["x-presentation"] = {"charts": [{"id": "x", "scores": ["nope"]}]}
    path = tmp_path / "distress.json"
    path.write_text(json.dumps(document))
    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(path)])
    assert "acme-distress" not in engine.instruments
    assert [error.pointer for error in engine.instruments.errors] == ["/x-presentation/charts/0/scores/0"]


# -- reliable change ----------------------------------------------------------------------


def change_document(params: dict) -> dict:
    return distress_document(
        flags=[{"id": "worse", "label": "Reliably worse", "rule": "reliable_change", "params": params}]
    )


def test_reliable_change_threshold_matches_the_published_check():
    # Jacobson & Truax: SD 12.90, alpha .91 gives S_diff 5.47 and 1.96 x S_diff = 10.73
    assert reliable_change_threshold(12.9, 0.91).quantize(Decimal("0.01")) == Decimal("10.73")


def test_a_fixed_threshold_gives_a_band_around_the_first_value(engine):
    instrument = load(engine, change_document({"score": "total", "direction": "deterioration", "threshold": 2}))
    [chart] = episode_progress(instrument, given(5, 9, 1)).charts
    [band] = chart.change_bands
    assert (band.first, band.low, band.high, band.labels) == (5, 3, 7, ("Reliably worse",))


def test_sd_and_reliability_give_a_jacobson_truax_band(engine):
    params = {"score": "total", "direction": "deterioration", "sd": 2, "reliability": 0.8}
    instrument = load(engine, change_document(params))
    [band] = episode_progress(instrument, given(6, 8)).charts[0].change_bands
    expected = Decimal("1.96") * Decimal(2) * (2 * (1 - Decimal("0.8"))).sqrt()  # 1.96 x sd x sqrt(2(1 - r))
    assert abs(band.amount - expected) < Decimal("1e-20")
    assert band.low == 6 - band.amount and band.high == 6 + band.amount


def test_a_change_against_the_previous_administration_draws_no_band(engine):
    params = {"score": "total", "direction": "deterioration", "threshold": 2, "against": "previous"}
    instrument = load(engine, change_document(params))
    assert episode_progress(instrument, given(5, 9)).charts[0].change_bands == ()


# -- the summary ----------------------------------------------------------------------------


def test_the_summary_gives_the_latest_value_its_band_label_and_the_changes(engine):
    instrument = load(engine, distress_document(bands=BANDS))
    [entry] = episode_progress(instrument, given(2, 4, 9, band="very_high")).summary
    assert (entry.score, entry.label, entry.latest.value, entry.count) == ("total", "Total (0-12)", 9, 3)
    assert entry.band_label == "Very high (5-12)"  # the label, never the id
    assert (entry.since_first, entry.since_previous) == (7, 5)


def test_a_band_id_the_definition_does_not_know_is_labelled_from_the_value(engine):
    instrument = load(engine, distress_document(bands=BANDS))
    [entry] = episode_progress(instrument, given(3, band="renamed_band")).summary
    assert entry.band_label == "Low (0-4)"


def test_one_administration_has_no_change_yet(engine):
    [entry] = episode_progress(engine.instruments.get("srs"), given("32.0")).summary
    assert entry.latest.value == Decimal("32.0") and entry.band_label is None
    assert entry.since_first is None and entry.since_previous is None
    assert entry.direction == "higher_is_better"


def test_the_summary_lists_every_charted_score_once(engine):
    wai = engine.instruments.get("wai-sr")
    one = Administration(
        1, "1.0.0", {"total": Decimal(48), "goal": Decimal(12), "task": Decimal(16), "bond": Decimal(20)}
    )
    assert [entry.score for entry in episode_progress(wai, [one]).summary] == ["goal", "task", "bond", "total"]
