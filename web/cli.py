"""The ``rapportal`` command line: Flask's CLI group plus Rapportal's own commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import FlaskGroup

from core import Engine, ResponseValidationError, WordingError
from core.instruments import InstrumentDefinitionError, check_examples, load_instrument
from core.plugins import describe_plugins
from web import EXTENSION_KEY, create_app


def engine() -> Engine:
    return current_app.extensions[EXTENSION_KEY].engine


def fail(message: str) -> None:
    """Print an error for a person and exit non-zero (no traceback)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False, load_dotenv=False)
@click.version_option(package_name="rapportal")
def cli() -> None:
    """Rapportal: session-by-session questionnaires for clinics."""


@cli.group()
def instruments() -> None:
    """List, inspect and check instrument definitions."""


@instruments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_instruments(as_json: bool) -> None:
    """List installed instruments (newest version of each) and definitions that failed to load."""
    eng = engine()
    rows = [
        {
            "id": i.id,
            "version": i.version,
            "title": i.title,
            "items": len(i.items),
            "plugin": eng.instruments.plugin_for(i),
            "licence": i.licence.name,
            "wording": "bundled"
            if i.licence.wording_bundled
            else ("installed" if i.wording_installed else "not installed"),
            "sendable": i.sendable,
        }
        for i in eng.instruments
    ]
    errors = [str(e) for e in eng.instruments.errors]
    if as_json:
        click.echo(json.dumps({"instruments": rows, "errors": errors}, indent=2))
        return
    for row in rows:
        wording = "" if row["sendable"] else "  [licensed wording not installed]"
        click.echo(f"{row['id']:<10} {row['version']:<8} {row['items']:>3} items  {row['title']}{wording}")
    for error in errors:
        click.echo(f"not loaded: {error}", err=True)


@instruments.command("show")
@click.argument("instrument_id")
@click.option("--version", "version", default=None, help="A specific version (default: newest).")
def show_instrument(instrument_id: str, version: str | None) -> None:
    """Show an instrument's items, scores, bands, flags and licence."""
    try:
        inst = engine().instruments.get(instrument_id, version)
    except KeyError:
        fail(f"no instrument {instrument_id!r}{' version ' + version if version else ''} is installed")
    click.echo(f"{inst.title}  ({inst.id} {inst.version}, {inst.language})")
    click.echo(f"Citation: {inst.citation}")
    click.echo(f"Licence:  {inst.licence.name}")
    if not inst.sendable:
        click.echo("Wording:  licensed wording not installed; clients cannot be sent this instrument yet")
    if inst.stem:
        click.echo(f"Stem:     {inst.stem}")
    click.echo("Items:")
    for item in inst.items:
        answers = (
            ", ".join(f"{o.value}={o.label}" for o in item.options) or f"{item.widget} {item.minimum}-{item.maximum}"
        )
        click.echo(f"  {item.id:<10} {item.text or item.topic}  [{answers}]")
    click.echo("Scores:")
    for spec in inst.scoring.scores:
        click.echo(f"  {spec.name:<22} {spec.rule.name:<22} {spec.label}")
    if inst.scoring.bands:
        click.echo(f"Bands (on {inst.scoring.band_score}):")
        for band in inst.scoring.bands:
            click.echo(f"  {band.id:<22} {band.minimum}-{band.maximum}")
    click.echo("Flags: " + ", ".join(inst.scoring.flag_ids))


@instruments.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def check_instruments(paths: tuple[Path, ...]) -> None:
    """Validate definitions and run their worked examples (all installed ones when no PATH is given)."""
    eng = engine()
    problems: list[str] = []
    if paths:
        loaded = []
        for path in paths:
            try:
                loaded.append(load_instrument(path, eng.scoring_rules))
            except InstrumentDefinitionError as error:
                problems.append(str(error))
    else:
        loaded = eng.instruments.all_versions()
        problems.extend(str(e) for e in eng.instruments.errors)
    for inst in sorted(loaded, key=lambda i: i.key):
        found = check_examples(inst)
        problems.extend(found)
        if not found:
            click.echo(f"ok  {inst.id} {inst.version}: definition valid, {len(inst.examples)} worked examples agree")
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(1)


@instruments.command("install-wording")
@click.argument("instrument_id")
@click.argument("wording_file", type=click.File("r", encoding="utf-8"))
def install_wording(instrument_id: str, wording_file: Any) -> None:
    """Install licensed item wording (a JSON file checked against the instrument's item ids)."""
    try:
        wording = json.load(wording_file)
    except json.JSONDecodeError as exc:
        fail(f"{wording_file.name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    try:
        path = engine().install_wording(instrument_id, wording)
    except WordingError as exc:
        fail(f"{wording_file.name}: {exc}")
    click.echo(f"Installed wording for {instrument_id} at {path}")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_plugins(as_json: bool) -> None:
    """List registered plugins with their version and the hooks they implement."""
    infos = describe_plugins(engine().plugin_manager)
    if as_json:
        click.echo(json.dumps([info.__dict__ | {"hooks": list(info.hooks)} for info in infos], indent=2))
        return
    for info in infos:
        click.echo(f"{info.name:<32} {info.version or '-':<8} {', '.join(info.hooks)}")


@cli.command("score")
@click.argument("instrument_id")
@click.option(
    "--input", "input_file", type=click.File("r", encoding="utf-8"), default="-", help="JSON file (default: stdin)."
)
@click.option("--version", "version", default=None, help="A specific instrument version (default: newest).")
def score(instrument_id: str, input_file: Any, version: str | None) -> None:
    """Score {"answers": {...}, "history": [...]} read as JSON; print the result as JSON."""
    try:
        payload = json.load(input_file)
    except json.JSONDecodeError as exc:
        fail(f"input is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})")
    if not isinstance(payload, dict) or "answers" not in payload:
        fail('input must be a JSON object {"answers": {item: value|null}, "history": [earlier answers]}')
    history = payload.get("history", [])
    if not isinstance(history, list):
        fail('"history" must be a list of earlier answer objects, oldest first')
    unknown = sorted(set(payload) - {"answers", "history"})
    if unknown:
        fail(f"unexpected key(s) {', '.join(unknown)}: only 'answers' and 'history' are read")
    try:
        result = engine().score(instrument_id, payload["answers"], history, version=version)
    except KeyError:
        fail(f"no instrument {instrument_id!r}{' version ' + version if version else ''} is installed")
    except ResponseValidationError as exc:
        where = "answers"
        for index, entry in enumerate(history):
            if entry is exc.answers:
                where = f"history[{index}]"
        lines = "\n".join(f"  {e}" for e in exc.errors)
        fail(f"{where} do not fit {instrument_id}:\n{lines}")
    click.echo(json.dumps(result.to_json(), indent=2))


def main() -> None:
    cli(prog_name="rapportal")
