"""The engine on random tensors and a tiny model: budgets, shapes, loss, matching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_cli.engine import (
    AugmentSettings,
    ErrorMinimizingNoise,
    MinMinSettings,
    NoiseForm,
    class_centroids,
    create_model,
    match_classes,
    project,
    random_affine,
)
from unlearn_cli.engine.minmin import balanced_pool
from unlearn_cli.engine.models import MODELS
from unlearn_cli.engine.training import adversarial_examples
from unlearn_cli.io.images import Photo, apply_noise


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), eps_levels=st.integers(1, 32), gray=st.booleans())
def test_projection_keeps_noise_in_budget_and_pixels_in_range(
    seed: int, eps_levels: int, gray: bool
) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 3, 8, 8, generator=generator)
    noise = (torch.rand(4, 3, 8, 8, generator=generator) - 0.5) * 2
    if gray:  # equal on every channel, as gray noise steps are
        noise = noise[:, :1].expand_as(noise)
    eps = eps_levels / 255
    projected = project(noise, images, eps, gray)
    assert projected.abs().max() <= eps + 1e-7
    assert (images + projected).min() >= -1e-7 and (images + projected).max() <= 1 + 1e-7
    if gray:
        assert (projected == projected[:, :1]).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    eps=st.integers(1, 32),
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    resolution=st.sampled_from([4, 16, 32]),
    scale=st.floats(0.0, 3.0),
)
def test_noise_carried_to_full_size_stays_within_eps_levels(
    seed: int, eps: int, height: int, width: int, resolution: int, scale: float
) -> None:
    """Property: every pixel of the protected photo is within eps levels of the original,
    whatever the noise (even far outside the budget) and the photo's size."""
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    noise = torch.from_numpy(rng.normal(0, scale, size=(3, resolution, resolution))).float()
    protected = apply_noise(Photo(original), noise, eps)
    assert protected.shape == original.shape and protected.dtype == np.uint8
    assert np.abs(protected.astype(int) - original.astype(int)).max() <= eps


def test_extreme_pixels_are_clipped_not_wrapped() -> None:
    original = np.zeros((5, 5, 3), dtype=np.uint8)
    original[0] = 255
    protected = apply_noise(Photo(original), torch.full((3, 4, 4), 1.0), 8)
    assert protected[0].min() == 255 and protected[1:].max() == 8


def _separable(n_per_class: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(classes, 3, 1, 1, generator=generator)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = colours[labels] + 0.1 * torch.randn(len(labels), 3, 16, 16, generator=generator)
    return images.clamp(0, 1), labels


# a few rounds on the 16-px images of ``_separable``: enough for the noise to lower the loss
SMALL_RUN = MinMinSettings(
    step_size=2 / 255, steps=5, train_steps=3, max_rounds=3, min_rounds=3, batch_size=8
)


@pytest.mark.parametrize("form", list(NoiseForm))
def test_minmin_noise_shapes_budget_and_lower_loss(form: NoiseForm) -> None:
    own, _ = _separable(6, 1, seed=1)
    own_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    others, other_labels = _separable(6, 3, seed=2)
    other_labels = other_labels + 2
    model = create_model("resnet_small", 5, seed=0)
    settings_ = dataclasses.replace(SMALL_RUN, form=form)
    rounds = []
    result = ErrorMinimizingNoise(model, settings_).generate(
        own,
        own_labels,
        others,
        other_labels,
        torch.Generator().manual_seed(0),
        on_round=rounds.append,
    )
    expected = (2, 3, 16, 16) if form is NoiseForm.CLASS else (6, 3, 16, 16)
    assert tuple(result.noise.shape) == expected
    assert tuple(result.per_image(own_labels).shape) == (6, 3, 16, 16)
    assert result.noise.abs().max() <= 8 / 255 + 1e-6
    if form is NoiseForm.CLASS:  # one pattern shared by every image of a class
        per_image = result.per_image(own_labels)
        assert torch.equal(per_image[0], per_image[2]) and not torch.equal(
            per_image[0], per_image[3]
        )
    assert [r.round for r in rounds] == [1, 2, 3] and len(result.rounds) == 3
    # the noise is error-MINIMIZING: the surrogate's loss is lower on noisy than on clean images
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(own), own_labels)
        noisy = torch.nn.functional.cross_entropy(
            model((own + result.per_image(own_labels)).clamp(0, 1)), own_labels
        )
    assert noisy < clean


