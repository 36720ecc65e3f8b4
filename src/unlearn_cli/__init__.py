"""unlearn: protect personal photos from being learned by deep-learning models.

Library use::

    from unlearn_cli import ClassLayout, ProtectConfig, collect_inputs, protect

    photos = collect_inputs(["./photos"], out=None, layout=ClassLayout.AUTO)
    result = protect(photos, ProtectConfig(eps=8), surrogate="../shared/data/faces")
    print(result.manifest["totals"])

Names are imported lazily, so that ``unlearn --help`` starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ClassLayout": "config",
    "Embedder": "config",
    "ProtectConfig": "config",
    "NoiseForm": "engine.minmin",
    "UnlearnError": "errors",
    "SetupError": "errors",
    "NoImagesError": "errors",
    "SurrogateUnavailableError": "errors",
    "ImageError": "errors",
    "InputSet": "inputs",
    "collect_inputs": "inputs",
    "ProtectResult": "pipeline",
    "protect": "pipeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearn_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
