"""Codebook (data dictionary) for a selection: the variables of the wide exports, their labels and
allowed values, how each score is computed, bands, flags, citations and licences.

It describes the selection, not the rows, so it reads no responses. Licensed item wording is
never written: those items are described by their topic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO

from core import NOT_SCORABLE, ExportContext, Exporter, ExportRow, Instrument, hookimpl, write_text_lines

_TYPES = {"text": "text", "integer": "integer", "number": "number", "datetime": "date-time (UTC)"}


def _cell(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _instrument_section(instrument: Instrument) -> Iterator[str]:
    yield f"\n## {instrument.title} (`{instrument.id}` {instrument.version})\n\n"
    yield f"- Citation: {instrument.citation}\n"
    yield f"- Licence: {instrument.licence.name}. {instrument.licence.notice}\n"
    if not instrument.licence.wording_bundled:
        yield "- Item wording is licensed and not reproduced here; items are described by topic.\n"
    codes = instrument.codes
    if codes.get("panel"):
        yield f"- Code system {codes.get('system', 'http://loinc.org')}, panel {codes['panel']}\n"
    if codes.get("attribution"):
        yield f"- {codes['attribution']}\n"
    if instrument.stem and instrument.licence.wording_bundled:
        yield f"- Stem: {instrument.stem}\n"
    yield "\n### Scores\n\n| variable | label | rule | parameters | how |\n|---|---|---|---|---|\n"
    for spec in instrument.scoring.scores:
        params = json.dumps(dict(spec.params), sort_keys=True)
        yield (
            f"| score_{spec.name} | {_cell(spec.label)} | {spec.rule.name} | `{_cell(params)}` "
            f"| {_cell(spec.rule.description)} |\n"
        )
    if instrument.scoring.bands:
        yield f"\n### Bands (on score_{instrument.scoring.band_score})\n\n| band | label | range |\n|---|---|---|\n"
        for band in instrument.scoring.bands:
            yield f"| {band.id} | {_cell(band.label)} | {band.minimum} to {band.maximum} |\n"
    yield "\n### Flags\n\n| flag | label | rule | parameters |\n|---|---|---|---|\n"
    for flag in instrument.scoring.flags:
        params = json.dumps(dict(flag.params), sort_keys=True)
        yield f"| {flag.id} | {_cell(flag.label)} | {flag.rule.name} | `{_cell(params)}` |\n"
    declared = {flag.id for flag in instrument.scoring.flags}
    for flag_id in instrument.scoring.flag_ids:
        if flag_id not in declared:
            how = "a required score could not be computed" if flag_id == NOT_SCORABLE else "raised by a score rule"
            yield f"| {flag_id} | {how} | | |\n"


def _codebook(context: ExportContext) -> Iterator[str]:
    selection = context.selection.to_json()
    yield "# Rapportal codebook\n\n"
    yield f"Generated {context.generated_at.isoformat()} for the selection `{json.dumps(selection)}`.\n"
    yield "It describes the variables of the wide CSV, Excel and SPSS exports of this selection.\n"
    yield "Text values that a spreadsheet would run as a formula start with an added `'` in CSV and Excel.\n"
    yield "\n## Variables\n\n| variable | label | type | allowed values | code | instruments |\n|---|---|---|---|---|---|\n"
    for column in context.columns:
        yield (
            f"| {column.name} | {_cell(column.label)} | {_TYPES.get(column.type, column.type)} "
            f"| {_cell(column.allowed)} | {_cell(column.code)} | {', '.join(column.instruments)} |\n"
        )
    for instrument in context.instruments:
        yield from _instrument_section(instrument)


def write_codebook(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    write_text_lines(stream, _codebook(context))


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="codebook",
            title="Codebook (data dictionary) for the selection, Markdown",
            extension="md",
            media_type="text/markdown; charset=utf-8",
            write=write_codebook,
        )
    ]
