"""Where float models come from: torchvision names, the binarize zoo, timm, files.

Each float model gets a `binarize.provenance.Provenance` saying how to build it again (its
``source``) and its default input shape. Binarize checkpoints are not read here:
`binarize.loading` dispatches over every kind of file and rebuilds checkpoints from the
pieces of this module.

Loading never runs code from a file unless the caller trusts it. State dicts and safetensors
load without unpickling anything (``torch.load(weights_only=True)``).
Two kinds of file need ``trust=True`` (``--trust``) because reading them unpickles:

- a whole module written by ``torch.save(model)``;
- a ``torch.export`` archive (``.pt2``): ``torch.export.load`` unpickles its sample inputs
  and any weight stored as a pickle, falling back to a full unpickler when the safe one
  refuses, so a crafted archive runs code. Reading the program without pickle would mean
  re-implementing torch's archive format; binarize treats ``.pt2`` like a pickled module.

A checkpoint converted from either kind embeds the file (source kind ``"pt2"`` or
``"pickle"``, see `binarize.checkpoint.needs_trust`), so rebuilding it asks for the same trust.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from binarize._registry import did_you_mean
from binarize.errors import ModelSourceError, UnsafeSourceError, first_line
from binarize.provenance import Provenance, provenance_of, set_provenance

#: Prefixes of sources that name an architecture (built with random weights unless --weights is given).
ARCHITECTURE_PREFIXES = ("torchvision:", "binarize:", "timm:")

#: The example input shape of torchvision's classification models.
IMAGENET_SHAPE = (1, 3, 224, 224)


def float_model_from_payload(payload: Any, path: Path, arch: str | None, **arch_kwargs: Any) -> nn.Module:
    """The float model in ``payload``, read from the ``torch.save`` file ``path`` (not a
    checkpoint): a whole pickled module (read only with trust, see `read_torch_file`) or a state
    dict loaded into the architecture ``arch`` (built with ``arch_kwargs``)."""
    if isinstance(payload, nn.Module):
        source = {"kind": "pickle", "archive": _file_bytes(path)}
        return set_provenance(payload, provenance_of(payload).replace(source=source))
    if _is_state_dict(payload):
        return model_with_state(arch, path, payload, **arch_kwargs)
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
        model = set_provenance(torchvision.models.get_model(model_name, weights=None, **kwargs),
                               Provenance(input_shape=IMAGENET_SHAPE))
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
    source = {"kind": kind, "name": model_name, "kwargs": dict(kwargs)}
    return set_provenance(model, provenance_of(model).replace(source=source))


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Loads a state-dict file into ``model``, with a one-line error on any mismatch."""
    if not path.exists():
        raise ModelSourceError(f"weights file {path} not found", "check the --weights path")
    state = read_safetensors(path) if path.suffix == ".safetensors" else read_torch_file(path, trust=False)
    if not _is_state_dict(state):
        raise ModelSourceError(f"{path} is not a state dict", "save model.state_dict() to it")
    _load_state(model, path, state)


def model_with_state(
    arch: str | None, path: Path, state: Mapping[str, torch.Tensor], **arch_kwargs: Any
) -> nn.Module:
    """The architecture ``arch`` (built with ``arch_kwargs``) holding the state dict ``state``
    read from ``path``."""
    if arch is None:
        raise ModelSourceError(
            f"{path} is a state dict, which has no architecture",
            "pass --arch torchvision:NAME (or binarize:NAME) for the model it belongs to",
        )
    model = build_architecture(arch, **arch_kwargs)
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


#: What torch's safe unpickler says when a file names a class it will not import: the file
#: holds pickled objects (a module), as opposed to bytes that are no pickle at all.
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")

#: The fix of every "this file needs trust" error.
TRUST_FIX = ("pass --trust (trust=True) only if you trust where it came from, "
             "or save model.state_dict() and load it with --arch")


def read_torch_file(path: Path, *, trust: bool) -> Any:
    """The object a ``torch.save`` file holds, read with ``weights_only=True``; a pickled module
    is unpickled only with ``trust`` (one-line errors for corrupt files and refused trust).

    torch's warnings about the file (e.g. an unusual pickle protocol) are silenced: the
    one-line error, or the loaded object, says everything the user needs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused is None:
            raise _not_a_model_file(path) from None
        if not trust:
            raise UnsafeSourceError(
                f"{path} holds pickled Python objects ({refused.group(1)}): loading it runs code "
                "stored in the file",
                TRUST_FIX,
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"cannot read {path} as a PyTorch file ({first_line(exc)})",
            "check that the file is complete and not corrupt",
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # trusted unpickling can fail with anything the file raises
        raise ModelSourceError(
            f"cannot unpickle {path} ({first_line(exc)})",
            "the classes it needs must be importable; prefer a state dict with --arch",
        ) from None


def _not_a_model_file(path: Path) -> ModelSourceError:
    return ModelSourceError(
        f"{path} is not a model file binarize reads (not written by torch.save)",
        "give a binarize checkpoint, a state dict (.pt, .pth, .safetensors) with --arch, "
        "a .pt2 archive, torchvision:NAME or binarize:NAME",
    )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (one-line error for a damaged one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"cannot read {path} as safetensors ({first_line(exc)})", "check the file is complete"
        ) from None


def load_exported(path: Path, *, trust: bool) -> nn.Module:
    """The float module of a ``torch.export`` archive (needs ``trust``: reading it unpickles)."""
    if not trust:
        raise UnsafeSourceError(
            f"{path} is a torch.export archive: torch.export.load unpickles parts of it, which "
            "runs code stored in the file",
            TRUST_FIX,
        )
    program = _read_exported(path, str(path))
    origin = Provenance(source={"kind": "pt2", "archive": _file_bytes(path)}, input_shape=_exported_input_shape(program))
    return set_provenance(_module_of(program), origin)


def module_from_archive(source: Mapping[str, Any], *, trust: bool) -> nn.Module:
    """Rebuilds the float model of a checkpoint whose source is an embedded ``.pt2`` archive or
    pickled module; both are unpickled, so ``trust`` is required."""
    kind = "torch.export archive" if source["kind"] == "pt2" else "pickled module"
    if not trust:
        raise UnsafeSourceError(
            f"this checkpoint was converted from a {kind}, which it embeds: rebuilding it runs "
            "code stored in the file",
            "pass --trust (trust=True) only if you trust where it came from",
        )
    data = io.BytesIO(bytes(source["archive"].numpy().tobytes()))
    if source["kind"] == "pt2":
        model = _module_of(_read_exported(data, "the checkpoint's embedded archive"))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.load(data, map_location="cpu", weights_only=False)
    return set_provenance(model, provenance_of(model).replace(source=dict(source)))


def _read_exported(file: str | Path | io.BytesIO, name: str) -> Any:
    try:
        return torch.export.load(file)
    except Exception as exc:  # a corrupt archive raises many kinds of errors
        raise ModelSourceError(
            f"cannot read {name} as a torch.export archive ({first_line(exc)})",
            "write it with torch.export.save(torch.export.export(model, args), path)",
        ) from None


def _module_of(program: Any) -> nn.Module:
    from binarize.conversion.functional_lift import lift_functional_layers

    return lift_functional_layers(program.module())


def _exported_input_shape(program: Any) -> tuple[int, ...] | None:
    try:
        spec = program.example_inputs[0][0]
        return tuple(int(d) for d in spec.shape)
    except (AttributeError, IndexError, TypeError):
        return None


def _file_bytes(path: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)

