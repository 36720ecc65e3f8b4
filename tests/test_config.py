"""What the protect settings turn into for the engine."""

from __future__ import annotations

import pytest
import torch

from unlearn_cli.config import ProtectConfig
from unlearn_cli.engine import AugmentSettings, DegradeSettings, random_affine
from unlearn_cli.errors import SetupError


def test_robust_adds_the_upload_degradations_to_the_attackers_transforms() -> None:
    assert ProtectConfig(robust=True).minmin_settings().augment == AugmentSettings(
        degrade=DegradeSettings()
    )
    assert ProtectConfig(robust=False).minmin_settings().augment == AugmentSettings()
    assert ProtectConfig(augment=False, robust=False).minmin_settings().augment is None


def test_robust_without_augment_degrades_through_an_identity_affine_transform() -> None:
    augment = ProtectConfig(augment=False, robust=True).minmin_settings().augment
    assert augment is not None and augment.degrade == DegradeSettings()
    images = torch.rand(3, 3, 17, 12)
    moved = random_affine(images, torch.Generator().manual_seed(0), augment)
    torch.testing.assert_close(moved, images, atol=1e-5, rtol=0)


def test_the_degradations_are_part_of_the_settings_identity_only_with_robust() -> None:
    """Changing how strongly --robust degrades must not reuse noise cached under the old key."""
    stronger = DegradeSettings(jpeg_probability=0.9, jpeg_quality=(30, 90))
    assert ProtectConfig(degrade=stronger).output_key != ProtectConfig().output_key
    assert ProtectConfig(degrade=stronger).minmin_settings().augment.degrade == stronger
    assert ProtectConfig(robust=False, degrade=stronger).output_key == (
        ProtectConfig(robust=False).output_key
    )
    assert ProtectConfig().as_dict()["degrade"]["jpeg_quality"] == [50, 95]
    assert ProtectConfig(robust=False).as_dict()["degrade"] is None


def test_rem_is_in_the_settings_identity_only_when_on() -> None:
    """Outputs written before REM existed keep their key; REM noise is never taken for plain."""
    assert "rem_radius" not in ProtectConfig().as_dict()
    rem = ProtectConfig(rem_radius=4)
    assert rem.output_key != ProtectConfig().output_key
    assert rem.as_dict()["rem_radius"] == 4 and rem.as_dict()["rem_steps"] == 2
    assert rem.minmin_settings().adversarial_eps == 4 / 255
    assert ProtectConfig().minmin_settings().adversarial_eps == 0


def test_gray_noise_is_in_the_settings_identity_only_when_on() -> None:
    assert "gray" not in ProtectConfig().as_dict()
    assert ProtectConfig(gray=True).output_key != ProtectConfig().output_key
    assert ProtectConfig(gray=True).minmin_settings().gray


def test_rem_radius_must_stay_within_the_budget() -> None:
    with pytest.raises(SetupError, match="--rem must be between 0 and eps"):
        ProtectConfig(eps=8, rem_radius=9)


def test_consensus_is_on_by_default_and_off_keeps_the_key_of_the_earlier_default() -> None:
    """consensus 0 is the default before consensus existed: its outputs keep their key, while
    the default's noise is never taken for theirs."""
    assert ProtectConfig().as_dict()["consensus"] == 0.5
    assert ProtectConfig().minmin_settings().consensus == 0.5
    off = ProtectConfig(consensus=0.0)
    assert "consensus" not in off.as_dict()
    assert off.output_key != ProtectConfig().output_key
    assert off.minmin_settings().consensus == 0


def test_consensus_must_be_a_weight() -> None:
    with pytest.raises(SetupError, match="--consensus must be between 0 and 1"):
        ProtectConfig(consensus=1.5)
