"""The packed runtime against the frozen PyTorch model: integer accumulators bit for bit,
logits within float tolerance, top-1 agreement 100%; plus import isolation and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from binarize import BinarizeConfig, convert
from binarize.errors import ConversionError
from binarize.export.freeze import FrozenBinaryLayer, FrozenBinaryLinear, freeze
from binarize.functional import sign
from binarize.models import create
from binarize.nn import BinaryConv1d, BinaryConv2d
from binarize.packed import PackedModel, load_packed, save_packed


def _integer_dots(layer: FrozenBinaryLayer, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's exact integer accumulators of a frozen layer: conv(sign(x), signs) in float64."""
    xs, signs = sign(x).double(), layer.signs.double()
    if isinstance(layer, FrozenBinaryLinear):
        return F.linear(xs, signs)
    if layer.padding_mode != "zeros":
        xs = F.pad(xs, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        return type(layer)._conv(xs, signs, None, layer.stride, 0, layer.dilation, layer.groups)
    return type(layer)._conv(xs, signs, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def assert_agrees(model: nn.Module, x: torch.Tensor, path: Path) -> PackedModel:
    """Exports ``model``, then compares accumulators, logits and top-1 with the frozen model."""
    save_packed(model, path, (x,))
    packed = load_packed(path)
    frozen = freeze(model)
    seen: list[tuple[FrozenBinaryLayer, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, inp[0])))
             for m in frozen.modules() if isinstance(m, FrozenBinaryLayer)]
    with torch.no_grad():
        expected = frozen(x)
    for hook in hooks:
        hook.remove()
    binary = list(packed.binary_layers.values())
    assert len(binary) == len(seen) > 0
    for layer, (frozen_layer, layer_input) in zip(binary, seen):
        if frozen_layer.binary_input:
            assert torch.equal(layer.accumulators(layer_input).double(), _integer_dots(frozen_layer, layer_input))
    actual = packed(x)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert torch.equal(actual.argmax(-1), expected.argmax(-1))
    return packed


def _converted(model: nn.Module, x: torch.Tensor, **config: object) -> nn.Module:
    return convert(model.eval(), BinarizeConfig(**config), example_inputs=(x,)).eval()


def test_demo_model(tmp_path: Path) -> None:
    x = torch.randn(16, 1, 8, 8)
    assert_agrees(_converted(create("digits_cnn"), x), x, tmp_path / "digits.bnz")


def test_resnet20_all_layers_binary_but_stem_and_head(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32)
    assert_agrees(_converted(create("resnet20"), x), x, tmp_path / "resnet20.bnz")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(name: str, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 48, 48)
    model = getattr(torchvision.models, name)(num_classes=10)
    assert_agrees(_converted(model, x), x, tmp_path / f"{name}.bnz")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11_bn", "efficientnet_b0", "shufflenet_v2_x0_5", "densenet121",
                                  "googlenet", "regnet_x_400mf", "convnext_tiny", "mobilenet_v3_small"])
def test_torchvision_models_slow(name: str, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 64, 64)
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(num_classes=10, **kwargs)
    assert_agrees(_converted(model, x), x, tmp_path / f"{name}.bnz")


def test_transformer_and_conv1d_layers(tmp_path: Path) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    x = torch.randn(2, 3, 32, 32)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    assert_agrees(_converted(vit, x), x, tmp_path / "vit.bnz")
    conv1d = nn.Sequential(
        nn.Conv1d(4, 8, 3), BinaryConv1d.from_float(nn.Conv1d(8, 8, 5, padding=2, dilation=1, groups=2)),
        nn.BatchNorm1d(8), BinaryConv1d.from_float(nn.Conv1d(8, 6, 3, stride=2, padding=1, padding_mode="reflect")),
        nn.Flatten(), nn.Linear(6 * 7, 3),
    ).eval()
    assert_agrees(conv1d, torch.randn(3, 4, 16), tmp_path / "conv1d.bnz")


def test_bireal_policy_resnet18_file_size(tmp_path: Path) -> None:
    """The issue's size figure: about 4.2 MB (float32 ONNX: about 46.7 MB)."""
    model = convert(torchvision.models.resnet18().eval(), BinarizeConfig(keep_downsample=True))
    path = save_packed(model, tmp_path / "resnet18.bnz")
    assert 4.0e6 < path.stat().st_size < 4.4e6


def test_refuses_an_operation_outside_the_allowlist_naming_it(tmp_path: Path) -> None:
    class Cumulative(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = BinaryConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.conv(x), dim=1)

    with pytest.raises(ConversionError, match="cumsum"):
        save_packed(Cumulative().eval(), tmp_path / "refused.bnz")
    assert not (tmp_path / "refused.bnz").exists()


def test_per_layer_times(small_bnz: Path) -> None:
    packed = load_packed(small_bnz)
    packed(torch.randn(1, 3, 8, 8), profile=True)
    times = packed.per_layer_times()
    assert list(times) == list(packed.node_ops())
    assert all(t >= 0 for t in times.values()) and {"conv1", "conv2", "fc1"} <= set(times)


def test_loading_and_running_imports_no_fx_users_estimators_or_onnx(small_bnz: Path) -> None:
    script = (
        "import sys, torch\n"
        "from binarize.packed.runtime import load_packed\n"
        f"load_packed({str(small_bnz)!r})(torch.randn(1, 3, 8, 8))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript')\n"
        "       or m.startswith(('binarize.conversion', 'binarize.estimators', 'binarize.export',\n"
        "                        'binarize.nn', 'binarize.packed.writer', 'binarize.train'))]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
