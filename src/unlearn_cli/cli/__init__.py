"""The ``unlearn`` command line. It parses options, calls the library and renders results."""

from __future__ import annotations

from unlearn_cli.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
