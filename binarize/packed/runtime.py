"""The packed runtime: binary nodes in the native kernels, every float part in onnxruntime.

At load the file is validated whole (`binarize.packed.validate`), W1A32 nodes are expanded into
standard ONNX ops (a float Conv/MatMul on their unpacked ±1 weights), and the graph is cut
into stages: a binary node's stage is one more than its inputs', a float node's is the
largest of its inputs'. The float nodes of one stage form one in-memory onnxruntime session;
the binary nodes of a stage run after it in the kernels, which keep their weights packed. A
segment with little work per sample runs on one onnxruntime thread unless the batch makes it
large (a second session). Float weight matrices (Gemm/MatMul) are fed to their session on each
call rather than held by it, so they are resident once. A call runs that precomputed schedule
and frees each value after its last use.

Imports NumPy, onnx and onnxruntime only: neither torch nor numba.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from binarize.errors import BinarizeError, FormatError
from binarize.packed import kernels, ops
from binarize.packed.bits import unpack_signs
from binarize.packed.format import CHECKSUM_KEY
from binarize.packed.validate import binary_node_attributes, read_packed, sample_shape, tensor_dims

#: onnxruntime fusions that fold α into ±1 weights and move rounding (see binarize.export.onnx).
DISABLED_OPTIMIZERS = ("ConvMulFusion",)
_RUN_FIX = "give inputs of the shape and dtype the model was exported with"
_CALIBRATION_BATCHES = 4
#: float segments (per call) with fewer multiply-adds run on one onnxruntime thread: waking a
#: second one costs more than it saves, and on a busy machine it may not run for milliseconds
#: (measured: ResNet-20 at 2 threads, whose float segments are all this small, took 3–5× longer
#: with both cores busy; onnxruntime int8 1.2×)
_PARALLEL_MACS = 1 << 20


@dataclass(frozen=True)
class _Step:
    """One scheduled piece: a float session or a binary kernel, the values it reads and writes.

    ``run`` reads its inputs from the call's values by name and adds its outputs there: a
    ResNet-20 forward is 22 steps of 15–40 µs, and gathering each step's inputs into a list and
    its results back (a comprehension, a zip and an update) cost about 1 µs per step."""

    name: str
    run: Callable[[dict[str, np.ndarray]], None]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    release: tuple[str, ...]  # values no later step reads


class PackedModel:
    """A loaded packed file; call it on NumPy arrays (anything `np.asarray` takes).

        >>> model = load_packed("digits.bnz")              # doctest: +SKIP
        >>> logits = model(np.zeros((1, 1, 8, 8), np.float32))  # doctest: +SKIP

    ``threads`` sets both the kernels' and onnxruntime's thread count (default: the CPUs this
    process may use). With ``int8_float_layers`` the float Conv/Gemm/MatMul layers run as
    onnxruntime int8 (U8S8 static QDQ), calibrated on ``calibration`` batches (default: a few
    standard-normal batches of the input shape the file declares). ``binary_layers`` maps each
    W1A1 node's name to its kernel wrapper, whose ``accumulate(x)`` gives the exact integer dots.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, int8_float_layers: bool = False,
                 calibration: Sequence[np.ndarray] | None = None) -> None:
        self.path = Path(path)
        self.int8_float_layers = int8_float_layers
        self._calibration = calibration
        self._checksum: str | None = None
        self._times: dict[str, float] = {}
        self._build(threads or kernels.usable_cpus())

    def _build(self, threads: int) -> None:
        model = read_packed(self.path)
        checksum = {p.key: p.value for p in model.metadata_props}[CHECKSUM_KEY]
        if self._checksum not in (None, checksum):
            raise FormatError(f"{self.path} changed since it was loaded", "load it again")
        self._checksum, self.threads = checksum, threads
        self.metadata = {p.key: p.value for p in model.metadata_props}
        kernels.set_num_threads(threads)
        plan = _Plan(model)
        self.inputs = tuple(v.name for v in model.graph.input if v.name not in plan.constants)
        self.outputs = tuple(v.name for v in model.graph.output)
        self._input_dims = [tensor_dims(v.type) or [] for v in model.graph.input if v.name in self.inputs]
        self.binary_layers = plan.kernels
        steps = plan.steps(threads)
        if self.int8_float_layers:
            steps = plan.quantized(steps, threads, self._calibration_feeds())
        self._steps = _with_releases(steps, self.outputs)
        del model, plan, steps
        _return_freed_memory()

    def input_shape(self) -> tuple[int, ...] | None:
        """The first input's shape without the batch dimension, when the file fixes it."""
        return sample_shape(self._input_dims)

    def _calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        if self._calibration is not None:
            return [{self.inputs[0]: np.asarray(x, np.float32)} for x in self._calibration]
        rng = np.random.default_rng(0)
        return [{name: rng.standard_normal([d or 1 for d in dims]).astype(np.float32)
                 for name, dims in zip(self.inputs, self._input_dims)} for _ in range(_CALIBRATION_BATCHES)]

    def set_num_threads(self, threads: int) -> None:
        """Threads for the kernels and onnxruntime (sessions are rebuilt from the file)."""
        if threads != self.threads:
            self._build(max(1, int(threads)))
        kernels.set_num_threads(self.threads)

    @property
    def weight_bytes(self) -> int:
        """Bytes the binary kernels hold (packed weights and epilogue vectors)."""
        return sum(layer.nbytes for layer in self.binary_layers.values())

    def __call__(self, *inputs: Any, profile: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
        """Runs the model; one array per graph output (a tuple when there are several).

        With ``profile`` each step is timed (`per_layer_times`). An input the model cannot
        take raises one `FormatError` naming the step that refused it.
        """
        if len(inputs) != len(self.inputs):
            raise FormatError(f"expected {len(self.inputs)} input(s), got {len(inputs)}", _RUN_FIX)
        env = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in zip(self.inputs, inputs)}
        times = {}
        for step in self._steps:
            start = time.perf_counter() if profile else 0.0
            try:
                step.run(env)
            except BinarizeError:
                raise
            except Exception as err:  # onnxruntime and the kernels refuse bad inputs in their own ways
                message = str(err).strip().splitlines()
                raise FormatError(f"step {step.name!r} failed: {type(err).__name__}: "
                                  f"{(message[0] if message else '')[:160]}", _RUN_FIX) from None
            for name in step.release:
                del env[name]
            if profile:
                times[step.name] = time.perf_counter() - start
        if profile:
            self._times = times
        outputs = tuple(env[name] for name in self.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def per_layer_times(self) -> dict[str, float]:
        """Seconds per step (binary node or float segment) of the last ``profile=True`` call."""
        return dict(self._times)

    def step_kinds(self) -> dict[str, str]:
        """Each step's kind: the binarize op name, or ``float`` for an onnxruntime segment."""
        return {s.name: (type(self.binary_layers[s.name].kernel).__name__ if s.name in self.binary_layers else "float")
                for s in self._steps}


def load_packed(path: str | Path, *, threads: int | None = None, int8_float_layers: bool = False,
                calibration: Sequence[np.ndarray] | None = None) -> PackedModel:
    """Validates and loads a packed file (one `FormatError` on any defect); see `PackedModel`."""
    return PackedModel(path, threads=threads, int8_float_layers=int8_float_layers, calibration=calibration)


def _with_releases(steps: list[_Step], keep: Sequence[str]) -> list[_Step]:
    last_use: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            last_use[name] = index
    releases: list[list[str]] = [[] for _ in steps]
    for name, index in last_use.items():
        if name not in keep:
            releases[index].append(name)
    for index, step in enumerate(steps):  # values nobody reads are dropped where they appear
        releases[index].extend(o for o in step.outputs if o not in last_use and o not in keep)
    return [_Step(s.name, s.run, s.inputs, s.outputs, tuple(dict.fromkeys(r))) for s, r in zip(steps, releases)]


class _Plan:
    """The validated graph cut into float segments and binary kernels (see the module doc)."""

    def __init__(self, model: Any) -> None:
        import onnx

        self.model = model
        graph = model.graph
        self.opsets = [o for o in model.opset_import if o.domain != ops.DOMAIN]
        self.constants = {t.name: t for t in graph.initializer}
        arrays = {name: onnx.numpy_helper.to_array(t) for name, t in self.constants.items()
                  if any(name in n.input[1:] for n in graph.node if n.domain == ops.DOMAIN)}
        self.kernels: dict[str, _Conv | _Linear] = {}
        self.nodes: list[Any] = []
        self.extra_constants: list[Any] = []
        # Constant nodes that only float nodes read join each segment that reads them (see
        # segment_model), so that onnxruntime sees the slice bounds and pads of option-A shortcuts
        # as constants instead of taking them as inputs on every call
        kept = {v.name for v in graph.output} | {i for n in graph.node if n.domain == ops.DOMAIN for i in n.input}
        self.constant_nodes = {n.output[0]: n for n in graph.node
                               if n.domain == "" and n.op_type == "Constant" and n.output[0] not in kept}
        for node in graph.node:
            if node.domain != ops.DOMAIN:
                if node.output[0] not in self.constant_nodes:
                    self.nodes.append(node)
                continue
            attributes = binary_node_attributes(node, arrays)
            if attributes.binarize_input:
                self.kernels[node.name or node.output[0]] = _kernel(node, attributes, arrays)
                self.nodes.append(node)
            else:
                self.nodes.extend(self._expanded(node, attributes, arrays))
        self.stages = self._stages(graph)
        self.types = {v.name: v.type for v in graph.input}

    def _expanded(self, node: Any, a: ops.ConvAttributes | ops.LinearAttributes, arrays: dict[str, np.ndarray]) -> list[Any]:
        """A W1A32 node as standard ops: float conv/matmul on ±1 weights, ×scale, +shift, +R, activation."""
        from onnx import helper, numpy_helper

        inputs = list(node.input) + [""] * (6 - len(node.input))
        name = node.name or node.output[0]
        signs = unpack_signs(arrays[inputs[ops.W]], a.row_bits)
        out = signs.shape[0]

        def constant(suffix: str, value: np.ndarray) -> str:
            self.extra_constants.append(numpy_helper.from_array(np.ascontiguousarray(value), f"{name}/{suffix}"))
            return f"{name}/{suffix}"

        value = f"{name}/product"
        broadcast: tuple[int, ...]
        if isinstance(a, ops.ConvAttributes):
            broadcast = (out,) + (1,) * len(a.kernel_shape)
            weight = constant("signs", signs.reshape(out, a.in_channels // a.group, *a.kernel_shape))
            nodes = [helper.make_node("Conv", [inputs[ops.X], weight], [value], kernel_shape=list(a.kernel_shape),
                                      strides=list(a.strides), pads=list(a.pads), dilations=list(a.dilations),
                                      group=a.group)]
        else:
            broadcast = (out,)
            nodes = [helper.make_node("MatMul", [inputs[ops.X], constant("signs", signs.T.copy())], [value])]
        # (op, operands after the running value)
        steps = [("Mul", [constant("scale", arrays[inputs[ops.SCALE]].reshape(broadcast))]),
                 ("Add", [constant("shift", arrays[inputs[ops.SHIFT]].reshape(broadcast))])]
        if inputs[ops.RESIDUAL]:
            steps.append(("Add", [inputs[ops.RESIDUAL]]))
        if a.activation == "relu":
            steps.append(("Relu", []))
        elif a.activation == "hardtanh":
            steps.append(("Clip", [constant("low", np.float32(-1)), constant("high", np.float32(1))]))
        elif a.activation == "prelu":
            steps.append(("PRelu", [constant("slope", arrays[inputs[ops.SLOPE]].reshape(broadcast))]))
        for index, (op, operands) in enumerate(steps):
            result = node.output[0] if index == len(steps) - 1 else f"{name}/{op}{index}"
            nodes.append(helper.make_node(op, [value, *operands], [result]))
            value = result
        return nodes

    def _stages(self, graph: Any) -> list[int]:
        stage_of: dict[str, int] = {v.name: 0 for v in graph.input}
        stages = []
        for node in self.nodes:
            stage = max((stage_of.get(i, 0) for i in node.input if i), default=0)
            stage += node.domain == ops.DOMAIN
            stages.append(stage)
            for output in node.output:
                stage_of[output] = stage
        return stages

    def steps(self, threads: int) -> list[_Step]:
        """The schedule: stage by stage, the float segment, then the binary nodes."""
        outputs = {v.name for v in self.model.graph.output}
        read_later: list[set[str]] = []
        for stage in range(max(self.stages, default=0) + 1):
            later = {i for node, s in zip(self.nodes, self.stages) if s > stage or (s == stage and node.domain == ops.DOMAIN)
                     for i in node.input}
            read_later.append(later | outputs)
        steps = []
        for stage in range(max(self.stages, default=0) + 1):
            segment = [n for n, s in zip(self.nodes, self.stages) if s == stage and n.domain != ops.DOMAIN]
            if segment:
                steps.append(self._float_step(f"float{stage}", segment, read_later[stage], threads))
            for node, s in zip(self.nodes, self.stages):
                if s == stage + 1 and node.domain == ops.DOMAIN:
                    steps.append(self._binary_step(node))
        return steps

    def _float_step(self, name: str, nodes: list[Any], wanted: set[str], threads: int, model: Any = None) -> _Step:
        segment = model if model is not None else self.segment_model(nodes, wanted)
        weights = _fed_weights(segment)
        model_bytes = segment.SerializeToString()
        per_sample = _multiply_adds(segment) if threads > 1 else 0.0
        if per_sample == 0:  # no batch gives it work for a second thread, whose pool and session cost memory
            threads = 1
        run = _session(model_bytes, threads).run
        inputs = tuple(v.name for v in segment.graph.input if v.name not in weights)
        outputs = tuple(v.name for v in segment.graph.output)
        names = list(outputs)
        if threads == 1 or per_sample >= _PARALLEL_MACS:
            def run_one(env: dict[str, np.ndarray]) -> None:
                env.update(zip(names, run(names, {**weights, **{i: env[i] for i in inputs}})))

            return _Step(name, run_one, inputs, outputs, ())
        run_alone = _session(model_bytes, 1).run  # small segment: one thread unless the batch is large

        def run_sized(env: dict[str, np.ndarray]) -> None:
            feed = {**weights, **{i: env[i] for i in inputs}}
            first = env[inputs[0]] if inputs else None
            batch = first.shape[0] if first is not None and first.ndim else 1
            chosen = run_alone if batch * per_sample < _PARALLEL_MACS else run
            env.update(zip(names, chosen(names, feed)))

        return _Step(name, run_sized, inputs, outputs, ())

    def segment_model(self, nodes: list[Any], wanted: set[str]) -> Any:
        """A standalone ONNX model of ``nodes``: its inputs, the outputs later steps read."""
        import onnx

        produced = {o for n in nodes for o in n.output}
        nodes = [self.constant_nodes[i] for i in dict.fromkeys(i for n in nodes for i in n.input)
                 if i in self.constant_nodes and i not in produced] + nodes
        produced = {o for n in nodes for o in n.output}
        constants = {t.name: t for t in [*self.model.graph.initializer, *self.extra_constants]}
        inputs = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in produced and i not in constants))
        used_constants = [constants[i] for i in dict.fromkeys(i for n in nodes for i in n.input) if i in constants]
        outputs = [o for n in nodes for o in n.output if o in wanted]
        graph = onnx.helper.make_graph(
            nodes, "segment", [onnx.ValueInfoProto(name=i, type=self.types[i]) for i in inputs],
            [onnx.ValueInfoProto(name=o) for o in outputs], used_constants)
        segment = onnx.helper.make_model(graph, opset_imports=self.opsets, ir_version=self.model.ir_version)
        inferred = onnx.shape_inference.infer_shapes(segment)
        known = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output] if v.type.HasField("tensor_type")}
        for value in segment.graph.output:
            if value.name not in known:
                raise FormatError(f"cannot infer the type of {value.name[:60]!r}", "re-export the model")
            value.type.CopyFrom(known[value.name])
            self.types[value.name] = known[value.name]
        return segment

    def _binary_step(self, node: Any) -> _Step:
        from onnx import TensorProto, helper

        name = node.name or node.output[0]
        layer = self.kernels[name]
        dims = tensor_dims(self.types.get(node.input[ops.X]))
        # the output's shape, where the input's is known, lets later segments count their work
        self.types[node.output[0]] = helper.make_tensor_type_proto(
            TensorProto.FLOAT, None if dims is None else layer.output_dims(dims))
        x, residual, output = node.input[ops.X], len(node.input) > ops.RESIDUAL and node.input[ops.RESIDUAL], node.output[0]
        if residual:
            def run_residual(env: dict[str, np.ndarray]) -> None:
                env[output] = layer(env[x], env[residual])

            return _Step(name, run_residual, (x, residual), (output,), ())

        def run(env: dict[str, np.ndarray]) -> None:
            env[output] = layer(env[x])

        return _Step(name, run, (x,), (output,), ())

    def quantized(self, steps: list[_Step], threads: int, feeds: list[dict[str, np.ndarray]]) -> list[_Step]:
        """Float segments with Conv/Gemm/MatMul layers replaced by their U8S8 QDQ quantization,
        calibrated on the inputs each segment sees when the model runs on ``feeds``."""
        seen: dict[str, list[dict[str, np.ndarray]]] = {s.name: [] for s in steps}
        for feed in feeds:
            env = dict(feed)
            for step in steps:
                seen[step.name].append({n: env[n] for n in step.inputs})
                step.run(env)
        result = []
        for step in steps:
            if step.name in self.kernels:
                result.append(step)
                continue
            model = _quantize(self._segment_of(step), seen[step.name])
            result.append(step if model is None else self._float_step(step.name, [], set(), threads, model))
        return result

    def _segment_of(self, step: _Step) -> Any:
        stage = int(step.name.removeprefix("float"))
        nodes = [n for n, s in zip(self.nodes, self.stages) if s == stage and n.domain != ops.DOMAIN]
        return self.segment_model(nodes, set(step.outputs))


