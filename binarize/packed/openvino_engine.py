"""Runs a packed file on OpenVINO: the second engine, and the peer every deployment benchmark shows.

The file is read and validated by binarize's own reader first (`read_packed`: every SPEC rule,
one `FormatError` each); only those validated bytes reach OpenVINO. OpenVINO's ONNX frontend
converts the standard ONNX ops, and a frontend `ConversionExtension` per `binarize` op maps each
binary node to OpenVINO ops:

- W1A1 (``binarize_input=1``): a 2-level ``FakeQuantize`` (x ≥ 0 → 1, x < 0 → 0) feeding an opset1
  ``BinaryConvolution`` (``xnor-popcount`` over ``u1`` weights, ``pad_value`` 0 so that zero padding
  contributes nothing, as the packed kernels do). A linear layer is the 1×1 convolution of its
  rows, a conv1d the 1×k conv2d. Where ``BinaryConvolution`` cannot serve (groups; input channels
  not a multiple of 8) the ±1 signs are convolved in float, exact integers kept apart from the
  epilogue's scale (`_exact`).
- W1A32 (``binarize_input=0``): a float ``Convolution``/``MatMul`` on the unpacked ±1 weights.
- Then the fused epilogue ``act(dot·scale + shift + R)`` as ``Multiply``/``Add``/``Relu``/``Clamp``/``PRelu``.

*Why a frontend extension and not an OpenVINO graph built by hand:* the float parts of a packed
file are arbitrary standard ONNX (the whole torchvision zoo); OpenVINO's ONNX frontend already
converts all of them, so only the two `binarize` ops need mapping, which is what frontend
extensions are for. Layouts stay NCHW: NHWC transposes around FakeQuantize + BinaryConvolution
crashed OpenVINO's CPU plugin in ``infer()``.

Float parts run in f32 (``INFERENCE_PRECISION_HINT``): OpenVINO's CPU default on bf16-capable
machines is bf16, which changes top-1 classes. Needs the ``openvino`` extra; imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from binarize.errors import ConfigError, FormatError
from binarize.packed import ops
from binarize.packed.bits import unpack_signs
from binarize.packed.validate import read_packed, sample_shape, tensor_dims
from binarize.packed.kernels import usable_cpus

INSTALL = "pip install 'binarize[openvino]'"
#: FakeQuantize maps x ≤ threshold to its low level; the largest float32 below zero keeps
#: sign(0) = +1 (0 and −0 go to the high level, every negative float to the low one).
THRESHOLD = -np.float32(np.finfo(np.float32).smallest_subnormal)
PRECISIONS = ("f32", "bf16", "f16")
#: The CPU plugin's BinaryConvolution sums correctly only when input channels are a multiple of this.
BINARY_CHANNEL_MULTIPLE = 8
_RUN_FIX = "give inputs of the shape and dtype the model was exported with"


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ConfigError("OpenVINO is not installed", INSTALL) from None
    return openvino


class OpenVINOModel:
    """A packed file compiled by OpenVINO for the CPU; call it on NumPy arrays.

        >>> model = load_openvino("digits.bnz", threads=1)        # doctest: +SKIP
        >>> logits = model(np.zeros((1, 1, 8, 8), np.float32))    # doctest: +SKIP

    ``threads`` defaults to the CPUs this process may use; ``precision`` is OpenVINO's
    inference precision for float parts (``f32`` unless you accept bf16/f16 rounding).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, precision: str = "f32") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
        ov = _openvino()
        from openvino.frontend.onnx import ConversionExtension

        self.path = Path(path)
        self.precision = precision
        packed = read_packed(self.path)
        self.metadata = {p.key: p.value for p in packed.metadata_props}
        self.inputs = tuple(v.name for v in packed.graph.input)
        self._input_dims = [tensor_dims(v.type) or [] for v in packed.graph.input]
        self.outputs = tuple(v.name for v in packed.graph.output)
        self._core = ov.Core()
        for op in ops.OPS:
            self._core.add_extension(ConversionExtension(op, ops.DOMAIN, lambda node, op=op: _convert(op, node)))
        try:
            self.model = self._core.read_model(packed.SerializeToString())
        except (RuntimeError, ValueError, TypeError) as err:  # OpenVINO's errors, long multi-line messages
            raise FormatError(f"OpenVINO cannot convert {self.path} ({_first_line(err)})",
                              "run it on binarize's packed runtime (--engine packed)") from None
        self.threads = max(1, int(threads or usable_cpus()))
        self._compiled: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def input_shape(self) -> tuple[int, ...] | None:
        """The first input's shape without the batch dimension, when the file fixes it."""
        return sample_shape(self._input_dims)

    def set_num_threads(self, threads: int) -> None:
        """CPU threads for later calls (a model is compiled per thread count and input shape)."""
        self.threads = max(1, int(threads))

    def compiled(self, shapes: Sequence[Sequence[int]]) -> Any:
        """The model compiled for inputs of ``shapes`` (BinaryConvolution needs static shapes)."""
        return self._request(tuple(tuple(int(d) for d in shape) for shape in shapes))[0]

    def _request(self, shapes: tuple[tuple[int, ...], ...]) -> tuple[Any, Any]:
        key = (self.threads, shapes)
        if key not in self._compiled:
            model = self.model.clone()
            model.reshape(dict(zip(self.inputs, shapes)))
            config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": self.threads,
                      "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled[key] = (compiled, compiled.create_infer_request())
        return self._compiled[key]

    def __call__(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Runs the model; one array per graph output (a tuple when there are several)."""
        if len(inputs) != len(self.inputs):
            raise FormatError(f"expected {len(self.inputs)} input(s), got {len(inputs)}", _RUN_FIX)
        feeds = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        try:
            compiled, request = self._request(tuple(x.shape for x in feeds))
            results = request.infer(feeds)
        except (RuntimeError, ValueError, TypeError) as err:  # OpenVINO refuses bad shapes in its own words
            raise FormatError(f"OpenVINO cannot run {self.path} on inputs {[list(x.shape) for x in feeds]} "
                              f"({_first_line(err)})", _RUN_FIX) from None
        outputs = tuple(np.array(results[output]) for output in compiled.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def binary_layer_count(self) -> int:
        """BinaryConvolution ops in the compiled model (a conv with g groups counts g times)."""
        return sum(op.get_type_name() == "BinaryConvolution" for op in self.model.get_ops())


def load_openvino(path: str | Path, *, threads: int | None = None, precision: str = "f32") -> OpenVINOModel:
    """Validates a packed file with binarize's reader, then compiles it with OpenVINO (see `OpenVINOModel`)."""
    return OpenVINOModel(path, threads=threads, precision=precision)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip() and "src/" not in line]
    return (lines[-1] if lines else type(err).__name__)[:160]


