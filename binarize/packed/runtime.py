"""The packed runtime: runs a `.bnz` graph with bitwise kernels for the binary layers.

Imports only `binarize.packed.{format,bits,graph,kernels}`, NumPy and torch (for the float
ops), so a deployment needs neither the estimators, nor torch.fx, nor onnx.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from binarize.errors import BinarizeError, FormatError, first_line
from binarize.packed import kernels
from binarize.packed.bits import pad_bits_clear, unpack_signs
from binarize.packed.format import parse_json, read_bnz, tensor_specs
from binarize.packed.graph import (
    BINARY_CONV,
    BINARY_LINEAR,
    CONSTANT,
    FUNCTIONS,
    MODULE_OPS,
    Graph,
    Node,
    Ref,
    binary_row_length,
    parse_graph,
)


class BinaryConv:
    """A packed binary convolution: ``(K − 2·popcount(a xor w) − border) · α + bias``."""

    def __init__(self, params: Mapping[str, Any], bits: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None) -> None:
        self.out_channels, self.k = binary_row_length(BINARY_CONV, params)
        self.dims = params["dims"]
        self.groups = params["groups"]
        self.kernel = tuple(params["kernel_size"])
        self.stride = tuple(params["stride"])
        self.padding = tuple(params["padding"])
        self.dilation = tuple(params["dilation"])
        self.padding_mode = params["padding_mode"]
        self.binary_input = params["binary_input"]
        self.in_channels = params["in_channels"]
        rows = unpack_signs(bits, self.k)
        self.signs = torch.from_numpy(rows.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel))
        self.words = kernels.conv_weight_layout(rows, self.groups, self.in_channels // self.groups, self.kernel)
        self.alpha = torch.from_numpy(alpha)
        self.bias = None if bias is None else torch.from_numpy(bias)
        self._ones = torch.ones(self.out_channels)
        self._zeros = torch.zeros(self.out_channels)
        self._border: dict[tuple[int, int, tuple[int, int]], np.ndarray] = {}

    def __call__(self, x: Tensor) -> Tensor:
        if self.binary_input:
            return self._packed(x, self.alpha, self.bias)
        y = self._float_conv(x)  # W1A32: float activations against ±1 weights
        shape = (1, -1) + (1,) * (y.dim() - 2)
        y = y * self.alpha.reshape(shape)
        return y if self.bias is None else y + self.bias.reshape(shape)

    def fold(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Applies ``y ↦ y·scale + shift`` per output channel through α and bias."""
        self.alpha, self.bias = _folded(self.alpha, self.bias, scale, shift)

    def accumulators(self, x: Tensor) -> Tensor:
        """The integer dot products ``conv(sign(x), signs)`` (int32, NCHW or NCL), bit for bit."""
        return self._packed(x, self._ones, None).to(torch.int32)

    def _as_2d(self, x: Tensor) -> Tensor:
        """Conv1d runs as a 1×k conv2d: [N, C, L] → [N, C, 1, L]."""
        return x.unsqueeze(2) if self.dims == 1 else x

    def _from_2d(self, y: Tensor) -> Tensor:
        return y.squeeze(2) if self.dims == 1 else y

    def _float_conv(self, x: Tensor) -> Tensor:
        x, padding = self._as_2d(x), self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, [v for v in reversed(padding) for _ in range(2)], mode=self.padding_mode)
            padding = (0, 0)
        return self._from_2d(F.conv2d(x, self.signs, None, self.stride, padding, self.dilation, self.groups))

    def _packed(self, x: Tensor, alpha: Tensor, bias: Tensor | None) -> Tensor:
        """Sign-pack ``x`` and run the fused kernel: ``(dot − border) · alpha + bias``."""
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a {self.dims}-d input with {self.in_channels} channels, got {list(x.shape)}")
        x = self._as_2d(x)
        padding = self.padding
        if self.padding_mode != "zeros":
            # the ±1 of a reflected/replicated pixel is that pixel's own sign: pad, then pack
            x = F.pad(x, [v for v in reversed(padding) for _ in range(2)], mode=self.padding_mode)
            padding = (0, 0)
        height, width = x.shape[2], x.shape[3]
        out_size = tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip((height, width), padding, self.dilation, self.kernel, self.stride)
        )
        if min(out_size) < 1:
            raise ValueError(f"input {list(x.shape)} is smaller than the kernel")
        packed = kernels.pack_conv_input(x.detach().to(torch.float32).numpy(), self.groups, padding)
        y = kernels.binary_conv(packed, self.words, self.stride, self.dilation, out_size, self.k,
                                self._border_correction(height, width, padding), alpha.numpy(),
                                (self._zeros if bias is None else bias).numpy())
        return self._from_2d(torch.from_numpy(y).permute(0, 3, 1, 2))

    def _border_correction(self, height: int, width: int, padding: tuple[int, int]) -> np.ndarray:
        """Σ of the weights on zero-padding taps per output (``[OH, OW, O]`` int32), which the
        kernel counted as +1 activations; cached per input size."""
        key = (height, width, padding)
        if key not in self._border:
            indicator = torch.ones(1, self.in_channels, height + 2 * padding[0], width + 2 * padding[1])
            indicator[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width] = 0
            border = F.conv2d(indicator, self.signs, None, self.stride, 0, self.dilation, self.groups)
            self._border[key] = np.ascontiguousarray(border[0].round().to(torch.int32).permute(1, 2, 0).numpy())
        return self._border[key]


