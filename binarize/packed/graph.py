"""The graph recorded in a `.bnz` file: its schema, the allowlist of operations, validation.

A graph is ``{"inputs": [names], "nodes": [node, ...], "output": value}`` with nodes in
topological order. A node is ``{"name", "op", "args", "kwargs", "params", "tensors"}``:

- ``op`` is ``binary.conv`` / ``binary.linear`` (the packed layers), ``module.<Type>`` (a float
  `torch.nn` layer from `MODULE_OPS`), ``function.<name>`` (`FUNCTIONS`), ``method.<name>``
  (`METHODS`) or ``constant`` (a stored tensor);
- ``args``/``kwargs`` are values: JSON scalars, lists, ``{"ref": node}``, ``{"tuple": [...]}``,
  ``{"slice": [a, b, c]}``, ``{"ellipsis": null}``, ``{"dtype": "float32"}``, ``{"float": "inf"}``;
- ``params`` are the op's JSON hyperparameters, ``tensors`` map a role to a stored tensor name.

Only names in these tables can run; this module is shared by the writer (which refuses anything
else at export time, naming it) and the runtime (which refuses it at load time). It imports
torch but not torch.fx.
"""

from __future__ import annotations

import importlib
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from binarize.errors import FormatError
from binarize.packed.bits import words_per_row

BINARY_CONV = "binary.conv"
BINARY_LINEAR = "binary.linear"
CONSTANT = "constant"

#: call_function targets the runtime executes, by recorded name
FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f"operator.{n}": getattr(operator, n) for n in (
        "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pow", "matmul", "getitem",
        "iadd", "imul", "eq", "ne", "lt", "le", "gt", "ge",
    )},
    "builtins.getattr": getattr,
    **{f"torch.{n}": getattr(torch, n) for n in (
        "add", "sub", "mul", "div", "matmul", "bmm", "cat", "concat", "stack", "flatten",
        "reshape", "permute", "transpose", "roll", "chunk", "split", "mean", "sum", "amax",
        "unsqueeze", "squeeze", "narrow", "relu", "sigmoid", "tanh", "exp", "sqrt", "rsqrt",
        "clamp", "softmax", "where", "flip", "abs", "neg", "erf", "zeros_like", "ones_like",
        "einsum", "_assert", "arange", "meshgrid", "tile", "full_like", "swapaxes",
    )},
    **{f"torch.nn.functional.{n}": getattr(F, n) for n in (
        "relu", "relu6", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh",
        "leaky_relu", "elu", "selu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
        "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d",
        "max_pool2d", "layer_norm", "group_norm", "batch_norm", "linear", "conv1d", "conv2d",
        "pad", "interpolate", "normalize", "scaled_dot_product_attention",
    )},
}



def _stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """torchvision's stochastic depth at inference: the identity (the writer traces in eval)."""
    if training:
        raise ValueError("stochastic_depth recorded in training mode")
    return input


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A library function imported on first call (only models that use it need the library)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


_SWIN = "torchvision.models.swin_transformer"

#: functions of other libraries (torch.fx-wrapped leaves in their models), by ``module.name``
FOREIGN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
    **{f"{_SWIN}.{n}": _lazy(_SWIN, n) for n in (
        "shifted_window_attention", "_get_relative_position_bias", "_patch_merging_pad",
    )},
}
FUNCTIONS.update(FOREIGN_FUNCTIONS)

#: tensor methods (call_method) the runtime executes
METHODS: frozenset[str] = frozenset({
    "view", "reshape", "permute", "transpose", "contiguous", "flatten", "size", "dim", "mean",
    "sum", "amax", "chunk", "split", "unsqueeze", "squeeze", "expand", "expand_as", "flip",
    "clone", "mul", "add", "sub", "div", "softmax", "sigmoid", "relu", "tanh", "matmul", "narrow",
    "repeat", "float", "type_as", "view_as", "reshape_as", "t", "clamp", "clamp_min", "pow",
    "sqrt", "exp", "masked_fill", "__getitem__", "swapaxes", "unbind", "numel",
})

