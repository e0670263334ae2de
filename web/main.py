"""The ``rapportal`` command: the commands of :mod:`web.cli` on Flask's group, which builds the app on demand."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from web.app import create_app
from web.cli import cli


def main() -> None:
    root = FlaskGroup(
        name="rapportal",
        help=cli.help,
        commands=cli.commands,
        create_app=create_app,
        add_version_option=False,
        load_dotenv=False,
    )
    click.version_option(package_name="rapportal")(root)
    root(prog_name="rapportal")
