"""The OpenVINO engine against the packed runtime: integer accumulators equal on single binary
nodes (scale 1, shift 0), logits within float tolerance and top-1 equal on whole models, and
the facts about OpenVINO the engine relies on (bit order, sign(0), zero padding, f32)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

from binarize import BinarizeConfig, convert
from binarize.errors import ConfigError, FormatError
from binarize.models import create
from binarize.packed import load_packed, ops, save_packed
from binarize.packed.bits import pack_signs
from binarize.packed.format import (
    CHECKSUM_KEY,
    FORMAT_KEY,
    FORMAT_NAME,
    VERSION_KEY,
    tensor_checksum,
)
from binarize.packed.openvino_engine import load_openvino, ov_weight_bits

ov = pytest.importorskip("openvino")


def write_single_node(path: Path, op: str, input_shape: list[int], signs: np.ndarray, *, attributes: dict,
                      scale: np.ndarray | None = None, shift: np.ndarray | None = None,
                      slope: np.ndarray | None = None, residual: bool = False) -> Path:
    """A packed file of one binarize node (``signs``: ±1 [O, K]); scale 1 and shift 0 by default,
    so that its output is the integer accumulator. With ``residual`` the input is added back."""
    out = signs.shape[0]
    tensors = {"W": pack_signs(signs), "scale": np.ones(out, np.float32) if scale is None else scale,
               "shift": np.zeros(out, np.float32) if shift is None else shift}
    inputs = ["x", "W", "scale", "shift", "x" if residual else ""]
    if slope is not None:
        tensors["slope"] = slope
        inputs.append("slope")
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node(op, inputs, ["y"], name="layer", domain=ops.DOMAIN, **attributes)
    graph = helper.make_graph([node], "single", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(len(input_shape))])],
                              [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in tensors.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(ops.DOMAIN, ops.DOMAIN_VERSION)])
    for key, value in {FORMAT_KEY: FORMAT_NAME, VERSION_KEY: "1", CHECKSUM_KEY: tensor_checksum(model.graph)}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def random_signs(rng: np.random.Generator, out: int, k: int) -> np.ndarray:
    return np.where(rng.random((out, k)) < 0.5, -1.0, 1.0).astype(np.float32)


def both(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return load_packed(path, threads=1)(x), load_openvino(path, threads=1)(x)


def test_conv_accumulators_equal_bit_for_bit(tmp_path: Path) -> None:
    """K = 8·3·3 = 72 (a partial word, and not a multiple of 8 per row), zero padding, stride 2,
    exact zeros in the input (sign(0) = +1): every integer accumulator equal."""
    rng = np.random.default_rng(0)
    signs = random_signs(rng, 12, 72)
    path = write_single_node(tmp_path / "conv.bnz", ops.CONV, [2, 8, 9, 9], signs, attributes={
        "in_channels": 8, "kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    x[x < -0.5] = 0.0  # threshold 0 in the FakeQuantize sends these to −1: off by up to 26 here
    x[0, 0, 0, :3] = [-0.0, -np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).smallest_subnormal]
    expected, actual = both(path, x)
    assert np.array_equal(actual, expected)
    assert np.all(actual == np.round(actual)) and np.abs(expected).max() > 10


CASES = {
    # name: (op, input shape, O, K, attributes)
    "grouped conv": (ops.CONV, [2, 8, 7, 7], 12, 4 * 9, {"in_channels": 8, "kernel_shape": [3, 3], "pads": [1, 0, 2, 1],
                                                             "group": 2}),
    "depthwise dilated conv": (ops.CONV, [1, 6, 9, 9], 6, 9, {"in_channels": 6, "kernel_shape": [3, 3], "pads": [2, 2, 2, 2],
                                                                  "dilations": [2, 2], "group": 6}),
    "conv1d": (ops.CONV, [2, 8, 20], 7, 8 * 5, {"in_channels": 8, "kernel_shape": [5], "strides": [2], "pads": [2, 1]}),
    "conv, 12 channels": (ops.CONV, [2, 12, 6, 6], 5, 12 * 9, {"in_channels": 12, "kernel_shape": [3, 3]}),
    "linear on tokens": (ops.LINEAR, [2, 3, 136], 9, 136, {"in_features": 136}),
    "linear, K = 130": (ops.LINEAR, [4, 130], 9, 130, {"in_features": 130}),
    "W1A32 conv": (ops.CONV, [2, 4, 6, 6], 5, 4 * 9, {"in_channels": 4, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                          "binarize_input": 0}),
    "W1A32 linear": (ops.LINEAR, [3, 70], 4, 70, {"in_features": 70, "binarize_input": 0}),
}


@pytest.mark.parametrize("case", CASES)
def test_node_kinds_accumulators_equal(case: str, tmp_path: Path) -> None:
    op, shape, out, k, attributes = CASES[case]
    rng = np.random.default_rng(1)
    path = write_single_node(tmp_path / "node.bnz", op, shape, random_signs(rng, out, k), attributes=attributes)
    x = rng.standard_normal(shape).astype(np.float32)
    x[x < -1] = 0.0
    expected, actual = both(path, x)
    assert actual.shape == expected.shape
    channels = attributes.get("in_channels", attributes.get("in_features"))
    binary_path = attributes.get("binarize_input", 1) and attributes.get("group", 1) == 1 and channels % 8 == 0
    assert load_openvino(path).binary_layer_count() == int(binary_path)  # else the exact float fallback
    if attributes.get("binarize_input", 1):
        assert np.array_equal(actual, expected)
    else:  # float inputs: the same sums in another order
        assert np.allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["grouped conv", "depthwise dilated conv", "conv, 12 channels", "linear, K = 130"])
def test_float_fallback_scales_exact_dots(case: str, tmp_path: Path) -> None:
    """W1A1 layers that OpenVINO convolves in float (groups, channels not a multiple of 8) with a
    scale ≠ 1 and shift 0: ``dot·scale`` equal bit for bit, so a dot of 0 gives exactly 0 and the
    next layer's sign is +1. OpenVINO folded the scale into the ±1 weights and summed rounded
    products (±1 ulp at dot 0: a grouped RegNet's signs flipped and its logits moved by 0.9)."""
    op, shape, out, k, attributes = CASES[case]
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.1, 0.4, out).astype(np.float32)
    path = write_single_node(tmp_path / "node.bnz", op, shape, random_signs(rng, out, k), attributes=attributes,
                             scale=scale)
    x = rng.standard_normal(shape).astype(np.float32)
    expected, actual = both(path, x)
    assert load_openvino(path).binary_layer_count() == 0 and np.any(expected == 0)
    assert np.array_equal(actual, expected)


