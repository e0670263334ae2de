"""SPSS .sav export, written as a stream by a small writer of the documented system-file format.

pyreadstat (and pandas' SPSS support) need the whole data set as a DataFrame in memory, which
would grow with the export; so this module writes the format itself, one case at a time, with
the usual bytecode compression. The tests read every file back with pyreadstat (ReadStat).

Layout (all little-endian): file header; one variable record per variable (plus continuation
records for strings longer than 8 bytes) with its variable label; value-label records for
answer options; machine integer and float info; long variable names; character encoding
(UTF-8); the dictionary terminator; then the compressed cases. Strings are at most 255 bytes
(longer free text is cut at a character boundary); dates are SPSS DATETIME (seconds since
1582-10-14). The case count is filled in at the end when the stream can seek, else left as -1
("unknown"), which readers accept.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

from core import ExportColumn, ExportContext, Exporter, ExportRow, hookimpl, wide_values

SYSMIS = -1.7976931348623157e308
HIGHEST = 1.7976931348623157e308
LOWEST = -1.7976931348623155e308
BIAS = 100.0
SPSS_EPOCH = datetime(1582, 10, 14, tzinfo=UTC)
MAX_STRING = 255
FORMAT_A, FORMAT_F, FORMAT_DATETIME = 1, 5, 22
TEXT_WIDTHS = {"client": 64, "clinician": 64, "instrument": 64, "version": 32, "band": 64}
_SPACES = b"        "
_PACK_DOUBLE = struct.Struct("<d").pack


@dataclass(frozen=True)
class Variable:
    """A column as SPSS sees it: name, label, width in bytes (0 for numbers), formats."""

    column: ExportColumn
    name: str
    short_name: str
    width: int
    print_format: int
    is_datetime: bool

    @property
    def segments(self) -> int:
        return 1 if self.width == 0 else math.ceil(self.width / 8)


def _spss_name(name: str, taken: set[str]) -> str:
    """A valid, unique SPSS variable name: letters, digits and _.@#$, starting with a letter."""
    clean = re.sub(r"[^A-Za-z0-9_.@#$]", "_", name).rstrip(".")
    if not clean or not clean[0].isalpha():
        clean = "v" + clean
    clean = clean[:64]
    candidate, n = clean, 1
    while candidate.upper() in taken:
        n += 1
        candidate = f"{clean[:60]}_{n}"
    taken.add(candidate.upper())
    return candidate


def variables_for(columns: Sequence[ExportColumn]) -> list[Variable]:
    taken: set[str] = set()
    found = []
    for index, column in enumerate(columns, start=1):
        name = _spss_name(column.name, taken)
        short = f"V{index}"
        if column.type == "text":
            width = TEXT_WIDTHS.get(column.name, MAX_STRING if column.name != "client_name" else 128)
            fmt = (FORMAT_A << 16) | (width << 8)
            found.append(Variable(column, name, short, width, fmt, False))
        elif column.type == "datetime":
            found.append(Variable(column, name, short, 0, (FORMAT_DATETIME << 16) | (20 << 8), True))
        else:
            decimals = 0 if column.type == "integer" else 2
            found.append(Variable(column, name, short, 0, (FORMAT_F << 16) | (10 << 8) | decimals, False))
    return found