def ov_weight_bits(bits: np.ndarray, row_bits: int) -> np.ndarray:
    """File words ``[O, ceil(K/64)]`` → the bytes of an OpenVINO ``u1`` tensor ``[O, K]``.

    OpenVINO's ``xnor-popcount`` reads bit 1 as +1 (the file: set bit = −1), packs the tensor
    whole (no per-row padding) and reads element ``i`` from bit ``7 − i % 8`` of byte ``i // 8``
    (most significant first; a ``u1`` constant made from a Python list gets this backwards)."""
    positive = unpack_signs(bits, row_bits) > 0
    return np.packbits(positive.ravel(), bitorder="little")


def _u1_constant(ov: Any, bits: np.ndarray, shape: Sequence[int]) -> Any:
    tensor = ov.Tensor(ov.Type.u1, list(shape))
    packed = ov_weight_bits(bits, int(np.prod(shape[1:])))
    tensor.data[:] = packed
    return ov.op.Constant(tensor)


def _convert(op: str, node: Any) -> list[Any]:
    """ConversionExtension callback: one `binarize` node (``op`` is its type) → OpenVINO outputs."""
    import openvino.opset13 as opset

    ov = _openvino()
    inputs = [node.get_input(i) for i in range(node.get_input_size())]
    present = [i < len(inputs) and inputs[i].get_node().get_type_name() != "NullNode" for i in range(6)]
    constant = {i: inputs[i].get_node().get_data() for i in (ops.W, ops.SCALE, ops.SHIFT, ops.SLOPE) if present[i]}
    bits = np.ascontiguousarray(constant[ops.W], dtype=np.uint64)
    out = bits.shape[0]
    binarize_input = bool(node.get_attribute("binarize_input", 1))
    activation = node.get_attribute("activation", "none")
    x = inputs[ops.X]
    if op == ops.CONV:
        kernel = list(node.get_attribute("kernel_shape"))
        rank = len(kernel)
        geometry = {"strides": list(node.get_attribute("strides", [1] * rank)),
                    "pads": list(node.get_attribute("pads", [0] * 2 * rank)),
                    "dilations": list(node.get_attribute("dilations", [1] * rank)),
                    "group": int(node.get_attribute("group", 1)), "in_channels": int(node.get_attribute("in_channels"))}
        y = _conv(ov, opset, x, bits, kernel, geometry, binarize_input)
        channel_shape = [out] + [1] * rank
    else:
        y = _linear(ov, opset, x, bits, int(node.get_attribute("in_features")), binarize_input)
        channel_shape = [out]
    y = opset.multiply(y, opset.constant(constant[ops.SCALE].reshape(channel_shape)))
    y = opset.add(y, opset.constant(constant[ops.SHIFT].reshape(channel_shape)))
    if present[ops.RESIDUAL]:
        y = opset.add(y, inputs[ops.RESIDUAL])
    if activation == "relu":
        y = opset.relu(y)
    elif activation == "hardtanh":
        y = opset.clamp(y, -1.0, 1.0)
    elif activation == "prelu":
        y = opset.prelu(y, opset.constant(constant[ops.SLOPE].reshape(channel_shape)))
    return [y.output(0)]


