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
import os
from typing import Any

# OpenMP threads that spin while they wait made two threads 33 times slower than one on a busy
# 2-core machine; waiting passively keeps the default thread count (every core, so that the
# noise does not depend on the load; see ``threads``) safe there. Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
    "FaceMode": "faces.regions",
    "MetadataPolicy": "io.metadata",
    "InputSet": "io.inputs",
    "collect_inputs": "io.inputs",
    "ProtectResult": "pipeline.run",
    "protect": "pipeline.run",
    "protect_people": "pipeline.fanout",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearn_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
