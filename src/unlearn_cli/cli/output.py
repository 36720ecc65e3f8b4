"""Rendering for the CLI: human tables on stdout, progress and messages on stderr, or JSON."""

from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def consoles() -> tuple[Console, Console]:
    """stdout for results, stderr for progress and messages; NO_COLOR is honoured by Rich."""
    no_color = bool(os.environ.get("NO_COLOR"))
    return Console(no_color=no_color), Console(stderr=True, no_color=no_color, soft_wrap=True)


class ProgressView(AbstractContextManager):
    """Shows pipeline events on stderr: one bar per phase and a line per optimisation round.

    Silent with ``--quiet``; without a terminal on stderr only warnings and errors appear."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.live = not quiet and console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self.live,
        )
        self.task: Any = None

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.__exit__(*exc_info)

    def __call__(self, event: object) -> None:
        from unlearn_cli.pipeline.events import (
            Notice,
            PhaseAdvanced,
            PhaseStarted,
            PhotoFailed,
            PhotoNote,
            RoundFinished,
        )

        if isinstance(event, PhotoFailed):
            self.console.print(
                f"[red]error:[/red] {escape(event.source)}: {escape(event.error)}",
                markup=True,
                highlight=False,
            )
        elif isinstance(event, PhotoNote):
            if not self.quiet:
                self.console.print(
                    f"note: {event.source}: {event.message}", highlight=False, markup=False
                )
        elif isinstance(event, Notice):
            if not self.quiet:
                self.console.print(f"note: {event.message}", highlight=False, markup=False)
        elif not self.live:
            return
        elif isinstance(event, PhaseStarted):
            if self.task is not None:
                self.progress.update(self.task, completed=self.progress.tasks[self.task].total)
            self.task = self.progress.add_task(event.name, total=event.total)
        elif isinstance(event, PhaseAdvanced) and self.task is not None:
            self.progress.advance(self.task, event.steps)
        elif isinstance(event, RoundFinished) and self.task is not None:
            report = event.report
            self.progress.advance(self.task)
            self.progress.console.print(
                f"  round {report.round}/{event.max_rounds}: surrogate accuracy on protected "
                f"photos {report.protected_accuracy:.0%}, loss {report.protected_loss:.3f}",
                highlight=False,
            )


def print_json(manifest: dict) -> None:
    sys.stdout.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _fmt(value: float | None, digits: int) -> str:
    return "inf" if value is None else f"{value:.{digits}f}"


def print_budget_table(console: Console, manifest: dict, manifest_path: str) -> None:
    """One row per protected photo, then the totals, as measured on the written files."""
    eps = manifest["settings"]["eps"]
    table = Table(title=f"Budget report (eps {eps} levels)", title_justify="left")
    for column, justify in (
        ("photo", "left"),
        ("class", "left"),
        ("size", "right"),
        ("L-inf", "right"),
        ("mean |d|", "right"),
        ("PSNR dB", "right"),
        ("SSIM", "right"),
    ):
        table.add_column(column, justify=justify)
    for photo in manifest["photos"]:
        budget = photo["budget"]
        table.add_row(
            photo["output"],
            photo["class"],
            f"{photo['width']}x{photo['height']}",
            str(budget["linf"]),
            f"{budget['mean_abs']:.2f}",
            _fmt(budget["psnr"], 1),
            f"{budget['ssim']:.4f}",
        )
    totals = manifest["totals"]
    if manifest["photos"]:
        table.add_section()
        table.add_row(
            f"total: {totals['protected']}/{totals['photos']} written",
            "",
            "",
            str(totals["max_linf"]),
            f"{totals['mean_abs']:.2f}",
            _fmt(totals["min_psnr"], 1),
            f"{totals['min_ssim']:.4f}",
        )
    console.print(table)
    rounds = manifest["optimisation"].get("rounds", [])
    if rounds:
        last = rounds[-1]
        console.print(
            f"surrogate accuracy on protected photos after {last['round']} rounds: "
            f"{last['protected_accuracy']:.0%}; device {manifest['optimisation']['device']}; "
            f"{manifest['optimisation']['seconds']:.0f} s",
            highlight=False,
        )
    if people := manifest.get("people"):
        complete = sum(person["complete"] for person in people)
        console.print(
            f"{complete} of {len(people)} people complete, each in its own job "
            f"({manifest['runner']}); each has its own manifest in <out>/<class>/",
            highlight=False,
        )
    console.print(f"manifest: {manifest_path}", highlight=False)


def print_plan(console: Console, plan: dict) -> None:
    """The --dry-run plan: what a real run would do with each photo."""
    table = Table(title="Dry run: nothing decoded or written", title_justify="left")
    for column in ("photo", "output", "class", "action", "why"):
        table.add_column(column)
    for photo in plan["photos"]:
        table.add_row(
            photo["source"], photo["output"], photo["class"], photo["action"], photo["reason"]
        )
    console.print(table)
    totals = plan["totals"]
    console.print(
        ", ".join(f"{totals[key]} {key}" for key in ("protect", "redo", "skip", "refuse", "failed"))
        + f"; output folder {plan['output_root']}",
        highlight=False,
    )


def _row_verdict(row: dict) -> str:
    """A clean baseline at chance makes a row inconclusive, whatever the protected figure."""
    if row["inconclusive"]:
        return "inconclusive"
    return "ok" if row["passed"] else "FAIL"


def print_verify(console: Console, result: dict) -> None:
    """The verify report: per photo, unknown files, each check, learnability per architecture,
    countermeasure and class."""
    table = Table(title=f"Verify (eps {result['eps']} levels)", title_justify="left")
    for column in ("photo", "integrity", "L-inf", "mean |d|", "PSNR dB", "SSIM", "budget"):
        table.add_column(column, justify="left" if column in ("photo", "integrity") else "right")
    for photo in result["photos"]:
        budget = photo["budget"]
        figures = (
            [
                str(budget["linf"]),
                f"{budget['mean_abs']:.2f}",
                _fmt(budget["psnr"], 1),
                f"{budget['ssim']:.4f}",
            ]
            if budget
            else ["-", "-", "-", "-"]
        )
        table.add_row(
            photo["output"], photo["integrity"], *figures, "ok" if photo["budget_ok"] else "FAIL"
        )
    console.print(table)
    for name in result["unknown_files"]:
        console.print(f"not in the manifest: {name}", highlight=False)
    for name, check in result["checks"].items():
        verdict = "passed" if check["passed"] else "FAILED"
        console.print(f"{name}: {verdict}", highlight=False)
    learnability = result["checks"].get("learnability")
    if learnability:
        table = Table(title="Learnability: held-out clean photos recognised", title_justify="left")
        for column in (
            "architecture",
            "countermeasure",
            "class",
            "trained on clean",
            "trained on protected",
            "",
        ):
            table.add_column(column)
        for row in learnability["results"]:
            table.add_row(
                row["architecture"],
                row["countermeasure"],
                row["class"],
                f"{row['clean']:.0%}",
                f"{row['protected']:.0%}",
                _row_verdict(row),
            )
        console.print(table)
        console.print(
            f"random guess: {learnability['chance']:.0%}; references: "
            f"{', '.join(learnability['reference_classes'])}"
            + (" (optimistic: the surrogate's own classes)" if learnability["optimistic"] else "")
            + f"; {learnability['seconds']:.0f} s",
            highlight=False,
        )
        if learnability.get("recognition_attacker"):
            console.print(
                f"pretrained face recogniser (dlib rows): {learnability['recognition_attacker']}",
                highlight=False,
            )
        if learnability["reason"]:
            console.print(f"learnability: {learnability['reason']}", highlight=False)
    for path in result.get("report_files", []):
        console.print(f"report: {path}", highlight=False)
    console.print(
        "all checks passed" if result["passed"] else "some checks FAILED", highlight=False
    )
