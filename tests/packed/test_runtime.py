"""The packed runtime against the frozen PyTorch model: integer accumulators bit for bit,
logits within float tolerance, top-1 agreement 100%; plus import isolation, memory and options."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from binarize import BinarizeConfig, convert
from binarize.errors import ConversionError
from binarize.functional import sign
from binarize.models import create
from binarize.nn import BinaryConv1d, BinaryConv2d, BinaryLinear
from binarize.nn.frozen import (
    FrozenBinaryConv,
    FrozenBinaryLayer,
    FrozenBinaryLinear,
    freeze,
    frozen_layers,
)
from binarize.packed import PackedModel, load_packed, save_packed


def _integer_dots(layer: FrozenBinaryLayer, x: torch.Tensor) -> np.ndarray:
    """PyTorch's exact integer accumulators of a frozen layer: conv(sign(x), signs) in float64,
    on ``x`` before any non-zero padding (the layer pads it, as torch does)."""
    xs, signs = sign(x).double(), layer.signs.double()
    if isinstance(layer, FrozenBinaryLinear):
        return F.linear(xs, signs).numpy()
    return layer.geometry.convolve(xs, signs).numpy()


def assert_agrees(model: nn.Module, x: torch.Tensor, path: Path) -> PackedModel:
    """Exports ``model``, then compares accumulators, logits and top-1 with the frozen model."""
    save_packed(model, path, (x,))
    packed = load_packed(path)
    frozen = freeze(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0]))
             for name, m in frozen_layers(frozen).items()]
    with torch.no_grad():
        expected = frozen(x).numpy()
    for hook in hooks:
        hook.remove()
    layers = frozen_layers(frozen)
    binary_input = {name for name, layer in layers.items() if layer.binary_input}
    assert set(packed.binary_layers) == binary_input and seen  # W1A32 layers run in onnxruntime
    for name in binary_input:
        layer_input = seen[name]
        if isinstance(layers[name], FrozenBinaryConv):  # a standard Pad node precedes the kernel
            layer_input = layers[name].geometry.pad(layer_input)
        dots = packed.binary_layers[name].accumulate(layer_input.numpy())
        assert dots.dtype == np.int32
        np.testing.assert_array_equal(dots, _integer_dots(layers[name], seen[name]))
    actual = packed(x.numpy())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    assert np.array_equal(actual.argmax(-1), expected.argmax(-1))
    return packed


def _converted(model: nn.Module, x: torch.Tensor, **config: object) -> nn.Module:
    return convert(model.eval(), BinarizeConfig(**config), example_inputs=(x,)).eval()


def test_demo_model(tmp_path: Path) -> None:
    x = torch.randn(16, 1, 8, 8)
    assert_agrees(_converted(create("digits_cnn"), x), x, tmp_path / "digits.bnz")


def test_resnet20_all_layers_binary_but_stem_and_head(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32)
    packed = assert_agrees(_converted(create("resnet20"), x), x, tmp_path / "resnet20.bnz")
    assert len(packed.binary_layers) == 18
    # stem, the two option-A shortcuts (strided slice + channel pad: computed from constants by the
    # exporter, folded so that the residual Add and Clip fuse into the binary conv), head
    assert list(packed.step_kinds().values()).count("float") == 4
    # the shortcuts' slice bounds and pads are constants of their segment, not inputs fed each call
    assert [len(step.inputs) for step in packed._steps if step.name not in packed.binary_layers] == [1, 1, 1, 1]


def test_float_segments_count_their_work_through_binary_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small float segments run on one onnxruntime thread: their multiply-adds per sample are
    counted on shapes carried through the binary layers (the head's input comes after 18). A
    segment with none gets no second session, which no batch would use."""
    from binarize.packed import runtime

    x = torch.randn(1, 3, 32, 32)
    path = save_packed(_converted(create("resnet20"), x), tmp_path / "resnet20.bnz", (x,))
    counted: list[float] = []
    count, session = runtime._multiply_adds, runtime._session
    session_threads: list[int] = []
    monkeypatch.setattr(runtime, "_multiply_adds", lambda segment: counted.append(count(segment)) or counted[-1])
    monkeypatch.setattr(runtime, "_session", lambda model, threads: session_threads.append(threads) or session(model, threads))
    packed = load_packed(path, threads=2)
    # stem conv 3→16 3×3 at 32², the two option-A shortcuts, the 64→10 classifier
    assert counted == [3 * 16 * 9 * 32 * 32, 0, 0, 64 * 10]
    assert session_threads == [2, 1, 1, 1, 2, 1]
    np.testing.assert_allclose(packed(np.repeat(x.numpy(), 40, axis=0))[:1], packed(x.numpy()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(name: str, tmp_path: Path, trained_statistics: Callable[[nn.Module], nn.Module]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    model = trained_statistics(getattr(torchvision.models, name)(num_classes=10))
    assert_agrees(_converted(model, x), x, tmp_path / f"{name}.bnz")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11_bn", "efficientnet_b0", "shufflenet_v2_x0_5", "densenet121",
                                  "googlenet", "regnet_x_400mf", "convnext_tiny", "mobilenet_v3_small"])
def test_torchvision_models_slow(name: str, tmp_path: Path, trained_statistics: Callable[[nn.Module], nn.Module]) -> None:
    torch.manual_seed(0)
    # VGG's 7×7 adaptive pooling needs 224² for the TorchScript-based exporter the writer rewrites
    x = torch.randn(1, 3, 224, 224) if name == "vgg11_bn" else torch.randn(2, 3, 64, 64)
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = trained_statistics(getattr(torchvision.models, name)(num_classes=10, **kwargs))
    assert_agrees(_converted(model, x), x, tmp_path / f"{name}.bnz")


def test_densenet_blocks(tmp_path: Path, trained_statistics: Callable[[nn.Module], nn.Module]) -> None:
    """Concatenated features, BatchNorm before and after each binary conv, transitions (binary
    1×1 conv, 2×2 average pool): densenet121's structure, small. With BatchNorm at its initial
    statistics this disagreed by 0.22, from exact ties at sign's threshold (see the fixture)."""
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, bn_size=2, num_init_features=16, block_config=(2, 2, 2, 2),
                                        num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    packed = assert_agrees(_converted(trained_statistics(model), x), x, tmp_path / "densenet.bnz")
    assert len(packed.binary_layers) == 19


@pytest.mark.parametrize("trained", [False, True])
def test_a_disagreement_on_untrained_batchnorm_is_explained_not_called_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_statistics: Callable[[nn.Module], nn.Module], trained: bool
) -> None:
    """With BatchNorm at its initial statistics (mean 0, var 1) a sign threshold sits at exactly
    0, where the engines round ties differently (SPEC §6; seen as 0.22 on a small DenseNet): the
    writer's check says so and how to go on, instead of "report this as a bug"."""
    import binarize.packed.runtime as runtime

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    x = torch.randn(2, 3, 8, 8)
    binary = _converted(trained_statistics(model) if trained else model, x)
    real = runtime.load_packed
    monkeypatch.setattr(runtime, "load_packed", lambda path: lambda *xs: real(path)(*xs) + 1.0)  # a disagreeing engine
    with pytest.raises(ConversionError) as refused:
        save_packed(binary, tmp_path / "m.bnz", (x,))
    assert ("report this as a bug" in str(refused.value)) == trained
    assert ("initial statistics" in str(refused.value) and "--no-check" in refused.value.fix) == (not trained)
    assert list(tmp_path.iterdir()) == []


