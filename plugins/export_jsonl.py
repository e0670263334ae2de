"""JSON Lines export: one JSON object per response, scores as exact JSON numbers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from core import ExportContext, Exporter, ExportRow, as_utc, decimal_to_json, hookimpl, write_text_lines


def _lines(rows: Iterable[ExportRow], identifying: bool) -> Iterable[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for row in rows:
        record = {
            "response_id": row.response_id,
            "client": row.client,
            "clinician": row.clinician,
            "session": None if row.session is None else int(row.session),
            "instrument": row.instrument,
            "version": row.version,
            "submitted_at": as_utc(row.submitted_at).isoformat(),
            "answers": row.answers,
            "scores": {name: decimal_to_json(value) for name, value in row.scores.items()},
            "band": row.band,
            "flags": list(row.flags),
        }
        if identifying:
            record["client_name"] = row.extra.get("client_name")
            record["clinician_name"] = row.extra.get("clinician_name")
        yield dumps(record) + "\n"


def write_jsonl(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    write_text_lines(stream, _lines(rows, context.selection.identifying))


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="jsonl",
            title="JSON Lines, one object per response",
            extension="jsonl",
            media_type="application/jsonl",
            write=write_jsonl,
        )
    ]