#: attributes ``getattr(x, name)`` may read
ATTRIBUTES: frozenset[str] = frozenset({"shape", "dtype", "T", "mT", "ndim"})

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}


@dataclass(frozen=True)
class ModuleOp:
    """A float `torch.nn` layer: which attributes and tensors to record, and how to run it."""

    params: tuple[str, ...]
    tensors: tuple[str, ...]
    run: Callable[..., Any]


def _conv(dims: int) -> Callable[..., Any]:
    conv = F.conv1d if dims == 1 else F.conv2d

    def run(p: Mapping[str, Any], t: Mapping[str, Tensor | None], x: Tensor) -> Tensor:
        padding = p["padding"]
        if p["padding_mode"] != "zeros":
            pads = [v for v in reversed(padding) for _ in range(2)]
            x = F.pad(x, pads, mode=p["padding_mode"])
            padding = 0
        return conv(x, t["weight"], t["bias"], p["stride"], padding, p["dilation"], p["groups"])

    return run


def _batch_norm(p: Mapping[str, Any], t: Mapping[str, Tensor | None], x: Tensor) -> Tensor:
    use_batch = t["running_mean"] is None
    return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"], use_batch, 0.0, p["eps"])


def _positional(fn: Callable[..., Tensor], *names: str) -> Callable[..., Any]:
    """Runs ``fn(x, *params[names])``: layers whose module form is the functional one."""
    return lambda p, t, x: fn(x, *(p[n] for n in names))


