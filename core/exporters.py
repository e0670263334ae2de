"""Export targets: shaped like datasette's output renderers (name, extension, media type, write)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any


@dataclass(frozen=True)
class ExportSelection:
    """Which responses to export; the same selection serves the CLI, the web page and the API."""

    instruments: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    clinicians: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    identifying: bool = False


@dataclass(frozen=True)
class ExportRow:
    """One stored response with its scores, as exporters receive it."""

    response_id: int
    client: str
    clinician: str | None
    session: str | None
    instrument: str
    version: str
    submitted_at: datetime
    answers: Mapping[str, Any]
    scores: Mapping[str, Any]
    band: str | None
    flags: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exporter:
    """An export target. ``write(rows, stream, context)`` writes bytes incrementally to ``stream``.

    ``context`` carries the engine's instruments and the selection; ``can_export(selection)``
    may refuse a selection (an exporter that needs a LOINC code, for example).
    """

    name: str
    title: str
    extension: str
    media_type: str
    write: Callable[[Iterable[ExportRow], IO[bytes], Any], None]
    can_export: Callable[[ExportSelection], bool] = lambda selection: True