@pytest.mark.parametrize("activation", ["none", "relu", "hardtanh", "prelu"])
def test_fused_epilogue_with_residual(activation: str, tmp_path: Path) -> None:
    """act(dot·scale + shift + R) with per-channel vectors, R the node's own input."""
    rng = np.random.default_rng(2)
    out = 6

    def vector() -> np.ndarray:
        return rng.standard_normal(out).astype(np.float32)

    path = write_single_node(
        tmp_path / "epilogue.bnz", ops.CONV, [2, 6, 5, 5], random_signs(rng, out, 6 * 9), residual=True,
        attributes={"in_channels": 6, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "activation": activation},
        scale=np.abs(vector()) * 0.05, shift=vector(), slope=vector() if activation == "prelu" else None)
    x = rng.standard_normal((2, 6, 5, 5)).astype(np.float32)
    expected, actual = both(path, x)
    assert np.allclose(actual, expected, rtol=1e-5, atol=1e-5)
    if activation == "hardtanh":
        assert actual.min() == -1 and actual.max() == 1


def test_weight_bits_are_lsb_first_unlike_a_u1_constant_made_from_a_list() -> None:
    """The CPU kernel reads element i from bit i % 8 (the accumulator tests prove it) and 1 = +1
    (the file: set = −1). OpenVINO packs a u1 constant made from a Python list the other way
    round, most significant bit first, which is why the engine writes the bytes itself."""
    values = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    signs = np.array([values], np.float32) * 2 - 1
    assert list(ov_weight_bits(pack_signs(signs), 10)) == [0b0000_0001, 0b0000_0010]
    from_list = ov.op.Constant(ov.Type.u1, ov.Shape([1, 10]), values)
    assert list(np.asarray(from_list.get_data()).view(np.uint8)) == [0b1000_0000, 0b0100_0000]


