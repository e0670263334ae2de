"""Excel export: one sheet per instrument, written row by row in constant memory.

XlsxWriter's ``constant_memory`` mode flushes each row to a temporary file as soon as the next
row starts, so a million responses never sit in memory. Numbers (answers and scores, negative
and decimal ones too) are written as numbers; text goes through ``neutralise_cell`` and is
always written as a string, never as a formula.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

import xlsxwriter

from core import ExportColumn, ExportContext, Exporter, ExportRow, as_utc, hookimpl, neutralise_cell, wide_values

MAX_ROWS = 1_048_576  # Excel's limit per sheet, header included
MAX_TEXT = 32_767  # Excel's limit per cell
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


class _Sheet:
    """One worksheet being filled; continues on a new sheet when Excel's row limit is reached."""

    def __init__(self, workbook: Any, base: str, columns: Sequence[ExportColumn], formats: dict[str, Any]) -> None:
        self.workbook = workbook
        self.base = base
        self.columns = columns
        self.formats = formats
        self.part = 0
        self._open()

    def _open(self) -> None:
        self.part += 1
        name = self.base if self.part == 1 else f"{self.base[:26]} ({self.part})"
        self.sheet = self.workbook.add_worksheet(name)
        self.sheet.write_row(0, 0, [column.name for column in self.columns], self.formats["header"])
        self.sheet.freeze_panes(1, 0)
        for index, column in enumerate(self.columns):
            if column.type == "datetime":
                self.sheet.set_column(index, index, 20)
        self.row = 1

    def append(self, values: list[Any]) -> None:
        if self.row >= MAX_ROWS:
            self._open()
        sheet, row, date_format = self.sheet, self.row, self.formats["datetime"]
        for col, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, str):
                sheet.write_string(row, col, neutralise_cell(value[:MAX_TEXT]))
            elif isinstance(value, (int, float, Decimal)):
                sheet.write_number(row, col, float(value))
            elif isinstance(value, datetime):
                sheet.write_datetime(row, col, as_utc(value).replace(tzinfo=None), date_format)
            else:
                sheet.write_string(row, col, neutralise_cell(str(value)[:MAX_TEXT]))
        self.row += 1


def sheet_name(instrument_id: str) -> str:
    return _BAD_SHEET_CHARS.sub("_", instrument_id)[:31] or "responses"


def write_xlsx(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    workbook = xlsxwriter.Workbook(
        stream,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_numbers": False,
            "strings_to_urls": False,
            "use_zip64": True,
        },
    )
    formats = {
        "header": workbook.add_format({"bold": True}),
        "datetime": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
    }
    sheets: dict[str, _Sheet] = {}
    for instrument in context.instruments:
        if instrument.id not in sheets:
            sheets[instrument.id] = _Sheet(
                workbook, sheet_name(instrument.id), context.columns_for(instrument.id), formats
            )
    for row in rows:
        sheet = sheets.get(row.instrument)
        if sheet is None:  # answered on an instrument that is no longer installed
            sheet = sheets[row.instrument] = _Sheet(
                workbook, sheet_name(row.instrument), context.columns_for(row.instrument), formats
            )
        sheet.append(wide_values(row, sheet.columns))
    if not sheets:
        _Sheet(workbook, "responses", context.columns, formats)
    workbook.close()


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="xlsx",
            title="Excel workbook, one sheet per instrument",
            extension="xlsx",
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            write=write_xlsx,
        )
    ]
