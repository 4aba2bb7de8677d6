"""Every estimator's eval forward is what freezing keeps: deterministic ±1·α, no samples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from binarize import BinarizeConfig, LayerConfig, convert, freeze
from binarize.estimators import names
from binarize.progress import set_progress


def chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 24), nn.Linear(24, 24), nn.Linear(24, 24), nn.Flatten(), nn.Linear(24, 3))


@pytest.mark.parametrize("name", names())
def test_frozen_model_equals_eval_forward(name: str) -> None:
    model = convert(chain(), BinarizeConfig(layer=LayerConfig(weight_estimator=name, input_estimator=name), min_fan_in=0))
    set_progress(model, 0.5)
    x = torch.randn(16, 12)
    model.train()
    model(x).sum().backward()  # a training pass first: no state may leak into eval
    model.eval()
    expected = model(x)
    assert torch.equal(model(x), expected)
    torch.testing.assert_close(freeze(model)(x), expected, rtol=1e-5, atol=1e-5)
