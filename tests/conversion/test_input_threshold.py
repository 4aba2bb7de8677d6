"""Learned input thresholds (ReActNet's RSign) on nearly one-signed binary inputs, and the
first layers `keep_first` keeps."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

import binarize
from binarize import BinarizeConfig, LayerConfig, LayerRule, load_checkpoint, provenance_of, save_checkpoint
from binarize.checkpoint import model_record
from binarize.conversion.signs import informative_fraction
from binarize.errors import ConfigError
from binarize.export import export_onnx
from binarize.nn import BinaryLayer, InputThreshold
from binarize.packed import load_packed, save_packed

POOLED = "4.conv1"  # the first block's conv1: bypass feeds it maxpool(BN output)


def max_pool_stem_net() -> nn.Module:
    """A torchvision-style ResNet: stem conv, BN, ReLU, 3×3 max-pool, two BasicBlocks."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1), BasicBlock(16, 16), BasicBlock(16, 16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def example() -> torch.Tensor:
    return torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def converted(config: BinarizeConfig | None = None) -> nn.Module:
    return binarize.convert(max_pool_stem_net(), config, example_inputs=(example(),))


def informative(model: nn.Module) -> dict[str, float]:
    return {name: informative_fraction(p) for name, p in provenance_of(model).report.input_signs.items()}


def test_a_max_pool_fed_conv_gets_a_threshold_that_balances_its_signs():
    without = converted(BinarizeConfig(min_informative_fraction=0.0))  # the cut-off switched off
    assert informative(without)[POOLED] < 0.01  # the max of 9 centred values is almost always > 0
    assert not any(isinstance(m, InputThreshold) for m in without.modules())

    model = converted()
    report = provenance_of(model).report
    assert [row.fqn for row in report.rows if row.input_threshold] == [POOLED]
    row = next(row for row in report.rows if row.fqn == POOLED)
    assert row.reason.startswith("binarized, input threshold: informative sign fraction 0.00")
    assert row.reason.endswith("< 0.05")
    assert 0.45 < informative(model)[POOLED] <= 0.5
    threshold = model.get_submodule(f"{POOLED}_input_threshold")
    assert threshold.tau.shape == (16, 1, 1) and bool((threshold.tau > 0.5).all())  # maxima of centred values
    user = next(n for n in model.graph.nodes if n.target == POOLED)
    assert user.args[0].target == f"{POOLED}_input_threshold"
    # every other binary input was balanced to begin with
    assert all(f > 0.05 for name, f in informative(model).items() if name != POOLED)


def test_the_threshold_takes_a_gradient_and_trains():
    model = converted().train()
    tau = model.get_submodule(f"{POOLED}_input_threshold").tau
    start = tau.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = example(), torch.arange(8) % 10
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert torch.isfinite(loss) and tau.grad is not None and bool(tau.grad.abs().sum() > 0)
        optimizer.step()
    assert not torch.equal(tau.detach(), start)


def test_checkpoints_replay_the_threshold(tmp_path):
    model = converted().eval()
    with torch.no_grad():
        model.get_submodule(f"{POOLED}_input_threshold").tau.add_(0.25)  # as if trained
    record = model_record(model)
    layers = {r["fqn"]: r["layer"] for r in record["plan"]}
    assert layers[POOLED]["input_threshold"] and not layers["4.conv2"]["input_threshold"]
    path = save_checkpoint(model, tmp_path / "r.pt")
    loaded = load_checkpoint(path, model=max_pool_stem_net()).eval()
    tau = loaded.get_submodule(f"{POOLED}_input_threshold").tau
    assert torch.equal(tau, model.get_submodule(f"{POOLED}_input_threshold").tau)
    x = example()
    assert torch.equal(loaded(x), model(x))


