"""Instrument definitions: load a JSON Schema document, check it, and model it.

A definition is a JSON Schema 2020-12 document for one response (one property per item)
plus our annotation keywords: ``x-instrument`` (metadata, licence, sections), per-item
``x-*`` keywords (widget, code, topic), ``x-scoring`` (named scores, band, flags) and
``x-examples`` (worked examples that prove the scoring). ``instruments/meta-schema.json``
describes the whole format; see ``docs/instruments.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from core.registries import DuplicateRegistrationError
from core.schemas import QuickCheck, answer_validator, load_meta_schema, quick_answer_check
from core.scoring import NOT_SCORABLE, ScoringRule, round_half_up, score_response, to_decimal
from core.validation import ResponseValidationError, validate_answers


class InstrumentDefinitionError(Exception):
    """A definition that cannot be used; says which file, where in it (JSON pointer) and why."""

    def __init__(self, source: str, pointer: str, reason: str) -> None:
        super().__init__(f"{source}: {pointer or '/'}: {reason}")
        self.source = source
        self.pointer = pointer or "/"
        self.reason = reason


class WordingError(Exception):
    """A licensed-wording file that does not fit its instrument."""


@dataclass(frozen=True)
class WordingVersion:
    """One installed version of an instrument's licensed wording, as stored by :mod:`core.wording`."""

    instrument_id: str
    number: int
    document: Mapping[str, Any] = field(repr=False)
    placeholder: bool
    installed_at: datetime
    installed_by: str

    @property
    def source(self) -> str:
        """Where the applied wording came from (``Instrument.wording_source``); differs for every version."""
        return f"database: {self.instrument_id} wording version {self.number}"


@dataclass(frozen=True)
class Licence:
    name: str
    notice: str
    wording_bundled: bool
    url: str | None = None


@dataclass(frozen=True)
class Option:
    """One answer an item offers: the stored ``value``, the ``label`` shown and, optionally, its LOINC ``code``."""

    value: Any
    label: str
    code: str | None = None


@dataclass(frozen=True)
class Item:
    """One question. ``text`` is the wording shown to clients; ``None`` until licensed wording is installed."""

    id: str
    topic: str
    text: str | None
    widget: str
    schema: Mapping[str, Any]
    options: tuple[Option, ...] = ()
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    step: Decimal | None = None
    code: str | None = None
    optional: bool = False
    anchors: tuple[str, str] | None = None
    section: str | None = None

    @cached_property
    def lowest(self) -> Decimal | None:
        """The lowest possible answer, from the options or the schema's ``minimum``."""
        values = [to_decimal(o.value) for o in self.options]
        return min(values) if values else self.minimum

    @cached_property
    def highest(self) -> Decimal | None:
        """The highest possible answer, from the options or the schema's ``maximum``."""
        values = [to_decimal(o.value) for o in self.options]
        return max(values) if values else self.maximum

    def label_for(self, value: Any) -> str | None:
        """The label of the option whose value is ``value``, or None (no such option, or a free answer)."""
        for option in self.options:
            if option.value == value:
                return option.label
        return None


@dataclass(frozen=True)
class Section:
    id: str
    title: str | None
    items: tuple[str, ...]
    page: int = 1


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    rule: ScoringRule
    params: Mapping[str, Any]
    label: str


@dataclass(frozen=True)
class FlagSpec:
    id: str
    rule: ScoringRule
    params: Mapping[str, Any]
    label: str


@dataclass(frozen=True)
class Band:
    """A severity band: scores from ``minimum`` up to the next band's minimum (the last one up to ``maximum``)."""

    id: str
    label: str
    minimum: Decimal
    maximum: Decimal


@dataclass(frozen=True)
class Scoring:
    scores: tuple[ScoreSpec, ...]
    flags: tuple[FlagSpec, ...]
    band_score: str | None = None
    bands: tuple[Band, ...] = ()

    @cached_property
    def uses_history(self) -> bool:
        """Whether any score or flag compares with earlier administrations."""
        return any(spec.rule.uses_history for spec in (*self.scores, *self.flags))

    @cached_property
    def flag_ids(self) -> tuple[str, ...]:
        """Every flag this instrument can raise, in a fixed order: declared, emitted by rules, not_scorable."""
        ids = [spec.id for spec in self.flags]
        for spec in self.scores:
            ids.extend(flag for flag in spec.rule.emits_flags(spec.params) if flag not in ids)
        return (*ids, NOT_SCORABLE)

    def band_for(self, scores: Mapping[str, Decimal | None]) -> str | None:
        """The band whose range holds the band score; a band runs up to the next band's minimum."""
        if self.band_score is None or scores.get(self.band_score) is None:
            return None
        value = scores[self.band_score]
        if value < self.bands[0].minimum or value > self.bands[-1].maximum:
            return None
        found = self.bands[0]
        for band in self.bands:
            if band.minimum <= value:
                found = band
        return found.id


