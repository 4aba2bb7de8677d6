"""Where float models come from: torchvision names, the binarize zoo, files.

Loading never runs code from a file unless the caller trusts it: state dicts, binarize
checkpoints and ``torch.export`` archives load safely; a whole pickled module needs
``trust=True`` (as ``torch.load(weights_only=False)`` would).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from binarize._registry import did_you_mean
from binarize.errors import ModelSourceError, UnsafeSourceError, first_line

#: Default example input shape per source kind (a checkpoint records the one used).
IMAGENET_SHAPE = (1, 3, 224, 224)


def load_model(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    arch: str | None = None,
    trust: bool = False,
) -> nn.Module:
    """Loads a float (or already converted) model.

    ``source`` is ``torchvision:NAME``, ``binarize:NAME`` (the `binarize.models` zoo),
    ``timm:NAME`` (needs the ``timm`` extra; built untrained, never downloaded), a
    binarize checkpoint, a state-dict file (``.pt``/``.pth``/``.safetensors``, needs
    ``arch``), a ``torch.export`` archive (``.pt2``), or a file written by
    ``torch.save(model)`` (needs ``trust=True``: unpickling runs code from the file).
    ``weights`` is a state-dict file loaded into an architecture given by name.

    The model gets a ``binarize_source`` attribute recording how to rebuild it.
    """
    text = str(source)
    if text.startswith(("torchvision:", "binarize:", "timm:")):
        model = build_architecture(text)
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
        return _load_exported(path)
    if path.suffix == ".safetensors":
        return _with_arch(arch, path, _read_safetensors(path))
    payload = read_torch_file(path, trust=trust)
    if isinstance(payload, nn.Module):
        payload.binarize_source = {"kind": "pickle", "archive": _file_bytes(path)}
        return payload
    from binarize.checkpoint import is_checkpoint, model_from_payload

    if is_checkpoint(payload):
        return model_from_payload(payload, trust=trust)
    if _is_state_dict(payload):
        return _with_arch(arch, path, payload)
    raise ModelSourceError(
        f"{path} holds a {type(payload).__name__}, not a model or a state dict",
        "save the model's state_dict() (and pass --arch) or a binarize checkpoint",
    )


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """An untrained model from ``torchvision:NAME``, ``binarize:NAME`` or ``timm:NAME``."""
    kind, _, model_name = name.partition(":")
    if kind == "torchvision":
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if model_name not in available:
            hint = did_you_mean(model_name, available, lambda close: f"torchvision:{close}")
            raise ModelSourceError(
                f"unknown torchvision classification model {model_name!r}",
                f"{hint}see torchvision.models.list_models()",
            )
        model = torchvision.models.get_model(model_name, weights=None, **kwargs)
    elif kind == "binarize":
        from binarize import models

        model = models.create(model_name, **kwargs)
    elif kind == "timm":
        from binarize.sources_timm import build_timm

        model = build_timm(model_name, **kwargs)
    else:
        raise ModelSourceError(
            f"unknown architecture {name!r}", "use torchvision:NAME, binarize:NAME or timm:NAME"
        )
    model.binarize_source = {"kind": kind, "name": model_name, "kwargs": dict(kwargs)}
    return model


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Loads a state-dict file into ``model``, with a one-line error on any mismatch."""
    if not path.exists():
        raise ModelSourceError(f"weights file {path} not found", "check the --weights path")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else read_torch_file(path, trust=False)
    if not _is_state_dict(state):
        raise ModelSourceError(f"{path} is not a state dict", "save model.state_dict() to it")
    _load_state(model, path, state)


def _with_arch(arch: str | None, path: Path, state: Mapping[str, torch.Tensor]) -> nn.Module:
    if arch is None:
        raise ModelSourceError(
            f"{path} is a state dict, which has no architecture",
            "pass --arch torchvision:NAME (or binarize:NAME) for the model it belongs to",
        )
    model = build_architecture(arch)
    _load_state(model, path, state)
    return model


def _load_state(model: nn.Module, path: Path, state: Mapping[str, torch.Tensor]) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelSourceError(
            f"{path} does not fit the architecture ({first_line(exc, 160)})",
            "pass the --arch these weights were trained with",
        ) from None
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise ModelSourceError(
            f"{path} does not fit the architecture ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {example!r})",
            "pass the --arch these weights were trained with",
        )


def _is_state_dict(payload: Any) -> bool:
    return (
        isinstance(payload, Mapping)
        and len(payload) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items())
    )


def read_torch_file(path: Path, *, trust: bool) -> Any:
    """The object a ``torch.save`` file holds, read with ``weights_only=True``; a pickled module
    is unpickled only with ``trust`` (one-line errors for corrupt files and refused trust)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise ModelSourceError(f"cannot read {path} as a PyTorch file ({first_line(exc)})", "check that the file is complete and not corrupt") from None
        if not trust:
            raise UnsafeSourceError(
                f"{path} is a pickled module: loading it runs code stored in the file",
                "pass --trust (trust=True) only if you trust where it came from, "
                "or save model.state_dict() and load it with --arch",
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"cannot read {path} as a PyTorch file ({first_line(exc)})",
            "check that the file is complete and not corrupt",
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # trusted unpickling can fail with anything the file raises
        raise ModelSourceError(
            f"cannot unpickle {path} ({first_line(exc)})",
            "the classes it needs must be importable; prefer a state dict with --arch",
        ) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"cannot read {path} as safetensors ({first_line(exc)})", "check the file is complete"
        ) from None


def _load_exported(path: Path) -> nn.Module:
    from binarize.conversion.functional_lift import lift_functional_layers

    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # a corrupt archive raises many kinds of errors
        raise ModelSourceError(
            f"cannot read {path} as a torch.export archive ({first_line(exc)})",
            "write it with torch.export.save(torch.export.export(model, args), path)",
        ) from None
    model = lift_functional_layers(program.module())
    model.binarize_source = {"kind": "pt2", "archive": _file_bytes(path)}
    model.binarize_input_shape = _exported_input_shape(program)
    return model


def module_from_archive(source: Mapping[str, Any], *, trust: bool) -> nn.Module:
    """Rebuilds the float model of a checkpoint whose source is an embedded file."""
    data = bytes(source["archive"].numpy().tobytes())
    if source["kind"] == "pt2":
        from binarize.conversion.functional_lift import lift_functional_layers

        model = lift_functional_layers(torch.export.load(io.BytesIO(data)).module())
    else:
        if not trust:
            raise UnsafeSourceError(
                "this checkpoint was converted from a pickled module: rebuilding it runs code "
                "stored in the file",
                "pass --trust (trust=True) only if you trust where it came from",
            )
        model = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    model.binarize_source = dict(source)
    return model


def _exported_input_shape(program: Any) -> tuple[int, ...] | None:
    try:
        spec = program.example_inputs[0][0]
        return tuple(int(d) for d in spec.shape)
    except (AttributeError, IndexError, TypeError):
        return None


def _file_bytes(path: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)

