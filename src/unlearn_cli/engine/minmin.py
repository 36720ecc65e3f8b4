"""The bi-level min-min optimisation of error-minimizing noise (Huang et al., ICLR 2021).

    min_theta  E_(x,y) [ min_{|delta|_inf <= eps}  L(f_theta(x + delta), y) ]

Each round trains the surrogate ``train_steps`` batches on the current noisy data, then runs
``steps`` steps of projected gradient *descent* on the noise of every protected image (warm-started
from the previous round), then measures the surrogate's accuracy on the protected images. The loop
stops once that accuracy reaches ``stop_accuracy`` after at least ``min_rounds`` rounds, or after
``max_rounds``. Only protected images carry noise; the other classes stay clean.

With ``adversarial_eps`` > 0 the loop is REM's min-min-max (Fu et al., ICLR 2022): the surrogate
is trained on PGD examples of the noisy data, and every noise step lowers the loss of the noisy
image after a worst-case perturbation within ``adversarial_eps``. The noise must then stay an
easy shortcut for a model that resists small perturbations, as adversarial training makes one.

With ``gray`` every noise step is the same on red, green and blue (the sign of the gradient
summed over them) and the projection keeps every channel within [0, 1] by one bound, so the
noise is a change of brightness alone: converting the photo to grayscale keeps it, where it
removes most of colour noise.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentSettings, random_augment
from .training import (
    TrainSettings,
    adversarial_examples,
    as_float,
    autocast,
    make_optimizer,
    shuffled_batches,
    train_step,
)

GPU_CHUNK = 1024  # images per noise step on a GPU: 5.5x faster than 128 on an H200


class NoiseForm(StrEnum):
    """Sample-wise: one noise per image. Class-wise: one noise shared by a whole class."""

    SAMPLE = "sample"
    CLASS = "class"


@dataclass(frozen=True)
class MinMinSettings:
    """Settings with the paper's names; ``eps`` and ``step_size`` are in [0, 1] pixel units."""

    eps: float = 8 / 255
    step_size: float = 0.8 / 255
    steps: int = 20
    train_steps: int = 10
    max_rounds: int = 20
    min_rounds: int = 3
    stop_accuracy: float = 0.99
    form: NoiseForm = NoiseForm.SAMPLE
    batch_size: int = 64
    lr: float = 0.1
    augment: AugmentSettings | None = None
    adversarial_eps: float = 0.0  # REM's radius of the surrogate's perturbation; 0: plain min-min
    adversarial_steps: int = 2
    gray: bool = False  # one step for red, green and blue alike: noise that grayscale keeps
    consensus: float = 0.0  # weight of the class's mean gradient in every sample's noise step
    chunk: int = 128  # images per forward/backward pass of the noise steps
    channels_last: bool = True  # NHWC convolutions: measured faster on CPU (benchmarks/speed.py)
    mixed_precision: bool = False  # bf16 forward passes (``training.autocast``); see for_device

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {self.eps}")
        if self.step_size <= 0 or self.steps < 1 or self.train_steps < 0:
            raise ValueError("step_size must be > 0, steps >= 1 and train_steps >= 0")
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ValueError("need 1 <= min_rounds <= max_rounds")
        if self.adversarial_eps < 0 or self.adversarial_steps < 1:
            raise ValueError("adversarial_eps must be >= 0 and adversarial_steps >= 1")
        if not 0 <= self.consensus <= 1:
            raise ValueError(f"consensus must be in [0, 1], got {self.consensus}")

    def for_device(self, device: torch.device) -> MinMinSettings:
        """How to run these settings fast on ``device``: on a GPU, noise steps over 1,024 images
        at once (a CPU is fastest at 128). Mixed precision is left as it is: on an H200, bf16
        made a round of the default 32-px surrogate no faster than float32, whose convolutions
        already run on tensor cores (benchmarks/speed.py --part gpu)."""
        if device.type != "cuda":
            return self
        return replace(self, chunk=max(self.chunk, GPU_CHUNK))


@dataclass(frozen=True)
class RoundReport:
    """What one round achieved: the surrogate's loss and accuracy on the protected images."""

    round: int
    train_loss: float
    protected_loss: float
    protected_accuracy: float
    seconds: float


