"""Converted models on disk: source + config + plan + state dict, loadable without unpickling.

A checkpoint is a ``torch.save`` of plain data (strings, numbers, lists, dicts, tensors) that
``torch.load(weights_only=True)`` reads: the model is rebuilt by re-creating the float source
and replaying the saved conversion plan, then loading the state dict. Nothing in it runs code,
unless the float source itself needed trust: a pickled module or a ``torch.export`` archive is
embedded in the checkpoint (source kind ``"pickle"`` or ``"pt2"``, see `needs_trust`), and
rebuilding it unpickles that file, so loading the checkpoint asks for ``trust=True`` again.

Every file carries a SHA-256 of its content (`binarize.integrity`), checked before anything is
rebuilt, and float tensors must be finite: a damaged file is refused, never run as a changed
model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from binarize._files import atomic_path
from binarize.config import BinarizeConfig
from binarize.errors import ModelSourceError, OutputExistsError, first_line
from binarize.integrity import first_non_finite, seal, seal_matches

FORMAT = "binarize.model"
VERSION = 1
#: Source kinds whose float model is an embedded file that must be unpickled to rebuild it.
EMBEDDED_KINDS = ("pt2", "pickle")


def model_record(model: nn.Module) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (converted or float) as plain data."""
    source = getattr(model, "binarize_source", None) or {"kind": "python"}
    config = getattr(model, "binarize_config", None)
    report = getattr(model, "binarize_report", None)
    shape = input_shape(model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "producer": f"binarize {_version()}",
        "source": dict(source),
        "config": None if config is None else config.to_dict(),
        "plan": getattr(model, "binarize_plan", None),
        "mode": None if report is None else report.mode,
        "leaves": [] if report is None else list(report.leaves),
        "input_shape": None if shape is None else list(shape),
        "state_dict": model.state_dict(),
    }


def model_from_record(
    record: Mapping[str, Any], *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """Rebuilds the model a `model_record` describes.

    ``model`` supplies the float architecture for records made from a model binarize could
    not name (``source.kind == "python"``: your own class); it is copied, not changed.
    """
    _check_record(record)
    from binarize.conversion.pipeline import rebuild
    from binarize.sources import build_architecture, module_from_archive

    source = dict(record["source"])
    kind = source.get("kind")
    if model is not None:
        float_model = copy.deepcopy(model)
        float_model.binarize_source = source
    elif kind in ("torchvision", "binarize", "timm"):
        float_model = build_architecture(f"{kind}:{source['name']}", **dict(source.get("kwargs") or {}))
    elif needs_trust(record):
        float_model = module_from_archive(source, trust=trust)
    else:
        raise ModelSourceError(
            "this checkpoint was made from a model class binarize cannot name",
            "rebuild it in Python with load_checkpoint(path, model=YourModel())",
        )
    if record.get("input_shape"):
        float_model.binarize_input_shape = tuple(record["input_shape"])
    result = float_model
    if record.get("plan") is not None:
        # Checkpoints written before the activation policy existed were converted without a rewrite.
        config = BinarizeConfig.from_dict({"activation_policy": "keep"} | record["config"])
        result = rebuild(
            float_model, config, record["plan"], mode=record.get("mode") or "fx", leaves=record.get("leaves") or ()
        )
    try:
        result.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelSourceError(
            f"checkpoint weights do not fit the rebuilt model ({first_line(exc, 160)})",
            "the checkpoint was written by another binarize version or its source changed",
        ) from None
    return result


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


def load_checkpoint(
    path: str | Path, *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """Loads a checkpoint written by `save_checkpoint` (or a training checkpoint holding one)."""
    from binarize.sources import load_model

    if model is None:
        return load_model(path, trust=trust)
    from binarize.sources import read_torch_file

    return model_from_payload(read_torch_file(Path(path), trust=False), path, trust=trust, model=model)


def is_checkpoint(payload: Any) -> bool:
    """True for a model record, or a dict holding one under ``"model"``."""
    if not isinstance(payload, Mapping):
        return False
    record = payload.get("model", payload)
    return isinstance(record, Mapping) and record.get("format") == FORMAT


def model_from_payload(
    payload: Mapping[str, Any], path: str | Path, *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """The model of the checkpoint file ``path`` holding ``payload`` (a record under ``"model"``),
    after `verify_checkpoint`."""
    if not is_checkpoint(payload):
        raise ModelSourceError(f"{path} is not a binarize checkpoint", "write it with binarize convert or save_checkpoint")
    verify_checkpoint(payload, path)
    return model_from_record(payload.get("model", payload), trust=trust, model=model)


def input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The example input shape recorded for ``model`` (from its source), if any."""
    shape = getattr(model, "binarize_input_shape", None) or getattr(model, "input_shape", None)
    if shape is None:
        source = getattr(model, "binarize_source", None) or {}
        if source.get("kind") == "torchvision":
            from binarize.sources import IMAGENET_SHAPE

            shape = IMAGENET_SHAPE
    return None if shape is None else tuple(int(d) for d in shape)


def _check_record(record: Mapping[str, Any]) -> None:
    if record.get("format") != FORMAT:
        raise ModelSourceError("not a binarize model record", "write it with save_checkpoint")
    if int(record.get("version", 0)) > VERSION:
        raise ModelSourceError(
            f"checkpoint version {record.get('version')} is newer than this binarize ({VERSION})",
            "upgrade binarize",
        )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("binarize")
    except PackageNotFoundError:
        return "unknown"
