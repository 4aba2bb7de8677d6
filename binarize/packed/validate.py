"""The reader's obligations (SPEC §5): every rule a packed file must meet before anything runs.

Checks run cheapest first and never allocate beyond what the file itself holds: opsets and
metadata, every initializer's byte count against its declared shape, the checksum, the graph's
structure (no subgraphs, functions or external data; tensor inputs and outputs), the size
arguments of ops that create tensors, `onnx.checker`, then each `binarize` node. Every
failure is one `FormatError`. `read_packed` is the one way in: bytes are parsed, then
validated, before anything else sees them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from binarize.errors import FormatError, first_line
from binarize.packed import ops
from binarize.packed.bits import pad_bits_clear
from binarize.packed.format import (
    CHECKSUM_KEY,
    FIX,
    FORMAT_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    VERSION_KEY,
    tensor_checksum,
)

MIN_OPSET = 17
#: ONNX TensorProto data types a packed file may store, with their NumPy dtypes.
TENSOR_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 6: np.dtype("<i4"), 7: np.dtype("<i8"), 9: np.dtype("bool"),
                                          13: np.dtype("<u8")}
MAX_DIMS = 8
#: Largest tensor an op with constant size arguments may create (elements).
MAX_CREATED_ELEMENTS = 1 << 28
#: Ops whose constant inputs decide an output size: (op, input index, how to read the size).
_SIZE_ARGUMENTS = {
    ("ConstantOfShape", 0): "product", ("Expand", 1): "product", ("Tile", 1): "product",
    ("Resize", 2): "product", ("Resize", 3): "product", ("Upsample", 1): "product",
    ("Pad", 1): "sum", ("OneHot", 1): "product", ("Range", 1): "range",
}


def _bad(what: str) -> FormatError:
    return FormatError(what, FIX)


def validate(model: Any) -> None:
    """Raises `FormatError` unless ``model`` (an `onnx.ModelProto`) is a valid packed file."""
    _check_header(model)
    constants = _check_initializers(model.graph)
    if tensor_checksum(model.graph) != dict(_metadata(model))[CHECKSUM_KEY]:
        raise FormatError("checksum mismatch: the tensor data is corrupted", FIX)
    _check_structure(model.graph)
    _check_size_arguments(model.graph, constants)
    _check_onnx(model)
    for node in model.graph.node:
        if node.domain == ops.DOMAIN:
            binary_node_attributes(node, constants)


def _metadata(model: Any) -> list[tuple[str, str]]:
    return [(p.key, p.value) for p in model.metadata_props]


def _check_header(model: Any) -> None:
    metadata = _metadata(model)
    keys = [key for key, _ in metadata]
    if len(set(keys)) != len(keys):
        raise _bad("duplicate metadata keys")
    values = dict(metadata)
    if values.get(FORMAT_KEY) != FORMAT_NAME:
        raise _bad(f"not a binarize packed file (metadata {FORMAT_KEY} is not {FORMAT_NAME!r})")
    version = values.get(VERSION_KEY, "")
    if not version.isdigit() or int(version) < 1:
        raise _bad(f"bad format version {version[:20]!r}")
    if int(version) > FORMAT_VERSION:
        raise FormatError(f"format version {version} is newer than this reader ({FORMAT_VERSION})",
                          "upgrade binarize")
    if len(values.get(CHECKSUM_KEY, "")) != 64:
        raise _bad("missing or malformed checksum")
    domains: dict[str, int] = {}
    for opset in model.opset_import:
        if opset.domain in domains:
            raise _bad(f"opset domain {opset.domain!r} imported twice")
        domains[opset.domain] = opset.version
    for domain in domains:
        if domain not in ("", "ai.onnx", ops.DOMAIN):
            raise _bad(f"operator domain {domain[:40]!r} is not allowed (only the ONNX standard and {ops.DOMAIN!r})")
    default = domains.get("", domains.get("ai.onnx"))
    if default is None or not MIN_OPSET <= default <= _newest_opset():
        raise _bad(f"ONNX opset {default} is outside {MIN_OPSET}…{_newest_opset()}")
    if domains.get(ops.DOMAIN, ops.DOMAIN_VERSION) != ops.DOMAIN_VERSION:
        raise FormatError(f"{ops.DOMAIN} domain version {domains[ops.DOMAIN]} is not {ops.DOMAIN_VERSION}",
                          "upgrade binarize")
    if len(model.functions) or len(model.training_info):
        raise _bad("model-local functions and training info are not allowed")


def _newest_opset() -> int:
    import onnx

    return onnx.defs.onnx_opset_version()


def _check_initializers(graph: Any) -> dict[str, np.ndarray]:
    """Each initializer: an allowed dtype, ≤ 8 dims, inline raw bytes exactly as many as its
    shape says. Returns read-only views of them by name (no copies)."""
    if len(graph.sparse_initializer):
        raise _bad("sparse initializers are not allowed")
    constants: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        name = tensor.name[:60]
        dtype = TENSOR_DTYPES.get(tensor.data_type)
        if dtype is None:
            raise _bad(f"initializer {name!r} has data type {tensor.data_type}, not one a packed file stores")
        if tensor.data_location != 0 or len(tensor.external_data):
            raise _bad(f"initializer {name!r} refers to external data (a packed file is self-contained)")
        if tensor.HasField("segment") or any(
            len(getattr(tensor, f)) for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                                              "string_data")
        ):
            raise _bad(f"initializer {name!r} is not stored as raw little-endian bytes")
        if len(tensor.dims) > MAX_DIMS or any(d < 0 for d in tensor.dims):
            raise _bad(f"initializer {name!r} has shape {list(tensor.dims)[:10]}")
        count = math.prod(tensor.dims)
        if count * dtype.itemsize != len(tensor.raw_data):
            raise _bad(f"initializer {name!r} declares {count} elements but holds {len(tensor.raw_data)} bytes")
        if tensor.name in constants:
            raise _bad(f"initializer {name!r} is defined twice")
        constants[tensor.name] = np.frombuffer(tensor.raw_data, dtype).reshape(tuple(tensor.dims))
    return constants


def _check_structure(graph: Any) -> None:
    import onnx

    for value in [*graph.input, *graph.output]:
        if value.type.WhichOneof("value") != "tensor_type":
            raise _bad(f"graph input/output {value.name[:60]!r} is not a tensor")
    for value in graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise _bad(f"graph input {value.name[:60]!r} is not float32")
    initializers = {t.name for t in graph.initializer}
    if any(value.name in initializers for value in graph.output):
        raise _bad("a graph output is a stored tensor")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx", ops.DOMAIN):
            raise _bad(f"node {node.name[:60]!r} uses domain {node.domain[:40]!r}")
        if node.domain == ops.DOMAIN and node.op_type not in ops.OPS:
            raise _bad(f"unknown {ops.DOMAIN} op {node.op_type[:40]!r}")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise _bad(f"node {node.name[:60]!r} ({node.op_type[:40]}) holds a subgraph; control flow is not allowed")


def _check_size_arguments(graph: Any, constants: Mapping[str, np.ndarray]) -> None:
    """Ops whose constant inputs set an output size must stay below `MAX_CREATED_ELEMENTS`."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            how = _SIZE_ARGUMENTS.get((node.op_type, index))
            if how is None or name not in constants:
                continue
            values = constants[name].astype(np.float64).ravel()
            if how == "range":
                starts, deltas = (constants.get(node.input[i]) for i in (0, 2))
                if starts is None or deltas is None or not np.all(deltas.astype(np.float64)):
                    continue
                size = abs((values - starts.astype(np.float64).ravel()) / deltas.astype(np.float64).ravel()).max()
            elif how == "sum":
                size = float(np.abs(values).sum())
            else:
                size = float(np.prod(np.abs(values))) if values.size else 0.0
            if not math.isfinite(size) or size > MAX_CREATED_ELEMENTS:
                raise _bad(f"node {node.name[:60]!r} ({node.op_type}) would create a tensor of {size:.3g} elements")


