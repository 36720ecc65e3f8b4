"""The manifest of a run, rewritten atomically while photos are written."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import torch

from unlearn_cli import __version__
from unlearn_cli.config import ProtectConfig
from unlearn_cli.engine import (
    MinMinResult,
)
from unlearn_cli.io.inputs import InputSet
from unlearn_cli.pipeline.events import ProtectResult
from unlearn_cli.report.budget import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    totals,
    write_json_atomic,
)
from unlearn_cli.surrogates import Surrogate

MANIFEST_INTERVAL = 2.0  # seconds between manifest updates while photos are written


class ManifestWriter:
    """The run's manifest, rewritten atomically as photos complete (at most every
    MANIFEST_INTERVAL seconds, and at the end), so a crash never loses the record of what is
    written."""

    def __init__(
        self,
        input_set: InputSet,
        config: ProtectConfig,
        run_key: str,
        device: torch.device,
        compute: str,
        started: float,
        photos: list[dict],
        failures: list[dict],
    ) -> None:
        import torchvision

        self.path = input_set.output_root / MANIFEST_NAME
        self.started = started
        self.photos = photos
        self.failures = failures
        self.saved_at = 0.0
        self.content: dict = {
            "schema_version": SCHEMA_VERSION,
            "tool": {
                "name": "unlearn",
                "version": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "interrupted": False,
            "run_key": run_key,
            "compute": compute,
            "settings": config.as_dict(),
            "input_root": str(input_set.root),
            "classes": input_set.class_names,
            "surrogate": None,
            "optimisation": {"device": str(device)},
        }

    def carry_over(self, previous: dict) -> None:
        """Keep an earlier run's account of the surrogate and optimisation (same settings)."""
        self.content["surrogate"] = previous.get("surrogate")
        self.content["optimisation"] = {
            key: value
            for key, value in previous.get("optimisation", {}).items()
            if key != "seconds"
        }

    def describe_surrogate(
        self, surrogate: Surrogate, matching: dict, protected: list[str]
    ) -> None:
        self.content["surrogate"] = {
            "source": surrogate.source,
            "root": str(surrogate.root),
            "kind": surrogate.kind,
            "classes_available": len(surrogate.classes),
            "excluded": [{"class": name, "reason": reason} for name, reason in surrogate.excluded],
            "protected_classes_matched": protected,
            **{key: value for key, value in matching.items() if key != "selected_indices"},
        }

    def describe_optimisation(self, config: ProtectConfig, result: MinMinResult) -> None:
        self.content["optimisation"].update(
            {
                "surrogate_model": config.surrogate_model,
                "converged": result.converged,
                "rounds": [
                    {
                        "round": r.round,
                        "train_loss": round(r.train_loss, 5),
                        "protected_loss": round(r.protected_loss, 5),
                        "protected_accuracy": round(r.protected_accuracy, 4),
                        "seconds": round(r.seconds, 3),
                    }
                    for r in result.rounds
                ],
            }
        )

    def add(self, entry: dict) -> None:
        self.photos.append(entry)
        if time.perf_counter() - self.saved_at >= MANIFEST_INTERVAL:
            self.save()

    def save(
        self, interrupted: bool = False, final: bool = False, best_effort: bool = False
    ) -> ProtectResult:
        manifest = {
            **self.content,
            "interrupted": interrupted,
            "complete": final,
            "optimisation": {
                **self.content["optimisation"],
                "seconds": round(time.perf_counter() - self.started, 2),
            },
            "photos": self.photos,
            "failures": self.failures,
            "totals": totals(self.photos, self.failures),
        }
        try:
            write_json_atomic(self.path, manifest)
        except OSError:
            if not best_effort:
                raise
        self.saved_at = time.perf_counter()
        return ProtectResult(manifest=manifest, manifest_path=self.path, failures=self.failures)