def test_rem_noise_lowers_the_loss_even_after_the_surrogates_worst_perturbation() -> None:
    """REM: the noise is a shortcut for a surrogate trained on perturbed data, that stays one when
    the image is perturbed against it; the same seed without REM gives other noise."""
    own, _ = _separable(6, 1, seed=1)
    own_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    others, other_labels = _separable(6, 3, seed=2)
    rem = dataclasses.replace(SMALL_RUN, adversarial_eps=4 / 255)
    noises, models = {}, {}
    for name, chosen in (("plain", SMALL_RUN), ("rem", rem)):
        models[name] = create_model("resnet_small", 5, seed=0)
        noises[name] = (
            ErrorMinimizingNoise(models[name], chosen)
            .generate(own, own_labels, others, other_labels + 2, torch.Generator().manual_seed(0))
            .noise
        )
    noise, model = noises["rem"], models["rem"].eval()
    assert noise.abs().max() <= 8 / 255 + 1e-6 and not torch.equal(noise, noises["plain"])
    generator = torch.Generator().manual_seed(1)
    losses = {}
    for name, images in (("clean", own), ("noisy", (own + noise).clamp(0, 1))):
        worst = adversarial_examples(model, images, own_labels, 4 / 255, 5, generator)
        with torch.no_grad():
            losses[name] = torch.nn.functional.cross_entropy(model(worst), own_labels)
    assert losses["noisy"] < losses["clean"]


def test_mixed_precision_runs_the_model_in_bf16_and_keeps_float32_noise_in_budget() -> None:
    """The GPU path, exercised with the CPU's bf16 autocast: every forward pass of the surrogate
    is bf16, the noise stays float32 within eps and still lowers the surrogate's loss."""
    own, _ = _separable(6, 1, seed=1)
    own_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    others, other_labels = _separable(6, 3, seed=2)
    model = create_model("resnet_small", 5, seed=0)
    output_dtypes = set()
    model.register_forward_hook(lambda _module, _inputs, output: output_dtypes.add(output.dtype))
    noise = (
        ErrorMinimizingNoise(model, dataclasses.replace(SMALL_RUN, mixed_precision=True))
        .generate(own, own_labels, others, other_labels + 2, torch.Generator().manual_seed(0))
        .noise
    )
    assert output_dtypes == {torch.bfloat16}
    assert noise.dtype == torch.float32 and noise.abs().max() <= 8 / 255 + 1e-6
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(own), own_labels)
        noisy = torch.nn.functional.cross_entropy(model((own + noise).clamp(0, 1)), own_labels)
    assert noisy < clean


def test_settings_for_a_gpu_take_larger_chunks_and_keep_their_precision() -> None:
    settings_ = MinMinSettings()
    assert settings_.for_device(torch.device("cpu")) is settings_
    on_gpu = settings_.for_device(torch.device("cuda"))
    assert on_gpu.chunk == 1024 and not on_gpu.mixed_precision
    assert dataclasses.replace(on_gpu, chunk=128) == settings_
    bf16 = dataclasses.replace(settings_, mixed_precision=True)
    assert bf16.for_device(torch.device("cuda")).mixed_precision


def test_stop_rule_waits_for_min_rounds() -> None:
    own, _ = _separable(4, 1, seed=3)
    others, other_labels = _separable(4, 2, seed=4)
    model = create_model("vgg_small", 3, seed=0)
    settings_ = MinMinSettings(
        steps=1, train_steps=1, max_rounds=5, min_rounds=2, stop_accuracy=0.01, batch_size=8
    )
    result = ErrorMinimizingNoise(model, settings_).generate(
        own,
        torch.zeros(4, dtype=torch.long),
        others,
        other_labels + 1,
        torch.Generator().manual_seed(0),
    )
    assert len(result.rounds) == 2 and result.converged


def test_balanced_pool_repeats_a_small_protected_class() -> None:
    pool = balanced_pool(torch.zeros(5, dtype=torch.long), torch.arange(3).repeat_interleave(20))
    assert (pool < 5).sum() == 20 and (pool >= 5).sum() == 60


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        MinMinSettings(eps=0)
    with pytest.raises(ValueError):
        MinMinSettings(min_rounds=5, max_rounds=2)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_classifies_and_embeds(name: str) -> None:
    model = create_model(name, 4, seed=0).eval()
    images = torch.rand(2, 3, 32, 32)
    assert model(images).shape == (2, 4)
    assert model.features(images).shape == (2, model.feature_dim)


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(KeyError, match="resnet_small"):
        create_model("resnet1000", 3)


def test_seeded_models_are_reproducible() -> None:
    first = create_model("vgg_small", 3, seed=7).state_dict()
    second = create_model("vgg_small", 3, seed=7).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_random_affine_is_differentiable_and_keeps_shape() -> None:
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    out = random_affine(images, torch.Generator().manual_seed(0), AugmentSettings())
    out.sum().backward()
    assert out.shape == images.shape and images.grad is not None


