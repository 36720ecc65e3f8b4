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
    python benchmarks/tune_defaults.py --phase robust     # standard vs --robust under
                                                          # countermeasures and an adaptive attacker
    python benchmarks/tune_defaults.py --phase survival   # how much noise each countermeasure
                                                          # leaves (no training: seconds)
    python benchmarks/tune_defaults.py --phase strangers  # whom the attacker labels as the
                                                          # user: its photos, and strangers'

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unlearn_cli.config import ClassLayout, ProtectConfig
from unlearn_cli.engine import (
    AugmentSettings,
    DegradeSettings,
    ErrorMinimizingNoise,
    MinMinSettings,
    NoiseForm,
    TrainSettings,
    create_model,
    train,
)
from unlearn_cli.engine.attack import (
    AttackSettings,
    probe_recognition,
    run_attack,
    train_feature_extractor,
)
from unlearn_cli.engine.models import Classifier
from unlearn_cli.engine.training import embed, predict
from unlearn_cli.faces.recognition import DlibRecognizer
from unlearn_cli.faces.regions import FaceMode
from unlearn_cli.io.images import Photo, apply_noise, load_photo, resize_for_model
from unlearn_cli.io.inputs import collect_inputs
from unlearn_cli.pipeline.run import protect as run_protect
from unlearn_cli.report.budget import measure_budget
from unlearn_cli.runtime.cache import cache_key
from unlearn_cli.runtime.devices import compute_signature, resolve_device
from unlearn_cli.verify.adaptive import DLIB_RESOLUTION
from unlearn_cli.verify.countermeasures import Countermeasure, attack_settings_for, sanitise
from unlearn_cli.verify.visuals import amplified_noise

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
        # the benchmark's --threads: two lanes side by side must not both take every core
        config = replace(config or ProtectConfig(), seed=seed, threads=torch.get_num_threads())
        result = run_protect(input_set, config, surrogate=str(work / "surrogate"))
        rgbs = [
            load_photo(work / "out" / photo["output"]).rgb for photo in result.manifest["photos"]
        ]
        return rgbs, result.manifest