class BinaryLinear:
    """A packed binary linear layer: ``(K − 2·popcount(a xor w)) · α + bias``."""

    def __init__(self, params: Mapping[str, Any], bits: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None) -> None:
        self.out_features, self.k = binary_row_length(BINARY_LINEAR, params)
        self.binary_input = params["binary_input"]
        rows = unpack_signs(bits, self.k)
        self.signs = torch.from_numpy(rows)
        self.words = kernels.linear_weight_layout(rows)
        self.alpha = torch.from_numpy(alpha)
        self.bias = None if bias is None else torch.from_numpy(bias)

    def __call__(self, x: Tensor) -> Tensor:
        y = self.accumulators(x).to(torch.float32) if self.binary_input else F.linear(x, self.signs)
        y = y * self.alpha
        return y if self.bias is None else y + self.bias

    def fold(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Applies ``y ↦ y·scale + shift`` per output feature through α and bias."""
        self.alpha, self.bias = _folded(self.alpha, self.bias, scale, shift)

    def accumulators(self, x: Tensor) -> Tensor:
        """The integer dot products ``sign(x) @ signsᵀ`` (int32), bit for bit."""
        if x.shape[-1] != self.k:
            raise ValueError(f"expected [..., {self.k}] input, got {list(x.shape)}")
        rows = np.ascontiguousarray(x.detach().reshape(-1, self.k).numpy(), dtype=np.float32)
        mismatches = torch.from_numpy(kernels.linear_popcount(kernels.pack_rows(rows), self.words))
        return (self.k - 2 * mismatches).reshape(*x.shape[:-1], self.out_features)


def _folded(alpha: Tensor, bias: Tensor | None, scale: np.ndarray, shift: np.ndarray) -> tuple[Tensor, Tensor]:
    """``(dot·α + b)·scale + shift = dot·(α·scale) + (b·scale + shift)``, computed in float64."""
    old_bias = np.zeros(len(scale)) if bias is None else bias.numpy().astype(np.float64)
    with np.errstate(all="ignore"):
        new_alpha = alpha.numpy().astype(np.float64) * scale
        new_bias = old_bias * scale + shift
        return torch.from_numpy(new_alpha.astype(np.float32)), torch.from_numpy(new_bias.astype(np.float32))


class PackedModel:
    """A loaded `.bnz` model: call it like the PyTorch model it was exported from."""

    def __init__(self, graph: Graph, steps: list[tuple[Node, Callable[..., Any]]], metadata: Mapping[str, str]) -> None:
        self.graph = graph
        self._steps = steps
        self.metadata = dict(metadata)
        self._times: dict[str, float] = {}
        self._release = _release_schedule(graph)

    @property
    def binary_layers(self) -> dict[str, BinaryConv | BinaryLinear]:
        """The packed binary layers by node name (their ``accumulators`` give the integer dots)."""
        return {node.name: fn for node, fn in self._steps if isinstance(fn, (BinaryConv, BinaryLinear))}

    @staticmethod
    def set_num_threads(threads: int) -> None:
        """Threads for the bitwise kernels and torch's float ops."""
        kernels.set_num_threads(threads)
        torch.set_num_threads(threads)

    @torch.no_grad()
    def __call__(self, *inputs: Tensor | np.ndarray, profile: bool = False) -> Any:
        """Runs the graph on ``inputs`` (tensors or arrays, as the exported model took them).

        With ``profile`` each node is timed; `per_layer_times` returns the result. A node that
        fails (e.g. an input of the wrong shape) raises one `FormatError` naming it.
        """
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"expected {len(self.graph.inputs)} input(s), got {len(inputs)}")
        env: dict[str, Any] = {name: _channels_last(value) for name, value in zip(self.graph.inputs, inputs)}
        times: dict[str, float] = {}
        for index, (node, fn) in enumerate(self._steps):
            start = time.perf_counter() if profile else 0.0
            args = _resolve(node.args, env)
            kwargs = _resolve(node.kwargs, env)
            try:
                env[node.name] = fn(*args, **kwargs)
            except BinarizeError:
                raise
            except Exception as err:  # a float op refusing its input: one clear line, not a trace
                raise FormatError(
                    f"node {node.name!r} ({node.op}) failed: {type(err).__name__}: {first_line(err, 120)}",
                    "check that the input has the shape the model was exported with",
                ) from err
            for name in self._release[index]:  # free activations after their last use
                del env[name]
            if profile:
                times[node.name] = time.perf_counter() - start
        if profile:
            self._times = times
        return _resolve(self.graph.output, env)

    def per_layer_times(self) -> dict[str, float]:
        """Seconds per node of the last call made with ``profile=True``, in graph order."""
        return dict(self._times)

    def node_ops(self) -> dict[str, str]:
        """Each node's op name (e.g. ``binary.conv``, ``module.BatchNorm2d``)."""
        return {node.name: node.op for node, _ in self._steps}


