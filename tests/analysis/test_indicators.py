"""Estimating error e and gradient stability s: the spec's worked examples and short runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import binarize
from binarize import BinarizeConfig, ConfigError, LayerConfig, convert
from binarize.analysis.indicators import estimating_error, gradient_stability
from binarize.nn import BinaryLinear
from binarize.progress import set_progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "estimators"))
import reference_numpy as ref  # noqa: E402

W = torch.tensor([[-0.3, -0.05, 0.0, 0.02, 0.2, 0.7]], dtype=torch.float64)


def one_layer(estimator: str) -> nn.Module:
    layer = BinaryLinear(6, 1, bias=False, dtype=torch.float64, weight_estimator=estimator, input_estimator=None, scaling="none")
    layer.weight.data.copy_(W)
    return nn.Sequential(layer)


def test_reste_worked_example_uses_o_end_with_sign0_plus_one() -> None:
    model = one_layer("reste")
    assert estimating_error(model) == pytest.approx(1.4912879900013907, rel=1e-12)  # progress 0: still o_end
    # the spec's torch.sign value, 1.1063181590855262, differs by exactly the zero entry (|0 − 1| = 1)
    assert estimating_error(model) ** 2 - 1.1063181590855262**2 == pytest.approx(1.0, rel=1e-12)


def test_gradient_stability_worked_example() -> None:
    model = one_layer("reste")
    model[0].weight.grad = torch.tensor([[0.1, -0.2, 0.05, 0.0, -0.4, 0.3]], dtype=torch.float64)
    assert gradient_stability(model) == pytest.approx(0.02375, rel=1e-12)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_other_estimators_use_their_surrogate_at_progress(progress: float) -> None:
    w = W.numpy()[0]
    t, k = ref.irnet_tk(progress)
    cases = {
        "clipped_ste": lambda x: np.clip(x, -1, 1),
        "irnet": lambda x: k * np.tanh(t * x),
        "approxsign": ref.approxsign_f,
        "dste": lambda x: np.tanh(x / 2),
    }
    for name, f in cases.items():
        model = one_layer(name)
        set_progress(model, progress)
        assert estimating_error(model) == pytest.approx(ref.estimating_error([w], f), rel=1e-12), name


def digits_like() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return TensorDataset(x, y)


def small_model(estimator: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh(),
        nn.Flatten(), nn.Linear(16 * 64, 32), nn.BatchNorm1d(32), nn.Hardtanh(), nn.Linear(32, 4),
    )
    return convert(model, BinarizeConfig(layer=LayerConfig(weight_estimator=estimator, input_estimator=estimator)))


def test_indicators_measure_a_copy_and_are_reproducible() -> None:
    model = small_model("reste")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = binarize.indicators(model, digits_like(), steps=4, progress=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report.layers == ("3", "7") and report.estimators == ("reste", "reste")
    assert len(report.steps) == 4
    assert report.error == pytest.approx(np.mean([s.error for s in report.steps]), rel=1e-12)
    assert report.stability == pytest.approx(sum(s.stability for s in report.steps), rel=1e-12)
    assert all(s.error > 0 and s.stability > 0 for s in report.steps)
    again = binarize.indicators(model, digits_like(), steps=4, progress=0.5)
    assert again.to_dict() == report.to_dict()


def test_indicators_work_for_every_estimator() -> None:
    data = digits_like()
    for name in ("ste", "irnet", "adaste", "dste"):
        report = binarize.indicators(small_model(name), data, steps=2)
        assert report.error >= 0 and report.stability > 0, name


def test_first_step_error_matches_a_manual_step() -> None:
    """The measured e after one step equals e of the same SGD step done by hand."""
    model = small_model("clipped_ste")
    data = digits_like()
    report = binarize.indicators(model, data, steps=1, batch_size=256, lr=0.1, momentum=0.0)
    manual = small_model("clipped_ste").train()
    x, y = data.tensors
    torch.nn.functional.cross_entropy(manual(x), y).backward()
    with torch.no_grad():
        for p in manual.parameters():
            p -= 0.1 * p.grad
    assert report.steps[0].error == pytest.approx(estimating_error(manual), rel=1e-6)
    assert report.steps[0].stability == pytest.approx(gradient_stability(manual), rel=1e-5)


def test_float_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="no binary layers"):
        binarize.indicators(nn.Linear(3, 2), digits_like(), steps=1)