def scraped_set(
    user_rgbs: list[np.ndarray],
    references: list[str],
    countermeasure: Countermeasure = Countermeasure.plain,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the attacker trains on: the reference identities (labels 1..) and the user's photos
    (label 0), after a photo-level countermeasure, at the attacker's resolution."""
    images, labels = [], []
    for index, name in enumerate(references, start=1):
        paths = photos_of(name)[:PER_REFERENCE_CLASS]
        rgbs = [sanitise(load_photo(p).rgb, countermeasure) for p in paths]
        images.append(tensor_stack([Photo(rgb) for rgb in rgbs], ATTACK_RESOLUTION))
        labels += [index] * len(paths)
    own = [Photo(sanitise(rgb, countermeasure)) for rgb in user_rgbs]
    images.append(tensor_stack(own, ATTACK_RESOLUTION))
    labels += [0] * len(own)
    return torch.cat(images), torch.tensor(labels)


def attack_row(
    user_rgbs: list[np.ndarray], held_out: list[Photo], references: list[str], seed: int
) -> dict:
    train_images, train_labels = scraped_set(user_rgbs, references)
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


EXTRACTOR_EPOCHS = 15  # the adaptive attacker's face model; CPU-sized
ROBUST_CONDITIONS = [  # the goal's attacks first, the costly adversarial training last
    "plain",
    "jpeg75",
    "downscale2x",
    "grayscale",
    "adaptive",
    "recognition",
    "jpeg90",
    "jpeg50",
    "strong-augment",
    "adversarial-training",
]


def robust_datasets() -> dict[str, ProtectConfig | None]:
    """What the attacker scrapes: clean photos, or photos protected with or without --robust,
    or with a candidate strength of its degradations. Names carry the settings' key, so a change
    of defaults measures again."""
    configs = {
        "standard": ProtectConfig(robust=False),
        "robust": ProtectConfig(robust=True),
        "gray30": ProtectConfig(degrade=replace(DegradeSettings(), grayscale_probability=0.3)),
        "res64": ProtectConfig(resolution=64),
        "eps12": ProtectConfig(eps=12),
        "eps16": ProtectConfig(eps=16),
        "rem4": ProtectConfig(rem_radius=4),
        "res16": ProtectConfig(resolution=16),
        "class": ProtectConfig(mode=NoiseForm.CLASS),
        "rounds40": ProtectConfig(rounds=40, min_rounds=40),
        "gray": ProtectConfig(gray=True),
        "gray16": ProtectConfig(eps=16, gray=True),
        "cons0": ProtectConfig(consensus=0.0),  # the default before consensus 0.5
        "rerun": ProtectConfig(),  # the default protected again, beside a candidate's run
    }
    return {"clean": None} | {
        f"{name}-{config.output_key[:8]}": config for name, config in configs.items()
    }


def chosen_datasets(short_names: list[str]) -> dict[str, ProtectConfig | None]:
    """The datasets of ``robust_datasets`` asked for by their short names (``eps16``, not
    ``eps16-<key>``)."""
    return {n: c for n, c in robust_datasets().items() if n.split("-")[0] in short_names}


def protected_rgbs(
    user: str, name: str, config: ProtectConfig, seed: int, surrogate: list[str]
) -> tuple[list[np.ndarray], float]:
    """The user's photos through the real pipeline, kept as an .npz for every condition."""
    path = CACHE / "protected" / f"{user}-{name}-{seed}.npz"
    if not path.exists():
        protected_paths, _ = user_split(user)
        started = time.perf_counter()
        rgbs, manifest = protect_with_pipeline(protected_paths, surrogate, seed, config)
        seconds = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            rgbs=np.stack(rgbs),
            seconds=np.array(seconds),
            compute=np.array(manifest["compute"]),  # device, instruction set, threads, as recorded
        )
    with np.load(path) as data:
        refuse_other_compute(path, str(data["compute"]) if "compute" in data else "not recorded")
        return list(data["rgbs"]), float(data["seconds"])


def refuse_other_compute(path: Path, recorded: str) -> None:
    """Stop on a cached protection made on other compute (another kind of CPU, another thread
    count, a GPU): the photos would be another draw than a protection run now, and a candidate
    must be compared with the default's draw made on the same compute."""
    now = compute_signature(resolve_device("auto"))
    if recorded != now:
        raise SystemExit(
            f"{path}: protected on {recorded!r}, this run computes on {now!r}; "
            "delete the file to protect again, or run with the --threads it was made with"
        )


def scraped_user_photos(
    user: str, dataset: tuple[str, ProtectConfig | None], seed: int, surrogate: list[str]
) -> tuple[list[np.ndarray], float | None]:
    """The user's 60 photos as the attacker scrapes them: clean (no protect time), or protected
    with the dataset's config (cached) and the seconds protecting took."""
    name, config = dataset
    if config is None:
        return [load_photo(p).rgb for p in user_split(user)[0]], None
    return protected_rgbs(user, name, config, seed, surrogate)


def countermeasure_row(
    user_rgbs: list[np.ndarray],
    held_out: list[Photo],
    references: list[str],
    seed: int,
    countermeasure: Countermeasure,
    architecture: str,
) -> float:
    """An attacker trained from scratch on everything it scraped, after the countermeasure;
    tested on the user's clean held-out photos, as new photos would be."""
    images, labels = scraped_set(user_rgbs, references, countermeasure)
    test_images = tensor_stack(held_out, ATTACK_RESOLUTION)
    result = run_attack(
        images,
        labels,
        test_images,
        torch.zeros(len(test_images), dtype=torch.long),
        attack_settings_for(countermeasure, AttackSettings(architecture=architecture)),
        seed=seed,
    )
    return result.recognised[0]


