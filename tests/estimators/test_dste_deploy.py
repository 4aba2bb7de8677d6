"""DSTE that deploys: noise annealed to zero over training, and the official sampled test protocol."""

from __future__ import annotations

import io

import pytest
import torch
from torch.utils.data import TensorDataset

from binarize import BinarizeConfig, LayerConfig, convert
from binarize.data.digits import digits_tensors
from binarize.errors import ConfigError
from binarize.estimators.dste import DSTE, noise_level, sampled_probabilities
from binarize.models import create
from binarize.nn.frozen import freeze
from binarize.progress import set_progress
from binarize.train import FinetuneConfig, finetune


def test_noise_schedule_and_its_effect_on_fixed_draws():
    assert [noise_level(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    a = torch.tensor([-0.5, -0.1, 0.0, 0.2, 1.0])
    u = torch.full_like(a, 0.45)  # sign(σ(a/τ) − 0.45): +1 where a/τ ≥ logit(0.45) = −0.2007
    estimator = DSTE(anneal_until=1.0).train()
    estimator.uniform = lambda like: u
    assert estimator(a).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]  # τ = 1: a = −0.1 ≥ −0.2007
    estimator.set_progress(0.5)  # τ = 0.5: a/τ = −0.2 ≥ −0.2007 still
    assert estimator(a).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]
    estimator.set_progress(2 / 3)  # τ = 0.25: a/τ = −0.4 < −0.2007
    assert float(estimator.noise) == pytest.approx(0.25)
    assert estimator(a).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    estimator.set_progress(1.0)  # τ = 0: sign(a), whatever the draw (no NaN at a = 0)
    estimator.uniform = lambda like: torch.full_like(like, 0.999)
    assert estimator(a).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    # the gradient keeps scale s: 2σ'(a) at every noise level
    x = a.clone().requires_grad_()
    estimator(x).sum().backward()
    p = torch.sigmoid(a)
    assert torch.allclose(x.grad, 2 * p * (1 - p))


def test_without_annealing_the_paper_method_is_unchanged():
    estimator = DSTE()
    estimator.set_progress(0.9)
    assert not list(estimator.buffers()) and estimator.hparams() == {"s": 1.0, "sample_eval": False, "anneal_until": None}


def _trained_digits(anneal: bool) -> torch.nn.Module:
    images, labels = digits_tensors()
    torch.manual_seed(0)
    float_model = create("digits_cnn", width=8)
    args = {"anneal_until": 1.0} if anneal else {}
    layer = LayerConfig("dste", weight_estimator_args=args, input_estimator="dste", input_estimator_args=args)
    binary = convert(float_model, BinarizeConfig(layer=layer))
    config = FinetuneConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", log_every=10**6, seed=0)
    finetune(binary, TensorDataset(images[:384], labels[:384]), config=config, stream=io.StringIO())
    return binary


def test_annealed_model_agrees_with_its_frozen_copy():
    images, _ = digits_tensors()
    x = images[-200:]
    annealed = _trained_digits(anneal=True)
    set_progress(annealed, 1.0)  # the end of training: τ = 0
    with torch.no_grad():
        deployed = torch.softmax(freeze(annealed)(x), dim=-1)
    # the trained network's own (sampling) forward is the frozen deterministic one
    torch.manual_seed(1)
    assert torch.allclose(sampled_probabilities(annealed, x, samples=3), deployed, atol=1e-6)
    # the paper's method (noise kept) trains a different network from the one deployed
    plain = _trained_digits(anneal=False)
    with torch.no_grad():
        plain_deployed = torch.softmax(freeze(plain)(x), dim=-1)
    assert (sampled_probabilities(plain, x, samples=3) - plain_deployed).abs().max() > 0.05


def test_sampled_probabilities_restore_flags_and_mode():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    binary = convert(net, BinarizeConfig(layer=LayerConfig("dste", input_estimator="dste"))).train()
    probabilities = sampled_probabilities(binary, torch.randn(5, 4), samples=8)
    assert torch.allclose(probabilities.sum(-1), torch.ones(5))
    assert binary.training and not any(getattr(m, "sample_eval", False) for m in binary.modules())


@pytest.mark.parametrize("value", [0.0, 1.5, float("nan")])
def test_anneal_until_out_of_range_is_one_line(value: float) -> None:
    with pytest.raises(ConfigError, match=r"dste\.anneal_until=.* is out of range — anneal_until must be a finite number in \(0, 1\]"):
        DSTE(anneal_until=value)
