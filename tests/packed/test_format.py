"""The packed file: an ONNX model that onnx.checker accepts, its size, and every hostile input
refused one by one with a single-line `FormatError` before anything runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from binarize.errors import FormatError, OutputExistsError
from binarize.nn.frozen import freeze
from binarize.packed import load_packed, ops, save_packed
from binarize.packed.format import CHECKSUM_KEY, tensor_checksum

Model = onnx.ModelProto


def test_round_trip_matches_frozen_model(small_bnz: Path, small_net: torch.nn.Module) -> None:
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = freeze(small_net)(x).numpy()
    actual = load_packed(small_bnz)(x.numpy())
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    assert np.array_equal(actual.argmax(1), expected.argmax(1))


def test_file_is_a_checked_onnx_model_with_the_binarize_domain(small_bnz: Path) -> None:
    model = onnx.load(str(small_bnz))
    ops.register_schemas()
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} >= {(ops.DOMAIN, 1)}
    binary = {n.name: n for n in model.graph.node if n.domain == ops.DOMAIN}
    assert [n.op_type for n in binary.values()] == ["BinaryConv", "BinaryConv", "BinaryLinear"]
    assert {n.domain for n in model.graph.node} == {"", ops.DOMAIN}
    # BatchNorm and hardtanh fused into conv1; BatchNorm and the residual Add into conv2
    attributes = {a.name: helper.get_attribute_value(a) for a in binary["conv1"].attribute}
    assert attributes["activation"] == b"hardtanh" and attributes["kernel_shape"] == [3, 3]
    assert binary["conv2"].input[ops.RESIDUAL] and not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    bits = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == binary["conv1"].input[ops.W]))
    assert bits.dtype == np.uint64 and bits.shape == (16, 2)  # K = 72 → two words per row
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["binarize.format"] == "binarize.packed" and metadata["binarize.format_version"] == "1"
    assert metadata[CHECKSUM_KEY] == tensor_checksum(model.graph)


def test_refuses_to_overwrite(small_bnz: Path, small_net: torch.nn.Module) -> None:
    with pytest.raises(OutputExistsError):
        save_packed(small_net, small_bnz)


def test_file_size_is_one_bit_per_binary_weight(small_bnz: Path, small_net: torch.nn.Module) -> None:
    """Packed words (rows padded to 64 bits) + float32 for the rest + a small graph."""
    binary = {"conv1": (16, 72), "conv2": (16, 144), "fc1": (12, 64)}
    bits_bytes = sum(o * math.ceil(k / 64) * 8 for o, k in binary.values())
    float_bytes = 4 * sum(p.numel() for n, p in small_net.state_dict().items()
                          if n.split(".")[0] in ("stem", "bn0", "head"))
    epilogue_bytes = 4 * 2 * sum(o for o, _ in binary.values())
    size = small_bnz.stat().st_size
    assert bits_bytes + float_bytes + epilogue_bytes < size < bits_bytes + float_bytes + epilogue_bytes + 6000


# --- hostile files ---------------------------------------------------------------------------

def _model(data: bytes) -> Model:
    model = Model()
    model.ParseFromString(data)
    return model


def _edit(edit: Callable[[Model], None], *, rehash: bool = True) -> Callable[[bytes], bytes]:
    """Applies ``edit`` to the parsed model; by default re-signs the checksum so that the edit,
    not the checksum, is what the reader must catch."""
    def apply(data: bytes) -> bytes:
        model = _model(data)
        edit(model)
        if rehash:
            _set_metadata(CHECKSUM_KEY, tensor_checksum(model.graph))(model)
        return model.SerializeToString()
    return apply


def _set_metadata(key: str, value: str) -> Callable[[Model], None]:
    return lambda model: helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: value})


def _node(model: Model, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _tensor(model: Model, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_attribute(name: str, attribute: str, value: object) -> Callable[[Model], None]:
    def edit(model: Model) -> None:
        node = _node(model, name)
        kept = [a for a in node.attribute if a.name != attribute]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(attribute, value)])
    return edit


def _replace_tensor(name: str, value: np.ndarray) -> Callable[[Model], None]:
    return lambda model: _tensor(model, name).CopyFrom(numpy_helper.from_array(value, name))


def _set_pad_bit(model: Model) -> None:
    words = numpy_helper.to_array(_tensor(model, "conv1.W")).copy()
    words[0, 1] |= np.uint64(1 << 40)  # row 0, word 1 holds bits 64..71: bit 40 is padding
    _replace_tensor("conv1.W", words)(model)


def _huge_declared_shape(model: Model) -> None:
    _tensor(model, "conv1.W").dims[:] = [1 << 40, 2]


def _external_data(model: Model) -> None:
    tensor = _tensor(model, "conv1.scale")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")


def _unknown_domain(model: Model) -> None:
    model.opset_import.add(domain="com.evil", version=1)
    model.graph.node[0].domain = "com.evil"


def _unknown_binarize_op(model: Model) -> None:
    _node(model, "conv1").op_type = "BinarySystem"


def _subgraph(model: Model) -> None:
    branch = helper.make_graph([], "branch", [], [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])])
    model.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch))


def _deeply_nested() -> bytes:
    graph = b""
    for _ in range(700):  # a GraphProto in an AttributeProto in a NodeProto in a GraphProto …
        attribute = b"\x32" + _varint(len(graph)) + graph  # AttributeProto.g
        node = b"\x2a" + _varint(len(attribute)) + attribute  # NodeProto.attribute
        graph = b"\x0a" + _varint(len(node)) + node  # GraphProto.node
    return b"\x3a" + _varint(len(graph)) + graph  # ModelProto.graph


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sequence_output(model: Model) -> None:
    model.graph.output[0].type.CopyFrom(helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None)))


def _constant_of_huge_shape(model: Model) -> None:
    model.graph.initializer.append(numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "huge.shape"))
    model.graph.node.append(helper.make_node("ConstantOfShape", ["huge.shape"], ["huge"]))
    model.graph.output.append(helper.make_tensor_value_info("huge", onnx.TensorProto.FLOAT, None))


def _flip_data_byte(data: bytes) -> bytes:
    """One bit flipped inside the packed weights' raw bytes: only the checksum notices."""
    position = data.index(_tensor(_model(data), "conv2.W").raw_data) + 5
    return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1:]


