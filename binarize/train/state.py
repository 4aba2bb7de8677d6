"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A training checkpoint is a dict of plain data readable with ``torch.load(weights_only=True)``:
``model`` (a `binarize.checkpoint.model_record`, so ``binarize.load_checkpoint`` loads the
model from it too), ``optimizer``, ``scheduler``, ``teacher`` (state dict or None), ``rng``
(torch, CUDA, Python, NumPy states), ``position`` (epoch, batch within it, global step),
``totals`` (the running sums of the current epoch), ``best``, ``config`` and the SHA-256 of all
of it (checked on load). Files are written atomically (temporary file, then rename), so a
killed run leaves the previous file intact.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from binarize.checkpoint import FORMAT, atomic_save, model_record, verify_checkpoint
from binarize.errors import ModelSourceError, first_line

KIND = "binarize.training"


@dataclass
class Position:
    """Where a run is: ``batch`` batches of ``epoch`` done, ``step`` optimizer steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seeds torch, Python and NumPy: call it before building anything random (a model's
    initial weights included) so that the same seed gives the same run."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores the states `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_training_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    teacher: nn.Module | None,
    config: Mapping[str, Any],
    position: Position,
    totals: list[float],
    best: float | None,
) -> Path:
    """Writes the checkpoint atomically and returns ``path``."""
    atomic_save(
        {
            "format": FORMAT,
            "kind": KIND,
            "model": model_record(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(),
            "rng": rng_state(),
            "position": position.to_dict(),
            "totals": list(totals),
            "best": best,
            "config": dict(config),
        },
        path,
    )
    return path


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint written by `save_training_checkpoint` (weights only: runs no code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"checkpoint {str(path)!r} not found", "pass the last.pt of an earlier run to --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise ModelSourceError(
            f"{path} is not a readable checkpoint ({first_line(exc, 120)})",
            "pass the last.pt or best.pt written by binarize finetune",
        ) from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise ModelSourceError(
            f"{path} is not a training checkpoint", "pass the last.pt or best.pt written by binarize finetune"
        )
    verify_checkpoint(payload, path)
    return payload