def _references(value: Any) -> list[str]:
    if isinstance(value, Ref):
        return [value.name]
    if isinstance(value, (list, tuple)):
        return [name for v in value for name in _references(v)]
    if isinstance(value, dict):
        return [name for v in value.values() for name in _references(v)]
    if isinstance(value, slice):
        return _references([value.start, value.stop, value.step])
    return []


def _release_schedule(graph: Graph) -> list[list[str]]:
    """For each step, the values no later step (nor the output) reads: freed right after it,
    so activations do not pile up and the allocator reuses warm memory."""
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in _references([node.args, node.kwargs]):
            last_use[name] = index
    kept = set(_references(graph.output))
    schedule: list[list[str]] = [[] for _ in graph.nodes]
    for name, index in last_use.items():
        if name not in kept:
            schedule[index].append(name)
    return schedule


def _channels_last(value: Any) -> Any:
    """Images in channels_last: torch's CPU pooling and convolution are several times faster
    on it, and the packed kernels write it natively. Values are unchanged; only strides differ."""
    if isinstance(value, np.ndarray):
        value = torch.as_tensor(value, dtype=torch.float32)
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _resolve(value: Any, env: Mapping[str, Any]) -> Any:
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_resolve(value.start, env), _resolve(value.stop, env), _resolve(value.step, env))
    return value


