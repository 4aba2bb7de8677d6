"""Converted models on disk: source + config + plan + state dict, loadable without unpickling.

A checkpoint is a ``torch.save`` of plain data (strings, numbers, lists, dicts, tensors) that
``torch.load(weights_only=True)`` reads: `binarize.loading` rebuilds the model by re-creating
the float source and replaying the saved conversion plan, then loading the state dict. Nothing
in it runs code, unless the float source itself needed trust: a pickled module or a
``torch.export`` archive is embedded in the checkpoint (source kind ``"pickle"`` or ``"pt2"``,
see `needs_trust`), and rebuilding it unpickles that file, so loading the checkpoint asks for
``trust=True`` again. This module writes, seals and checks the payload; it rebuilds nothing.

Every file carries a SHA-256 of its content (`binarize.integrity`), checked before anything is
rebuilt, and float tensors must be finite: a damaged file is refused, never run as a changed
model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from binarize._files import atomic_path
from binarize._version import __version__
from binarize.conversion.pipeline import plan_records
from binarize.errors import ModelSourceError, OutputExistsError
from binarize.integrity import first_non_finite, seal, seal_matches
from binarize.provenance import provenance_of

FORMAT = "binarize.model"
VERSION = 1
#: Source kinds whose float model is an embedded file that must be unpickled to rebuild it.
EMBEDDED_KINDS = ("pt2", "pickle")


def model_record(model: nn.Module) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (converted or float) as plain data."""
    origin = provenance_of(model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "producer": f"binarize {__version__}",
        "source": dict(origin.source or {"kind": "python"}),
        "config": None if origin.config is None else origin.config.to_dict(),
        "plan": plan_records(model),
        "mode": None if origin.report is None else origin.report.mode,
        "leaves": [] if origin.report is None else list(origin.report.leaves),
        "input_shape": None if origin.input_shape is None else list(origin.input_shape),
        "state_dict": model.state_dict(),
    }


def needs_trust(record: Mapping[str, Any]) -> bool:
    """Whether rebuilding the model of ``record`` unpickles an embedded file (its source was a
    pickled module or a ``torch.export`` archive), so that loading it needs ``trust=True``."""
    return (record.get("source") or {}).get("kind") in EMBEDDED_KINDS


def save_checkpoint(model: nn.Module, path: str | Path, *, force: bool = False) -> Path:
    """Writes ``model``'s record to ``path`` atomically; refuses to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", "pass --force to overwrite it or choose another -o")
    record = model_record(model)
    broken = first_non_finite(record["state_dict"].items())
    if broken is not None:
        raise ModelSourceError(
            f"the model holds NaN or Inf in {broken!r}; not saving it to {path}",
            "the weights are damaged or training diverged (try a lower learning rate)",
        )
    atomic_save({"model": record, "format": FORMAT}, path)
    return path


def atomic_save(payload: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` of ``payload`` sealed with its SHA-256 (see `verify_checkpoint`) to a
    temporary file beside ``path``, then rename: never a half file."""
    # Through a Python file, so that a full disk raises OSError (torch's own writer says only
    # "unexpected pos"), which atomic_path turns into one line.
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        torch.save(seal(payload), stream)


def verify_checkpoint(payload: Mapping[str, Any], path: str | Path) -> None:
    """Refuses a checkpoint whose content no longer matches its recorded SHA-256, that records
    none, or whose model holds NaN/Inf (one-line `ModelSourceError` naming ``path``)."""
    matches = seal_matches(payload)
    if matches is None:
        raise ModelSourceError(
            f"{path} records no checksum: it is damaged or was written by an older binarize",
            "convert the model again (binarize convert) or use a checkpoint written by this version",
        )
    if not matches:
        raise ModelSourceError(
            f"{path} is damaged: its content does not match the SHA-256 recorded when it was written",
            "use an intact copy or write it again",
        )
    record = payload.get("model", payload)
    broken = first_non_finite((record.get("state_dict") or {}).items())
    if broken is not None:
        raise ModelSourceError(f"{path} holds NaN or Inf in {broken!r}", "use a checkpoint from before training diverged")


def is_checkpoint(payload: Any) -> bool:
    """True for a model record, or a dict holding one under ``"model"``."""
    if not isinstance(payload, Mapping):
        return False
    record = payload.get("model", payload)
    return isinstance(record, Mapping) and record.get("format") == FORMAT


def check_record(record: Mapping[str, Any]) -> None:
    """Refuses what is not a model record, or one written by a newer binarize."""
    if record.get("format") != FORMAT:
        raise ModelSourceError("not a binarize model record", "write it with save_checkpoint")
    if int(record.get("version", 0)) > VERSION:
        raise ModelSourceError(
            f"checkpoint version {record.get('version')} is newer than this binarize ({VERSION})",
            "upgrade binarize",
        )