def test_vision_transformer(tmp_path: Path) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    x = torch.randn(2, 3, 32, 32)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    assert_agrees(_converted(vit, x), x, tmp_path / "vit.bnz")


class Geometry(nn.Module):
    """Strides, dilation, groups, asymmetric 'same' padding, every padding mode, a W1A32 conv, a
    PReLU and a ReLU to fuse, and a binary linear with bias."""

    def __init__(self) -> None:
        super().__init__()
        binary = BinaryConv2d.from_float
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.w1a32 = BinaryConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1), input_estimator=None)
        self.dilated = binary(nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=2, bias=False))
        self.prelu = nn.PReLU(16)
        self.reflect = binary(nn.Conv2d(16, 16, 3, stride=2, padding=1, padding_mode="reflect"))
        self.replicate = binary(nn.Conv2d(16, 16, (3, 1), padding=(1, 0), padding_mode="replicate"))
        self.circular = binary(nn.Conv2d(16, 16, 3, padding=1, padding_mode="circular", groups=4))
        self.same = binary(nn.Conv2d(16, 8, (2, 4), padding="same", bias=False))
        self.bn = nn.BatchNorm2d(8)
        self.fc = BinaryLinear.from_float(nn.Linear(8 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.dilated(self.w1a32(self.stem(x))))
        x = self.circular(self.replicate(self.reflect(x)))
        x = torch.relu(self.bn(self.same(x)))
        return self.fc(torch.flatten(x, 1))


def test_strides_dilation_groups_padding_modes_and_w1a32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Geometry().eval()
    model.prelu.weight.data.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    packed = assert_agrees(model, torch.randn(3, 3, 8, 8), tmp_path / "geometry.bnz")
    assert "w1a32" not in packed.binary_layers and packed.binary_layers["dilated"].kernel.activation == "prelu"
    assert packed.binary_layers["same"].kernel.activation == "relu"


def test_conv1d_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    conv1d = nn.Sequential(
        nn.Conv1d(4, 8, 3), BinaryConv1d.from_float(nn.Conv1d(8, 8, 5, padding=4, dilation=2, groups=2)),
        nn.BatchNorm1d(8), BinaryConv1d.from_float(nn.Conv1d(8, 6, 3, stride=2, padding=1, padding_mode="reflect")),
        nn.Flatten(), nn.Linear(6 * 7, 3),
    ).eval()
    assert_agrees(conv1d, torch.randn(3, 4, 16), tmp_path / "conv1d.bnz")


def test_bireal_resnet18_is_one_bit_in_the_file_and_in_memory(tmp_path: Path) -> None:
    """Binary 3×3 convs at 1 bit per weight, float stem/shortcuts/head: about 4.2 MB (float32
    ONNX: 46.7 MB), and the loaded kernels hold the weights packed, not as float copies."""
    model = convert(torchvision.models.resnet18().eval(), BinarizeConfig(keep_downsample=True))
    path = save_packed(model, tmp_path / "resnet18.bnz", (torch.randn(1, 3, 64, 64),))
    assert 4.1e6 < path.stat().st_size < 4.5e6
    packed = load_packed(path, threads=1)
    binary_weights = sum(layer.signs.numel() for layer in frozen_layers(freeze(model)).values())
    assert len(packed.binary_layers) == 16
    assert binary_weights / 8 <= packed.weight_bytes < binary_weights / 8 * 1.2  # the kernels pad rows a little


def test_the_loaded_runtime_keeps_no_copy_of_its_float_segments(tmp_path: Path) -> None:
    """Once loaded, Python holds the kernels' packed weights, the fed matrices and little else:
    neither the parsed file nor a serialized segment (onnxruntime's wrapper keeps the bytes it is
    given: here the 256 KB of a float 1×1 conv, which its session holds already)."""
    import gc
    import tracemalloc

    model = nn.Sequential(nn.Conv2d(3, 8, 3), BinaryConv2d.from_float(nn.Conv2d(8, 256, 3)), nn.Conv2d(256, 256, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 2)).eval()
    path = save_packed(model, tmp_path / "float_conv.bnz", (torch.randn(1, 3, 8, 8),))
    load_packed(path, threads=1)  # imports and onnxruntime's first-use state are not the model's
    gc.collect()
    tracemalloc.start()
    try:
        packed = load_packed(path, threads=1)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    float_conv_bytes = 256 * 256 * 4
    assert held - packed.weight_bytes < float_conv_bytes / 4


def test_float_matrices_are_fed_not_held_by_the_session() -> None:
    """A Gemm/MatMul weight leaves the segment's initializers for a graph input the step feeds
    (onnxruntime reads it in place, so the two sessions of a small segment share it); conv
    weights stay."""
    from onnx import TensorProto, helper, numpy_helper

    from binarize.packed.runtime import _fed_weights

    rng = np.random.default_rng(0)
    matrix, kernel = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "m"], ["y"], transB=1), helper.make_node("Conv", ["image", "k"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(matrix, "m"), numpy_helper.from_array(kernel, "k")])
    model = helper.make_model(graph)
    weights = _fed_weights(model)
    assert list(weights) == ["m"] and np.array_equal(weights["m"], matrix)
    assert [t.name for t in model.graph.initializer] == ["k"]
    assert [v.name for v in model.graph.input] == ["x", "image", "m"]


