"""Exit codes of the command line, and the context that turns library errors into them."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

EXIT_OK = 0
EXIT_PHOTO_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM (a batch system stopping us) is handled like Ctrl-C."""
    raise KeyboardInterrupt


@contextmanager
def exit_codes(stderr: Console, debug: bool) -> Iterator[None]:
    """Library errors become one line on stderr and the documented exit code; SIGTERM and
    Ctrl-C end the run cleanly with 130."""
    from unlearn_cli.errors import SetupError, UnlearnError

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt:
        stderr.print("interrupted", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except SetupError as error:
        stderr.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    except UnlearnError as error:
        stderr.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(EXIT_PHOTO_FAILED) from None
    except Exception as error:
        if debug:
            raise
        stderr.print(
            f"error: unexpected {type(error).__name__}: {error} "
            "(run with --debug for the traceback)",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_PHOTO_FAILED) from None