def assert_engines_agree(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """Exports ``model``, then OpenVINO's logits against the packed runtime's: float tolerance,
    top-1 equal."""
    save_packed(model, path, (x,))
    expected = load_packed(path, threads=1)(x.numpy())
    engine = load_openvino(path, threads=1)
    actual = engine(x.numpy())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    assert np.array_equal(actual.argmax(-1), expected.argmax(-1))
    assert engine.binary_layer_count() > 0


def _converted(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    return convert(model.eval(), BinarizeConfig(), example_inputs=(x,)).eval()


def test_small_net_file(small_bnz: Path) -> None:
    """Relu before a binary conv (exact zeros), hardtanh, a residual, W1A32 linear, float head."""
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(load_openvino(small_bnz)(x), load_packed(small_bnz)(x), rtol=1e-5, atol=1e-5)


def test_demo_model(tmp_path: Path) -> None:
    x = torch.randn(16, 1, 8, 8)
    assert_engines_agree(_converted(create("digits_cnn"), x), x, tmp_path / "digits.bnz")


@pytest.mark.parametrize("name", [
    "resnet18",
    *(pytest.param(name, marks=pytest.mark.slow) for name in (
        "mobilenet_v2", "vgg11_bn", "efficientnet_b0", "shufflenet_v2_x0_5", "densenet121", "regnet_x_400mf",
        "convnext_tiny", "mobilenet_v3_small")),
])
def test_torchvision_models(name: str, tmp_path: Path, trained_statistics: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
    torch.manual_seed(0)
    size = {"resnet18": 48, "vgg11_bn": 224}.get(name, 64)  # the writer needs 224² for VGG (as the runtime tests)
    x = torch.randn(2, 3, size, size)
    model = trained_statistics(getattr(torchvision.models, name)(num_classes=10))
    assert_engines_agree(_converted(model, x), x, tmp_path / f"{name}.bnz")


def test_binary_layer_after_a_residual_epilogue(tmp_path: Path) -> None:
    """A binary conv reading only the output of a binary conv with a fused residual add: the
    CPU plugin's fusion of a scalar-threshold FakeQuantize into the producer got this wrong."""
    torch.manual_seed(0)

    class Chain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 64, 3, padding=1)
            self.a = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.b = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.head = torch.nn.Conv2d(64, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.stem(x)
            y = self.a(y) + y
            return self.head(self.b(y))

    x = torch.randn(2, 3, 16, 16)
    assert_engines_agree(_converted(Chain(), x), x, tmp_path / "chain.bnz")


def test_bireal_resnet18(tmp_path: Path) -> None:
    """The Bi-Real policy (1×1 downsample float), as `binarize convert --keep-downsample` builds it."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    model = torchvision.models.resnet18(num_classes=10).eval()
    binary = convert(model, BinarizeConfig(keep_downsample=True), example_inputs=(x,)).eval()
    assert_engines_agree(binary, x, tmp_path / "bireal.bnz")


def test_float_parts_run_in_f32_unless_asked(small_bnz: Path) -> None:
    """OpenVINO's CPU default on bf16-capable machines is bf16 (it changed top-1 classes)."""
    shape = [(1, 3, 8, 8)]
    assert load_openvino(small_bnz).compiled(shape).get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    bf16 = load_openvino(small_bnz, precision="bf16").compiled(shape).get_property("INFERENCE_PRECISION_HINT")
    assert bf16 in (ov.Type.bf16, ov.Type.f32)  # f32 where the CPU has no bf16


def test_file_is_validated_by_binarize_before_openvino_sees_it(small_bnz: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnx.load(str(small_bnz))
    weights = model.graph.initializer[0]
    weights.raw_data = bytes([weights.raw_data[0] ^ 0xFF]) + weights.raw_data[1:]  # only the checksum notices
    broken = tmp_path / "broken.bnz"
    onnx.save(model, str(broken))
    monkeypatch.setattr(ov.Core, "read_model", lambda *a, **k: pytest.fail("OpenVINO saw an unvalidated file"))
    with pytest.raises(FormatError, match="checksum"):
        load_openvino(broken)


def test_without_openvino_one_error_names_the_extra(small_bnz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ConfigError, match=r"pip install 'binarize\[openvino\]'"):
        load_openvino(small_bnz)


def test_geometry_model(tmp_path: Path) -> None:
    """The runtime tests' geometry model: strides, dilation, groups, reflect/replicate padding (as
    Pad nodes), asymmetric 'same' padding, a fused PReLU and ReLU, W1A32, a binary linear with
    bias. Circular padding (ONNX Pad mode 'wrap') is beyond OpenVINO's ONNX frontend: one error."""
    from test_runtime import Geometry

    torch.manual_seed(0)
    model = Geometry().eval()
    model.prelu.weight.data.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 8, 8)
    save_packed(model, tmp_path / "circular.bnz", (x,))
    with pytest.raises(FormatError, match=r"OpenVINO cannot convert .*Pad.* — run it on binarize's packed runtime"):
        load_openvino(tmp_path / "circular.bnz")
    model.circular = torch.nn.Identity()
    assert_engines_agree(model, x, tmp_path / "geometry.bnz")


def test_vision_transformer(tmp_path: Path) -> None:
    """Binary linears on [N, tokens, K] inside attention blocks."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    assert_engines_agree(_converted(vit, x), x, tmp_path / "vit.bnz")
