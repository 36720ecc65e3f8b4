"""Surrogate datasets: local class folders and named downloads (LFW, CIFAR-10)."""

from unlearn_cli.surrogates.folders import (
    Surrogate,
    SurrogateClass,
    load_surrogate,
    surrogate_images,
)
from unlearn_cli.surrogates.named import (
    DEFAULT_SURROGATE,
    NAMED_SURROGATES,
    NamedSurrogate,
    ensure_downloaded,
    resolve_surrogate,
    surrogate_choice,
)

__all__ = [
    "DEFAULT_SURROGATE",
    "NAMED_SURROGATES",
    "NamedSurrogate",
    "Surrogate",
    "SurrogateClass",
    "ensure_downloaded",
    "load_surrogate",
    "resolve_surrogate",
    "surrogate_choice",
    "surrogate_images",
]
