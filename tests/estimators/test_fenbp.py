"""FenBP on toy problems: the update formula step by step, and training an AdaSTE layer."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from binarize.nn import BinaryLinear
from binarize.progress import set_progress
from binarize.train.fenbp import FenBP


def test_two_steps_follow_the_formula() -> None:
    theta = nn.Parameter(torch.tensor([0.5, -0.2], dtype=torch.float64))
    optimizer = FenBP([theta], lr=0.1, momentum=0.9, weight_decay=0.5)
    grads = [torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)]
    m, expected = torch.zeros(2, dtype=torch.float64), theta.detach().clone()
    for t, g in enumerate(grads, start=1):
        theta.grad = g.clone()
        optimizer.step()
        m = 0.9 * m + 0.1 * (g + 0.5 * expected)
        expected = expected - 0.1 * m / (1 - 0.9**t)
        torch.testing.assert_close(theta.detach(), expected, rtol=1e-15, atol=1e-15)
    # the first bias-corrected step moves by exactly lr·(g + λθ)
    assert expected[0].item() != 0.5


def test_fenbp_trains_an_adaste_layer_on_a_separable_toy_problem() -> None:
    torch.manual_seed(0)
    teacher = torch.sign(torch.randn(4, 16))
    x = torch.randn(512, 16)
    y = (x @ teacher.t()).argmax(dim=1)
    layer = BinaryLinear(16, 4, bias=False, weight_estimator="adaste", input_estimator=None, scaling="none")
    with torch.no_grad():
        layer.weight.mul_(0.1)
    optimizer = FenBP(layer.parameters(), lr=0.05, momentum=0.9)
    steps = 150
    first = None
    for step in range(steps):
        set_progress(layer, step / steps)
        loss = F.cross_entropy(layer(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layer.eval()
    accuracy = (layer(x).argmax(dim=1) == y).float().mean().item()
    assert loss.item() < 0.5 * first
    assert accuracy > 0.9