HOSTILE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda d: b"", "not a binarize packed file"),
    "garbage": (lambda d: b"\xff" * 64, "not an ONNX model"),
    "truncated": (lambda d: d[: len(d) // 2], "not an ONNX model"),
    "truncated-end": (lambda d: d[:-3], "not an ONNX model"),
    "data-bit-flip": (_flip_data_byte, "checksum mismatch"),
    "checksum-edited": (_edit(_set_metadata(CHECKSUM_KEY, "0" * 64), rehash=False), "checksum mismatch"),
    "plain-onnx": (_edit(_set_metadata("binarize.format", "onnx")), "not a binarize packed file"),
    "future-version": (_edit(_set_metadata("binarize.format_version", "2")), "newer than this reader"),
    "bad-version": (_edit(_set_metadata("binarize.format_version", "one")), "bad format version"),
    "future-domain-version": (_edit(lambda m: next(o for o in m.opset_import if o.domain == ops.DOMAIN)
                                    .__setattr__("version", 2)), "upgrade binarize"),
    "unknown-domain": (_edit(_unknown_domain), "not allowed"),
    "unknown-binarize-op": (_edit(_unknown_binarize_op), "unknown binarize op"),
    "control-flow": (_edit(_subgraph), "subgraph"),
    "deep-nesting": (lambda d: _deeply_nested(), "not an ONNX model"),
    "sequence-output": (_edit(_sequence_output), "not a tensor"),
    "huge-declared-shape": (_edit(_huge_declared_shape), "declares"),
    "huge-created-tensor": (_edit(_constant_of_huge_shape), "would create"),
    "external-data": (_edit(_external_data), "external data"),
    "wrong-weight-dtype": (_edit(_replace_tensor("conv1.W", np.zeros((16, 2), np.int64))), "unsupported type"),
    "wrong-word-count": (_edit(_replace_tensor("conv1.W", np.zeros((16, 3), np.uint64))), "W must be uint64 [O, 2]"),
    "wrong-scale-shape": (_edit(_replace_tensor("conv1.scale", np.ones(15, np.float32))), "float32 [16]"),
    "float64-scale": (_edit(_replace_tensor("conv1.scale", np.ones(16, np.float64))), "data type 11"),
    "nonzero-pad-bits": (_edit(_set_pad_bit), "pad bits"),
    "bad-activation": (_edit(_set_attribute("conv1", "activation", "gelu")), "activation"),
    "pads-too-large": (_edit(_set_attribute("conv1", "pads", [9, 9, 9, 9])), "pads"),
    "zero-stride": (_edit(_set_attribute("conv1", "strides", [0, 1])), "out of range"),
    "rank-mismatch": (_edit(_set_attribute("conv1", "strides", [1, 1, 1])), "spatial rank"),
    "bad-group": (_edit(_set_attribute("conv1", "group", 3)), "group"),
    "in-channels-mismatch": (_edit(_set_attribute("conv1", "in_channels", 16)), "W must be uint64 [O, 3]"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_one_format_error(case: str, small_bnz: Path, tmp_path: Path) -> None:
    mutate, message = HOSTILE[case]
    path = tmp_path / f"{case}.bnz"
    path.write_bytes(mutate(small_bnz.read_bytes()))
    with pytest.raises(FormatError) as info:
        load_packed(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_input_shape_is_one_format_error(small_bnz: Path) -> None:
    model = load_packed(small_bnz)
    with pytest.raises(FormatError, match="failed"):
        model(np.zeros((1, 4, 8, 8), np.float32))