def _attention(p: Mapping[str, Any], t: Mapping[str, Tensor | None], query: Tensor, key: Tensor, value: Tensor,
               key_padding_mask: Tensor | None = None, need_weights: bool = True,
               attn_mask: Tensor | None = None, average_attn_weights: bool = True,
               is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    if p["batch_first"]:
        query, key, value = (v.transpose(0, 1) for v in (query, key, value))
    out, weights = F.multi_head_attention_forward(
        query, key, value, p["embed_dim"], p["num_heads"], t["in_proj_weight"], t["in_proj_bias"],
        t["bias_k"], t["bias_v"], p["add_zero_attn"], 0.0, t["out_proj.weight"], t["out_proj.bias"],
        training=False, key_padding_mask=key_padding_mask, need_weights=need_weights,
        attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal,
    )
    return (out.transpose(0, 1) if p["batch_first"] else out), weights


_POOL2D = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_NO_PARAMS: tuple[str, ...] = ()

#: float `torch.nn` layers by class name (subclasses are recorded under their allowlisted base)
MODULE_OPS: dict[str, ModuleOp] = {
    "Conv1d": ModuleOp(("stride", "padding", "dilation", "groups", "padding_mode"), ("weight", "bias"), _conv(1)),
    "Conv2d": ModuleOp(("stride", "padding", "dilation", "groups", "padding_mode"), ("weight", "bias"), _conv(2)),
    "Linear": ModuleOp(_NO_PARAMS, ("weight", "bias"), lambda p, t, x: F.linear(x, t["weight"], t["bias"])),
    "BatchNorm1d": ModuleOp(("eps",), ("running_mean", "running_var", "weight", "bias"), _batch_norm),
    "BatchNorm2d": ModuleOp(("eps",), ("running_mean", "running_var", "weight", "bias"), _batch_norm),
    "LayerNorm": ModuleOp(("normalized_shape", "eps"), ("weight", "bias"),
                          lambda p, t, x: F.layer_norm(x, p["normalized_shape"], t["weight"], t["bias"], p["eps"])),
    "GroupNorm": ModuleOp(("num_groups", "eps"), ("weight", "bias"),
                          lambda p, t, x: F.group_norm(x, p["num_groups"], t["weight"], t["bias"], p["eps"])),
    "ReLU": ModuleOp(_NO_PARAMS, (), _positional(F.relu)),
    "ReLU6": ModuleOp(_NO_PARAMS, (), _positional(F.relu6)),
    "SiLU": ModuleOp(_NO_PARAMS, (), _positional(F.silu)),
    "Mish": ModuleOp(_NO_PARAMS, (), _positional(F.mish)),
    "GELU": ModuleOp(("approximate",), (), lambda p, t, x: F.gelu(x, approximate=p["approximate"])),
    "Hardswish": ModuleOp(_NO_PARAMS, (), _positional(F.hardswish)),
    "Hardsigmoid": ModuleOp(_NO_PARAMS, (), _positional(F.hardsigmoid)),
    "Sigmoid": ModuleOp(_NO_PARAMS, (), _positional(torch.sigmoid)),
    "Tanh": ModuleOp(_NO_PARAMS, (), _positional(torch.tanh)),
    "Hardtanh": ModuleOp(("min_val", "max_val"), (), _positional(F.hardtanh, "min_val", "max_val")),
    "LeakyReLU": ModuleOp(("negative_slope",), (), _positional(F.leaky_relu, "negative_slope")),
    "ELU": ModuleOp(("alpha",), (), _positional(F.elu, "alpha")),
    "PReLU": ModuleOp(_NO_PARAMS, ("weight",), lambda p, t, x: F.prelu(x, t["weight"])),
    "Softmax": ModuleOp(("dim",), (), lambda p, t, x: F.softmax(x, p["dim"])),
    "Identity": ModuleOp(_NO_PARAMS, (), lambda p, t, x, *rest, **kw: x),
    "Dropout": ModuleOp(_NO_PARAMS, (), lambda p, t, x: x),
    "Dropout2d": ModuleOp(_NO_PARAMS, (), lambda p, t, x: x),
    "Flatten": ModuleOp(("start_dim", "end_dim"), (), lambda p, t, x: torch.flatten(x, p["start_dim"], p["end_dim"])),
    "MaxPool1d": ModuleOp(_POOL2D, (), _positional(F.max_pool1d, *_POOL2D)),
    "MaxPool2d": ModuleOp(_POOL2D, (), _positional(F.max_pool2d, *_POOL2D)),
    "AvgPool2d": ModuleOp(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
                          (), _positional(F.avg_pool2d, "kernel_size", "stride", "padding", "ceil_mode",
                                    "count_include_pad", "divisor_override")),
    "AdaptiveAvgPool1d": ModuleOp(("output_size",), (), _positional(F.adaptive_avg_pool1d, "output_size")),
    "AdaptiveAvgPool2d": ModuleOp(("output_size",), (), _positional(F.adaptive_avg_pool2d, "output_size")),
    "AdaptiveMaxPool2d": ModuleOp(("output_size",), (), _positional(F.adaptive_max_pool2d, "output_size")),
    "MultiheadAttention": ModuleOp(
        ("embed_dim", "num_heads", "batch_first", "add_zero_attn"),
        ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj.weight", "out_proj.bias"),
        _attention,
    ),
}

#: tensor roles of the binary ops: role → (dtype, optional)
BINARY_TENSORS = {"bits": ("U64", False), "alpha": ("F32", False), "bias": ("F32", True)}

#: bounds on recorded integers: a hostile header cannot ask for absurd work or memory
MAX_INT = 1 << 24


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    params: dict[str, Any]
    tensors: dict[str, str]


@dataclass(frozen=True)
class Ref:
    """A reference to an earlier node's value (or a graph input)."""

    name: str


@dataclass(frozen=True)
class Graph:
    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    output: Any


def known_op(op: str) -> bool:
    kind, _, name = op.partition(".")
    if op in (BINARY_CONV, BINARY_LINEAR, CONSTANT):
        return True
    return (
        (kind == "module" and name in MODULE_OPS)
        or (kind == "function" and name in FUNCTIONS)
        or (kind == "method" and name in METHODS)
    )


def _bad(what: str) -> FormatError:
    return FormatError(f"malformed .bnz graph: {what}", "re-export the model with `binarize export --packed`")


def decode_value(value: Any, defined: set[str]) -> Any:
    """A recorded value → its Python value (`Ref` for node references), validating as it goes."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _bad(f"integer {value} out of range")
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return [decode_value(v, defined) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "ref" and isinstance(inner, str):
            if inner not in defined:
                raise _bad(f"reference to {inner!r} before it is defined")
            return Ref(inner)
        if tag == "tuple" and isinstance(inner, list):
            return tuple(decode_value(v, defined) for v in inner)
        if tag == "slice" and isinstance(inner, list) and len(inner) == 3:
            return slice(*(decode_value(v, defined) for v in inner))
        if tag == "ellipsis" and inner is None:
            return Ellipsis
        if tag == "dtype" and inner in DTYPES:
            return DTYPES[inner]
        if tag == "float" and inner in ("inf", "-inf", "nan"):
            return float(inner)
    raise _bad(f"unknown value {str(value)[:60]!r}")


def _int_tuple(params: Mapping[str, Any], key: str, length: int, minimum: int) -> tuple[int, ...]:
    value = params.get(key)
    if (
        not isinstance(value, list) or len(value) != length
        or not all(type(v) is int and minimum <= v <= MAX_INT for v in value)
    ):
        raise _bad(f"{key} must be {length} integers ≥ {minimum}, got {str(value)[:60]}")
    return tuple(value)


def _positive_int(params: Mapping[str, Any], key: str) -> int:
    value = params.get(key)
    if type(value) is not int or not 1 <= value <= MAX_INT:
        raise _bad(f"{key} must be a positive integer, got {str(value)[:60]}")
    return value


def binary_row_length(op: str, params: Mapping[str, Any]) -> tuple[int, int]:
    """Validated ``(O, K)`` of a binary op: output channels and bits per row."""
    if op == BINARY_LINEAR:
        if set(params) != {"in_features", "out_features", "binary_input"}:
            raise _bad(f"binary.linear params {sorted(params)}")
        return _positive_int(params, "out_features"), _positive_int(params, "in_features")
    expected = {"dims", "in_channels", "out_channels", "kernel_size", "stride", "padding",
                "dilation", "groups", "padding_mode", "binary_input"}
    if set(params) != expected:
        raise _bad(f"binary.conv params {sorted(params)}")
    if params["dims"] not in (1, 2):
        raise _bad("binary.conv dims must be 1 or 2")
    kernel = _int_tuple(params, "kernel_size", 2, 1)
    _int_tuple(params, "stride", 2, 1)
    _int_tuple(params, "dilation", 2, 1)
    _int_tuple(params, "padding", 2, 0)
    if params["padding_mode"] not in ("zeros", "reflect", "replicate", "circular"):
        raise _bad(f"padding_mode {str(params['padding_mode'])[:40]!r}")
    dilation, padding = params["dilation"], params["padding"]
    if any(p > d * (k - 1) for p, d, k in zip(padding, dilation, kernel)):
        raise _bad("padding wider than the kernel's reach (such taps would see only padding)")
    groups = _positive_int(params, "groups")
    channels, out_channels = _positive_int(params, "in_channels"), _positive_int(params, "out_channels")
    if channels % groups or out_channels % groups:
        raise _bad("groups must divide in_channels and out_channels")
    return out_channels, channels // groups * kernel[0] * kernel[1]


def _check_binary(node: Node, specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    out_channels, k = binary_row_length(node.op, node.params)
    if not isinstance(node.params["binary_input"], bool):
        raise _bad(f"{node.name}: binary_input must be true or false")
    expected_shapes = {"bits": (out_channels, words_per_row(k)), "alpha": (out_channels,), "bias": (out_channels,)}
    for role, (dtype, optional) in BINARY_TENSORS.items():
        if role not in node.tensors:
            if optional:
                continue
            raise FormatError(f"missing tensor {role!r} of binary layer {node.name!r}",
                              "re-export the model with `binarize export --packed`")
        stored_dtype, shape = specs[node.tensors[role]]
        if stored_dtype != dtype or shape != expected_shapes[role]:
            raise FormatError(
                f"tensor {node.tensors[role]!r} is {stored_dtype}{list(shape)}, "
                f"expected {dtype}{list(expected_shapes[role])}",
                "re-export the model with `binarize export --packed`",
            )


def parse_graph(raw: Any, specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> Graph:
    """Validates a decoded graph against the stored tensors' ``(dtype, shape)`` specs.

    Every op must be allowlisted, every reference defined earlier, every tensor role filled by
    a stored tensor of the right dtype and shape, and every stored tensor used exactly once.
    """
    if not isinstance(raw, dict) or set(raw) != {"inputs", "nodes", "output"}:
        raise _bad("top level must have exactly inputs, nodes, output")
    inputs, raw_nodes = raw["inputs"], raw["nodes"]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(n, str) for n in inputs):
        raise _bad("inputs must be a non-empty list of names")
    if not isinstance(raw_nodes, list):
        raise _bad("nodes must be a list")
    defined: set[str] = set()
    for name in inputs:
        if name in defined:
            raise _bad(f"duplicate input {name!r}")
        defined.add(name)
    used: set[str] = set()
    nodes = []
    for raw_node in raw_nodes:
        node = _parse_node(raw_node, defined, specs, used)
        defined.add(node.name)
        nodes.append(node)
    unused = sorted(set(specs) - used)
    if unused:
        raise _bad(f"stored tensor {unused[0]!r} is not used by the graph")
    return Graph(tuple(inputs), tuple(nodes), decode_value(raw["output"], defined))


def _parse_node(raw: Any, defined: set[str], specs: Mapping[str, tuple[str, tuple[int, ...]]],
                used: set[str]) -> Node:
    if not isinstance(raw, dict) or set(raw) != {"name", "op", "args", "kwargs", "params", "tensors"}:
        raise _bad("a node must have exactly name, op, args, kwargs, params, tensors")
    name, op = raw["name"], raw["op"]
    if not isinstance(name, str) or not name or name in defined:
        raise _bad(f"node name {str(name)[:40]!r} is empty, not a string or defined twice")
    if not isinstance(op, str) or not known_op(op):
        raise FormatError(f"unknown op {str(op)[:60]!r} in node {name!r}",
                          "this runtime supports the ops listed in binarize/packed/SPEC.md; update binarize")
    args, kwargs, params, tensors = raw["args"], raw["kwargs"], raw["params"], raw["tensors"]
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(params, dict):
        raise _bad(f"node {name!r}: args must be a list, kwargs and params objects")
    if not isinstance(tensors, dict) or not all(isinstance(v, str) for v in tensors.values()):
        raise _bad(f"node {name!r}: tensors must map roles to tensor names")
    for tensor in tensors.values():
        if tensor not in specs:
            raise FormatError(f"missing tensor {tensor!r} (node {name!r})",
                              "the file is incomplete or corrupted; re-export it")
        if tensor in used:
            raise _bad(f"tensor {tensor!r} used twice")
        used.add(tensor)
    node = Node(
        name, op,
        tuple(decode_value(a, defined) for a in args),
        {str(k): decode_value(v, defined) for k, v in kwargs.items()},
        {str(k): decode_value(v, set()) for k, v in params.items()},
        dict(tensors),
    )
    _check_node(node, specs)
    return node


def _check_node(node: Node, specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    if node.op in (BINARY_CONV, BINARY_LINEAR):
        _check_binary(node, specs)
        return
    kind, _, target = node.op.partition(".")
    if node.op == CONSTANT:
        if set(node.tensors) != {"value"}:
            raise _bad(f"constant {node.name!r} must have one tensor 'value'")
    elif kind == "module":
        spec = MODULE_OPS[target]
        if set(node.params) != set(spec.params) or not set(node.tensors) <= set(spec.tensors):
            raise _bad(f"node {node.name!r}: params/tensors do not match {target}")
    elif node.params or node.tensors:
        raise _bad(f"node {node.name!r}: {kind} ops take no params or tensors")
    if node.op == "function.builtins.getattr" and (len(node.args) != 2 or node.args[1] not in ATTRIBUTES):
        raise _bad(f"node {node.name!r}: getattr may read only {sorted(ATTRIBUTES)}")
    for role, tensor in node.tensors.items():
        if specs[tensor][0] not in ("F32", "I64", "BOOL"):
            raise _bad(f"tensor {tensor!r} ({role}) has dtype {specs[tensor][0]}")


def finite_or_tagged(value: float) -> Any:
    """A float as the graph records it (JSON has no inf/nan)."""
    return value if math.isfinite(value) else {"float": str(value)}
