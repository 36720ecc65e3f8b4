"""The optimisation engine: tensors in, tensors out. It imports nothing but torch (and
torchvision for model definitions) and never touches files, printing or the CLI."""

from .augment import AugmentSettings, random_affine, random_augment
from .degrade import DegradeSettings, differentiable_jpeg, random_degrade
from .matching import ClassMatch, class_centroids, match_classes
from .minmin import (
    ErrorMinimizingNoise,
    MinMinResult,
    MinMinSettings,
    NoiseForm,
    RoundReport,
    project,
)
from .models import MODELS, Classifier, create_model
from .training import TrainSettings, accuracy, embed, predict, train

__all__ = [
    "MODELS",
    "AugmentSettings",
    "ClassMatch",
    "Classifier",
    "DegradeSettings",
    "ErrorMinimizingNoise",
    "MinMinResult",
    "MinMinSettings",
    "NoiseForm",
    "RoundReport",
    "TrainSettings",
    "accuracy",
    "class_centroids",
    "create_model",
    "differentiable_jpeg",
    "embed",
    "match_classes",
    "predict",
    "project",
    "random_affine",
    "random_augment",
    "random_degrade",
    "train",
]