def _binarized(opset: Any, x: Any, channels: int) -> Any:
    """x ≥ 0 → 1, x < 0 → 0: BinaryConvolution's data input (0/1, read as −1/+1), the standard
    2-level FakeQuantize. The CPU plugin turns it into a threshold test, so it only works in front
    of a BinaryConvolution: elsewhere its (x − low)/(high − low) divides by zero."""
    # Per-channel thresholds, not a scalar: the CPU plugin fuses a scalar-threshold FakeQuantize
    # into a producing BinaryConvolution whose epilogue adds a residual, and the fused result
    # is wrong (logits off by > 1 after a residual block); per-channel thresholds give exact sums.
    threshold = opset.constant(np.full([1, channels, 1, 1], THRESHOLD, np.float32))  # x is N×C×H×W here
    return opset.fake_quantize(x, threshold, threshold, opset.constant(np.float32(0)), opset.constant(np.float32(1)), 2)


def _sign(opset: Any, x: Any) -> Any:
    """sign(x) with sign(0) = +1, in float."""
    return opset.select(opset.greater_equal(x, opset.constant(np.float32(0))), opset.constant(np.float32(1)),
                        opset.constant(np.float32(-1)))


def _exact(opset: Any, dots: Any) -> Any:
    """The integer dots of a W1A1 layer computed in float, through int32 and back (lossless:
    |dot| ≤ K < 2²⁴). OpenVINO folds a constant Multiply that follows a Convolution or MatMul into
    its weights: ``Σ sign·(w·scale)`` then rounds at every step, so a dot of exactly 0 came out
    as ±1 ulp and the next layer's sign flipped (RegNet, grouped 3×3 convs: logits off by 0.9).
    The Convert pair keeps the epilogue's Multiply off the weights, so ``dot·scale`` is exact."""
    return opset.convert(opset.convert(dots, "i32"), "f32")


def _conv(ov: Any, opset: Any, x: Any, bits: np.ndarray, kernel: list[int], g: dict[str, Any], binarize_input: bool) -> Any:
    out, group, rank = bits.shape[0], g["group"], len(kernel)
    pads_begin, pads_end = g["pads"][:rank], g["pads"][rank:]
    if not binarize_input or group > 1 or g["in_channels"] % BINARY_CHANNEL_MULTIPLE:
        # BinaryConvolution has no groups, and the CPU plugin computes wrong sums unless the
        # input channels are a multiple of 8: such W1A1 layers convolve sign(x) in float, which
        # is exact since |dot| ≤ K < 2²⁴.
        signs = unpack_signs(bits, g["in_channels"] // group * int(np.prod(kernel)))
        weights = opset.constant(signs.reshape(group, out // group, g["in_channels"] // group, *kernel))
        if not binarize_input:
            return opset.group_convolution(x, weights, g["strides"], pads_begin, pads_end, g["dilations"])
        return _exact(opset, opset.group_convolution(_sign(opset, x), weights, g["strides"], pads_begin, pads_end,
                                                     g["dilations"]))
    one_d = rank == 1
    if one_d:  # conv1d is the 1×k conv2d
        x = opset.unsqueeze(x, opset.constant(np.array([2], np.int64)))
    lift = (lambda values, first: [first, *values]) if one_d else (lambda values, first: list(values))
    y = _binary_conv(ov, _binarized(opset, x, g["in_channels"]), bits, [out, g["in_channels"], *lift(kernel, 1)], lift(g["strides"], 1),
                     lift(pads_begin, 0), lift(pads_end, 0), lift(g["dilations"], 1))
    return opset.squeeze(y, opset.constant(np.array([2], np.int64))) if one_d else y


def _binary_conv(ov: Any, data: Any, bits: np.ndarray, shape: list[int], strides: list[int], pads_begin: list[int],
                 pads_end: list[int], dilations: list[int]) -> Any:
    from openvino import opset1

    return opset1.binary_convolution(data, _u1_constant(ov, bits, shape), strides, pads_begin, pads_end, dilations,
                                     "xnor-popcount", 0.0)


def _linear(ov: Any, opset: Any, x: Any, bits: np.ndarray, in_features: int, binarize_input: bool) -> Any:
    out = bits.shape[0]
    if not binarize_input or in_features % BINARY_CHANNEL_MULTIPLE:
        signs = opset.constant(unpack_signs(bits, in_features))
        if not binarize_input:
            return opset.matmul(x, signs, False, True)
        return _exact(opset, opset.matmul(_sign(opset, x), signs, False, True))
    rows = opset.reshape(x, opset.constant(np.array([-1, in_features, 1, 1], np.int64)), False)
    y = _binary_conv(ov, _binarized(opset, rows, in_features), bits, [out, in_features, 1, 1], [1, 1], [0, 0], [0, 0], [1, 1])
    leading = opset.slice(opset.shape_of(x), opset.constant(np.array([0], np.int64)),
                          opset.constant(np.array([-1], np.int64)), opset.constant(np.array([1], np.int64)))
    shape = opset.concat([leading, opset.constant(np.array([out], np.int64))], 0)
    return opset.reshape(y, shape, False)
