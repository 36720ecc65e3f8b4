"""Which photos a run protects, which class each belongs to, and where each output goes.

Class rules: a folder's own images form one class named after the folder; each first-level
subfolder is one class named after it (deeper folders belong to their first-level class).
Files given one by one or on stdin form one class. ``ClassLayout.ONE`` puts everything in one.

Output naming: ``<stem>.png`` in the mirrored folder. When several inputs of one folder share a
stem (``a.jpg`` and ``a.png``), a source already named ``<stem>.png`` keeps that name and every
other one is written as ``<stem>.<ext>.png`` (``a.jpg.png``); nothing is ever overwritten.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from unlearn_cli.config import ClassLayout
from unlearn_cli.errors import NoImagesError, SetupError
from unlearn_cli.io.images import find_images, is_image_path


@dataclass(frozen=True)
class InputPhoto:
    path: Path  # absolute
    relative: Path  # relative to the input root
    class_name: str
    output: Path  # relative to the output folder


@dataclass(frozen=True)
class InputSet:
    root: Path
    output_root: Path
    photos: tuple[InputPhoto, ...]
    skipped_folders: tuple[Path, ...] = ()  # earlier protected outputs inside the inputs

    @property
    def class_names(self) -> list[str]:
        return sorted({photo.class_name for photo in self.photos})


def collect_inputs(
    inputs: list[str], out: Path | None, layout: ClassLayout, stdin_paths: list[str] | None = None
) -> InputSet:
    """Resolve command-line inputs (folders, files, ``-`` for ``stdin_paths``) into photos."""
    folders: list[Path] = []
    files: list[Path] = []
    for item in inputs:
        if item == "-":
            files += [Path(line) for line in (stdin_paths or []) if line.strip()]
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            folders.append(path.resolve())
        elif path.is_file():
            files.append(path)
        else:
            raise SetupError(f"{item}: no such file or folder")
    if out is None:
        if len(folders) != 1 or files:
            raise SetupError("--out is required unless the input is exactly one folder")
        out = folders[0].with_name(folders[0].name + "-protected")
    output_root = out.expanduser().resolve()
    for folder in folders:
        if output_root == folder:
            raise SetupError(f"--out {out} is the input folder itself; choose another folder")

    entries: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for folder in folders:
        for path in find_images(folder, exclude=output_root, skipped=skipped):
            relative = path.relative_to(folder)
            first = relative.parts[0] if len(relative.parts) > 1 else None
            entries.append((path, first or folder.name))
    for path in files:
        if not is_image_path(path):
            raise SetupError(f"{path}: not an image file (known extensions: jpg, png, ...)")
    if files:  # files given one by one are one class, named after their common folder
        shared = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
        entries += [(path.resolve(), shared.name or "photos") for path in files]
    if layout is ClassLayout.ONE and entries:
        single = folders[0].name if folders else entries[0][1]
        entries = [(path, single) for path, _ in entries]
    seen: set[Path] = set()
    unique = [(p, c) for p, c in entries if not (p in seen or seen.add(p))]
    if not unique:
        raise NoImagesError(f"no images found in {', '.join(inputs)}")

    root = _common_root([path for path, _ in unique], folders)
    relatives = [path.relative_to(root) for path, _ in unique]
    outputs = plan_output_names(relatives)
    photos = tuple(
        InputPhoto(path, relative, class_name, output)
        for (path, class_name), relative, output in zip(unique, relatives, outputs, strict=True)
    )
    originals = {path for path, _ in unique}
    for photo in photos:
        if (output_root / photo.output).resolve() in originals:
            raise SetupError(
                f"{photo.path}: its protected copy would overwrite an original in {output_root}; "
                "choose another --out"
            )
    return InputSet(root, output_root, photos, tuple(skipped))


def _common_root(paths: list[Path], folders: list[Path]) -> Path:
    if len(folders) == 1 and all(folders[0] in p.parents for p in paths):
        return folders[0]
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def plan_output_names(relatives: list[Path]) -> list[Path]:
    """Map each source path to a unique ``.png`` output path (see the module docstring)."""
    groups: dict[tuple[Path, str], list[int]] = defaultdict(list)
    for index, relative in enumerate(relatives):
        groups[(relative.parent, relative.stem.lower())].append(index)
    outputs: list[Path] = [Path()] * len(relatives)
    for indices in groups.values():
        for index in indices:
            source = relatives[index]
            keeps_name = len(indices) == 1 or source.suffix == ".png"
            name = f"{source.stem}.png" if keeps_name else f"{source.name}.png"
            outputs[index] = source.parent / name
    return outputs
