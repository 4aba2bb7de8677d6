"""ReSTE's equilibrium indicators: estimating error e and gradient stability s.

Wu et al., "Estimator Meets Equilibrium Perspective" (ICCV 2023). Over the binary layers
(first and last layers stay float, so they are not counted):

* ``e = Σ_l ‖f(W_l) − sign(W_l)‖₂`` where f is the weight estimator's surrogate at the current
  progress (ReSTE: the official ``sign(z)·|z|^(1/o_end)``) and W_l the (transformed) latent
  weight: how far the function the backward differentiates is from the one the forward uses;
* ``s = Σ_l Var(|∇W_l|)`` (unbiased): larger s means less stable gradients.

Both are measured after each optimizer step of a short training run on a deep copy of the
model (the given model is never changed); the report gives every step and the paper's
summaries: mean e and Σ s over the measured steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from binarize.errors import ConfigError, DataError
from binarize.functional import sign
from binarize.nn.layers import BinaryLayer
from binarize.progress import set_progress


@dataclass(frozen=True)
class IndicatorStep:
    """e and s measured after one optimizer step, with the training loss of that step."""

    step: int
    loss: float
    error: float
    stability: float


@dataclass(frozen=True)
class IndicatorReport:
    """Indicators of a short training run.

    Attributes:
        steps: one `IndicatorStep` per optimizer step.
        error: mean e over the steps (the paper's run summary).
        stability: Σ s over the steps (the paper's run summary).
        layers: fqns of the binary layers measured.
        estimators: weight estimator name of each measured layer.
        progress: the progress the estimators were held at (None: as the model had it).
    """

    steps: tuple[IndicatorStep, ...]
    error: float
    stability: float
    layers: tuple[str, ...]
    estimators: tuple[str, ...]
    progress: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "stability": self.stability,
            "progress": self.progress,
            "layers": list(self.layers),
            "estimators": list(self.estimators),
            "steps": [vars(step) for step in self.steps],
        }


def estimating_error(model: nn.Module) -> float:
    """``e = Σ_l ‖f(W_l) − sign(W_l)‖₂`` over the binary layers of ``model``."""
    total = 0.0
    with torch.no_grad():
        for layer in binary_layers(model).values():
            latent = layer.transformed_weight()
            estimator = layer.weight_estimator
            surrogate = getattr(estimator, "indicator_surrogate", estimator.surrogate)
            total += float(torch.linalg.vector_norm(surrogate(latent) - sign(latent)))
    return total


def gradient_stability(model: nn.Module) -> float:
    """``s = Σ_l Var(|∇W_l|)`` (unbiased) over the binary layers with a gradient."""
    total = 0.0
    for layer in binary_layers(model).values():
        grad = layer.weight.grad
        if grad is not None and grad.numel() > 1:
            total += float(grad.detach().abs().flatten().var(correction=1))
    return total


def binary_layers(model: nn.Module) -> dict[str, BinaryLayer]:
    """fqn → binary layer, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BinaryLayer)}


def indicators(
    model: nn.Module,
    data: Dataset | DataLoader | Iterable[tuple[Tensor, Tensor]],
    *,
    steps: int = 20,
    lr: float = 0.01,
    momentum: float = 0.9,
    batch_size: int = 64,
    progress: float | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    seed: int = 0,
) -> IndicatorReport:
    """Measures e and s after each of ``steps`` SGD steps on a deep copy of ``model``.

    Args:
        model: a converted model (any estimators); it is neither trained nor changed.
        data: a labelled data set (batched here, shuffled with ``seed``), a DataLoader, or any
            iterable of ``(inputs, targets)`` batches; it is cycled if shorter than ``steps``.
        steps: optimizer steps to measure.
        lr, momentum: of the SGD optimizer the steps use.
        batch_size: when ``data`` is a Dataset.
        progress: hold every estimator at this progress; None keeps the model's own.
        loss_fn: ``loss_fn(outputs, targets)``, cross-entropy by default.
        seed: seeds the shuffling and the stochastic estimators (global RNG state is restored).
    """
    if steps < 1:
        raise ConfigError(f"steps={steps} measures nothing", "use steps ≥ 1")
    work = copy.deepcopy(model).train()
    layers = binary_layers(work)
    if not layers:
        raise ConfigError("the model has no binary layers to measure", "convert it first (binarize convert)")
    if progress is not None:
        set_progress(work, progress)
    device = next(work.parameters()).device
    optimizer = torch.optim.SGD([p for p in work.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    measured = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        batches = _cycle(data, batch_size, seed)
        for step in range(steps):
            inputs, targets = next(batches)
            loss = loss_fn(work(inputs.to(device)), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            measured.append(IndicatorStep(step, loss.item(), estimating_error(work), gradient_stability(work)))
    return IndicatorReport(
        steps=tuple(measured),
        error=sum(m.error for m in measured) / len(measured),
        stability=sum(m.stability for m in measured),
        layers=tuple(layers),
        estimators=tuple(layer.weight_estimator.name or type(layer.weight_estimator).__name__ for layer in layers.values()),
        progress=progress,
    )


def _cycle(data: Any, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if len(data) == 0:  # type: ignore[arg-type]
            raise DataError("the data set is empty", "pass a data set with labelled examples")
        generator = torch.Generator().manual_seed(seed)
        data = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    while True:
        produced = False
        for batch in data:
            produced = True
            yield batch[0], batch[1]
        if not produced:
            raise DataError("the data yielded no batches", "pass a non-empty data set or loader")