def test_onnx_and_packed_outputs_agree_with_pytorch(tmp_path):
    model = converted().eval()
    x = example()[:2]
    result = export_onnx(model, tmp_path / "m.onnx", (x,))
    assert result.checked and result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert "Sub" in {n.op_type for n in graph.node}  # x − τ before the sign
    save_packed(model, tmp_path / "m.bnz", (x,))  # checks its own output against the frozen model
    packed = load_packed(tmp_path / "m.bnz")
    assert POOLED in packed.binary_layers
    with torch.no_grad():
        expected = binarize.freeze(model)(x).numpy()
    np.testing.assert_allclose(packed(x.numpy()), expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    openvino_engine = pytest.importorskip("binarize.packed.openvino_engine")
    pytest.importorskip("openvino")
    actual = openvino_engine.load_openvino(tmp_path / "m.bnz", threads=1)(x.numpy())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_every_layer_can_have_a_threshold_and_rules_spell_it():
    model = converted(BinarizeConfig(layer=LayerConfig(input_threshold=True)))
    binary = [name for name, m in model.named_modules() if isinstance(m, BinaryLayer)]
    assert len(binary) == 4 and all(row.input_threshold for row in provenance_of(model).report.rows if row.binarized)
    assert all(0.4 < f <= 0.5 for f in informative(model).values())  # each started at its medians
    rule = LayerRule.parse("re:4\\..*=threshold:true", LayerConfig())
    assert rule.layer is not None and rule.layer.input_threshold
    assert BinarizeConfig.from_dict(BinarizeConfig(rules=(rule,)).to_dict()).rules == (rule,)
    with pytest.raises(ConfigError, match="input_threshold='maybe' is not true or false"):
        LayerRule.parse("x=threshold:maybe", LayerConfig())
    with pytest.raises(ConfigError, match="input threshold given with float inputs"):
        LayerConfig(input_estimator=None, input_threshold=True)
    with pytest.raises(ConfigError, match=r"min_informative_fraction=0.6 is outside \[0, 0.5\]"):
        BinarizeConfig(min_informative_fraction=0.6)


class _Branchy(nn.Module):
    """Data-dependent control flow in the model's own forward: conversion swaps by name."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) if x.sum() > 0 else self.net(-x)


def test_without_a_graph_the_report_says_which_layers_got_no_threshold():
    with pytest.warns(UserWarning, match="swapped modules by name"):
        model = binarize.convert(_Branchy(), BinarizeConfig(layer=LayerConfig(input_threshold=True)),
                                 example_inputs=(example(),))
    report = provenance_of(model).report
    assert report.mode == "fallback" and not any(row.input_threshold for row in report.rows)
    assert any("2 binary layer(s) got no input threshold (e.g. net.2)" in note for note in report.warnings)


class _TwoStems(nn.Module):
    """MobileOne's stem: two parallel convolutions read the image; a learned token expanded to
    the batch size reads only the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 16, 3, padding=1)
        self.narrow = nn.Conv2d(3, 16, 1)
        self.token = nn.Parameter(torch.zeros(1, 16, 1, 1))
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.wide(x) + self.narrow(x) + self.token.expand(x.shape[0], -1, -1, -1)
        return self.head(self.body(y).mean((2, 3)))


def test_keep_first_keeps_every_layer_reading_the_model_input():
    reasons = {row.fqn: row.reason for row in provenance_of(binarize.convert(_TwoStems())).report.rows}
    assert reasons == {"wide": "kept: first layer", "narrow": "kept: first layer", "body": "binarized",
                       "head": "kept: last layer"}
    binary = binarize.convert(_TwoStems(), BinarizeConfig(keep_first=False, min_fan_in=0))
    assert {row.fqn for row in provenance_of(binary).report.rows if row.binarized} == {"wide", "narrow", "body"}


def test_signs_are_measured_again_after_thresholds():
    """AlexNet's shape (no BatchNorm): once the max-pool-fed conv is balanced, its outputs are
    centred, and the next max-pool makes the following conv's input nearly one-signed too."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    model = binarize.convert(net, example_inputs=(example(),))
    report = provenance_of(model).report
    assert [row.fqn for row in report.rows if row.input_threshold] == ["3", "6"]
    assert all(f > 0.4 for f in informative(model).values())


def test_a_psa_chain_trains_through_a_threshold():
    """PSA links each binary layer's input estimator to the layer producing it; a threshold
    before the first PSA input (a float layer with a large bias feeds it, 1.2 + noise: a few
    % negative) must leave the chain linked, and both τ and the weights must get gradients."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 64), nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 3))
    with torch.no_grad():
        net[0].bias.fill_(1.2)
    config = BinarizeConfig(layer=LayerConfig("dste", input_estimator="psa"))
    binary = binarize.convert(net, config, example_inputs=(torch.randn(256, 4, generator=torch.Generator().manual_seed(1)),))
    thresholds = [m for m in binary.modules() if isinstance(m, InputThreshold)]
    assert len(thresholds) == 1
    binary.train()
    binary(torch.randn(16, 4)).square().sum().backward()
    assert thresholds[0].tau.grad is not None and thresholds[0].tau.grad.abs().sum() > 0
    for layer in (m for m in binary.modules() if isinstance(m, BinaryLayer)):
        assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
