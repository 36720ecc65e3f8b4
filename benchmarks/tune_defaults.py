"""Measure protection settings on face identities with an attacker that is not the surrogate.

Identities of ../shared/data/faces are split into a surrogate half (A) and an attacker half (B).
Each "user" is an identity of B: a fixed 40 of its photos are held out clean, 60 others are
protected against a surrogate trained on A; attackers (architectures other than the surrogate's,
trained from scratch with crop/flip augmentation) learn B's other identities plus the user's
protected photos, and we report how many held-out clean photos of the user they recognise.

    python benchmarks/tune_defaults.py --phase tune       # settings grid, tuning users
    python benchmarks/tune_defaults.py --phase tune-jpeg  # best of the grid, after JPEG-75 too
    python benchmarks/tune_defaults.py --phase report     # protect defaults, other users, 3 seeds
    python benchmarks/tune_defaults.py --phase faces      # --faces on: crops detected, aligned

Rows are cached in benchmarks/results/cache/ so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unlearn_cli.cache import cache_key
from unlearn_cli.config import ClassLayout, ProtectConfig
from unlearn_cli.engine import (
    AugmentSettings,
    ErrorMinimizingNoise,
    MinMinSettings,
    NoiseForm,
    TrainSettings,
    create_model,
    train,
)
from unlearn_cli.engine.attack import AttackSettings, run_attack
from unlearn_cli.images import Photo, apply_noise, load_photo, resize_for_model
from unlearn_cli.inputs import collect_inputs
from unlearn_cli.pipeline import protect as run_protect
from unlearn_cli.regions import FaceMode

ROOT = Path(__file__).resolve().parent
FACES = ROOT.parent.parent / "shared" / "data" / "faces"
CACHE = ROOT / "results" / "cache" / "tune"
ACTIVE_ATTACKERS = ["vgg_small", "resnet18_imagenet"]
WITH_JPEG = True
CACHED_ONLY = False  # summarise the rows measured so far without computing the others
ATTACK_RESOLUTION = 64
HELD_OUT = 40
PROTECTED = 60
PER_REFERENCE_CLASS = 100
TUNE_USERS = ["Gwyneth_Paltrow", "Keira_Knightley"]
REPORT_USERS = ["Daniel_Radcliffe", "Jennifer_Aniston", "Tina_Fey"]
ATTACKERS = ["vgg_small", "resnet18_imagenet"]


@dataclass(frozen=True)
class Setting:
    name: str
    form: NoiseForm
    resolution: int
    augment: bool
    warm: bool
    eps: int = 8
    steps: int = 20
    min_rounds: int = 10
    max_rounds: int = 10
    faces: FaceMode = FaceMode.AUTO


GRID = [
    Setting("class32-aug", NoiseForm.CLASS, 32, True, False),
    Setting("sample32-aug", NoiseForm.SAMPLE, 32, True, False),
    Setting("class32", NoiseForm.CLASS, 32, False, False),
    Setting("sample32", NoiseForm.SAMPLE, 32, False, False),
    Setting("class64-aug", NoiseForm.CLASS, 64, True, False),
    Setting("class32-aug-warm", NoiseForm.CLASS, 32, True, True),
    Setting("sample32-aug-warm", NoiseForm.SAMPLE, 32, True, True),
    Setting("class16-aug", NoiseForm.CLASS, 16, True, False),
]


def split_identities() -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in FACES.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 100)
    return names[0::2], names[1::2]


def photos_of(name: str) -> list[Path]:
    return sorted((FACES / name).iterdir(), key=lambda p: p.name)


def user_split(name: str) -> tuple[list[Path], list[Path]]:
    paths = photos_of(name)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(1234)).tolist()
    shuffled = [paths[i] for i in order]
    return shuffled[HELD_OUT : HELD_OUT + PROTECTED], shuffled[:HELD_OUT]


def tensor_stack(photos: list[Photo], resolution: int) -> torch.Tensor:
    return torch.stack([resize_for_model(photo, resolution) for photo in photos])


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def protect(
    setting: Setting, user: list[Photo], surrogate: list[str], seed: int
) -> list[np.ndarray]:
    """The protect pipeline's core on tensors: min-min at the setting's resolution, carried back."""
    r = setting.resolution
    own = tensor_stack(user, r)
    others, labels = [], []
    for index, name in enumerate(surrogate, start=1):
        paths = photos_of(name)[:PER_REFERENCE_CLASS]
        others.append(tensor_stack([load_photo(p) for p in paths], r))
        labels += [index] * len(paths)
    other_images = torch.cat(others)
    other_labels = torch.tensor(labels)
    model = create_model("resnet_small", len(surrogate) + 1, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    augment = AugmentSettings() if setting.augment else None
    if setting.warm:
        train(
            model,
            other_images,
            other_labels,
            TrainSettings(epochs=10, augment=AugmentSettings()),
            generator,
        )
    settings = MinMinSettings(
        eps=setting.eps / 255,
        step_size=setting.eps / 10 / 255,
        steps=setting.steps,
        min_rounds=setting.min_rounds,
        max_rounds=setting.max_rounds,
        form=setting.form,
        augment=augment,
    )
    result = ErrorMinimizingNoise(model, settings).generate(
        own, torch.zeros(len(own), dtype=torch.long), other_images, other_labels, generator
    )
    noise = result.per_image(torch.zeros(len(own), dtype=torch.long))
    rounds = [(r.round, round(r.protected_accuracy, 3)) for r in result.rounds]
    print(f"    min-min rounds {rounds}", flush=True)
    return [apply_noise(photo, n, setting.eps) for photo, n in zip(user, noise, strict=True)]


def protect_with_pipeline(
    user_paths: list[Path], surrogate: list[str], seed: int, config: ProtectConfig | None = None
) -> tuple[list[np.ndarray], dict]:
    """The real `unlearn protect` pipeline (default settings unless given), on temporary folders."""
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for name in surrogate:
            (work / "surrogate").mkdir(exist_ok=True)
            (work / "surrogate" / name).symlink_to(FACES / name)
        user = work / "user"
        user.mkdir()
        for path in user_paths:
            shutil.copy(path, user / path.name)
        input_set = collect_inputs([str(user)], work / "out", ClassLayout.AUTO)
        config = replace(config or ProtectConfig(), seed=seed)
        result = run_protect(input_set, config, surrogate=str(work / "surrogate"))
        rgbs = [
            load_photo(work / "out" / photo["output"]).rgb for photo in result.manifest["photos"]
        ]
        return rgbs, result.manifest


def attack_row(
    user_rgbs: list[np.ndarray], held_out: list[Photo], references: list[str], seed: int
) -> dict:
    images, labels = [], []
    for index, name in enumerate(references, start=1):
        paths = photos_of(name)[:PER_REFERENCE_CLASS]
        images.append(tensor_stack([load_photo(p) for p in paths], ATTACK_RESOLUTION))
        labels += [index] * len(paths)
    images.append(tensor_stack([Photo(rgb) for rgb in user_rgbs], ATTACK_RESOLUTION))
    labels += [0] * len(user_rgbs)
    train_images, train_labels = torch.cat(images), torch.tensor(labels)
    test_images = tensor_stack(held_out, ATTACK_RESOLUTION)
    test_labels = torch.zeros(len(test_images), dtype=torch.long)
    row = {}
    for architecture in ACTIVE_ATTACKERS:
        result = run_attack(
            train_images,
            train_labels,
            test_images,
            test_labels,
            AttackSettings(architecture=architecture),
            seed=seed,
        )
        row[architecture] = result.recognised[0]
    return row


def cached(key: str, compute) -> dict | None:
    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    if CACHED_ONLY:
        return None
    started = time.perf_counter()
    value = compute()
    value["seconds"] = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def evaluate(
    user: str, setting: Setting | None, seed: int, surrogate: list[str], references: list[str]
) -> dict:
    name = setting.name if setting else "clean"

    def compute() -> dict:
        protected_paths, held_out_paths = user_split(user)
        user_photos = [load_photo(p) for p in protected_paths]
        held_out = [load_photo(p) for p in held_out_paths]
        if setting is None:
            rgbs = [photo.rgb for photo in user_photos]
            return {"plain": attack_row(rgbs, held_out, references, seed)}
        started = time.perf_counter()
        if setting.name.startswith(("defaults", "faces")):
            config = ProtectConfig(faces=setting.faces)
            rgbs, manifest = protect_with_pipeline(protected_paths, surrogate, seed, config)
            how = {photo["protected_as"] for photo in manifest["photos"]}
            print(f"    protected as {sorted(how)}", flush=True)
            rounds = [
                (r["round"], r["protected_accuracy"]) for r in manifest["optimisation"]["rounds"]
            ]
            print(f"    pipeline rounds {rounds}", flush=True)
        else:
            rgbs = protect(setting, user_photos, surrogate, seed)
        protect_seconds = time.perf_counter() - started
        row = {
            "protect_seconds": round(protect_seconds, 1),
            "plain": attack_row(rgbs, held_out, references, seed),
        }
        if WITH_JPEG:
            row["jpeg75"] = attack_row([jpeg(rgb, 75) for rgb in rgbs], held_out, references, seed)
        return row

    suffix = "-jpeg" if WITH_JPEG and setting is not None else ""
    row = cached(f"{user}-{name}-{seed}-{'+'.join(ACTIVE_ATTACKERS)}{suffix}", compute)
    if row is not None:
        print(f"{user:18s} {name:18s} seed {seed}: {json.dumps(row)}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phases = ["tune", "tune-jpeg", "transfer", "report", "faces"]
    parser.add_argument("--phase", choices=phases, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jpeg", action="store_true", help="report: also attack after JPEG-75")
    parser.add_argument(
        "--seeds", default="0,1,2", help="report: comma-separated seeds (default 0,1,2)"
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="summarise the rows measured so far"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("UNLEARN_CACHE_DIR", str(ROOT / "results" / "cache" / "unlearn"))
    surrogate, attacker_pool = split_identities()
    print(f"surrogate identities: {surrogate}\nattacker identities: {attacker_pool}", flush=True)
    global ACTIVE_ATTACKERS, WITH_JPEG, CACHED_ONLY
    CACHED_ONLY = args.cached_only
    if args.phase == "tune":
        users, settings, seeds = TUNE_USERS, GRID, [0]
        ACTIVE_ATTACKERS, WITH_JPEG = ["vgg_small"], False
    elif args.phase == "transfer":  # the best candidates against a ResNet-18 attacker
        users, seeds = TUNE_USERS, [0]
        settings = [s for s in GRID if s.name in ("class32-aug", "sample32-aug")]
        ACTIVE_ATTACKERS, WITH_JPEG = ["resnet18_imagenet"], False
    elif args.phase == "tune-jpeg":  # the best candidates of the grid, also after JPEG-75
        users, seeds = TUNE_USERS, [0]
        settings = [s for s in GRID if s.name in ("class32-aug", "sample32-aug")]
        ACTIVE_ATTACKERS = ["vgg_small"]
    elif args.phase == "faces":  # face mode: every crop detected and aligned again
        users, seeds = REPORT_USERS, [0]
        defaults = ProtectConfig(faces=FaceMode.ON)
        name = f"faces-on-{cache_key(defaults.as_dict())[:8]}"
        settings = [
            Setting(
                name, defaults.mode, defaults.resolution, defaults.augment, False, faces=FaceMode.ON
            )
        ]
    else:
        users, seeds = REPORT_USERS, [int(seed) for seed in args.seeds.split(",")]
        WITH_JPEG = args.jpeg
        defaults = ProtectConfig()
        name = f"defaults-{cache_key(defaults.as_dict())[:8]}"  # rows follow the defaults
        settings = [Setting(name, defaults.mode, defaults.resolution, defaults.augment, False)]
    table = {}
    for seed in seeds:
        for user in users:
            if user not in attacker_pool:
                raise SystemExit(f"{user} must be one of the attacker identities")
            references = [n for n in attacker_pool if n != user]
            rows = {"clean": evaluate(user, None, seed, surrogate, references)}
            for setting in settings:
                rows[setting.name] = evaluate(user, setting, seed, surrogate, references)
            if all(row is not None for row in rows.values()):  # only complete user-seed pairs
                for name, row in rows.items():
                    table.setdefault(name, []).append({"user": user, "seed": seed, **row})
    print("\nsetting             attack    " + "  ".join(f"{a:>18s}" for a in ACTIVE_ATTACKERS))
    summary = {}
    for name, rows in table.items():
        for condition in ("plain", "jpeg75"):
            if condition not in rows[0]:
                continue
            medians = {
                a: statistics.median(r[condition][a] for r in rows) for a in ACTIVE_ATTACKERS
            }
            summary[f"{name}/{condition}"] = medians
            print(
                f"{name:18s}  {condition:8s}  "
                + "  ".join(f"{medians[a]:18.2f}" for a in ACTIVE_ATTACKERS)
            )
    suffix = "-jpeg" if args.phase == "report" and args.jpeg else ""
    out = ROOT / "results" / f"tune_defaults_{args.phase}{suffix}.json"
    measured = {
        "phase": args.phase,
        "users": users,
        "seeds": seeds,
        "attackers": ACTIVE_ATTACKERS,
        "protect_defaults": ProtectConfig().as_dict() if args.phase == "report" else None,
        "protect_settings": defaults.as_dict() if args.phase == "faces" else None,
        "summary": summary,
        "rows": table,
    }
    out.write_text(json.dumps(measured, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
