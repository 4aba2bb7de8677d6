"""Opaque leaves: an untraceable submodule no longer sends the whole model to the fallback."""

import warnings

import pytest
import torch
from torch import nn

import binarize
from binarize import BinarizeConfig, provenance_of
from binarize.conversion import tracer
from binarize.errors import ConversionError
from binarize.nn import BinaryConv2d, BinaryLayer


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.gate = nn.Linear(8, 8)  # its weight is used functionally, never called

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.mean() > 0:
            y = y + 1.0
        return y * torch.sigmoid(nn.functional.linear(y.mean(dim=(2, 3)), self.gate.weight))[..., None, None]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)  # reads a ReLU: the policy rewrites it in fx mode
        self.bn = nn.BatchNorm2d(8)
        self.block = Branchy()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.bn(self.conv(torch.relu(self.stem(x))))
        return self.head(torch.relu(self.block(x)).mean(dim=(2, 3)))


@pytest.fixture
def example():
    torch.manual_seed(0)
    return (torch.randn(4, 3, 12, 12),)


class UntraceableNet(Net):
    """Data-dependent control flow in the model's own forward: no leaf helps."""

    def forward(self, x):
        if x.sum() > float("-inf"):
            x = x * 1.0
        return super().forward(x)


def test_a_submodule_that_fails_tracing_becomes_a_leaf_automatically(example):
    with pytest.warns(UserWarning, match=r"tracing failed in block \(TraceError: .*\); traced every Branchy as an opaque leaf"):
        binary = binarize.convert(Net(), example_inputs=example)
    report = provenance_of(binary).report
    assert (report.mode, report.leaves) == ("fx", ("block",))
    assert report.warnings[0].startswith("tracing failed in block")
    assert isinstance(binary.block.conv, BinaryConv2d)


def test_strict_refuses_instead_of_making_leaves(example):
    with pytest.raises(ConversionError, match="torch.fx cannot trace Net .*pass leaves="):
        binarize.convert(Net(), BinarizeConfig(strict=True), example_inputs=example)
    strict = binarize.convert(Net(), BinarizeConfig(strict=True), example_inputs=example, leaves=["block"])
    assert provenance_of(strict).report.mode == "fx"


def test_failing_in_the_model_s_own_forward_falls_back(example):
    with pytest.warns(UserWarning, match="tracing failed"):
        binary = binarize.convert(UntraceableNet(), example_inputs=example, leaves=["block"])
    assert provenance_of(binary).report.mode == "fallback" and provenance_of(binary).report.leaves == ()


@pytest.mark.parametrize("leaf", [Branchy, "block"], ids=["class", "fqn"])
def test_a_leaf_keeps_the_model_traced_and_its_layers_binarized(example, leaf):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        binary = binarize.convert(Net(), example_inputs=example, leaves=[leaf])
    report = provenance_of(binary).report
    assert isinstance(binary, torch.fx.GraphModule)
    assert (report.mode, report.leaves) == ("fx", ("block",))
    assert report.to_dict()["leaves"] == ["block"]
    reasons = {row.fqn: row.reason for row in report.rows}
    assert reasons == {
        "stem": "kept: first layer",
        "conv": "binarized",
        "block.conv": "binarized",  # inside the leaf: swapped by name, found by the example forward
        "block.gate": "kept: not called as a module (its weight is used inside its parent)",
        "head": "kept: last layer",
    }
    assert isinstance(binary.block.conv, BinaryConv2d) and isinstance(binary.block.gate, nn.Linear)
    assert report.activation_rewrites == ("conv: binarizes the input of relu",)  # the graph outside the leaf
    assert 0.0 < report.input_signs["block.conv"] < 1.0


def test_a_leaf_converts_the_same_layers_as_the_fallback(example):
    """Same decisions, same numbers: under the ``keep`` policy (no graph rewrite) the traced
    model with a leaf computes what the swap-by-name fallback computes."""
    keep = BinarizeConfig(activation_policy="keep")
    float_model, untraceable = Net(), UntraceableNet()
    untraceable.load_state_dict(float_model.state_dict())
    fallback = _converted(untraceable, keep, example, leaves=())
    traced = _converted(float_model, keep, example, leaves=["block"])
    assert (provenance_of(fallback).report.mode, provenance_of(traced).report.mode) == ("fallback", "fx")
    assert [r.reason for r in provenance_of(traced).report.rows] == [r.reason for r in provenance_of(fallback).report.rows]
    traced.eval(), fallback.eval()
    torch.testing.assert_close(traced(*example), fallback(*example), rtol=0, atol=0)


def _converted(model, config, example, leaves):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return binarize.convert(model, config, example_inputs=example, leaves=leaves)


@pytest.fixture
def registered():
    yield binarize.register_leaf(Branchy)
    tracer._REGISTERED.discard(Branchy)


def test_register_leaf_applies_to_every_conversion_and_replays_from_a_checkpoint(example, registered, tmp_path):
    binary = binarize.convert(Net(), example_inputs=example)
    assert provenance_of(binary).report.leaves == ("block",)
    path = binarize.save_checkpoint(binary, tmp_path / "net.pt")
    tracer._REGISTERED.discard(Branchy)  # the checkpoint names its leaves: no registration needed
    loaded = binarize.load_checkpoint(path, model=Net())
    assert provenance_of(loaded).report.leaves == ("block",) and provenance_of(loaded).report.mode == "fx"
    assert sum(isinstance(m, BinaryLayer) for m in loaded.modules()) == 2
    binary.eval(), loaded.eval()
    torch.testing.assert_close(loaded(*example), binary(*example), rtol=0, atol=0)


def test_register_leaf_refuses_what_is_not_a_module_class():
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        binarize.register_leaf(len)


@pytest.mark.parametrize(
    ("leaf", "message"),
    [("blocks", "leaf 'blocks' names no submodule"), (3, "leaf 3 is neither a module class nor a name")],
)
def test_a_wrong_leaf_is_a_one_line_error(example, leaf, message):
    with pytest.raises(ConversionError, match=message) as caught:
        binarize.convert(Net(), example_inputs=example, leaves=[leaf])
    assert "\n" not in str(caught.value)
