"""CSV export, wide (one row per response) and long (one row per item answer or score).

Text cells that a spreadsheet would run as a formula are neutralised (see
``core.neutralise_cell``); numbers, including negative and decimal scores, are
written as plain numbers so that they stay numeric when opened.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from core import ExportContext, Exporter, ExportRow, as_utc, hookimpl, neutralise_cell, wide_values


def _cell(value: Any) -> Any:
    """A value as the csv module should write it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise_cell(value)
    if isinstance(value, (int, Decimal, float)):
        return value  # csv writes str(value): Decimal('-2.5') -> -2.5, exact
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return neutralise_cell(str(value))


def _text_stream(stream: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=False)


def _finish(text: io.TextIOWrapper) -> None:
    text.flush()
    text.detach()  # leave the caller's stream open


def write_wide(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    columns = context.columns
    # csv writes None as "" and numbers (Decimals too) with str(): only text and dates need work.
    # wide_values neutralises every str, whatever its column claims to hold.
    dates = [i for i, column in enumerate(columns) if column.type == "datetime"]
    neutralise = neutralise_cell
    out = _text_stream(stream)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([column.name for column in columns])
    writerow = writer.writerow
    for row in rows:
        values = wide_values(row, columns, neutralise)
        for index in dates:
            value = values[index]
            if value is not None:
                values[index] = value.isoformat()
        writerow(values)
    _finish(out)


LONG_HEADER = ("response_id", "client", "clinician", "session", "instrument", "version", "submitted_at")


def write_long(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    identifying = context.selection.identifying
    header = [*LONG_HEADER, "kind", "variable", "value", "label"]
    if identifying:
        header[2:2] = ["client_name"]
        header[4:4] = ["clinician_name"]
    text = _text_stream(stream)
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        lead = [
            row.response_id,
            _cell(row.client),
            _cell(row.clinician),
            _cell(row.session),
            _cell(row.instrument),
            _cell(row.version),
            as_utc(row.submitted_at).isoformat(),
        ]
        if identifying:
            lead[2:2] = [_cell(row.extra.get("client_name"))]
            lead[4:4] = [_cell(row.extra.get("clinician_name"))]
        instrument = context.instrument(row.instrument, row.version)
        items = instrument.items if instrument else ()
        for item in items:
            value = row.answers.get(item.id)
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, list):
                value = ";".join(str(v) for v in value)
            label = item.label_for(value) if item.options else None
            writer.writerow([*lead, "item", item.id, _cell(value), _cell(label)])
        for name, score in row.scores.items():
            writer.writerow([*lead, "score", name, _cell(score), ""])
    _finish(text)


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="csv",
            title="CSV, one row per response (wide)",
            extension="csv",
            media_type="text/csv; charset=utf-8",
            write=write_wide,
        ),
        Exporter(
            name="csv-long",
            title="CSV, one row per item answer or score (long)",
            extension="csv",
            media_type="text/csv; charset=utf-8",
            write=write_long,
        ),
    ]
