"""Loading any model binarize reads: a name, a float-model file or a binarize checkpoint.

This is the one loader above `binarize.sources` (float models) and `binarize.checkpoint` (the
checkpoint payload): it dispatches over every kind of file, and rebuilds a checkpoint's model by
building its float source and replaying the saved conversion plan (`binarize.conversion`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from binarize.checkpoint import (
    check_record,
    is_checkpoint,
    needs_trust,
    verify_checkpoint,
)
from binarize.config import BinarizeConfig
from binarize.conversion.pipeline import rebuild
from binarize.errors import ConfigError, ModelSourceError, first_line
from binarize.provenance import provenance_of, set_provenance
from binarize.sources import (
    ARCHITECTURE_PREFIXES,
    build_architecture,
    float_model_from_payload,
    load_exported,
    load_state_dict_file,
    model_with_state,
    module_from_archive,
    read_safetensors,
    read_torch_file,
)


def load_model(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    arch: str | None = None,
    trust: bool = False,
    num_classes: int | None = None,
) -> nn.Module:
    """Loads a float (or already converted) model.

    ``source`` is ``torchvision:NAME``, ``binarize:NAME`` (the `binarize.models` zoo),
    ``timm:NAME`` (needs the ``timm`` extra; built untrained, never downloaded), a
    binarize checkpoint, a state-dict file (``.pt``/``.pth``/``.safetensors``, needs
    ``arch``), a ``torch.export`` archive (``.pt2``) or a file written by
    ``torch.save(model)`` (both need ``trust=True``: reading them unpickles, which runs code
    from the file).
    ``weights`` is a state-dict file loaded into an architecture given by name.
    ``num_classes`` builds a named architecture (``source`` or ``arch``) with that many
    outputs instead of its default (e.g. 1000 for torchvision); a file's model has its own.

    The model's `binarize.provenance_of` record says how to rebuild it.

    Example:
        >>> import binarize
        >>> model = binarize.load_model("binarize:digits_cnn")
        >>> binarize.provenance_of(model).source
        {'kind': 'binarize', 'name': 'digits_cnn', 'kwargs': {}}
        >>> binarize.load_model("binarize:digits_cn")
        Traceback (most recent call last):
        ...
        binarize.errors.ConfigError: unknown model 'digits_cn' — did you mean 'digits_cnn'? ...
    """
    text = str(source)
    head = {} if num_classes is None else {"num_classes": num_classes}
    if text.startswith(ARCHITECTURE_PREFIXES):
        model = build_architecture(text, **head)
        if weights is not None:
            load_state_dict_file(model, Path(weights))
        return model
    path = Path(text)
    if not path.exists():
        raise ModelSourceError(
            f"model source {text!r} not found",
            "give an existing file, torchvision:NAME (e.g. torchvision:resnet18) or binarize:NAME",
        )
    if path.suffix == ".pt2":
        if head:
            raise _whole_model_has_its_head(path)
        return load_exported(path, trust=trust)
    if path.suffix == ".safetensors":
        return model_with_state(arch, path, read_safetensors(path), **head)
    payload = read_torch_file(path, trust=trust)
    if is_checkpoint(payload):
        if head:
            raise _whole_model_has_its_head(path)
        return model_from_payload(payload, path, trust=trust)
    if head and isinstance(payload, nn.Module):
        raise _whole_model_has_its_head(path)
    return float_model_from_payload(payload, path, arch, **head)


def _whole_model_has_its_head(path: Path) -> ConfigError:
    return ConfigError(
        f"num_classes applies to a named architecture, and {path} holds a whole model with its own outputs",
        "drop --num-classes, or pass a state-dict file with --arch",
    )


def load_checkpoint(
    path: str | Path, *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """Loads a checkpoint written by `binarize.save_checkpoint` (or a training checkpoint
    holding one); ``model`` supplies the float architecture of a model class binarize cannot
    name (see `model_from_record`)."""
    if model is None:
        return load_model(path, trust=trust)
    return model_from_payload(read_torch_file(Path(path), trust=False), path, trust=trust, model=model)


def model_from_payload(
    payload: Mapping[str, Any], path: str | Path, *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """The model of the checkpoint file ``path`` holding ``payload`` (a record under ``"model"``),
    after `binarize.checkpoint.verify_checkpoint`."""
    if not is_checkpoint(payload):
        raise ModelSourceError(f"{path} is not a binarize checkpoint", "write it with binarize convert or save_checkpoint")
    verify_checkpoint(payload, path)
    return model_from_record(payload.get("model", payload), trust=trust, model=model)


def model_from_record(
    record: Mapping[str, Any], *, trust: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """Rebuilds the model a `binarize.checkpoint.model_record` describes.

    ``model`` supplies the float architecture for records made from a model binarize could
    not name (``source.kind == "python"``: your own class); it is copied, not changed.
    """
    check_record(record)
    source = dict(record["source"])
    kind = source.get("kind")
    if model is not None:
        float_model = copy.deepcopy(model)
    elif kind in ("torchvision", "binarize", "timm"):
        float_model = build_architecture(f"{kind}:{source['name']}", **dict(source.get("kwargs") or {}))
    elif needs_trust(record):
        float_model = module_from_archive(source, trust=trust)
    else:
        raise ModelSourceError(
            "this checkpoint was made from a model class binarize cannot name",
            "rebuild it in Python with load_checkpoint(path, model=YourModel())",
        )
    origin = provenance_of(float_model).replace(source=source, config=None, report=None)
    if record.get("input_shape"):
        origin = origin.replace(input_shape=tuple(record["input_shape"]))
    result = set_provenance(float_model, origin)
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
