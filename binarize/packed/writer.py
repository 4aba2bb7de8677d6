"""Export side of `.bnz`: freeze, trace with torch.fx, record the graph, pack the weights.

Kept apart from the runtime so that loading a packed model never imports torch.fx users,
the estimators or onnx.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from binarize.errors import ConversionError
from binarize.export.freeze import FrozenBinaryConv1d, FrozenBinaryConv2d, FrozenBinaryLayer, FrozenBinaryLinear, freeze
from binarize.packed import format as bnz
from binarize.packed.bits import pack_signs
from binarize.packed.graph import (
    ATTRIBUTES,
    BINARY_CONV,
    BINARY_LINEAR,
    CONSTANT,
    DTYPES,
    FOREIGN_FUNCTIONS,
    FUNCTIONS,
    METHODS,
    MODULE_OPS,
    finite_or_tagged,
)

_FUNCTION_NAMES = {id(fn): name for name, fn in FUNCTIONS.items()}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_NP_DTYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_}
_REFUSE_FIX = "keep that part out of the model, or deploy with `binarize export --onnx` instead"


class _Tracer(torch.fx.Tracer):
    """Frozen binary layers are leaves, as are the allowlisted float `torch.nn` layers."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, FrozenBinaryLayer) or super().is_leaf_module(module, qualified_name)


def save_packed(model: nn.Module, path: str | Path, example_inputs: Sequence[torch.Tensor] | None = None, *,
                force: bool = False, check: bool = True) -> Path:
    """Writes ``model`` (binary or already frozen) as a `.bnz` file; returns the path.

    The model is frozen, traced with torch.fx and every node recorded; an operation outside the
    packed runtime's allowlist is refused with a `ConversionError` naming it. With ``check`` and
    ``example_inputs`` the written file is loaded back and its output compared with the frozen
    model's (a `ConversionError` on disagreement).
    """
    frozen = freeze(model)
    graph_module = _trace(frozen)
    recorder = _Recorder(graph_module)
    graph = recorder.record()
    config = getattr(model, "binarize_config", None)
    metadata = {
        "format": bnz.FORMAT_NAME,
        "version": str(bnz.FORMAT_VERSION),
        "bit_order": bnz.BIT_ORDER,
        "graph": json.dumps(graph, separators=(",", ":"), allow_nan=False),
        "config": json.dumps(config.to_dict() if hasattr(config, "to_dict") else None),
        "producer": f"binarize {_version()} (torch {torch.__version__})",
    }
    written = bnz.write_bnz(path, recorder.tensors, metadata, force=force)
    if check and example_inputs is not None:
        _check_agreement(frozen, written, tuple(example_inputs))
    return written


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("binarize")
    except PackageNotFoundError:
        return "unknown"


def _trace(frozen: nn.Module) -> torch.fx.GraphModule:
    root = nn.Sequential(frozen) if isinstance(frozen, FrozenBinaryLayer) else frozen  # a bare layer
    try:
        graph = _Tracer().trace(root)
    except Exception as err:  # fx raises many types; the user needs one clear line
        raise ConversionError(f"the model cannot be traced for packing ({type(err).__name__}: {str(err)[:120]})",
                              _REFUSE_FIX) from err
    return torch.fx.GraphModule(root, graph)