def _kernel(node: Any, a: ops.ConvAttributes | ops.LinearAttributes, arrays: dict[str, np.ndarray]) -> _Conv | _Linear:
    inputs = list(node.input) + [""] * (6 - len(node.input))
    bits, scale, shift = arrays[inputs[ops.W]], arrays[inputs[ops.SCALE]], arrays[inputs[ops.SHIFT]]
    slope = arrays[inputs[ops.SLOPE]] if inputs[ops.SLOPE] else None
    if isinstance(a, ops.LinearAttributes):
        return _Linear(kernels.BinaryLinear(bits, in_features=a.in_features, scale=scale, shift=shift,
                                            activation=a.activation, slope=slope))
    geometry = _conv_geometry(a)
    return _Conv(kernels.BinaryConv(bits, in_channels=a.in_channels, kernel=geometry.kernel, stride=geometry.stride,
                                    padding=geometry.padding, dilation=geometry.dilation, groups=a.group,
                                    scale=scale, shift=shift, activation=a.activation, slope=slope), a)


class _ConvGeometry(NamedTuple):
    """`kernels.BinaryConv`'s 2-d geometry arguments."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]


def _conv_geometry(a: ops.ConvAttributes) -> _ConvGeometry:
    """Kernel arguments; a 1-d convolution is the 1×k 2-d one (lengths are checked by validation)."""
    if len(a.kernel_shape) == 1:
        (k,), (s,), (begin, end), (d,) = a.kernel_shape, a.strides, a.pads, a.dilations
        return _ConvGeometry(kernel=(1, k), stride=(1, s), padding=(0, begin, 0, end), dilation=(1, d))
    (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw) = a.kernel_shape, a.strides, a.pads, a.dilations
    return _ConvGeometry(kernel=(kh, kw), stride=(sh, sw), padding=(top, left, bottom, right), dilation=(dh, dw))


class _Conv:
    """Maps conv1d to the 1×k 2-d kernel. Shapes are checked by the kernel wrapper (once per input
    shape, then cached), so a call adds nothing on the way to the native code."""

    def __init__(self, kernel: kernels.BinaryConv, a: ops.ConvAttributes) -> None:
        self.kernel, self.attributes = kernel, a
        self.nbytes = kernel.nbytes
        self.one_d = len(a.kernel_shape) == 1

    def output_dims(self, dims: list[int | None]) -> list[int | None] | None:
        """Output dimensions for input ``dims`` (NCHW or NCL; None where unknown)."""
        if len(dims) != (3 if self.one_d else 4):
            return None
        height, width = (1, dims[2]) if self.one_d else (dims[2], dims[3])
        if height is None or width is None:
            return None
        out_h, out_w = self.kernel.output_size(height, width)
        return [dims[0], self.kernel.out_channels, *([out_w] if self.one_d else [out_h, out_w])]

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """The exact integer dot products (int32), NCHW or NCL."""
        y = self.kernel.accumulate(self._image(x))
        return y[:, :, 0] if self.one_d else y

    def _image(self, x: np.ndarray) -> np.ndarray:
        if not self.one_d:
            return x
        if x.ndim != 3:
            raise ValueError(f"expected a 3-d input [N, {self.attributes.in_channels}, L], got {list(x.shape)}")
        return x[:, :, None, :]

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        if not self.one_d:
            return self.kernel(x, residual)
        return self.kernel(self._image(x), None if residual is None else self._image(residual))[:, :, 0]


class _Linear:
    """Flattens leading dimensions to [N, K] for the kernel and restores them."""

    def __init__(self, kernel: kernels.BinaryLinear) -> None:
        self.kernel = kernel
        self.nbytes = kernel.nbytes

    def _rows(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2 or x.shape[-1] != self.kernel.in_features:
            raise ValueError(f"expected [..., {self.kernel.in_features}] input, got {list(x.shape)}")
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.kernel.in_features)

    def output_dims(self, dims: list[int | None]) -> list[int | None] | None:
        """Output dimensions for input ``dims`` ([..., K]; None where unknown)."""
        return [*dims[:-1], self.kernel.out_features] if dims else None

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        return self.kernel.accumulate(self._rows(x)).reshape(*x.shape[:-1], self.kernel.out_features)

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        shape = (*x.shape[:-1], self.kernel.out_features)
        if residual is not None:
            if residual.shape != shape:
                raise ValueError(f"residual {list(residual.shape)} does not match the output {list(shape)}")
            residual = np.ascontiguousarray(residual, dtype=np.float32).reshape(-1, self.kernel.out_features)
        return self.kernel(self._rows(x), residual).reshape(shape)


def _fed_weights(segment: Any) -> dict[str, np.ndarray]:
    """Moves the float weight matrices of ``segment``'s Gemm/MatMul nodes out of its initializers
    into graph inputs and returns them: each call feeds them, and onnxruntime reads the arrays in
    place, so the two sessions of a small segment (one thread and all) share one copy where each
    would hold its own (measured: a Bi-Real ResNet-18 loaded for 2 threads kept 2 MB more for its
    2 MB classifier; as fast either way). Conv weights stay initializers: onnxruntime re-lays
    constant conv weights out for its fastest kernels (NCHWc), which a fed weight would lose."""
    from onnx import TensorProto, helper, numpy_helper

    graph = segment.graph
    matrices = {n.input[1] for n in graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1}
    moved = [t for t in graph.initializer if t.name in matrices and t.data_type == TensorProto.FLOAT]
    weights = {t.name: numpy_helper.to_array(t) for t in moved}
    kept = [t for t in graph.initializer if t.name not in weights]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, array.shape) for name, array in weights.items())
    return weights


def _multiply_adds(segment: Any) -> float:
    """Multiply-adds of ``segment``'s Conv, Gemm and MatMul nodes for one sample (an unknown
    leading dimension counts as 1); infinite where another dimension is unknown."""
    import math

    import onnx

    graph = onnx.shape_inference.infer_shapes(segment).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else int(axis == 0)
                       for axis, d in enumerate(v.type.tensor_type.shape.dim)]
              for v in [*graph.input, *graph.value_info, *graph.output] if v.type.HasField("tensor_type")}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    total = 0.0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out, operand = shapes.get(node.output[0]), shapes.get(node.input[1 if node.op_type == "Conv" else 0])
        if not out or not operand or 0 in out or 0 in operand:
            return math.inf
        total += math.prod(out) * (math.prod(operand[1:]) if node.op_type == "Conv" else operand[-1])
    return total


def _return_freed_memory() -> None:
    """Validation and session building free many small blocks; glibc keeps them in the heap
    unless asked, which would count as the loaded model's resident memory."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to do
        pass


