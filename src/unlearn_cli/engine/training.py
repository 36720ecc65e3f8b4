"""Training and evaluation steps shared by the min-min loop, warm-ups and attackers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentSettings, random_augment


@dataclass(frozen=True)
class TrainSettings:
    """Plain SGD as in the paper (lr 0.1, momentum 0.9, weight decay 5e-4), cosine-annealed."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: AugmentSettings | None = AugmentSettings()
    mixup_alpha: float = 0.0
    adversarial_eps: float = 0.0
    adversarial_steps: int = 3
    mixed_precision: bool = False  # bf16 forward passes; see ``autocast``


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast of a model's forward pass when ``enabled`` (on GPUs: tensor cores, half
    the memory traffic). bf16 keeps float32's range, so no loss scaling is needed; inputs, noise
    and gradients with respect to them stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )


class BatchStream(Iterator[torch.Tensor]):
    """Endless stream of index batches, reshuffled every epoch; the last short batch is kept.
    Its position is saved with a checkpoint so that a resumed run draws the same batches."""

    def __init__(self, count: int, batch_size: int, generator: torch.Generator) -> None:
        self.count = count
        self.batch_size = batch_size
        self.generator = generator
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def __next__(self) -> torch.Tensor:
        if self.position >= len(self.order):
            self.order = torch.randperm(self.count, generator=self.generator)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order = state["order"].clone()
        self.position = state["position"]


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator) -> BatchStream:
    return BatchStream(count, batch_size, generator)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    augment: AugmentSettings | None,
    channels_last: bool = False,
    mixup_alpha: float = 0.0,
    adversarial_eps: float = 0.0,
    adversarial_steps: int = 3,
    mixed_precision: bool = False,
) -> float:
    """One SGD step on one batch; returns the batch loss. ``mixup_alpha`` > 0 trains on mixed
    pairs of images, ``adversarial_eps`` > 0 on PGD examples: two known ways past the noise.
    Augmentation runs in float32 whatever ``mixed_precision`` says: only the model is autocast."""
    model.train()
    if augment is not None:
        images = random_augment(images, generator, augment)
    if adversarial_eps > 0:
        images = adversarial_examples(
            model, images, labels, adversarial_eps, adversarial_steps, generator, mixed_precision
        )
    partner_labels, mix = labels, 1.0
    if mixup_alpha > 0:
        images, partner_labels, mix = mixup(images, labels, mixup_alpha, generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(images.device, mixed_precision):
        outputs = model(images)
    outputs = outputs.float()
    loss = F.cross_entropy(outputs, labels)
    if mixup_alpha > 0:
        loss = mix * loss + (1 - mix) * F.cross_entropy(outputs, partner_labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``generator``: torch's Beta sampler takes no
    generator, so it runs on a forked global RNG seeded by one draw of ours."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(torch.distributions.Beta(alpha, alpha).sample())


def mixup(
    images: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018): each image blended with another of the batch by a weight
    drawn from Beta(alpha, alpha). Returns the mixed images, the partners' labels and the weight
    of the images' own labels; the loss is mixed with the same weight."""
    mix = sample_beta(alpha, generator)
    partners = torch.randperm(len(images), generator=generator).to(images.device)
    return mix * images + (1 - mix) * images[partners], labels[partners], mix


def adversarial_examples(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator,
    mixed_precision: bool = False,
) -> torch.Tensor:
    """L-inf PGD that maximises the loss (Madry et al., 2018): random start in the eps-ball,
    ``steps`` sign steps of 2.5 * eps / steps, each projected back to the ball and [0, 1].
    The model is in eval mode while crafting, so batch-norm statistics see no attack."""
    was_training = model.training
    model.eval()
    step_size = 2.5 * eps / steps
    start = (torch.rand(images.shape, generator=generator) * 2 - 1) * eps
    adversarial = (images + start.to(images.device, images.dtype)).clamp(0, 1)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with autocast(images.device, mixed_precision):
            logits = model(adversarial)
        loss = F.cross_entropy(logits.float(), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step_size * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, images - eps), images + eps).clamp(0, 1)
    model.train(was_training)
    return adversarial.detach()


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` for ``settings.epochs`` epochs; returns the mean loss of each epoch.

    ``images`` may live on the CPU (uint8 or float); batches are moved to the model's device.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, settings)
    steps_per_epoch = max(1, -(-len(images) // settings.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=settings.epochs * steps_per_epoch
    )
    batches = shuffled_batches(len(images), settings.batch_size, generator)
    losses = []
    for epoch in range(settings.epochs):
        total = 0.0
        for _ in range(steps_per_epoch):
            index = next(batches)
            batch = as_float(images[index]).to(device)
            total += train_step(
                model,
                optimizer,
                batch,
                labels[index].to(device),
                generator,
                settings.augment,
                mixup_alpha=settings.mixup_alpha,
                adversarial_eps=settings.adversarial_eps,
                adversarial_steps=settings.adversarial_steps,
                mixed_precision=settings.mixed_precision,
            )
            schedule.step()
        losses.append(total / steps_per_epoch)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] become float in [0, 1]; float images pass through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted class of every image (eval mode, batched)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [
        model(as_float(chunk).to(device)).argmax(1).cpu() for chunk in images.split(batch_size)
    ]
    return torch.cat(outputs) if outputs else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    if len(images) == 0:
        return float("nan")
    return float((predict(model, images) == labels.cpu()).float().mean())


@torch.inference_mode()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate features of every image, for class matching."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.features(as_float(chunk).to(device)).float().cpu()
            for chunk in images.split(batch_size)
        ]
    )
