"""PSA and DSTE: the spec's 2 → 3 → 2 → 2 test vector, convolution chains, graph refusal."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import reference_numpy as ref
from binarize import BinarizeConfig, ConversionError, LayerConfig, convert
from binarize.estimators import Estimator, create
from binarize.estimators.psa import PSA

VALUES = {
    "W1": [[1, 0.5], [-0.5, 1.5], [0.3, -0.8]], "b1": [0.1, -0.2, 0],
    "W2": [[0.7, -1.2, 0.4], [-0.3, 0.9, 1.1]], "b2": [0.05, -0.1],
    "W3": [[1, -0.5], [-0.6, 0.8]], "b3": [0, 0.1],
}
UNIFORMS = [[0.30, 0.80, 0.55], [0.40, 0.65]]
X0 = [0.5, -1.0]
TABLE = {
    "psa": {
        "W1": [[-.030409, .060818], [.031031, -.062062], [.012336, -.024672]], "b1": [-.060818, .062062, .024672],
        "W2": [[-.067879, .067879, -.067879], [.133438, -.133438, .133438]], "b2": [-.067879, .133438],
        "W3": [[-.117188, -.033336], [.117188, .033336]], "b3": [-.169313, .169313],
    },
    "dste": {
        "W1": [[-.005305, .01061], [.005528, -.011056], [.006988, -.013976]], "b1": [-.01061, .011056, .013976],
        "W2": [[-.014581, .014581, -.014581], [.036891, -.036891, .036891]], "b2": [-.014581, .036891],
        "W3": [[-.057324, .057324], [.057324, -.057324]], "b3": [-.057324, .057324],
    },
}


class RealWeights(Estimator):
    """Test-only: keeps the weights real, as the PSA paper does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fix_uniforms(estimator: Estimator, u) -> None:
    u = torch.as_tensor(u, dtype=torch.float64)
    estimator.uniform = lambda like: u.reshape(like.shape)


def vector_network(name: str, **hparams) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2), nn.Linear(2, 2)).double()
    with torch.no_grad():
        for i, layer in enumerate(model, start=1):
            layer.weight.copy_(torch.tensor(VALUES[f"W{i}"], dtype=torch.float64))
            layer.bias.copy_(torch.tensor(VALUES[f"b{i}"], dtype=torch.float64))
    layer = LayerConfig(weight_estimator=name, weight_estimator_args=hparams, input_estimator=name,
                        input_estimator_args=hparams, scaling="none")
    binary = convert(model, BinarizeConfig(layer=layer, keep_last=False, min_fan_in=0)).train()
    for fqn, u in zip(("1", "2"), UNIFORMS):
        binary.get_submodule(fqn).weight_estimator = RealWeights()
        fix_uniforms(binary.get_submodule(fqn).input_estimator, u)
    return binary


def with_global_rng(model: nn.Module) -> nn.Module:
    for fqn in ("1", "2"):
        del model.get_submodule(fqn).input_estimator.uniform
    return model


def gradients(model: nn.Module) -> dict[str, np.ndarray]:
    names = {"0.weight": "W1", "0.bias": "b1", "1.weight": "W2", "1.bias": "b2", "2.weight": "W3", "2.bias": "b3"}
    return {names[n]: p.grad.numpy() for n, p in model.named_parameters()}


def reference_args():
    arrays = [np.array(VALUES[k], dtype=float) for k in ("W1", "b1", "W2", "b2", "W3", "b3")]
    return (np.array(X0), *arrays, *(np.array(u) for u in UNIFORMS))


def test_psa_reproduces_the_spec_vector() -> None:
    model = vector_network("psa", objective="log_softmax")
    expected_log_probs = model(torch.tensor([X0], dtype=torch.float64))
    (-expected_log_probs[0, 0]).backward()
    got = gradients(model)
    reference = ref.psa_vector_grads(*reference_args())
    for key, row in TABLE["psa"].items():
        np.testing.assert_allclose(got[key], row, atol=1e-6)
        np.testing.assert_allclose(got[key], reference[key], rtol=1e-10, atol=1e-14)


def test_dste_reproduces_the_spec_vector() -> None:
    model = vector_network("dste")
    F.cross_entropy(model(torch.tensor([X0], dtype=torch.float64)), torch.tensor([0])).backward()
    got = gradients(model)
    reference = ref.dste_vector_grads(*reference_args())
    for key, row in TABLE["dste"].items():
        np.testing.assert_allclose(got[key], row, atol=1e-6)
        np.testing.assert_allclose(got[key], reference[key], rtol=1e-10, atol=1e-14)


def test_samples_are_seeded_and_eval_is_deterministic() -> None:
    model = with_global_rng(vector_network("psa"))
    x = torch.randn(64, 2, dtype=torch.float64)
    torch.manual_seed(3)
    first = model(x)
    torch.manual_seed(3)
    assert torch.equal(model(x), first)
    model.eval()
    assert torch.equal(model(x), model(x))
    layer = model.get_submodule("1")
    hidden = model.get_submodule("0")(x)
    torch.testing.assert_close(layer(hidden), F.linear(torch.where(hidden >= 0, 1.0, -1.0).double(), layer.weight, layer.bias))


def test_dste_sample_frequency_is_sigmoid() -> None:
    torch.manual_seed(0)
    a = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64).repeat(20000, 1)
    estimator = create("dste", s=2.0).train()
    frequency = (estimator(a) > 0).double().mean(0)
    torch.testing.assert_close(frequency, torch.sigmoid(a[0] / 2.0), atol=0.01, rtol=0)
    torch.manual_seed(1)
    first = estimator(a[:8])
    torch.manual_seed(1)
    assert torch.equal(estimator(a[:8]), first)
    assert torch.equal(estimator.eval()(a[0]), torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))