def test_step_times_and_kinds(small_bnz: Path) -> None:
    packed = load_packed(small_bnz, threads=1)
    packed(np.zeros((1, 3, 8, 8), np.float32), profile=True)
    kinds = packed.step_kinds()
    assert list(packed.per_layer_times()) == list(kinds)
    assert [k for k in kinds.values() if k != "float"] == ["BinaryConv", "BinaryConv"]  # fc1 is W1A32


def test_threads_can_change_after_load(small_bnz: Path) -> None:
    packed = load_packed(small_bnz, threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = packed(x)
    packed.set_num_threads(2)
    np.testing.assert_allclose(packed(x), before, rtol=1e-6, atol=1e-6)


def test_int8_float_layers_stay_close_to_float(small_bnz: Path, small_net: nn.Module) -> None:
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        expected = freeze(small_net)(x).numpy()
    packed = load_packed(small_bnz, threads=1, int8_float_layers=True,
                         calibration=[torch.randn(8, 3, 8, 8).numpy() for _ in range(4)])
    actual = packed(x.numpy())
    assert 0 < np.abs(actual - expected).max() < 0.25 * np.abs(expected).max()


def test_loading_and_running_imports_neither_torch_nor_numba(small_bnz: Path, tmp_path: Path) -> None:
    script = (
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numba', 'torchvision'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import numpy as np\n"
        "from binarize.packed import load_packed\n"
        f"print(load_packed({str(small_bnz)!r}, threads=1)(np.ones((1, 3, 8, 8), np.float32)).shape)\n"
    )
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the source tree
    # has no compiled kernels when binarize is installed normally
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 5)"


def test_refuses_a_model_without_binary_layers(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no binary layer"):
        save_packed(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), tmp_path / "float.bnz", (torch.randn(1, 3, 8, 8),))
    assert not (tmp_path / "float.bnz").exists()


def test_refuses_a_layer_called_twice(tmp_path: Path) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = BinaryConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    with pytest.raises(ConversionError, match="more than once"):
        save_packed(Twice().eval(), tmp_path / "twice.bnz", (torch.randn(1, 8, 6, 6),))
    assert not (tmp_path / "twice.bnz").exists()