def _check_onnx(model: Any) -> None:
    import onnx

    ops.register_schemas()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # the checker raises several types (ValidationError, InferenceError, …)
        raise _bad(f"onnx.checker refuses the model ({first_line(err, 160)})") from None


def _ints(node: Any, name: str, default: list[int]) -> tuple[int, ...]:
    for attribute in node.attribute:
        if attribute.name == name:
            return tuple(attribute.ints)
    return tuple(default)


def _int(node: Any, name: str, default: int | None) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    if default is None:
        raise _bad(f"node {node.name[:60]!r} lacks attribute {name!r}")
    return default


def _string(node: Any, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.s.decode("utf-8", "replace")
    return default


def binary_node_attributes(node: Any, constants: Mapping[str, np.ndarray]) -> ops.ConvAttributes | ops.LinearAttributes:
    """A `binarize` node's attributes, checked against SPEC §4 together with its stored tensors."""
    where = f"{node.op_type} node {node.name[:60]!r}"
    activation = _string(node, "activation", "none")
    binarize_input = _int(node, "binarize_input", 1)
    if activation not in ops.ACTIVATIONS or binarize_input not in (0, 1):
        raise _bad(f"{where}: activation {activation[:20]!r} / binarize_input {binarize_input}")
    attributes: ops.ConvAttributes | ops.LinearAttributes
    if node.op_type == ops.CONV:
        kernel = _ints(node, "kernel_shape", [])
        rank = len(kernel)
        attributes = ops.ConvAttributes(
            in_channels=_int(node, "in_channels", None), kernel_shape=kernel,
            strides=_ints(node, "strides", [1] * rank), pads=_ints(node, "pads", [0] * 2 * rank),
            dilations=_ints(node, "dilations", [1] * rank), group=_int(node, "group", 1),
            binarize_input=bool(binarize_input), activation=activation,
        )
        _check_conv(attributes, where)
    else:
        attributes = ops.LinearAttributes(_int(node, "in_features", None), bool(binarize_input), activation)
        if not 1 <= attributes.in_features <= ops.MAX_ROW_BITS:
            raise _bad(f"{where}: in_features {attributes.in_features}")
    _check_tensors(node, attributes, constants, where)
    return attributes


def _check_conv(a: ops.ConvAttributes, where: str) -> None:
    rank = len(a.kernel_shape)
    if rank not in (1, 2) or len(a.strides) != rank or len(a.dilations) != rank or len(a.pads) != 2 * rank:
        raise _bad(f"{where}: kernel_shape, strides, dilations and pads disagree on the spatial rank")
    if not (all(1 <= k <= ops.MAX_KERNEL for k in a.kernel_shape) and all(1 <= s <= ops.MAX_STRIDE for s in a.strides)
            and all(1 <= d <= ops.MAX_KERNEL for d in a.dilations)):
        raise _bad(f"{where}: kernel {a.kernel_shape}, strides {a.strides}, dilations {a.dilations} out of range")
    reach = [d * (k - 1) for d, k in zip(a.dilations, a.kernel_shape)]
    if not all(0 <= p <= r for p, r in zip(a.pads, reach + reach)):
        raise _bad(f"{where}: pads {a.pads} must lie within 0…dilation·(kernel−1)")
    if not (1 <= a.group <= a.in_channels and a.in_channels % a.group == 0
            and 1 <= a.row_bits <= ops.MAX_ROW_BITS):
        raise _bad(f"{where}: in_channels {a.in_channels}, group {a.group}")


def _check_tensors(node: Any, a: ops.ConvAttributes | ops.LinearAttributes, constants: Mapping[str, np.ndarray],
                   where: str) -> None:
    inputs = list(node.input) + [""] * (6 - len(node.input))
    if len(node.input) > 6 or len(node.output) != 1 or not inputs[ops.X] or inputs[ops.X] in constants:
        raise _bad(f"{where}: expected inputs X, W, scale, shift[, R[, slope]] and one output")
    if inputs[ops.RESIDUAL] in constants:
        raise _bad(f"{where}: the residual must be computed, not stored")
    for index in (ops.W, ops.SCALE, ops.SHIFT):
        if inputs[index] not in constants:
            raise _bad(f"{where}: input {index} must be a stored tensor")
    bits = constants[inputs[ops.W]]
    words = ops.words_per_row(a.row_bits)
    if bits.dtype != np.uint64 or bits.ndim != 2 or bits.shape[1] != words or bits.shape[0] < 1:
        raise _bad(f"{where}: W must be uint64 [O, {words}], got {bits.dtype} {list(bits.shape)}")
    out = bits.shape[0]
    if isinstance(a, ops.ConvAttributes) and out % a.group:
        raise _bad(f"{where}: {out} output channels are not divisible by group {a.group}")
    if not pad_bits_clear(bits, a.row_bits):
        raise _bad(f"{where}: W has nonzero pad bits")
    wants_slope = a.activation == "prelu"
    if bool(inputs[ops.SLOPE]) != wants_slope:
        raise _bad(f"{where}: a slope input goes with activation 'prelu' and only with it")
    for index in (ops.SCALE, ops.SHIFT) + ((ops.SLOPE,) if wants_slope else ()):
        value = constants.get(inputs[index])
        if value is None or value.dtype != np.float32 or value.shape != (out,):
            raise _bad(f"{where}: input {index} must be float32 [{out}]")


#: protobuf's own message limit; a larger file cannot be an ONNX model anyway
MAX_FILE_BYTES = (1 << 31) - 1


def tensor_dims(value_type: Any) -> list[int | None] | None:
    """The dimensions of an ONNX tensor type (None where unknown), or None without a shape."""
    if value_type is None or not value_type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value_type.tensor_type.shape.dim]


def sample_shape(input_dims: list[list[int | None]]) -> tuple[int, ...] | None:
    """The first input's shape without the batch dimension, when the file fixes all of it."""
    dims = input_dims[0][1:] if input_dims else [None]
    known = [d for d in dims if d is not None]
    return tuple(known) if len(known) == len(dims) else None


def parse_packed(data: bytes) -> Any:
    """Bytes → a validated `onnx.ModelProto` (one `FormatError` for any defect)."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as err:
        raise FormatError(f"not an ONNX model ({type(err).__name__})", FIX) from None
    validate(model)
    return model


def read_packed(path: str | Path) -> Any:
    """Reads and validates a packed file; returns its `onnx.ModelProto`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FormatError(f"{path} has {size} bytes, more than an ONNX model can", FIX)
        data = path.read_bytes()
    except OSError as err:
        raise FormatError(f"cannot read {path} ({err.strerror})", "check the path") from None
    return parse_packed(data)
