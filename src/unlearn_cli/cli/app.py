"""The Typer application ``unlearn``: the version option and one command a module."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli import __version__
from unlearn_cli.cli.protect import EXIT_CODES_HELP, protect
from unlearn_cli.cli.verify import VERIFY_EXIT_CODES, verify

app = typer.Typer(
    name="unlearn",
    help="Protect photos from being learned by deep-learning models (unlearnable examples).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unlearn {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Protect photos from being learned by deep-learning models (unlearnable examples)."""


app.command(epilog=EXIT_CODES_HELP.strip())(protect)
app.command(epilog=VERIFY_EXIT_CODES.strip())(verify)
