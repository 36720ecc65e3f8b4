"""``unlearn protect``: options parsed, the protect pipeline called, the budget report shown.
Heavy modules are imported inside the command so that ``unlearn --help`` stays instant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.exit_codes import EXIT_PHOTO_FAILED, exit_codes
from unlearn_cli.cli.options import (
    Classes,
    EmbedderChoice,
    FacesChoice,
    Mode,
    StripChoice,
    read_stdin_paths,
)

EXIT_CODES_HELP = """
Exit codes: 0 every photo protected; 1 one or more photos could not be protected (each is
named, the rest are written); 2 usage or setup error before any photo is touched (bad option,
no images found, surrogate unavailable); 130 interrupted.
"""


OPTIMISATION = "Optimisation"
FACES = "Faces"
OUTPUT = "Output"
BATCH = "Many people"


def protect(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Folders (searched recursively), image files, or - to read paths from stdin.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder \\[default: <folder>-protected beside a "
            "folder input; required for files and stdin].",
            show_default=False,
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    eps: Annotated[int, typer.Option(help="L-inf budget in 8-bit pixel levels.")] = 8,
    mode: Annotated[
        Mode,
        typer.Option(help="Noise form: one noise per photo, or one shared by a whole class."),
    ] = Mode.sample,
    surrogate: Annotated[
        str | None,
        typer.Option(
            help="Surrogate dataset: a name (lfw, cifar10; downloaded once) or a "
            "<class>/<image> folder. \\[default: $UNLEARN_SURROGATE or lfw]",
            show_default=False,
        ),
    ] = None,
    exclude_class: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-class",
            help="Surrogate class to leave out (repeatable); classes "
            "sharing a name or a file with the protected photos are left out anyway.",
        ),
    ] = None,
    classes: Annotated[
        Classes,
        typer.Option(
            help="auto: a folder is one class, subfolders are classes; "
            "one: every photo is one class."
        ),
    ] = Classes.auto,
    faces: Annotated[
        FacesChoice,
        typer.Option(
            help="auto: protect the faces in photos of people (aligned face crops and photos "
            "without a face are protected whole, and reported); on: always look for faces; "
            "off: protect whole images (no detection).",
            rich_help_panel=FACES,
        ),
    ] = FacesChoice.auto,
    require_faces: Annotated[
        bool,
        typer.Option(
            help="A photo without a face is an error instead of being protected whole.",
            rich_help_panel=FACES,
        ),
    ] = False,
    main_face_only: Annotated[
        bool,
        typer.Option(
            help="In photos with several faces protect only the face most like the class's "
            "main identity (matched by embedding).",
            rich_help_panel=FACES,
        ),
    ] = False,
    min_face_size: Annotated[
        int,
        typer.Option(help="Smallest face protected, in photo pixels.", rich_help_panel=FACES),
    ] = 40,
    face_confidence: Annotated[
        float,
        typer.Option(help="Smallest detector confidence of a face.", rich_help_panel=FACES),
    ] = 0.95,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads \\[default: every core]; on a CPU the noise depends on the count, "
            "so a rerun with another count protects again.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible noise).")] = 0,
    resolution: Annotated[
        int,
        typer.Option(
            help="Working resolution of the surrogate and the noise (pixels).",
            rich_help_panel=OPTIMISATION,
        ),
    ] = 32,
    rounds: Annotated[
        int, typer.Option(help="Maximum min-min rounds.", rich_help_panel=OPTIMISATION)
    ] = 20,
    min_rounds: Annotated[
        int,
        typer.Option(help="Rounds before the stop rule may fire.", rich_help_panel=OPTIMISATION),
    ] = 20,
    steps: Annotated[
        int, typer.Option(help="PGD steps on the noise per round.", rich_help_panel=OPTIMISATION)
    ] = 20,
    step_size: Annotated[
        float | None,
        typer.Option(
            help="PGD step in levels \\[default: eps/10].",
            show_default=False,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    train_steps: Annotated[
        int,
        typer.Option(
            help="Surrogate training batches per round (M).", rich_help_panel=OPTIMISATION
        ),
    ] = 10,
    stop_accuracy: Annotated[
        float,
        typer.Option(
            help="Stop once the surrogate recognises this share of the protected photos.",
            rich_help_panel=OPTIMISATION,
        ),
    ] = 0.99,
    augment: Annotated[
        bool,
        typer.Option(
            help="Optimise through random flips, shifts and zooms, as an "
            "attacker's training would apply.",
            rich_help_panel=OPTIMISATION,
        ),
    ] = True,
    robust: Annotated[
        bool,
        typer.Option(
            help="Also optimise through JPEG re-encoding, downscaling, colour jitter and "
            "grayscale, as uploads and scrapers apply them (measured stronger; a round takes "
            "1.2-1.35x as long; see docs/measurements.md).",
            rich_help_panel=OPTIMISATION,
        ),
    ] = True,
    gray: Annotated[
        bool,
        typer.Option(
            "--gray-noise/--colour-noise",
            help="Noise of brightness alone, the same on red, green and blue: no colour tint, "
            "and grayscale conversion keeps it, but at the same --eps it protected less than "
            "colour noise (see docs/measurements.md).",
            rich_help_panel=OPTIMISATION,
        ),
    ] = False,
    rem: Annotated[
        int,
        typer.Option(
            "--rem",
            help="REM: optimise against a surrogate adversarially perturbed within this many "
            "levels (e.g. eps/2), meant to resist an attacker's adversarial training; about "
            "1.4x the protect time; 0: off; see docs/measurements.md).",
            rich_help_panel=OPTIMISATION,
        ),
    ] = 0,
    consensus: Annotated[
        float,
        typer.Option(
            help="Pull of each class's mean gradient on every photo's noise step, 0 to 1: the "
            "photos of a person share more of one noise, a shortcut that other architectures "
            "learn too (measured stronger at 0.5 than 0 or 0.8; 0: each photo on its own; see "
            "docs/measurements.md).",
            min=0.0,
            max=1.0,
            rich_help_panel=OPTIMISATION,
        ),
    ] = 0.5,
    surrogate_model: Annotated[
        str, typer.Option(help="Surrogate architecture.", rich_help_panel=OPTIMISATION)
    ] = "resnet_small",
    match_k: Annotated[
        int,
        typer.Option(
            help="Most similar surrogate classes matched to each protected class.",
            rich_help_panel=OPTIMISATION,
        ),
    ] = 10,
    embedder: Annotated[
        EmbedderChoice,
        typer.Option(
            help="Embeddings for class matching: a cached pretrained face "
            "model, or the surrogate's own features.",
            rich_help_panel=OPTIMISATION,
        ),
    ] = EmbedderChoice.auto,
    per_class: Annotated[
        bool,
        typer.Option(
            help="Protect each class (first-level subfolder: one person) in its own job, into "
            "<out>/<class>/ with its own manifest, as a run on that folder alone would.",
            rich_help_panel=BATCH,
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Per-class jobs run at once on this machine, the cores shared among them "
            "(implies --per-class).",
            rich_help_panel=BATCH,
        ),
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the per-class jobs as Ray tasks: auto (the running cluster, else a local "
            "one) or a cluster address; implies --per-class; pip install 'unlearn-cli[ray]'.",
            show_default=False,
            rich_help_panel=BATCH,
        ),
    ] = None,
    null_separated: Annotated[
        bool,
        typer.Option(
            "--null",
            "-0",
            help="Paths on stdin are NUL-separated (find -print0), not one per line.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Protect every photo again and replace existing outputs; without it, photos "
            "already protected with the same settings are kept and an interrupted run resumes.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Only say what would be done for each photo (protect, redo, skip, refuse); "
            "decode and write nothing.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    strip_metadata: Annotated[
        StripChoice,
        typer.Option(
            help="location: remove GPS, serial numbers, owner, MakerNote, XMP and the EXIF "
            "thumbnail, keep date and camera fields; all: remove all EXIF and XMP (the colour "
            "profile stays).",
            rich_help_panel=OUTPUT,
        ),
    ] = StripChoice.location,
    keep_metadata: Annotated[
        bool,
        typer.Option(
            help="Keep all EXIF and XMP, GPS included (orientation is still set to 1).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Refuse images above this many pixels (decompression bombs; memory).",
            rich_help_panel=OUTPUT,
        ),
    ] = 100_000_000,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the manifest (or the --dry-run plan) as JSON on stdout, nothing else.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress; only errors on stderr.", rich_help_panel=OUTPUT
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(help="Show full tracebacks of unexpected errors.", rich_help_panel=OUTPUT),
    ] = False,
) -> None:
    """Add error-minimizing noise to photos so that models trained on them fail to learn them.

    Writes lossless PNG copies (every pixel within --eps levels of the upright original) and
    unlearn-manifest.json with the settings, the surrogate classes used and a budget report.
    """
    from unlearn_cli.cli.output import (
        ProgressView,
        consoles,
        print_budget_table,
        print_json,
        print_plan,
    )

    stdout, stderr = consoles()
    with exit_codes(stderr, debug):
        from unlearn_cli.config import ClassLayout, Embedder, ProtectConfig
        from unlearn_cli.engine.minmin import NoiseForm
        from unlearn_cli.errors import SetupError
        from unlearn_cli.faces.regions import FaceMode
        from unlearn_cli.io.inputs import collect_inputs
        from unlearn_cli.io.metadata import MetadataPolicy
        from unlearn_cli.pipeline.fanout import protect_people
        from unlearn_cli.pipeline.run import protect as run_protect

        if keep_metadata and strip_metadata is StripChoice.all:
            raise SetupError("--keep-metadata and --strip-metadata all contradict each other")

        config = ProtectConfig(
            eps=eps,
            mode=NoiseForm(mode.value),
            resolution=resolution,
            rounds=rounds,
            min_rounds=min_rounds,
            steps=steps,
            step_size=step_size,
            train_steps=train_steps,
            stop_accuracy=stop_accuracy,
            augment=augment,
            robust=robust,
            rem_radius=rem,
            gray=gray,
            consensus=consensus,
            surrogate_model=surrogate_model,
            match_k=match_k,
            embedder=Embedder(embedder.value),
            classes=ClassLayout(classes.value),
            seed=seed,
            device=device,
            threads=threads,
            faces=FaceMode(faces.value),
            require_faces=require_faces,
            main_face_only=main_face_only,
            min_face_size=min_face_size,
            face_confidence=face_confidence,
            metadata=MetadataPolicy.NONE if keep_metadata else MetadataPolicy(strip_metadata.value),
            max_pixels=max_pixels,
        )
        stdin_paths = read_stdin_paths(null_separated) if "-" in inputs else None
        input_set = collect_inputs(inputs, out, config.classes, stdin_paths)
        options = {
            "surrogate": surrogate,
            "exclude_classes": frozenset(exclude_class or ()),
            "overwrite": overwrite,
            "dry_run": dry_run,
            "debug": debug,
        }
        with ProgressView(stderr, quiet) as view:
            if per_class or workers != 1 or ray is not None:
                result = protect_people(
                    input_set, config, on_event=view, workers=workers, ray_address=ray, **options
                )
            else:
                result = run_protect(input_set, config, on_event=view, **options)
    if as_json:
        print_json(result.manifest)
    elif dry_run:
        print_plan(stdout, result.manifest)
    elif not quiet:
        print_budget_table(stdout, result.manifest, str(result.manifest_path))
    if result.failures:
        stderr.print(f"{len(result.failures)} photo(s) could not be protected", highlight=False)
        raise typer.Exit(EXIT_PHOTO_FAILED)