class _Recorder:
    """Walks a traced graph and records nodes (JSON) and tensors (NumPy) for the file."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        self.gm = graph_module
        self.tensors: dict[str, np.ndarray] = {}

    def record(self) -> dict[str, Any]:
        inputs, nodes, output = [], [], None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                inputs.append(node.name)
            elif node.op == "output":
                output = self.value(node.args[0])
            else:
                nodes.append(self.node(node))
        return {"inputs": inputs, "nodes": nodes, "output": output}

    def node(self, node: torch.fx.Node) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": node.name, "op": "", "args": [self.value(a) for a in node.args],
                                 "kwargs": {k: self.value(v) for k, v in node.kwargs.items()},
                                 "params": {}, "tensors": {}}
        if node.op == "get_attr":
            entry["op"] = CONSTANT
            entry["tensors"]["value"] = self.tensor(f"{node.name}.value", _fetch_attr(self.gm, node.target))
        elif node.op == "call_module":
            self.module(entry, node, self.gm.get_submodule(node.target))
        elif node.op == "call_function":
            name = _FUNCTION_NAMES.get(id(node.target))
            qualified = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
            if name is None and qualified in FOREIGN_FUNCTIONS:
                name = qualified
            if name is None:
                _refuse(node, getattr(node.target, "__qualname__", repr(node.target)))
            if name == "builtins.getattr" and node.args[1] not in ATTRIBUTES:
                _refuse(node, f"getattr(…, {node.args[1]!r})")
            entry["op"] = f"function.{name}"
        elif node.op == "call_method":
            if node.target not in METHODS:
                _refuse(node, f"Tensor.{node.target}")
            entry["op"] = f"method.{node.target}"
        else:
            _refuse(node, node.op)
        return entry

    def module(self, entry: dict[str, Any], node: torch.fx.Node, module: nn.Module) -> None:
        if isinstance(module, FrozenBinaryLayer):
            self.binary(entry, node.name, module)
            return
        type_name = next((k.__name__ for k in type(module).__mro__ if k.__name__ in MODULE_OPS
                          and k.__module__.startswith("torch.nn")), None)
        if type_name is None:
            _refuse(node, f"{type(module).__module__}.{type(module).__qualname__}")
        if type_name == "MultiheadAttention" and not module._qkv_same_embed_dim:
            _refuse(node, "MultiheadAttention with separate q/k/v projection weights")
        spec = MODULE_OPS[type_name]
        entry["op"] = f"module.{type_name}"
        entry["params"] = {p: self.value(_param(module, p)) for p in spec.params}
        for role in spec.tensors:
            tensor = _fetch_attr(module, role)
            if tensor is not None:
                entry["tensors"][role] = self.tensor(f"{node.name}.{role}", tensor)

    def binary(self, entry: dict[str, Any], name: str, layer: FrozenBinaryLayer) -> None:
        signs = layer.signs.detach()
        if isinstance(layer, FrozenBinaryLinear):
            entry["op"] = BINARY_LINEAR
            entry["params"] = {"in_features": signs.shape[1], "out_features": signs.shape[0],
                               "binary_input": layer.binary_input}
        else:
            dims = 1 if isinstance(layer, FrozenBinaryConv1d) else 2
            assert isinstance(layer, (FrozenBinaryConv1d, FrozenBinaryConv2d))
            pair = (lambda v: [1, *v]) if dims == 1 else list  # conv1d runs as a 1×k conv2d
            entry["op"] = BINARY_CONV
            entry["params"] = {
                "dims": dims, "in_channels": layer.in_channels, "out_channels": signs.shape[0],
                "kernel_size": pair(list(layer.kernel_size)), "stride": pair(list(layer.stride)),
                "padding": ([0, *_explicit_padding(layer)] if dims == 1 else _explicit_padding(layer)),
                "dilation": pair(list(layer.dilation)), "groups": layer.groups,
                "padding_mode": layer.padding_mode, "binary_input": layer.binary_input,
            }
        entry["tensors"] = {
            "bits": self.tensor(f"{name}.bits", pack_signs(signs.reshape(signs.shape[0], -1).cpu().numpy())),
            "alpha": self.tensor(f"{name}.alpha", layer.alpha.detach().reshape(-1)),
        }
        if layer.bias is not None:
            entry["tensors"]["bias"] = self.tensor(f"{name}.bias", layer.bias.detach())

    def tensor(self, name: str, value: torch.Tensor | np.ndarray) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.is_floating_point():
                value = value.float()
            if value.dtype not in _NP_DTYPES:
                raise ConversionError(f"tensor {name} has dtype {value.dtype}", "use float32, int64 or bool buffers")
            value = value.numpy().astype(_NP_DTYPES[value.dtype], copy=False)
        self.tensors[name] = np.ascontiguousarray(value)
        return name

    def value(self, value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            return {"ref": value.name}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return finite_or_tagged(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return {"tuple": [self.value(v) for v in value]}
        if isinstance(value, slice):
            return {"slice": [self.value(value.start), self.value(value.stop), self.value(value.step)]}
        if value is Ellipsis:
            return {"ellipsis": None}
        if isinstance(value, torch.dtype) and value in _DTYPE_NAMES:
            return {"dtype": _DTYPE_NAMES[value]}
        if isinstance(value, torch.Size):
            return {"tuple": list(value)}
        raise ConversionError(f"cannot record the value {value!r} ({type(value).__name__}) in a .bnz graph",
                              _REFUSE_FIX)


def _explicit_padding(layer: nn.Module) -> list[int]:
    """Integer padding per spatial dim ('valid' → 0, symmetric 'same' → half the receptive field)."""
    if layer.padding == "valid":
        return [0] * len(layer.kernel_size)
    if layer.padding == "same":
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        if any(t % 2 for t in totals):
            raise ConversionError("padding='same' with an even receptive field pads asymmetrically",
                                  "use explicit integer padding for that layer")
        return [t // 2 for t in totals]
    return list(layer.padding)


def _param(module: nn.Module, name: str) -> Any:
    value = getattr(module, name)
    if name == "padding" and isinstance(value, str):
        return _explicit_padding(module)
    return value


def _fetch_attr(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _refuse(node: torch.fx.Node, what: str) -> None:
    raise ConversionError(
        f"operation {what} (graph node {node.name!r}) is not in the packed runtime's allowlist", _REFUSE_FIX
    )


def _check_agreement(frozen: nn.Module, path: Path, example_inputs: tuple[torch.Tensor, ...]) -> None:
    from binarize.packed.runtime import load_packed

    with torch.no_grad():
        expected = frozen(*example_inputs)
    actual = load_packed(path)(*example_inputs)
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        scale = max(1.0, float(expected.abs().max()))
        error = float((expected.float() - actual).abs().max())
        if not math.isfinite(error) or error > 1e-3 * scale:
            raise ConversionError(f"the packed model disagrees with PyTorch (max |Δ| = {error:.3g})",
                                  "report this as a bug, with the model")