def feature_extractor(user: str, seed: int) -> Classifier:
    """The adaptive attacker's face model: trained on every identity but the user's (a proxy
    for a pretrained face recogniser), cached per user and seed."""
    names = [n for n in sorted(p.name for p in FACES.iterdir() if p.is_dir()) if n != user]
    path = CACHE / "extractors" / f"{user}-{seed}-{len(names)}-{EXTRACTOR_EPOCHS}.pt"
    settings = AttackSettings(architecture="resnet18_imagenet", epochs=EXTRACTOR_EPOCHS)
    if path.exists():
        model = create_model(settings.architecture, len(names), seed=seed)
        model.load_state_dict(torch.load(path))
        return model
    images, labels = [], []
    for index, name in enumerate(names):
        paths = photos_of(name)[:PER_REFERENCE_CLASS]
        images.append(tensor_stack([load_photo(p) for p in paths], ATTACK_RESOLUTION))
        labels += [index] * len(paths)
    model = train_feature_extractor(torch.cat(images), torch.tensor(labels), settings, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def adaptive_row(
    user_rgbs: list[np.ndarray],
    held_out: list[Photo],
    references: list[str],
    extractor: Classifier,
) -> dict:
    """Enrol the scraped photos in the extractor's embedding space; match new clean photos."""
    images, labels = scraped_set(user_rgbs, references)
    test_images = tensor_stack(held_out, ATTACK_RESOLUTION)
    rates = probe_recognition(
        lambda batch: embed(extractor, batch),
        images,
        labels,
        test_images,
        torch.zeros(len(test_images), dtype=torch.long),
    )
    return {method: by_class[0] for method, by_class in rates.items()}


@cache
def dlib_recognizer() -> DlibRecognizer:
    return DlibRecognizer()


@cache
def dlib_reference_embeddings(name: str) -> torch.Tensor:
    """A reference identity's clean photos in dlib's embedding, once per process."""
    paths = photos_of(name)[:PER_REFERENCE_CLASS]
    return dlib_recognizer().embed(tensor_stack([load_photo(p) for p in paths], DLIB_RESOLUTION))


def recognition_row(
    user_rgbs: list[np.ndarray], held_out: list[Photo], references: list[str]
) -> dict:
    """dlib's pretrained recogniser (never a generator of noise) enrols the scraped photos
    beside the references' clean ones and matches the user's new clean photos."""
    recogniser = dlib_recognizer()
    own = recogniser.embed(tensor_stack([Photo(rgb) for rgb in user_rgbs], DLIB_RESOLUTION))
    gallery = torch.cat([own, *(dlib_reference_embeddings(name) for name in references)])
    labels = torch.cat(
        [torch.zeros(len(own), dtype=torch.long)]
        + [
            torch.full((len(dlib_reference_embeddings(name)),), index)
            for index, name in enumerate(references, start=1)
        ]
    )
    test = recogniser.embed(tensor_stack(held_out, DLIB_RESOLUTION))
    test_labels = torch.zeros(len(test), dtype=torch.long)
    rates = probe_recognition(lambda embeddings: embeddings, gallery, labels, test, test_labels)
    return {f"dlib-{method}": by_class[0] for method, by_class in rates.items()}


def robust_row(
    user: str,
    dataset: tuple[str, ProtectConfig | None],
    seed: int,
    condition: str,
    attacker: str,
    surrogate: list[str],
    references: list[str],
) -> dict:
    """One attacker on one user's scraped photos: clean, or protected with the dataset's config."""
    held_out = [load_photo(p) for p in user_split(user)[1]]
    rgbs, protect_seconds = scraped_user_photos(user, dataset, seed, surrogate)
    row: dict = {} if protect_seconds is None else {"protect_seconds": protect_seconds}
    if condition == "adaptive":
        return row | adaptive_row(rgbs, held_out, references, feature_extractor(user, seed))
    if condition == "recognition":
        return row | recognition_row(rgbs, held_out, references)
    countermeasure = Countermeasure(condition)
    return row | {
        attacker: countermeasure_row(rgbs, held_out, references, seed, countermeasure, attacker)
    }


def robust_phase(
    users: list[str],
    seeds: list[int],
    conditions: list[str],
    datasets: list[str],
    surrogate: list[str],
    pool: list[str],
    results: str = "robust",
) -> None:
    """Standard vs --robust protection under countermeasures and the adaptive attacker. Every
    (user, dataset, seed, attack, attacker) is one cached row, so runs can be split and resumed;
    the summary covers every row measured so far."""
    configs = chosen_datasets(datasets)
    entries: dict[tuple[str, str, str, int], dict] = {}
    for seed in seeds:
        for condition in conditions:
            for user in users:
                for name, config in configs.items():
                    attackers = {"adaptive": ["probe"], "recognition": ["dlib"]}.get(
                        condition
                    ) or ACTIVE_ATTACKERS
                    for attacker in attackers:
                        compute = partial(
                            robust_row,
                            user=user,
                            dataset=(name, config),
                            seed=seed,
                            condition=condition,
                            attacker=attacker,
                            surrogate=surrogate,
                            references=[n for n in pool if n != user],
                        )
                        row = cached(f"robust-{user}-{name}-{seed}-{condition}-{attacker}", compute)
                        if row is None:
                            continue
                        print(f"{user:17s} {name:17s} {seed} {condition:20s} {row}", flush=True)
                        entry = entries.setdefault(
                            (condition, name, user, seed), {"user": user, "seed": seed}
                        )
                        entry.update({k: v for k, v in row.items() if k != "seconds"})
    table: dict[str, dict[str, list[dict]]] = {}
    for (condition, name, _, _), entry in entries.items():
        table.setdefault(condition, {}).setdefault(name, []).append(entry)
    summary: dict[str, dict[str, dict]] = {}
    for condition, by_dataset in table.items():
        for name, rows in by_dataset.items():
            attackers = sorted({k for r in rows for k in r} - {"user", "seed", "protect_seconds"})
            summary.setdefault(condition, {})[name] = {
                a: {
                    "median": round(statistics.median(r[a] for r in rows if a in r), 4),
                    "users": [r["user"] for r in rows if a in r],
                }
                for a in attackers
            }
    measured = {
        "phase": "robust",
        "users": users,
        "seeds": seeds,
        "adaptive_extractor": f"resnet18_imagenet, {EXTRACTOR_EPOCHS} epochs, on every "
        "identity but the user",
        "datasets": {n: c.as_dict() if c else None for n, c in configs.items()},
        "summary": summary,
        "rows": table,
    }
    out = ROOT / "results" / f"tune_defaults_{results}.json"
    out.write_text(json.dumps(measured, indent=2))
    out.with_suffix(".md").write_text(robust_markdown(measured))
    print(robust_markdown(measured))
    print(f"wrote {out}")


SURVIVAL_ATTACKS = [
    Countermeasure.jpeg90,
    Countermeasure.jpeg75,
    Countermeasure.jpeg50,
    Countermeasure.downscale2x,
    Countermeasure.grayscale,
]


@cache
def protected_originals(user: str) -> tuple[np.ndarray, ...]:
    """The user's photos before protection, in manifest order (by name), decoded once per
    process for every dataset measured on them."""
    protected_paths, _ = user_split(user)
    return tuple(load_photo(p).rgb for p in sorted(protected_paths, key=lambda p: p.name))


def seen(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Photos as the attacker trains on them."""
    return tensor_stack([Photo(rgb) for rgb in images], ATTACK_RESOLUTION).float()


@cache
def originals_seen(
    user: str, countermeasure: Countermeasure = Countermeasure.plain
) -> torch.Tensor:
    """The user's original photos after ``countermeasure`` (plain: as they are), as the
    attacker sees them; the same for every dataset, so computed once."""
    return seen([sanitise(rgb, countermeasure) for rgb in protected_originals(user)])


def noise_survival(user: str, name: str, config: ProtectConfig, seed: int, surrogate: list[str]):
    """How much of the noise an attacker still sees after each photo-level countermeasure, in
    seconds and without training: the projection of (protected - original) after it onto the
    same difference before it, both at the attacker's resolution, over all of the user's
    protected photos (1: all kept, 0: all removed). Also the noise's RMS in levels, and how
    visible it is: the median PSNR and SSIM of the photos at full size, as `protect` reports."""
    rgbs, _ = protected_rgbs(user, name, config, seed, surrogate)
    originals = protected_originals(user)
    for original, protected in zip(originals, rgbs, strict=True):
        assert np.abs(protected.astype(int) - original).max() <= config.eps, "photos misaligned"
    noise = seen(rgbs) - originals_seen(user)
    budgets = [measure_budget(o, p) for o, p in zip(originals, rgbs, strict=True)]
    row = {
        "rms_levels": round(float(noise.pow(2).mean().sqrt()), 2),
        "psnr_db": round(statistics.median(b.psnr for b in budgets), 2),
        "ssim": round(statistics.median(b.ssim for b in budgets), 4),
    }
    for countermeasure in SURVIVAL_ATTACKS:
        after = seen([sanitise(rgb, countermeasure) for rgb in rgbs]) - originals_seen(
            user, countermeasure
        )
        row[str(countermeasure)] = round(float((noise * after).sum() / noise.pow(2).sum()), 3)
    return row


SHEET_PHOTOS = 4


def survival_sheet(
    user: str, seed: int, configs: dict[str, ProtectConfig], surrogate: list[str], out: Path
) -> None:
    """A contact sheet of the user's first photos: the original, then each dataset's protected
    photo and its noise amplified to fill the colour range, side by side at full size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    originals = protected_originals(user)[:SHEET_PHOTOS]
    protected = {n: protected_rgbs(user, n, c, seed, surrogate)[0] for n, c in configs.items()}
    columns = 1 + 2 * len(configs)
    figure, axes = plt.subplots(
        len(originals), columns, figsize=(2.2 * columns, 2.4 * len(originals)), squeeze=False
    )
    for index, (row, original) in enumerate(zip(axes, originals, strict=True)):
        panels = [(original, "original")]
        for name, config in configs.items():
            rgb = protected[name][index]
            short = name.split("-")[0]
            panels += [
                (rgb, f"{short}, eps {config.eps}"),
                (
                    amplified_noise(original, rgb, config.eps),
                    f"{short} noise x{127.5 / config.eps:.0f}",
                ),
            ]
        for axis, (image, title) in zip(row, panels, strict=True):
            axis.imshow(image)
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    figure.suptitle(f"{user}, seed {seed}", fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def survival_phase(
    users: list[str],
    seeds: list[int],
    datasets: list[str],
    surrogate: list[str],
    results: str = "robust",
) -> None:
    """The noise kept by each countermeasure, per protected dataset (cached .npz reused), and
    a contact sheet of the first user and seed. ``results`` other than the default writes
    results/tune_defaults_survival-<results>.* instead of the main file."""
    configs = {n: c for n, c in chosen_datasets(datasets).items() if c is not None}
    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        for user in users:
            for name, config in configs.items():
                if CACHED_ONLY and not (CACHE / "protected" / f"{user}-{name}-{seed}.npz").exists():
                    continue
                row = noise_survival(user, name, config, seed, surrogate)
                print(f"{user:17s} {name:17s} {seed} {row}", flush=True)
                rows.setdefault(name, []).append({"user": user, "seed": seed, **row})
    columns = ["rms_levels", "psnr_db", "ssim", *map(str, SURVIVAL_ATTACKS)]
    summary = {
        name: {c: statistics.median(r[c] for r in measured) for c in columns}
        for name, measured in rows.items()
    }
    lines = [
        "# How much of the noise survives each countermeasure",
        "",
        "- command: `python benchmarks/tune_defaults.py --phase survival` (benchmarks/README.md)",
        f"- users {users}, seeds {seeds}; median over them of: the noise's RMS in levels at the "
        f"attacker's {ATTACK_RESOLUTION} px; the PSNR (dB) and SSIM of the protected photos at "
        "full size; and the share of the noise kept after each countermeasure "
        "(projection of the difference after onto the difference before; 1 = all kept)",
        "",
        "| dataset | user-seed pairs | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for name, medians in summary.items():
        cells = " | ".join(
            f"{medians[c]:.3g}" if c == "ssim" else f"{medians[c]:.2f}" for c in columns
        )
        lines.append(f"| {name} | {len(rows[name])} | {cells} |")
    stem = "tune_defaults_survival" + ("" if results == "robust" else f"-{results}")
    out = ROOT / "results" / f"{stem}.json"
    out.write_text(json.dumps({"users": users, "seeds": seeds, "summary": summary, "rows": rows}))
    # the sheet shows the data's own photos, which stay out of the repository: under the cache
    sheet = CACHE / "sheets" / f"{stem}.png"
    measured = {n: c for n, c in configs.items() if n in rows}
    if measured:
        sheet.parent.mkdir(parents=True, exist_ok=True)
        survival_sheet(users[0], seeds[0], measured, surrogate, sheet)
        lines += [
            "",
            f"Contact sheet (local only, it shows the data's photos): "
            f"`{sheet.relative_to(ROOT)}` ({users[0]}, seed {seeds[0]}).",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


STRANGER_PHOTOS = 40  # per identity the attacker never saw


def strangers_row(
    user: str,
    dataset: tuple[str, ProtectConfig | None],
    seed: int,
    surrogate: list[str],
    references: list[str],
) -> dict:
    """Who the attacker calls the user: the plain attack's model (same data, seed and recipe;
    its share of the user's photos differs from the plain row's only by the attacker's spread),
    asked about the user's held-out clean photos
    and about photos of people it never saw (the surrogate half). A user class that takes in
    strangers too is found by elimination (say, the only other man), not recognised as a person."""
    rgbs, _ = scraped_user_photos(user, dataset, seed, surrogate)
    images, labels = scraped_set(rgbs, references)
    settings = AttackSettings(architecture="resnet18_imagenet")
    model = create_model(settings.architecture, len(references) + 1, seed=seed)
    train(model, images, labels, settings.train_settings(), torch.Generator().manual_seed(seed))

    def called_user(paths: list[Path]) -> float:
        stack = tensor_stack([load_photo(p) for p in paths], ATTACK_RESOLUTION)
        return float((predict(model, stack) == 0).float().mean())

    return {"held_out": called_user(user_split(user)[1])} | {
        stranger: called_user(photos_of(stranger)[:STRANGER_PHOTOS]) for stranger in surrogate
    }


def strangers_phase(
    users: list[str], seeds: list[int], datasets: list[str], surrogate: list[str], pool: list[str]
) -> None:
    """Per user, dataset and seed: the share of the user's held-out photos and of each
    stranger's photos that the ResNet-18 attacker labels as the user."""
    configs = chosen_datasets(datasets)
    rows = []
    for seed in seeds:
        for user in users:
            for name, config in configs.items():
                compute = partial(
                    strangers_row,
                    user=user,
                    dataset=(name, config),
                    seed=seed,
                    surrogate=surrogate,
                    references=[n for n in pool if n != user],
                )
                row = cached(f"strangers-{user}-{name}-{seed}", compute)
                if row is None:
                    continue
                print(f"{user:17s} {name:17s} {seed} {row}", flush=True)
                rows.append({"user": user, "dataset": name, "seed": seed, **row})
    lines = [
        "# Who the attacker calls the user",
        "",
        "- command: `python benchmarks/tune_defaults.py --phase strangers` (benchmarks/README.md)",
        "- the plain attack (ResNet-18 from scratch on the user's scraped photos and 5 other "
        "people's) asked about the user's 40 held-out clean photos and about "
        f"{STRANGER_PHOTOS} photos each of people it never saw; share labelled as the user",
        "",
        "| user | dataset | seed | user's photos | " + " | ".join(surrogate) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in surrogate) + " |",
    ]
    for row in rows:
        shares = " | ".join(f"{row[name]:.1%}" for name in ["held_out", *surrogate])
        lines.append(f"| {row['user']} | {row['dataset']} | {row['seed']} | {shares} |")
    out = ROOT / "results" / "tune_defaults_strangers.json"
    out.write_text(json.dumps({"users": users, "seeds": seeds, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def robust_markdown(measured: dict) -> str:
    """Median share of the users' clean held-out photos recognised, per attack and dataset."""
    names = list(measured["datasets"])
    lines = [
        "# Protection under countermeasures and an adaptive attacker",
        "",
        "- command: `python benchmarks/tune_defaults.py --phase robust` (see benchmarks/README.md)",
        f"- seeds {measured['seeds']}; adaptive extractor: {measured['adaptive_extractor']}",
        "- figure: median over the users measured (named) of the share of each user's 40 clean "
        "held-out photos recognised (one photo is 2.5 points)",
        "",
        "| attack | attacker | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for condition, by_dataset in measured["summary"].items():
        attackers = sorted({a for cells in by_dataset.values() for a in cells})
        for attacker in attackers:
            cells = []
            for name in names:
                cell = by_dataset.get(name, {}).get(attacker)
                users = ", ".join(u.split("_")[0] for u in cell["users"]) if cell else ""
                cells.append(f"{cell['median']:.1%} ({users})" if cell else "")
            lines.append(f"| {condition} | {attacker} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phases = ["tune", "tune-jpeg", "transfer", "report", "faces", "robust", "survival", "strangers"]
    parser.add_argument("--phase", choices=phases, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jpeg", action="store_true", help="report: also attack after JPEG-75")
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="report, robust, survival: comma-separated seeds (default 0,1,2)",
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="summarise the rows measured so far"
    )
    parser.add_argument(
        "--conditions",
        default=",".join(ROBUST_CONDITIONS),
        help="robust: comma-separated attacks, in order (default: all)",
    )
    parser.add_argument(
        "--users",
        default=",".join(REPORT_USERS),
        help="robust, survival: comma-separated report users",
    )
    parser.add_argument(
        "--attackers", default=",".join(ATTACKERS), help="robust: comma-separated architectures"
    )
    parser.add_argument(
        "--datasets",
        default="clean,standard,robust",
        help="robust, strangers, survival: what the attacker scrapes "
        f"({', '.join(name.split('-')[0] for name in robust_datasets())})",
    )
    parser.add_argument(
        "--results",
        default="robust",
        help="robust: the results' name, results/tune_defaults_<NAME>.{json,md} (default "
        "robust); survival: results/tune_defaults_survival-<NAME>.{json,md,png} unless robust",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("UNLEARN_CACHE_DIR", str(ROOT / "results" / "cache" / "unlearn"))
    surrogate, attacker_pool = split_identities()
    print(f"surrogate identities: {surrogate}\nattacker identities: {attacker_pool}", flush=True)
    global ACTIVE_ATTACKERS, WITH_JPEG, CACHED_ONLY
    CACHED_ONLY = args.cached_only
    if args.phase == "robust":
        seeds = [int(seed) for seed in args.seeds.split(",")]
        conditions = args.conditions.split(",")
        unknown = set(conditions) - set(ROBUST_CONDITIONS)
        if unknown:
            raise SystemExit(f"unknown conditions {sorted(unknown)}; known: {ROBUST_CONDITIONS}")
        ACTIVE_ATTACKERS = args.attackers.split(",")
        datasets = args.datasets.split(",")
        robust_phase(
            args.users.split(","),
            seeds,
            conditions,
            datasets,
            surrogate,
            attacker_pool,
            args.results,
        )
        return
    if args.phase == "strangers":
        seeds = [int(seed) for seed in args.seeds.split(",")]
        strangers_phase(
            args.users.split(","), seeds, args.datasets.split(","), surrogate, attacker_pool
        )
        return
    if args.phase == "survival":
        seeds = [int(seed) for seed in args.seeds.split(",")]
        datasets = [d for d in args.datasets.split(",") if d != "clean"]
        survival_phase(args.users.split(","), seeds, datasets, surrogate, args.results)
        return
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
    if args.phase == "report" and seeds != [0, 1, 2]:  # a partial run keeps its own file
        suffix += "-seeds" + "-".join(map(str, seeds))
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
