"""Run settings, validated once. Budgets are in 8-bit pixel levels, as users think of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from unlearn_cli.engine.augment import AugmentSettings
from unlearn_cli.engine.degrade import DegradeSettings
from unlearn_cli.engine.minmin import MinMinSettings, NoiseForm
from unlearn_cli.engine.models import MODELS
from unlearn_cli.errors import SetupError
from unlearn_cli.faces.regions import FaceMode
from unlearn_cli.io.images import DEFAULT_MAX_PIXELS
from unlearn_cli.io.metadata import MetadataPolicy
from unlearn_cli.runtime.cache import cache_key
from unlearn_cli.runtime.devices import device_problem


class ClassLayout(StrEnum):
    """auto: a folder of images is one class, a folder of subfolders one class per subfolder.
    one: every input photo belongs to a single class."""

    AUTO = "auto"
    ONE = "one"


class Embedder(StrEnum):
    """Which model embeds images for class matching."""

    AUTO = "auto"  # the pretrained face model when its weights are cached, else the surrogate
    FACE = "face"  # facenet-pytorch InceptionResnetV1 (VGGFace2); downloads its weights
    SURROGATE = "surrogate"  # the surrogate model's own features after a warm-up


@dataclass(frozen=True)
class ProtectConfig:
    """Everything that decides the written files. Defaults were chosen by measurement (see
    docs/measurements.md)."""

    eps: int = 8
    mode: NoiseForm = NoiseForm.SAMPLE
    resolution: int = 32
    rounds: int = 20
    min_rounds: int = 20
    steps: int = 20
    step_size: float | None = None  # levels; default eps / 10
    train_steps: int = 10
    stop_accuracy: float = 0.99
    augment: bool = True
    robust: bool = True  # also through JPEG, downscaling, colour jitter and grayscale
    degrade: DegradeSettings = DegradeSettings()  # how strongly, with --robust (library only)
    rem_radius: int = 0  # levels; > 0: REM, against a surrogate perturbed within this radius
    rem_steps: int = 2  # PGD steps of that perturbation (library only)
    gray: bool = False  # the same noise on red, green and blue, which grayscale keeps
    consensus: float = 0.5  # pull of a class's mean gradient on each noise step (0: none)
    surrogate_model: str = "resnet_small"
    warmup_epochs: int = 10
    match_k: int = 10
    match_random: int = 2
    max_per_class: int = 100
    embedder: Embedder = Embedder.AUTO
    classes: ClassLayout = ClassLayout.AUTO
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: every usable core (see runtime.threads)
    faces: FaceMode = FaceMode.AUTO
    require_faces: bool = False
    main_face_only: bool = False
    min_face_size: int = 40
    face_confidence: float = 0.95
    metadata: MetadataPolicy = MetadataPolicy.LOCATION
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.eps <= 255:
            problems.append(f"--eps must be between 1 and 255 levels, got {self.eps}")
        if not 8 <= self.resolution <= 512:
            problems.append(f"--resolution must be between 8 and 512, got {self.resolution}")
        if self.rounds < 1 or not 1 <= self.min_rounds:
            problems.append("--rounds and --min-rounds must be at least 1")
        if self.steps < 1:
            problems.append(f"--steps must be at least 1, got {self.steps}")
        if self.step_size is not None and not 0 < self.step_size <= self.eps:
            problems.append(f"--step-size must be in (0, eps], got {self.step_size}")
        if not 0 <= self.rem_radius <= self.eps or self.rem_steps < 1:
            problems.append(f"--rem must be between 0 and eps ({self.eps}), got {self.rem_radius}")
        if not 0 < self.stop_accuracy <= 1:
            problems.append(f"--stop-accuracy must be in (0, 1], got {self.stop_accuracy}")
        if self.surrogate_model not in MODELS:
            problems.append(
                f"unknown surrogate model {self.surrogate_model!r}; "
                f"choose one of: {', '.join(MODELS)}"
            )
        if self.match_k < 1 or self.match_random < 0 or self.max_per_class < 1:
            problems.append("--match-k and --max-per-class must be >= 1, --match-random >= 0")
        if problem := device_problem(self.device):
            problems.append(problem)
        if self.faces is FaceMode.OFF and (self.require_faces or self.main_face_only):
            problems.append("--require-faces and --main-face-only need face detection (--faces)")
        if self.min_face_size < 1 or not 0 < self.face_confidence < 1:
            problems.append("--min-face-size must be >= 1 and --face-confidence in (0, 1)")
        if not 0 <= self.consensus <= 1:
            problems.append(f"--consensus must be between 0 and 1, got {self.consensus}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be at least 1, got {self.threads}")
        if self.max_pixels < 1:
            problems.append(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if problems:
            raise SetupError("; ".join(problems))

    @property
    def effective_min_rounds(self) -> int:
        return min(self.min_rounds, self.rounds)

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 10

    @property
    def output_key(self) -> str:
        """Identity of the settings that shape a written file (the device and threads do not):
        a photo protected under the same key need not be protected again."""
        values = self.as_dict()
        del values["device"], values["threads"]
        return cache_key(values)

    def minmin_settings(self) -> MinMinSettings:
        """The engine's settings (in [0, 1] pixel units) for these levels-based ones."""
        return MinMinSettings(
            eps=self.eps / 255,
            step_size=self.effective_step_size / 255,
            steps=self.steps,
            train_steps=self.train_steps,
            max_rounds=self.rounds,
            min_rounds=self.effective_min_rounds,
            stop_accuracy=self.stop_accuracy,
            form=self.mode,
            augment=self.augment_settings(),
            adversarial_eps=self.rem_radius / 255,
            adversarial_steps=self.rem_steps,
            gray=self.gray,
            consensus=self.consensus,
        )

    def augment_settings(self) -> AugmentSettings | None:
        """The transformations the noise is optimised through: an attacker's crops and flips
        (``augment``), and what an upload and a scraper do to a photo (``robust``)."""
        degrade = self.degrade if self.robust else None
        if self.augment:
            return AugmentSettings(degrade=degrade)
        if degrade is not None:  # the degradations alone: an identity affine transform
            return AugmentSettings(
                max_shift=0, min_scale=1, max_scale=1, flip=False, degrade=degrade
            )
        return None

    def as_dict(self) -> dict:
        """JSON-ready; the degradations only where they shape the noise (``robust``), REM's
        settings, ``gray`` and ``consensus`` only when they are on, so that outputs written
        without them keep their key."""
        values = asdict(self)
        if not self.rem_radius:
            del values["rem_radius"], values["rem_steps"]
        if not self.gray:
            del values["gray"]
        if not self.consensus:
            del values["consensus"]
        values["step_size"] = self.effective_step_size
        values["min_rounds"] = self.effective_min_rounds
        degrade = {**values["degrade"], "jpeg_quality": list(self.degrade.jpeg_quality)}
        values["degrade"] = degrade if self.robust else None
        return {
            key: str(value) if isinstance(value, StrEnum) else value
            for key, value in values.items()
        }
