"""Face models behind a small interface. facenet-pytorch is imported lazily.

The pretrained InceptionResnetV1 (VGGFace2) weights are downloaded by facenet-pytorch at run
time; we only use them when they are already in the cache (``$TORCH_HOME/checkpoints``) unless
the user asks for them explicitly, so that an offline run never tries the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

FACENET_WEIGHTS = "20180402-114759-vggface2.pt"
FACENET_INPUT = 160


def facenet_weights_path() -> Path:
    """Where facenet-pytorch keeps its VGGFace2 weights (its own TORCH_HOME rule)."""
    torch_home = os.getenv(
        "TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    )
    return Path(torch_home).expanduser() / "checkpoints" / FACENET_WEIGHTS


def facenet_available() -> bool:
    return facenet_weights_path().is_file()


class FaceEmbedder:
    """512-d identity embeddings from facenet-pytorch's pretrained InceptionResnetV1."""

    source = "facenet-pytorch InceptionResnetV1 (VGGFace2)"

    def __init__(self, device: torch.device) -> None:
        from facenet_pytorch import InceptionResnetV1

        self.device = device
        self.model = InceptionResnetV1(pretrained="vggface2").eval().to(device)

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Embed uint8 or [0, 1] NCHW images of any size."""
        outputs = []
        for chunk in images.split(batch_size):
            chunk = chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()
            chunk = F.interpolate(
                chunk.to(self.device),
                size=(FACENET_INPUT, FACENET_INPUT),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            outputs.append(self.model((chunk * 255 - 127.5) / 128).cpu())
        return torch.cat(outputs)