def _session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # the kernels run between segments: idle onnxruntime workers must not spin on their cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # float parts between binary layers are small: an arena per session would hold more memory
    # than the 1-bit weights themselves
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=list(DISABLED_OPTIMIZERS))
    except Exception as err:  # onnxruntime's own error types
        lines = str(err).strip().splitlines()
        raise FormatError(f"onnxruntime refuses a float part ({(lines[0] if lines else type(err).__name__)[:160]})",
                          "re-export the model") from None
    # onnxruntime's Python wrapper keeps the model bytes, weights and all, to rebuild the session
    # should another execution provider fail, which the CPU provider alone never asks for: they
    # would stay resident beside the session's own copy (0.7 MB of a loaded Bi-Real ResNet-18)
    session._model_bytes = None
    return session


def _quantize(segment: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    """``segment`` with its float-weight Conv/Gemm/MatMul nodes in U8S8 QDQ, or None if none."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    weights = {t.name for t in segment.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for index, node in enumerate(segment.graph.node):
        node.name = node.name or f"n{index}"
    names = [n.name for n in segment.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1
             and n.input[1] in weights and "/signs" not in n.input[1]]
    if not names:
        return None

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    logging.disable(logging.WARNING)  # onnxruntime logs advice on the root logger
    try:
        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
            onnx.save(segment, str(source))
            quantize_static(str(source), str(target), Feeds(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_quantize=names)
            return onnx.load(str(target))
    finally:
        logging.disable(logging.NOTSET)