@dataclass(frozen=True)
class Example:
    title: str
    answers: Mapping[str, Any]
    history: Sequence[Mapping[str, Any]]
    expect: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class Instrument:
    """A loaded, checked instrument definition at one version."""

    id: str
    version: str
    title: str
    short_title: str
    language: str
    citation: str
    licence: Licence
    source: str
    document: Mapping[str, Any] = field(repr=False)
    items: tuple[Item, ...] = field(repr=False)
    sections: tuple[Section, ...] = field(repr=False)
    scoring: Scoring = field(repr=False)
    examples: tuple[Example, ...] = field(repr=False)
    stem: str | None = None
    codes: Mapping[str, Any] = field(default_factory=dict, repr=False)
    wording_installed: bool = True
    wording_source: str | None = None
    wording_placeholder: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.version)

    @property
    def languages(self) -> tuple[str, ...]:
        """The definition's own language first, then every language it carries a translation for."""
        return (self.language, *sorted(set(self.document.get("x-translations", {})) - {self.language}))

    def translated_into(self, language: str) -> bool:
        """Whether a client whose language is ``language`` reads this instrument in it (else in :attr:`language`)."""
        return language in self.languages

    @property
    def sendable(self) -> bool:
        """Whether clients may be sent this instrument: its wording is bundled or truly installed."""
        return self.wording_installed and not self.wording_placeholder

    @cached_property
    def validator(self) -> jsonschema.protocols.Validator:
        """The compiled answer validator, built once per loaded instrument version."""
        return answer_validator(self.document)

    @cached_property
    def quick_check(self) -> QuickCheck | None:
        """Says True for answers the validator surely accepts (:func:`core.schemas.quick_answer_check`)."""
        return quick_answer_check(self.document)

    @cached_property
    def _items_by_id(self) -> dict[str, Item]:
        return {item.id: item for item in self.items}

    def item(self, item_id: str) -> Item:
        """The item with this id; ``KeyError`` when there is none."""
        return self._items_by_id[item_id]

    def with_wording(self, wording: Mapping[str, Any], source: str) -> Instrument:
        """Return this instrument with licensed wording installed (see :func:`check_wording`)."""
        check_wording(self, wording)
        texts = wording["items"]
        items = tuple(
            replace(
                item,
                text=_wording_text(texts[item.id]),
                anchors=_wording_anchors(texts[item.id]) or item.anchors,
            )
            for item in self.items
        )
        return replace(
            self,
            items=items,
            stem=wording.get("stem", self.stem),
            wording_installed=True,
            wording_source=source,
            wording_placeholder=bool(wording.get("placeholder", False)),
        )