def _step(node: Node, tensors: Mapping[str, np.ndarray]) -> Callable[..., Any]:
    """The callable that executes ``node`` (validated by `parse_graph` already)."""
    if node.op in (BINARY_CONV, BINARY_LINEAR):
        _, k = binary_row_length(node.op, node.params)
        bits = tensors[node.tensors["bits"]]
        if not pad_bits_clear(bits, k):
            raise FormatError(f"binary layer {node.name!r} has nonzero pad bits",
                              "the file is corrupted; re-export it")
        bias = tensors[node.tensors["bias"]] if "bias" in node.tensors else None
        layer = BinaryConv if node.op == BINARY_CONV else BinaryLinear
        return layer(node.params, bits, tensors[node.tensors["alpha"]], bias)
    as_torch = {role: _channels_last(torch.from_numpy(np.array(tensors[name]))) if role == "weight"
                else torch.from_numpy(np.array(tensors[name])) for role, name in node.tensors.items()}
    if node.op == CONSTANT:
        value = as_torch["value"]
        return lambda: value
    kind, _, target = node.op.partition(".")
    if kind == "module":
        spec = MODULE_OPS[target]
        module_tensors = {role: as_torch.get(role) for role in spec.tensors}
        return lambda *args, **kwargs: spec.run(node.params, module_tensors, *args, **kwargs)
    if kind == "function":
        return FUNCTIONS[target]
    return lambda self, *args, **kwargs: getattr(self, target)(*args, **kwargs)


def load_packed(path: str | Path) -> PackedModel:
    """Loads a `.bnz` file after validating all of it (a `FormatError` on any defect)."""
    metadata, tensors = read_bnz(path)
    graph = parse_graph(parse_json(metadata["graph"], "graph"), tensor_specs(tensors))
    parse_json(metadata["config"], "config")
    steps = [(node, _step(node, tensors)) for node in graph.nodes]
    return PackedModel(graph, _fold_batch_norms(graph, steps, tensors), metadata)


def _identity(x: Tensor) -> Tensor:
    return x


def _fold_batch_norms(graph: Graph, steps: list[tuple[Node, Callable[..., Any]]],
                      tensors: Mapping[str, np.ndarray]) -> list[tuple[Node, Callable[..., Any]]]:
    """Folds an inference batch norm that is a binary layer's only consumer into that layer's
    α and bias (the kernel's epilogue applies them for free); the norm becomes the identity.
    Integer accumulators are untouched; outputs change only by float rounding."""
    users: dict[str, int] = {}
    for name in _references([[node.args, node.kwargs] for node in graph.nodes]) + _references(graph.output):
        users[name] = users.get(name, 0) + 1
    layers = {node.name: fn for node, fn in steps if isinstance(fn, (BinaryConv, BinaryLinear))}
    folded = []
    for node, fn in steps:
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (
            node.op in ("module.BatchNorm1d", "module.BatchNorm2d") and isinstance(source, Ref)
            and source.name in layers and users[source.name] == 1 and "running_mean" in node.tensors
            and (node.op == "module.BatchNorm2d") == isinstance(layers[source.name], BinaryConv)
            and all(tensors[name].dtype == np.float32 and tensors[name].shape == layers[source.name].alpha.shape
                    for name in node.tensors.values())
        ):
            out = layers[source.name].alpha.numel()
            with np.errstate(all="ignore"):  # odd statistics give NaN/inf, as torch's batch_norm would
                stats = {role: tensors[name].astype(np.float64) for role, name in node.tensors.items()}
                scale = stats.get("weight", np.ones(out)) / np.sqrt(stats["running_var"] + node.params["eps"])
                shift = stats.get("bias", np.zeros(out)) - stats["running_mean"] * scale
            layers[source.name].fold(scale, shift)
            fn = _identity
        folded.append((node, fn))
    return folded
