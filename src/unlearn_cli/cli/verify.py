"""``unlearn verify``: budget, integrity and (with --learnability) learnability of protected
photos, reported as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.exit_codes import EXIT_OK, EXIT_PHOTO_FAILED, exit_codes

VERIFY_EXIT_CODES = """
Exit codes: 0 every check passed; 1 a check failed (each failing photo is named); 2 usage
error (no manifest, unreadable options, no reference identities).
"""


def verify(
    folder: Annotated[
        Path,
        typer.Argument(help="A protected folder (with unlearn-manifest.json).", show_default=False),
    ],
    originals: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the originals \\[default: the input root in the manifest].",
            show_default=False,
        ),
    ] = None,
    learnability: Annotated[
        bool,
        typer.Option(
            "--learnability",
            help="Also train fresh models on the protected photos and "
            "measure how many held-out clean photos they recognise, against the same "
            "training on the originals. Default size: 2 architectures x (clean, "
            "protected), 30 epochs at 64 px, up to 8 reference identities of 100 photos: "
            "a few minutes on a laptop CPU; --epochs and --architecture scale it.",
        ),
    ] = False,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Reference identities (<class>/<image>), best people not in the "
            "surrogate \\[default: the surrogate of the manifest; marked optimistic].",
            show_default=False,
        ),
    ] = None,
    architecture: Annotated[
        list[str] | None,
        typer.Option(
            "--architecture",
            help="Attacker architecture (repeatable) \\[default: vgg_small, resnet18_imagenet].",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Attacker training epochs.")] = 30,
    holdout: Annotated[
        float, typer.Option(help="Share of each class's originals held out as clean test photos.")
    ] = 0.34,
    max_ratio: Annotated[
        float,
        typer.Option(
            help="Learnability passes when protected recognition <= this x the "
            "clean baseline, for every attack (architecture, countermeasure) and class."
        ),
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed of the split and the attackers.")] = 0,
    device: Annotated[
        str, typer.Option(help="With --learnability, where the attackers train: auto, cpu or cuda.")
    ] = "auto",
    countermeasures: Annotated[
        str | None,
        typer.Option(
            "--countermeasures",
            metavar="LIST",
            help="With --learnability, also attack after countermeasures known to remove or "
            "bypass the noise, each judged against the same treatment of the originals: "
            "comma-separated from jpeg90, jpeg75, jpeg50, grayscale, downscale2x (applied to "
            "every photo the attacker trains on), strong-augment (mixup and wider shifts), "
            "adversarial-training (3-step PGD), or all. Each adds 2 trainings per "
            "architecture; adversarial-training costs about 4x a plain one.",
            show_default=False,
        ),
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="With --learnability, also try an adaptive attacker that never trains on the "
            "user: a feature extractor (resnet18_imagenet) trained on the reference "
            "identities alone matches new photos to the enrolled ones by nearest centroid "
            "and by a linear probe. Adds 1 training. With the recognition extra installed "
            "(pip install 'unlearn-cli\\[recognition]'), dlib's pretrained face recogniser "
            "enrols the photos too (about 0.1 s a photo).",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Write a contact sheet, learning curves and report.html here.", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks of unexpected errors.")] = False,
) -> None:
    """Check protected photos: budget against the originals, integrity against the manifest,
    and (with --learnability) whether a model can still learn them."""
    from unlearn_cli.cli.output import consoles, print_json, print_verify

    stdout, stderr = consoles()
    with exit_codes(stderr, debug):
        from unlearn_cli.errors import SetupError
        from unlearn_cli.verify.files import read_manifest, verify_files

        if (countermeasures is not None or adaptive) and not learnability:
            raise SetupError("--countermeasures and --adaptive need --learnability")
        settings = None
        if learnability:
            from unlearn_cli.verify.countermeasures import parse_countermeasures
            from unlearn_cli.verify.learnability import LearnabilitySettings

            settings = LearnabilitySettings(
                architectures=tuple(architecture or LearnabilitySettings.architectures),
                epochs=epochs,
                holdout=holdout,
                max_ratio=max_ratio,
                seed=seed,
                countermeasures=parse_countermeasures(countermeasures or ""),
                adaptive=adaptive,
                device=device,
            )
        manifest = read_manifest(folder)
        status = (
            stderr.status("checking budget and integrity")
            if not quiet and stderr.is_terminal
            else None
        )
        if status:
            status.start()
        try:
            result = verify_files(folder, manifest, originals)
            if settings is not None:
                from unlearn_cli.runtime.threads import torch_threads
                from unlearn_cli.verify.learnability import measure_learnability

                def show(training: str) -> None:
                    if status:
                        status.update(f"training {training}")

                with torch_threads(None):
                    result["checks"]["learnability"] = measure_learnability(
                        folder, manifest, originals, reference, settings, on_training=show
                    )
        finally:
            if status:
                status.stop()
        result["passed"] = all(check["passed"] for check in result["checks"].values())
        if report is not None:
            from unlearn_cli.verify.visuals import write_report

            result["report_files"] = [
                str(p) for p in write_report(report, folder, manifest, result, originals)
            ]
    if as_json:
        print_json(result)
    else:
        print_verify(stdout, result)
    for photo in result["photos"]:
        for problem in photo["problems"]:
            stderr.print(f"failed: {problem}", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK if result["passed"] else EXIT_PHOTO_FAILED)
