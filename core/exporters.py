"""Export targets: shaped like datasette's output renderers (name, extension, media type, write)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.export import ExportContext


@dataclass(frozen=True)
class ExportSelection:
    """Which responses to export; the same selection serves the CLI, the web page and the API."""

    instruments: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    clinicians: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    identifying: bool = False
    sites: tuple[int, ...] = ()  # limited to clients at these sites (a site-limited administrator's); () for all

    def to_json(self) -> dict[str, Any]:
        """The selection as plain JSON values, as the audit log and the codebook record it."""
        return {
            "instruments": list(self.instruments),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "clinicians": list(self.clinicians),
            "clients": list(self.clients),
            "identifying": self.identifying,
            **({"sites": list(self.sites)} if self.sites else {}),
        }


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

    ``context`` is the :class:`core.ExportContext` (instruments, selection, columns); ``can_export(selection)``
    may refuse a selection (an exporter that needs a LOINC code, for example).
    """

    name: str
    title: str
    extension: str
    media_type: str
    write: Callable[[Iterable[ExportRow], IO[bytes], ExportContext], None]
    can_export: Callable[[ExportSelection], bool] = lambda selection: True