def _fit(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        data = data[:limit].decode("utf-8", errors="ignore").encode("utf-8")
    return data


def _padded(data: bytes, multiple: int, fill: bytes = b" ") -> bytes:
    return data + fill * (-len(data) % multiple)


def dictionary(variables: Sequence[Variable], label: str, created: datetime) -> bytes:
    """Everything before the cases: header, variables, value labels, extension records."""
    case_size = sum(v.segments for v in variables)
    out = bytearray()
    out += struct.pack(
        "<4s60siiiiid9s8s64s3s",
        b"$FL2",
        _padded(b"@(#) SPSS DATA FILE Rapportal export", 60)[:60],
        2,
        case_size,
        1,  # bytecode compression
        0,
        -1,
        BIAS,
        created.strftime("%d %b %y").encode("ascii"),
        created.strftime("%H:%M:%S").encode("ascii"),
        _padded(_fit(label, 64), 64),
        b"\0\0\0",
    )
    for variable in variables:
        text = _fit(variable.column.label, 255)
        out += struct.pack(
            "<iiiiii8s",
            2,
            variable.width,
            1,
            0,
            variable.print_format,
            variable.print_format,
            _padded(variable.short_name.encode("ascii"), 8),
        )
        out += struct.pack("<i", len(text)) + _padded(text, 4)
        for _ in range(variable.segments - 1):
            out += struct.pack("<iiiiii8s", 2, -1, 0, 0, 0, 0, _SPACES)
    index = 1
    for variable in variables:
        options = [(v, t) for v, t in variable.column.options if isinstance(v, int | float) and variable.width == 0]
        if options:
            out += struct.pack("<ii", 3, len(options))
            for value, text in options:
                encoded = _fit(text, 120)
                # the length byte and the label together fill a multiple of 8 bytes
                out += struct.pack("<d", float(value)) + _padded(bytes([len(encoded)]) + encoded, 8)
            out += struct.pack("<iii", 4, 1, index)
        index += variable.segments
    out += struct.pack("<iiii", 7, 3, 4, 8) + struct.pack("<8i", 1, 0, 0, -1, 1, 1, 2, 65001)
    out += struct.pack("<iiii", 7, 4, 8, 3) + struct.pack("<3d", SYSMIS, HIGHEST, LOWEST)
    names = "\t".join(f"{v.short_name}={v.name}" for v in variables).encode("utf-8")
    out += struct.pack("<iiii", 7, 13, 1, len(names)) + names
    out += struct.pack("<iiii", 7, 20, 1, 5) + b"UTF-8"
    out += struct.pack("<ii", 999, 0)
    return bytes(out)


class _Compressor:
    """SPSS bytecode compression: blocks of 8 one-byte codes, each block followed by its raw values."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.codes = bytearray()
        self.raw: list[bytes] = []
        self.pending = bytearray()

    def case(self, values: list[Any], variables: Sequence[Variable]) -> None:
        codes, raw = self.codes, self.raw
        for value, variable in zip(values, variables, strict=True):
            if variable.width == 0:
                if value is None:
                    codes.append(255)
                elif variable.is_datetime:
                    codes.append(253)
                    raw.append(_PACK_DOUBLE((value - SPSS_EPOCH).total_seconds()))
                elif isinstance(value, int) and -99 <= value <= 151:
                    codes.append(value + 100)
                elif isinstance(value, Decimal) and value == value.to_integral_value() and -99 <= value <= 151:
                    codes.append(int(value) + 100)
                elif isinstance(value, str):  # not numeric after all: leave it missing
                    codes.append(255)
                else:
                    codes.append(253)
                    raw.append(_PACK_DOUBLE(float(value)))
            else:
                data = b"" if value is None else _fit(str(value), variable.width)
                data = data.ljust(variable.segments * 8, b" ")
                for start in range(0, len(data), 8):
                    segment = data[start : start + 8]
                    if segment == _SPACES:
                        codes.append(254)
                    else:
                        codes.append(253)
                        raw.append(segment)
        if len(codes) >= 8:
            self._flush_blocks()

    def _flush_blocks(self) -> None:
        codes, raw, pending = self.codes, self.raw, self.pending
        used = 0
        while len(codes) - used >= 8:
            block = codes[used : used + 8]
            pending += block
            count = sum(1 for code in block if code == 253)
            pending += b"".join(raw[:count])
            del raw[:count]
            used += 8
        del codes[:used]
        if len(pending) >= 1 << 16:
            self.stream.write(bytes(pending))
            pending.clear()

    def close(self) -> None:
        self._flush_blocks()
        if self.codes:
            self.pending += self.codes.ljust(8, b"\0") + b"".join(self.raw)
            self.codes.clear()
            self.raw.clear()
        self.stream.write(bytes(self.pending))
        self.pending.clear()


def write_sav(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    columns = context.columns
    variables = variables_for(columns)
    start = stream.tell() if stream.seekable() else None
    stream.write(dictionary(variables, "Rapportal export", context.generated_at))
    compressor = _Compressor(stream)
    count = 0
    for row in rows:
        compressor.case(wide_values(row, columns), variables)
        count += 1
    compressor.close()
    if start is not None:
        end = stream.tell()
        stream.seek(start + 80)
        stream.write(struct.pack("<i", count if count < 2**31 else -1))
        stream.seek(end)


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="sav",
            title="SPSS data file with variable and value labels",
            extension="sav",
            media_type="application/x-spss-sav",
            write=write_sav,
        )
    ]
