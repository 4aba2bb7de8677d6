"""Every estimator and scaling compiles into one graph with eager's values, and never syncs.

``torch.compile(backend="aot_eager", fullgraph=True)`` raises on any graph break (a
``float(tensor)`` in a rule would be one); dynamo's counters show recompiles. Changing progress
must not recompile (schedules are 0-d buffers, graph inputs); train() and eval() compile once each.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import binarize
from binarize.config import BinarizeConfig, LayerConfig
from binarize.estimators import Estimator, names
from binarize.nn import BinaryConv2d
from binarize.nn.scaling import scaling_names
from binarize.progress import set_progress

#: psa is network-level (plain chains only, per-pass state linked by hooks): its own test below.
PER_LAYER = [name for name in names() if name != "psa"]
PROGRESS = (0.0, 0.5, 1.0)  # adaste's β·α reaches 1 near p = 0.27: both regimes run


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3, padding=1, bias=True), nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def converted(estimator: str, scaling: str | None = None) -> nn.Module:
    layer = LayerConfig(weight_estimator=estimator, input_estimator=estimator, scaling=scaling)
    return binarize.convert(small_cnn(), BinarizeConfig(layer=layer)).train()


def step(model: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same noise for stochastic estimators in both runs
    out = model(x)
    out.square().mean().backward()
    return out.detach(), [p.grad for p in model.parameters()]


def assert_compiles_like_eager(eager: nn.Module, x: torch.Tensor) -> None:
    """Same outputs and gradients at every progress; one graph for train(), one for eval()."""
    twin = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    for seed, progress in enumerate(PROGRESS):
        set_progress(eager, progress)
        set_progress(twin, progress)
        expected_out, expected_grads = step(eager, x, seed)
        out, grads = step(compiled, x, seed)
        torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1, "progress changes must not recompile"
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 2, "eval() compiles exactly once more"
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.parametrize("name", PER_LAYER)
def test_every_estimator_compiles_in_one_graph(name: str) -> None:
    assert_compiles_like_eager(converted(name), torch.randn(2, 3, 8, 8))


def test_every_scaling_compiles_in_one_graph() -> None:
    torch.manual_seed(0)
    layers = [BinaryConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1), scaling=s) for s in scaling_names()]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *layers, nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    assert_compiles_like_eager(model.train(), torch.randn(2, 3, 8, 8))


class Cubic(Estimator):
    """A user estimator written the documented way: derivative and surrogate, nothing else."""

    def __init__(self, k: float = 2.0) -> None:
        super().__init__()
        self.k = float(k)
        self._schedule_buffer("scale", 1.0)

    def set_progress(self, progress: float) -> None:
        self.scale.fill_(1.0 + progress)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.k * (1.0 - x.clamp(-1.0, 1.0) ** 2)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.k * (x - x.clamp(-1.0, 1.0) ** 3 / 3.0)


def test_a_user_estimator_compiles_in_one_graph() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        BinaryConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1), weight_estimator=Cubic(), input_estimator=Cubic(0.5)),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 4),
    )
    assert_compiles_like_eager(model.train(), torch.randn(2, 3, 8, 8))


def test_psa_chain_compiles_in_one_graph() -> None:
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 4))
    layer = LayerConfig(weight_estimator="ste", input_estimator="psa")
    assert_compiles_like_eager(binarize.convert(chain, BinarizeConfig(layer=layer)).train(), torch.randn(3, 1, 8, 8))


def test_compiled_clipped_ste_backward_has_no_dtype_bitcast() -> None:
    """The eager rule reads its bool mask through a uint8 view (a fast conversion on CPU);
    compiled, that bitcast kept the mask out of inductor's fusion (resnet18 on CPU: 1.52× float
    with it, 1.15× without), so the traced backward multiplies by the mask directly."""
    from torch._dynamo.backends.common import aot_autograd

    backward_ops: list[str] = []

    def record_backward(graph: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        backward_ops.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return graph

    torch._dynamo.reset()
    model = converted("clipped_ste")
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=lambda g, _: g, bw_compiler=record_backward), fullgraph=True)
    compiled(torch.randn(2, 3, 8, 8)).sum().backward()
    assert backward_ops and "aten.mul.Tensor" in backward_ops
    assert not [op for op in backward_ops if op.startswith("aten.view.dtype")], backward_ops