def test_matching_finds_the_nearest_classes_on_separable_features() -> None:
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=1)
    labels = torch.arange(6).repeat_interleave(10)
    features = directions[labels] + 0.05 * torch.randn(60, 16, generator=generator)
    surrogate = class_centroids(features, labels, 6)
    protected = class_centroids(directions[[4]] + 0.05 * directions[[1]], torch.tensor([0]), 1)
    match = match_classes(protected, surrogate, k=2, extra_random=1, generator=generator)
    assert match.nearest[0][0] == 4
    assert len(match.selected) == 3 and set(match.nearest[0]) <= set(match.selected)
    assert len(match.random_extra) == 1 and match.random_extra[0] not in match.nearest[0]
    everything = match_classes(protected, surrogate, k=10, extra_random=2, generator=generator)
    assert everything.selected == list(range(6)) and everything.random_extra == []


@pytest.mark.parametrize("form", [NoiseForm.SAMPLE, NoiseForm.CLASS])
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_noise(form: NoiseForm) -> None:
    own, own_labels = _separable(6, 2, seed=5)
    others, other_labels = _separable(8, 2, seed=6)
    other_labels = other_labels + 2
    settings_ = MinMinSettings(
        steps=2,
        train_steps=3,
        max_rounds=4,
        min_rounds=4,
        form=form,
        batch_size=5,
        augment=AugmentSettings(),
    )

    def run(max_rounds: int, resume=None) -> tuple:
        checkpoints = []
        model = create_model("vgg_small", 4, seed=0)
        result = ErrorMinimizingNoise(
            model, dataclasses.replace(settings_, max_rounds=max_rounds, min_rounds=max_rounds)
        ).generate(
            own,
            own_labels,
            others,
            other_labels,
            torch.Generator().manual_seed(0),
            on_checkpoint=checkpoints.append,
            resume=resume,
        )
        return result, checkpoints

    straight, _ = run(4)
    _, checkpoints = run(2)
    assert [len(c.rounds) for c in checkpoints] == [1, 2]
    resumed, _ = run(4, resume=checkpoints[-1])
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]
    assert torch.equal(resumed.noise, straight.noise)


def test_gray_noise_is_the_same_on_every_channel_and_still_lowers_the_loss() -> None:
    """Gray noise changes brightness only, even next to 0 and 1: grayscale keeps all of it."""
    own, own_labels = _separable(6, 2, seed=5)
    others, other_labels = _separable(8, 2, seed=6)
    model = create_model("resnet_small", 4, seed=0)
    result = ErrorMinimizingNoise(model, dataclasses.replace(SMALL_RUN, gray=True)).generate(
        own, own_labels, others, other_labels + 2, torch.Generator().manual_seed(0)
    )
    noise = result.noise
    assert noise.abs().amax() > 0
    assert torch.equal(noise[:, 0], noise[:, 1]) and torch.equal(noise[:, 1], noise[:, 2])
    assert noise.abs().amax() <= SMALL_RUN.eps + 1e-6
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(own), own_labels)
        noisy = torch.nn.functional.cross_entropy(model(own + noise), own_labels)
    assert noisy < clean


def _class_alignment(noise: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine of each image's noise with its class's mean noise."""
    flat = noise.flatten(1)
    means = torch.stack([flat[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    return float(torch.nn.functional.cosine_similarity(flat, means[labels]).mean())


def test_consensus_pulls_a_class_noise_towards_one_direction() -> None:
    """consensus 1: every image of a class takes its class's step (away from the pixel bounds,
    one noise per class); 0.5 lies between that and the independent steps of consensus 0."""
    own, own_labels = _separable(6, 2, seed=7)
    own = 0.1 + 0.8 * own  # no pixel near 0 or 1: the projection clips nothing
    others, other_labels = _separable(8, 2, seed=8)
    alignment = {}
    for weight in (0.0, 0.5, 1.0):
        model = create_model("resnet_small", 4, seed=0)
        settings_ = dataclasses.replace(SMALL_RUN, consensus=weight)
        noise = (
            ErrorMinimizingNoise(model, settings_)
            .generate(own, own_labels, others, other_labels + 2, torch.Generator().manual_seed(0))
            .noise
        )
        assert noise.abs().amax() <= SMALL_RUN.eps + 1e-6
        alignment[weight] = _class_alignment(noise, own_labels)
        if weight == 1.0:
            for label in (0, 1):
                same = noise[own_labels == label]
                assert torch.allclose(same, same[:1].expand_as(same))
    assert alignment[0.0] < alignment[0.5] < alignment[1.0]
    with pytest.raises(ValueError, match="consensus"):
        MinMinSettings(consensus=1.5)