def conv_chain(unrolled: bool, dims: int) -> tuple[nn.Module, torch.Tensor]:
    """float conv → psa conv (3-tap, strided, padded; dilated in 1-d) → psa linear; or the same
    with the binary conv written as a dense Linear on the flattened map (its Toeplitz matrix)."""
    torch.manual_seed(0)
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    options = {"padding": 2, "dilation": 2} if dims == 1 else {"padding": 1}
    first, middle = conv(1, 2, 3, padding=1), conv(2, 3, 3, stride=2, **options)
    size = (8,) if dims == 1 else (4, 4)
    x = torch.randn(2, 1, *size)
    inputs = 2 * math.prod(size)
    basis = torch.eye(inputs).reshape(-1, 2, *size)
    responses = (F.conv1d if dims == 1 else F.conv2d)(basis, middle.weight, stride=2, **options)
    outputs = responses[0].numel()
    last = nn.Linear(outputs, 2)
    if unrolled:
        dense = nn.Linear(inputs, outputs)
        with torch.no_grad():
            dense.weight.copy_(responses.reshape(inputs, outputs).t())
            dense.bias.copy_(middle.bias.repeat_interleave(outputs // 3))
        model = nn.Sequential(first, nn.Flatten(), dense, last)
    else:
        model = nn.Sequential(first, middle, nn.Flatten(), last)
    layer = LayerConfig(weight_estimator="psa", input_estimator="psa", scaling="none")
    binary = convert(model.double(), BinarizeConfig(layer=layer, keep_last=False, min_fan_in=0)).train()
    return binary, x.double()


@pytest.mark.parametrize("dims", [1, 2])
def test_psa_on_convolutions_equals_the_dense_chain(dims: int) -> None:
    torch.manual_seed(5)
    size = (8,) if dims == 1 else (4, 4)
    results = []
    for unrolled in (False, True):
        model, x = conv_chain(unrolled, dims)
        binaries = [m for m in model.modules() if hasattr(m, "input_estimator")]
        if not results:
            uniforms = (torch.rand(2, 2, *size, dtype=torch.float64), torch.rand(2, binaries[-1].in_features, dtype=torch.float64))
        for layer, u in zip(binaries, uniforms):
            layer.weight_estimator = RealWeights()
            fix_uniforms(layer.input_estimator, u)
        out = model(x)
        out.pow(2).sum().backward()
        first = next(m for m in model.modules() if type(m) in (nn.Conv1d, nn.Conv2d))
        results.append((out.detach(), first.weight.grad, first.bias.grad, binaries[-1].weight.grad))
    for conv_value, dense_value in zip(*results):
        torch.testing.assert_close(conv_value, dense_value, rtol=1e-10, atol=1e-12)
    assert results[0][1].abs().sum() > 0


def test_convert_refuses_psa_on_resnet_naming_the_node() -> None:
    from torchvision.models import resnet18

    with pytest.raises(ConversionError) as caught:
        convert(resnet18(), BinarizeConfig(layer=LayerConfig(weight_estimator="psa", input_estimator="psa")))
    message = str(caught.value)
    assert "'layer1.0.bn1' (BatchNorm2d) between binary layers 'layer1.0.conv1' and 'layer1.0.conv2'" in message
    assert "dste" in message and "\n" not in message


@pytest.mark.parametrize(
    ("between", "node"),
    [(nn.BatchNorm1d(8), "'1' (BatchNorm1d)"), (nn.ReLU(), "'1' (ReLU)")],
)
def test_psa_refuses_modules_between_binary_layers(between: nn.Module, node: str) -> None:
    model = nn.Sequential(nn.Linear(8, 8), between, nn.Linear(8, 8))
    # keep: with the default bypass the second layer reads the pre-activation and the ReLU is not between them
    config = BinarizeConfig(layer=LayerConfig(weight_estimator="dste", input_estimator="psa"), keep_first=False,
                            keep_last=False, min_fan_in=0, activation_policy="keep")
    with pytest.raises(ConversionError, match=re.escape(node)):
        convert(model, config)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.pool = nn.Linear(8, 8), nn.Linear(8, 8), nn.Conv2d(1, 1, 1)

    def forward(self, x):
        h = self.a(x)
        return self.b(h) + h


def test_psa_refuses_residual_fan_out() -> None:
    config = BinarizeConfig(layer=LayerConfig(weight_estimator="dste", input_estimator="psa"), keep_first=False, keep_last=False, min_fan_in=0)
    with pytest.raises(ConversionError, match="psa layer 'a' also feeds node 'add'"):
        convert(Residual(), config)


def test_deepcopy_after_training_step_keeps_links_and_drops_pass_state() -> None:
    model = with_global_rng(vector_network("psa"))
    model(torch.randn(4, 2, dtype=torch.float64)).sum().backward()
    clone = copy.deepcopy(model)
    estimator = clone.get_submodule("2").input_estimator
    assert estimator._owner is clone.get_submodule("2") and estimator._producer is clone.get_submodule("1")
    out = clone(torch.randn(4, 2, dtype=torch.float64))
    out.sum().backward()
    assert clone.get_submodule("0").weight.grad.abs().sum() > 0


def test_unlinked_psa_in_the_input_slot_says_how_to_link() -> None:
    layer = nn.Sequential(nn.Linear(3, 3))
    estimator = PSA().train()
    with pytest.raises(ConversionError, match="not linked"):
        estimator(torch.randn(2, 3))
    assert layer is not None