def _wording_text(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry["text"]


def _wording_anchors(entry: Any) -> tuple[str, str] | None:
    if isinstance(entry, Mapping) and "anchors" in entry:
        return (entry["anchors"][0], entry["anchors"][1])
    return None


PLACEHOLDER = "[PLACEHOLDER, not the licensed wording]"


def placeholder_wording(instrument: Instrument) -> dict[str, Any]:
    """A clearly marked stand-in wording file for demos and tests; never sendable to real clients."""
    items: dict[str, Any] = {}
    for item in instrument.items:
        entry: dict[str, Any] = {"text": f"{PLACEHOLDER} {item.topic}"}
        if item.widget == "vas":
            entry["anchors"] = ["[PLACEHOLDER low end]", "[PLACEHOLDER high end]"]
        items[item.id] = entry
    return {"instrument": instrument.id, "placeholder": True, "stem": PLACEHOLDER, "items": items}


def check_wording(instrument: Instrument, wording: Any) -> None:
    """Check a licensed-wording document against the instrument's item ids; raise :class:`WordingError`."""
    if not isinstance(wording, Mapping):
        raise WordingError("the wording file must be a JSON object")
    if wording.get("instrument") != instrument.id:
        raise WordingError(f"the wording file is for {wording.get('instrument')!r}, not {instrument.id!r}")
    texts = wording.get("items")
    if not isinstance(texts, Mapping):
        raise WordingError("the wording file needs an 'items' object mapping item ids to their text")
    ids = [item.id for item in instrument.items]
    missing = [item_id for item_id in ids if item_id not in texts]
    unknown = [key for key in texts if key not in ids]
    if missing:
        raise WordingError(f"no wording for item(s) {', '.join(missing)}")
    if unknown:
        raise WordingError(f"{', '.join(unknown)}: not an item of {instrument.id}")
    for item_id in ids:
        entry = texts[item_id]
        text = entry if isinstance(entry, str) else entry.get("text") if isinstance(entry, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            raise WordingError(f"{item_id}: the text must be a non-empty string")
        if isinstance(entry, Mapping) and "anchors" in entry:
            anchors = entry["anchors"]
            if not (isinstance(anchors, list) and len(anchors) == 2 and all(isinstance(a, str) for a in anchors)):
                raise WordingError(f"{item_id}: 'anchors' must be a list of two strings (left end, right end)")
    if "stem" in wording and not isinstance(wording["stem"], str):
        raise WordingError("'stem' must be a string")
    if "placeholder" in wording and not isinstance(wording["placeholder"], bool):
        raise WordingError("'placeholder' must be true or false")


# ---------------------------------------------------------------------------
# Loading and checking a definition
# ---------------------------------------------------------------------------


def load_instrument(path: Path, rules: Mapping[str, ScoringRule]) -> Instrument:
    """Read, check and model one definition file; raise :class:`InstrumentDefinitionError`."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstrumentDefinitionError(source, "/", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InstrumentDefinitionError(
            source, "/", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return build_instrument(document, source, rules)


def build_instrument(document: Any, source: str, rules: Mapping[str, ScoringRule]) -> Instrument:
    """Check a parsed definition against the meta-schema and our own rules, then model it."""
    _check_no_remote_refs(document, source)
    meta_errors = sorted(load_meta_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if meta_errors:
        error = jsonschema.exceptions.best_match(meta_errors)
        raise InstrumentDefinitionError(source, _pointer(error.absolute_path), error.message)
    try:
        jsonschema.Draft202012Validator.check_schema(document)
    except SchemaError as exc:
        raise InstrumentDefinitionError(source, _pointer(exc.absolute_path), exc.message) from None

    meta = document["x-instrument"]
    defs = document.get("$defs", {})
    sections = _sections(document, source)
    section_of = {item_id: section.id for section in sections for item_id in section.items}
    items = tuple(
        _item(item_id, prop, defs, source, section_of.get(item_id)) for item_id, prop in document["properties"].items()
    )
    item_ids = {item.id for item in items}
    for section in sections:
        for index, item_id in enumerate(section.items):
            if item_id not in item_ids:
                pointer = f"/x-instrument/sections/{sections.index(section)}/items/{index}"
                raise InstrumentDefinitionError(
                    source, pointer, f"section names item {item_id!r}, which has no property"
                )
    licence = Licence(
        name=meta["licence"]["name"],
        notice=meta["licence"]["notice"],
        wording_bundled=meta["licence"]["wording_bundled"],
        url=meta["licence"].get("url"),
    )
    if licence.wording_bundled:
        for item in items:
            if item.text is None:
                raise InstrumentDefinitionError(
                    source, f"/properties/{item.id}", "wording_bundled is true but the item has no 'x-text'"
                )
    scoring = _scoring(document.get("x-scoring", {}), items, rules, source)
    examples = tuple(
        Example(
            title=example["title"],
            answers=example["answers"],
            history=example.get("history", []),
            expect=example["expect"],
        )
        for example in document.get("x-examples", [])
    )
    return Instrument(
        id=meta["id"],
        version=meta["version"],
        title=document["title"],
        short_title=meta.get("short_title", document["title"]),
        language=meta.get("language", "en"),
        citation=meta["citation"],
        licence=licence,
        source=source,
        document=document,
        items=items,
        sections=sections,
        scoring=scoring,
        examples=examples,
        stem=meta.get("stem"),
        codes=meta.get("codes", {}),
        wording_installed=licence.wording_bundled,
    )


def _pointer(path: Sequence[Any]) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path) if path else "/"


def _check_no_remote_refs(node: Any, source: str, path: tuple[Any, ...] = ()) -> None:
    """Refuse any reference that leaves the document: definitions never reach the network."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
                raise InstrumentDefinitionError(
                    source, _pointer((*path, key)), f"remote reference {value!r} is not allowed; use '#/$defs/...'"
                )
            _check_no_remote_refs(value, source, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_no_remote_refs(value, source, (*path, index))


_META_VALIDATOR: jsonschema.protocols.Validator | None = None


def load_meta_validator() -> jsonschema.protocols.Validator:
    global _META_VALIDATOR
    if _META_VALIDATOR is None:
        _META_VALIDATOR = jsonschema.Draft202012Validator(load_meta_schema())
    return _META_VALIDATOR


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any], source: str, pointer: str) -> dict[str, Any]:
    """Merge an item's local ``$ref`` target under its own keywords (annotations win)."""
    if "$ref" not in schema:
        return dict(schema)
    ref = schema["$ref"]
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise InstrumentDefinitionError(source, pointer + "/$ref", f"{ref!r} does not name an entry of $defs")
    target = _resolve(defs[ref[len(prefix) :]], defs, source, pointer)
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _item(item_id: str, prop: Mapping[str, Any], defs: Mapping[str, Any], source: str, section: str | None) -> Item:
    pointer = f"/properties/{item_id}"
    schema = _resolve(prop, defs, source, pointer)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    options = tuple(Option(value=o["value"], label=o["label"], code=o.get("code")) for o in schema.get("x-options", []))
    if options:
        allowed = [v for v in schema.get("enum", []) if v is not None]
        if sorted(map(json.dumps, allowed)) != sorted(json.dumps(o.value) for o in options):
            raise InstrumentDefinitionError(
                source, pointer, "the values in 'x-options' must be exactly the non-null values in 'enum'"
            )
    widget = schema.get("x-widget") or _default_widget(types, options)
    if widget == "vas" and ("minimum" not in schema or "maximum" not in schema):
        raise InstrumentDefinitionError(source, pointer, "a visual analogue scale needs 'minimum' and 'maximum'")
    anchors = schema.get("x-anchors")
    return Item(
        id=item_id,
        topic=schema.get("x-topic") or schema.get("title") or item_id,
        text=schema.get("x-text"),
        widget=widget,
        schema=schema,
        options=options,
        minimum=to_decimal(schema.get("minimum")),
        maximum=to_decimal(schema.get("maximum")),
        step=to_decimal(schema.get("multipleOf")),
        code=schema.get("x-code"),
        optional=bool(schema.get("x-optional", False)),
        anchors=(anchors[0], anchors[1]) if anchors else None,
        section=section,
    )


def _default_widget(types: list[str], options: tuple[Option, ...]) -> str:
    if options:
        return "radio"
    if "boolean" in types:
        return "yesno"
    if "array" in types:
        return "multiselect"
    if "integer" in types or "number" in types:
        return "number"
    return "text"


def _sections(document: Mapping[str, Any], source: str) -> tuple[Section, ...]:
    declared = document["x-instrument"].get("sections")
    if not declared:
        return (Section(id="main", title=None, items=tuple(document["properties"])),)
    sections = tuple(
        Section(id=s["id"], title=s.get("title"), items=tuple(s["items"]), page=s.get("page", 1)) for s in declared
    )
    placed = [item_id for s in sections for item_id in s.items]
    unplaced = [item_id for item_id in document["properties"] if item_id not in placed]
    if unplaced:
        raise InstrumentDefinitionError(source, "/x-instrument/sections", f"items not in any section: {unplaced}")
    return sections


def _scoring(
    block: Mapping[str, Any], items: tuple[Item, ...], rules: Mapping[str, ScoringRule], source: str
) -> Scoring:
    item_ids = {item.id for item in items}
    scores: list[ScoreSpec] = []
    for index, spec in enumerate(block.get("scores", [])):
        pointer = f"/x-scoring/scores/{index}"
        rule = _rule(spec, "score", rules, source, pointer)
        params = spec.get("params", {})
        _check_params(rule, params, item_ids, [s.name for s in scores], source, pointer)
        if spec["name"] in [s.name for s in scores]:
            raise InstrumentDefinitionError(source, pointer + "/name", f"score {spec['name']!r} is defined twice")
        scores.append(ScoreSpec(spec["name"], rule, params, spec.get("label", spec["name"])))
    score_names = [s.name for s in scores]
    flags: list[FlagSpec] = []
    for index, spec in enumerate(block.get("flags", [])):
        pointer = f"/x-scoring/flags/{index}"
        rule = _rule(spec, "flag", rules, source, pointer)
        params = spec.get("params", {})
        _check_params(rule, params, item_ids, score_names, source, pointer)
        if spec["id"] in [f.id for f in flags] or spec["id"] == NOT_SCORABLE:
            raise InstrumentDefinitionError(source, pointer + "/id", f"flag {spec['id']!r} is defined twice")
        flags.append(FlagSpec(spec["id"], rule, params, spec.get("label", spec["id"])))
    band_block = block.get("bands")
    if not band_block:
        return Scoring(tuple(scores), tuple(flags))
    if band_block["score"] not in score_names:
        raise InstrumentDefinitionError(source, "/x-scoring/bands/score", f"no score named {band_block['score']!r}")
    step = Decimal(repr(band_block.get("step", 1)))
    bands: list[Band] = []
    for index, entry in enumerate(band_block["ranges"]):
        pointer = f"/x-scoring/bands/ranges/{index}"
        band = Band(entry["id"], entry.get("label", entry["id"]), to_decimal(entry["min"]), to_decimal(entry["max"]))
        if band.maximum < band.minimum:
            raise InstrumentDefinitionError(source, pointer, f"band {band.id!r} ends below where it starts")
        if bands:
            previous = bands[-1]
            expected = round_half_up(previous.maximum + step, max(0, -step.as_tuple().exponent))
            if band.minimum <= previous.maximum:
                raise InstrumentDefinitionError(
                    source, pointer + "/min", f"band {band.id!r} overlaps band {previous.id!r}"
                )
            if band.minimum != expected:
                raise InstrumentDefinitionError(
                    source,
                    pointer + "/min",
                    f"gap between band {previous.id!r} (max {previous.maximum}) and {band.id!r} (min {band.minimum});"
                    f" with step {step} it should start at {expected}",
                )
        if band.id in [b.id for b in bands]:
            raise InstrumentDefinitionError(source, pointer + "/id", f"band {band.id!r} is defined twice")
        bands.append(band)
    return Scoring(tuple(scores), tuple(flags), band_block["score"], tuple(bands))


def _rule(
    spec: Mapping[str, Any], kind: str, rules: Mapping[str, ScoringRule], source: str, pointer: str
) -> ScoringRule:
    name = spec["rule"]
    rule = rules.get(name)
    if rule is None:
        known = ", ".join(sorted(r.name for r in rules.values() if r.kind == kind))
        raise InstrumentDefinitionError(source, pointer + "/rule", f"unknown scoring rule {name!r} (known: {known})")
    if rule.kind != kind:
        raise InstrumentDefinitionError(
            source, pointer + "/rule", f"{name!r} is a {rule.kind} rule and cannot be used as a {kind}"
        )
    return rule


def _check_params(
    rule: ScoringRule,
    params: Mapping[str, Any],
    item_ids: set[str],
    score_names: Sequence[str],
    source: str,
    pointer: str,
) -> None:
    validator = jsonschema.Draft202012Validator(rule.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if error is not None:
        raise InstrumentDefinitionError(
            source, pointer + "/params" + _pointer(error.absolute_path).rstrip("/"), f"{rule.name}: {error.message}"
        )
    for key in ("item", "items", "reverse"):
        value = params.get(key)
        refs = [value] if isinstance(value, str) else list(value or [])
        for index, ref in enumerate(refs):
            if ref not in item_ids:
                where = f"{pointer}/params/{key}" + ("" if isinstance(value, str) else f"/{index}")
                raise InstrumentDefinitionError(source, where, f"item {ref!r} is not a property of the schema")
    if "score" in params and params["score"] not in score_names:
        raise InstrumentDefinitionError(
            source, pointer + "/params/score", f"no earlier score named {params['score']!r}"
        )


# ---------------------------------------------------------------------------
# Worked examples
# ---------------------------------------------------------------------------


def check_examples(instrument: Instrument) -> list[str]:
    """Score every worked example; return one message per mismatch (empty when all agree)."""
    problems = []
    for index, example in enumerate(instrument.examples):
        where = f"{instrument.source}: /x-examples/{index} ({example.title})"
        try:
            validate_answers(instrument, example.answers)
            for entry in example.history:
                validate_answers(instrument, entry)
        except ResponseValidationError as exc:
            problems.append(f"{where}: the example's answers are invalid: {exc}")
            continue
        result = score_response(instrument, example.answers, example.history)
        expect = example.expect
        for name, expected in expect.get("scores", {}).items():
            actual = result.scores.get(name, "missing")
            wanted = to_decimal(expected)
            if actual == "missing":
                problems.append(f"{where}: score {name!r} is not produced by the instrument")
            elif actual != wanted:
                problems.append(f"{where}: score {name!r} is {actual}, expected {expected}")
        if "band" in expect and expect["band"] != result.band:
            problems.append(f"{where}: band is {result.band!r}, expected {expect['band']!r}")
        if "flags" in expect and sorted(expect["flags"]) != sorted(result.flags):
            problems.append(f"{where}: flags are {sorted(result.flags)}, expected {sorted(expect['flags'])}")
        if "complete" in expect and expect["complete"] != result.complete:
            problems.append(f"{where}: complete is {result.complete}, expected {expect['complete']}")
    return problems


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


def _version_key(version: str) -> tuple[Any, ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in version.split("."))


class InstrumentRegistry:
    """Every loaded instrument version, plus the definition files that failed to load.

    Licensed wording is applied from memory: :mod:`core.wording` loads the stored versions into
    the registry (:meth:`use_wording`), so a lookup never touches the database.
    """

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Instrument]] = {}
        self._definitions: dict[tuple[str, str], Instrument] = {}  # as loaded, without installed wording
        self._owners: dict[tuple[str, str], str] = {}
        self.errors: list[InstrumentDefinitionError] = []
        self.wording: dict[str, WordingVersion] = {}  # the wording version applied, by instrument id
        self.wording_stamp: Any = None  # what core.wording last saw of the stored wording
        self._wording_reported: set[tuple[str, str, int]] = set()

    def use_wording(self, versions: Iterable[WordingVersion], stamp: Any = None) -> None:
        """Apply stored wording versions; an older version than the one applied is ignored.

        ``stamp`` records what the store looked like when ``versions`` were read, so that
        :func:`core.wording.refresh_wording` reads them again only after something changed.
        """
        for wording in versions:
            current = self.wording.get(wording.instrument_id)
            if current is not None and current.number >= wording.number:
                continue
            self.wording[wording.instrument_id] = wording
            for version in list(self._versions.get(wording.instrument_id, {})):
                self._apply_wording(self._definitions[(wording.instrument_id, version)])
        if stamp is not None:
            self.wording_stamp = stamp

    def _apply_wording(self, definition: Instrument) -> None:
        """Show ``definition`` with its instrument's applied wording (or none, when it does not fit this version)."""
        wording = self.wording.get(definition.id)
        instrument = definition
        if wording is not None and not definition.licence.wording_bundled:
            try:
                instrument = definition.with_wording(wording.document, wording.source)
            except WordingError as error:
                # A plugin update brought a version the stored wording does not fit: report it once.
                if (*definition.key, wording.number) not in self._wording_reported:
                    self._wording_reported.add((*definition.key, wording.number))
                    self.errors.append(
                        InstrumentDefinitionError(
                            wording.source, "/", f"wording not applied to {definition.id} {definition.version}: {error}"
                        )
                    )
        self._versions[definition.id][definition.version] = instrument

    def versions_of(self, instrument_id: str) -> list[Instrument]:
        """Every loaded version of one instrument (empty when it is unknown)."""
        return list(self._versions.get(instrument_id, {}).values())

    def add(self, instrument: Instrument, plugin: str) -> None:
        owner = self._owners.get(instrument.key)
        if owner is not None:
            raise DuplicateRegistrationError(
                f"instrument {instrument.id!r} version {instrument.version} is registered by both "
                f"plugin {owner!r} and plugin {plugin!r}; block one of them (RAPPORTAL_BLOCKED_PLUGINS)"
            )
        self._owners[instrument.key] = plugin
        self._definitions[instrument.key] = instrument
        self._versions.setdefault(instrument.id, {})
        self._apply_wording(instrument)

    def plugin_for(self, instrument: Instrument) -> str:
        return self._owners[instrument.key]

    def get(self, instrument_id: str, version: str | None = None) -> Instrument:
        """The named version, or the newest when ``version`` is None; raise ``KeyError`` if unknown."""
        versions = self._versions.get(instrument_id)
        if not versions:
            raise KeyError(instrument_id)
        if version is None:
            return versions[max(versions, key=_version_key)]
        return versions[version]

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._versions

    def __iter__(self) -> Iterator[Instrument]:
        """The newest version of each instrument, by id."""
        for instrument_id in sorted(self._versions):
            yield self.get(instrument_id)

    def __len__(self) -> int:
        return len(self._versions)

    def all_versions(self) -> list[Instrument]:
        return [i for versions in self._versions.values() for i in versions.values()]