@dataclass
class MinMinResult:
    """The optimised noise: per image (sample-wise) or per protected class (class-wise)."""

    noise: torch.Tensor
    form: NoiseForm
    rounds: list[RoundReport] = field(default_factory=list)
    converged: bool = False

    def per_image(self, labels: torch.Tensor) -> torch.Tensor:
        """Noise of every protected image, whatever the form."""
        return self.noise[labels] if self.form is NoiseForm.CLASS else self.noise

    def of(self, index: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Noise of the protected images at ``index`` (``labels`` are all images' labels)."""
        return self.noise[labels[index]] if self.form is NoiseForm.CLASS else self.noise[index]


def project(
    noise: torch.Tensor, images: torch.Tensor, eps: float, gray: bool = False
) -> torch.Tensor:
    """Clamp ``noise`` to the eps-ball and so that ``images + noise`` stays inside [0, 1]; with
    ``gray``, by one bound for all channels, so that noise equal on every channel stays equal."""
    noise = noise.clamp(-eps, eps)
    if gray:
        return noise.clamp((-images).amax(1, keepdim=True), (1 - images).amin(1, keepdim=True))
    return (images + noise).clamp(0, 1) - images


def balanced_pool(protected_labels: torch.Tensor, other_labels: torch.Tensor) -> torch.Tensor:
    """Indices (protected first, then others) in which protected photos are repeated so that a
    protected class is drawn about as often as an average other class: a person with 20 photos
    among surrogate classes of 100 must still be fitted by the surrogate."""
    protected_per_class = len(protected_labels) / max(1, len(protected_labels.unique()))
    other_per_class = len(other_labels) / max(1, len(other_labels.unique()))
    repeat = max(1, round(other_per_class / max(protected_per_class, 1)))
    protected = torch.arange(len(protected_labels)).repeat(repeat)
    others = torch.arange(len(other_labels)) + len(protected_labels)
    return torch.cat([protected, others])


@dataclass
class MinMinCheckpoint:
    """Everything the loop needs to go on after a round exactly as if it had not stopped."""

    noise: torch.Tensor
    rounds: list[RoundReport]
    converged: bool
    model: dict
    optimizer: dict
    batches: dict
    generator: torch.Tensor


class ErrorMinimizingNoise:
    """Runs the min-min loop for one surrogate model; knows nothing but tensors."""

    def __init__(self, model: nn.Module, settings: MinMinSettings) -> None:
        """``model`` is trained in place (and switched to channels-last memory if asked)."""
        self.model = (
            model.to(memory_format=torch.channels_last) if settings.channels_last else model
        )
        self.settings = settings
        self.device = next(model.parameters()).device

    def __repr__(self) -> str:
        return f"ErrorMinimizingNoise({self.settings})"

    def generate(
        self,
        protected_images: torch.Tensor,
        protected_labels: torch.Tensor,
        other_images: torch.Tensor,
        other_labels: torch.Tensor,
        generator: torch.Generator,
        on_round: Callable[[RoundReport], None] | None = None,
        on_checkpoint: Callable[[MinMinCheckpoint], None] | None = None,
        resume: MinMinCheckpoint | None = None,
    ) -> MinMinResult:
        """Optimise the noise of ``protected_images``; the other images train the surrogate clean.

        Labels index one shared class space. Images are NCHW in [0, 1] (float) or uint8.
        ``on_checkpoint`` receives the loop's state after every round; passing one back as
        ``resume`` (same inputs, settings and a fresh model) continues from that round.
        """
        s = self.settings
        protected = as_float(protected_images).to(self.device)
        protected_labels = protected_labels.to(self.device)
        others = as_float(other_images).to(self.device)
        other_labels = other_labels.to(self.device)
        noise_shape = (
            (int(protected_labels.max()) + 1, *protected.shape[1:])
            if s.form is NoiseForm.CLASS
            else protected.shape
        )
        noise = torch.zeros(noise_shape, device=self.device)
        result = MinMinResult(noise=noise, form=s.form)
        optimizer = make_optimizer(self.model, TrainSettings(lr=s.lr))
        pool = balanced_pool(protected_labels.cpu(), other_labels.cpu())
        positions = shuffled_batches(len(pool), s.batch_size, generator)
        if resume is not None:
            result = MinMinResult(resume.noise.to(self.device), s.form, list(resume.rounds))
            result.converged = resume.converged
            self.model.load_state_dict(resume.model)
            optimizer.load_state_dict(resume.optimizer)
            positions.load_state_dict(resume.batches)
            generator.set_state(resume.generator)
        batches = (pool[position] for position in positions)
        first = len(result.rounds) + 1 if not result.converged else s.max_rounds + 1
        for round_index in range(first, s.max_rounds + 1):
            started = time.perf_counter()
            train_loss = self._train(
                optimizer,
                batches,
                protected,
                protected_labels,
                others,
                other_labels,
                result,
                generator,
            )
            self._descend(protected, protected_labels, result, generator)
            loss, accuracy = self._measure(protected, protected_labels, result)
            report = RoundReport(
                round_index, train_loss, loss, accuracy, time.perf_counter() - started
            )
            result.rounds.append(report)
            result.converged = round_index >= s.min_rounds and accuracy >= s.stop_accuracy
            if on_checkpoint is not None:
                on_checkpoint(
                    MinMinCheckpoint(
                        noise=result.noise.detach().cpu().clone(),
                        rounds=list(result.rounds),
                        converged=result.converged,
                        model={
                            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                        },
                        optimizer=copy.deepcopy(optimizer.state_dict()),
                        batches=positions.state_dict(),
                        generator=generator.get_state(),
                    )
                )
            if on_round is not None:
                on_round(report)
            if result.converged:
                break
        return result

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.settings.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _train(
        self,
        optimizer: torch.optim.Optimizer,
        batches: Iterator[torch.Tensor],
        protected: torch.Tensor,
        protected_labels: torch.Tensor,
        others: torch.Tensor,
        other_labels: torch.Tensor,
        result: MinMinResult,
        generator: torch.Generator,
    ) -> float:
        """M surrogate steps on mixed batches: noisy protected images plus clean others."""
        losses = []
        count = len(protected)
        for _ in range(self.settings.train_steps):
            index = next(batches).to(self.device)
            is_protected = index < count
            own = index[is_protected]
            rest = index[~is_protected] - count
            images = torch.cat(
                [
                    (protected[own] + result.of(own, protected_labels)).clamp(0, 1),
                    others[rest],
                ]
            )
            labels = torch.cat([protected_labels[own], other_labels[rest]])
            losses.append(
                train_step(
                    self.model,
                    optimizer,
                    images,
                    labels,
                    generator,
                    self.settings.augment,
                    channels_last=self.settings.channels_last,
                    adversarial_eps=self.settings.adversarial_eps,
                    adversarial_steps=self.settings.adversarial_steps,
                    mixed_precision=self.settings.mixed_precision,
                )
            )
        return sum(losses) / len(losses) if losses else float("nan")

    def _descend(
        self,
        protected: torch.Tensor,
        labels: torch.Tensor,
        result: MinMinResult,
        generator: torch.Generator,
    ) -> None:
        """``steps`` signed-gradient steps that lower the loss, projected to the eps-ball (with
        REM, the loss after the surrogate's worst perturbation of each augmented noisy image)."""
        s = self.settings
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        try:
            for _ in range(s.steps):
                updates = []
                for index in torch.arange(len(protected), device=self.device).split(s.chunk):
                    images = protected[index]
                    targets = labels[index]
                    noise = result.of(index, labels).clone().requires_grad_()
                    inputs = (images + noise).clamp(0, 1)
                    if s.augment is not None:
                        inputs = random_augment(inputs, generator, s.augment)
                    if s.adversarial_eps > 0:
                        worst = adversarial_examples(
                            self.model,
                            inputs.detach(),
                            targets,
                            s.adversarial_eps,
                            s.adversarial_steps,
                            generator,
                            s.mixed_precision,
                        )
                        inputs = inputs + (worst - inputs.detach())
                    with autocast(self.device, s.mixed_precision):
                        logits = self.model(self._layout(inputs))
                    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
                    (gradient,) = torch.autograd.grad(loss, noise)
                    if s.gray:
                        gradient = gradient.sum(1, keepdim=True).expand_as(gradient)
                    updates.append(gradient)
                step = -s.step_size * self._with_consensus(torch.cat(updates), labels).sign()
                if s.form is NoiseForm.CLASS:
                    sums = torch.zeros_like(result.noise).index_add_(0, labels, step)
                    counts = torch.bincount(labels, minlength=len(result.noise)).clamp(min=1)
                    result.noise = (result.noise + sums / counts.view(-1, 1, 1, 1)).clamp(
                        -s.eps, s.eps
                    )
                else:
                    result.noise = project(result.noise + step, protected, s.eps, s.gray)
        finally:
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)

    def _with_consensus(self, gradient: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each image's gradient pulled towards its class's mean gradient by ``consensus``, so
        that a class's noise shares one direction: a shortcut that a linear read-out, and so
        any architecture, can pick up (the class separability of Ren et al., ICLR 2023).
        Gradients are scaled to a mean magnitude of 1 first, so that no image dominates."""
        weight = self.settings.consensus
        if weight == 0 or self.settings.form is NoiseForm.CLASS:
            return gradient
        unit = gradient / gradient.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
        classes = int(labels.max()) + 1
        sums = torch.zeros(classes, *unit.shape[1:], device=unit.device).index_add_(0, labels, unit)
        counts = torch.bincount(labels, minlength=classes).clamp(min=1).view(-1, 1, 1, 1)
        return (1 - weight) * unit + weight * (sums / counts)[labels]

    @torch.no_grad()
    def _measure(
        self, protected: torch.Tensor, labels: torch.Tensor, result: MinMinResult
    ) -> tuple[float, float]:
        """The surrogate's loss and accuracy on the noisy protected images (no augmentation)."""
        self.model.eval()
        noisy = (protected + result.per_image(labels)).clamp(0, 1)
        with autocast(self.device, self.settings.mixed_precision):
            logits = torch.cat(
                [self.model(self._layout(chunk)) for chunk in noisy.split(self.settings.chunk)]
            ).float()
        loss = float(F.cross_entropy(logits, labels))
        return loss, float((logits.argmax(1) == labels).float().mean())
