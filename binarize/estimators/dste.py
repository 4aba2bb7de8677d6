"""DSTE: stochastic binary activations with the derivative of their expectation as gradient.

Shekhovtsov, Yanush, Flach, "Path Sample-Analytic Gradient Estimators for Stochastic Binary
Networks" (NeurIPS 2020), the baseline "deterministic straight-through"; code:
shekhovt/PSA-Neurips2020.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from binarize.estimators.base import Estimator, require
from binarize.estimators.registry import register
from binarize.functional import indicator, sign, training_sign


def sample_sign(probability: Tensor, uniform: Tensor) -> Tensor:
    """``sign(P − u)``: +1 with probability P for u ~ U(0, 1) (sign(0) = +1).

    Computed as P ≥ u, the same test without the difference tensor (IEEE subtraction of two
    floats is 0 only when they are equal, so the two agree on every input, NaN → −1 included).
    """
    return indicator(torch.ge, probability, uniform).mul_(2.0).sub_(1.0)


@register("dste")
class DSTE(Estimator):
    """x = sign(a − τ·Z), Z logistic with scale s, i.e. P(x = +1) = σ(a/(τ·s)).

    Forward: a sample in training (and in eval when ``sample_eval``), ``sign(a)`` otherwise;
    freezing is always deterministic. Backward ``φ = (2/s)·σ'(a/s)``, surrogate
    ``tanh(a/(2s)) = E[x]`` at τ = 1. Samples come from torch's global RNG: seed it to reproduce.

    τ is the noise level: 1 (the paper's method) unless ``anneal_until`` is set, which makes it
    ``τ(p) = (1 + cos(π·min(p/anneal_until, 1)))/2``: from 1 at the start of training to 0 at
    progress ``anneal_until`` (1: the end of training), after which the sample is ``sign(a)``
    and the network trained is the deterministic one that is frozen, exported and packed. The
    backward keeps scale s throughout (a fixed surrogate).

    Example:
        >>> import torch
        >>> est = DSTE(anneal_until=1.0)
        >>> est.set_progress(1.0)
        >>> est(torch.tensor([-0.2, 0.0, 0.3])).tolist()
        [-1.0, 1.0, 1.0]
    """

    paper = "PSA / DSTE (Shekhovtsov et al., NeurIPS 2020)"
    summary = "stochastic sign(a − logistic noise); gradient of E[x] = tanh(a/2s)"
    stochastic = True

    def __init__(self, s: float = 1.0, sample_eval: bool = False, anneal_until: float | None = None) -> None:
        super().__init__()
        self.s = float(s)
        require(self, "s", self.s > 0.0, "> 0")
        self.sample_eval = bool(sample_eval)
        self.anneal_until = None if anneal_until is None else float(anneal_until)
        if self.anneal_until is not None:  # the paper's method has no schedule state
            require(self, "anneal_until", 0.0 < self.anneal_until <= 1.0,
                    "in (0, 1], the progress at which the noise reaches 0")
            self._schedule_buffer("noise", 1.0)

    def set_progress(self, progress: float) -> None:
        if self.anneal_until is not None:
            self.noise.fill_(noise_level(min(progress / self.anneal_until, 1.0)))

    def uniform(self, like: Tensor) -> Tensor:
        """The U(0, 1) draws behind a sample (a method so that tests can fix them)."""
        return torch.rand_like(like)

    def probability(self, x: Tensor) -> Tensor:
        """σ(x/s): P(+1) at noise level 1, and what the backward is computed from."""
        return torch.sigmoid(x if self.s == 1.0 else x / self.s)

    def forward_value(self, x: Tensor) -> Tensor:
        return self._sample(x, self.probability(x) if self.anneal_until is None else None)

    def forward_and_keep(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # The backward needs σ(x/s), which the forward of the paper's method samples from:
        # computed once and kept, where keeping x would cost two more passes in backward.
        probability = self.probability(x)
        return self._sample(x, probability if self.anneal_until is None else None), probability

    def _sample(self, x: Tensor, probability: Tensor | None) -> Tensor:
        """The forward value; ``probability`` is σ(x/s) when the noise level is fixed at 1."""
        if not (self.training or self.sample_eval):
            return training_sign(x)
        if probability is not None:
            return sample_sign(probability, self.uniform(x))
        noise = self.noise.to(x.dtype)
        # At τ = 0 the division gives ±inf (or NaN at a = 0): the sample is sign(a) there.
        sample = sample_sign(torch.sigmoid(x / (self.s * noise)), self.uniform(x))
        return torch.where(noise > 0, sample, sign(x))

    def keep_for_backward(self, x: Tensor) -> Tensor:
        return self.probability(x)

    def backward_kept(self, probability: Tensor, grad: Tensor) -> Tensor:
        # grad·P(1 − P) in one pass (sigmoid_backward), then ·2/s in place
        return torch.ops.aten.sigmoid_backward(grad, probability).mul_(2.0 / self.s)

    def derivative(self, x: Tensor) -> Tensor:
        return self.backward(x, x.new_ones(()))

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return self.backward_kept(self.probability(x), grad)

    def surrogate(self, x: Tensor) -> Tensor:
        return torch.tanh(x / (2.0 * self.s))


def sampled_probabilities(model: nn.Module, inputs: Tensor, samples: int = 32) -> Tensor:
    """Class probabilities averaged over ``samples`` stochastic forward passes.

    The official PSA code's test protocol (``test_accuracy_samples``): the model in eval mode
    (BatchNorm running statistics) with every stochastic estimator sampling, softmax averaged
    over the samples. A model trained with ``anneal_noise`` does not need it: its samples are
    ``sign(a)`` at the end of training, the deterministic prediction.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from binarize import BinarizeConfig, LayerConfig, convert
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3))
        >>> binary = convert(net, BinarizeConfig(layer=LayerConfig("dste", input_estimator="dste")))
        >>> sampled_probabilities(binary, torch.randn(5, 4), samples=4).shape
        torch.Size([5, 3])
    """
    estimators = [m for m in model.modules() if isinstance(m, Estimator) and m.stochastic and hasattr(m, "sample_eval")]
    saved_flags, was_training = [m.sample_eval for m in estimators], model.training
    model.eval()
    try:
        for estimator in estimators:
            estimator.sample_eval = True
        with torch.no_grad():
            return torch.stack([torch.softmax(model(inputs), dim=-1) for _ in range(samples)]).mean(dim=0)
    finally:
        for estimator, flag in zip(estimators, saved_flags):
            estimator.sample_eval = flag
        model.train(was_training)


def noise_level(progress: float) -> float:
    """τ(p) = (1 + cos πp)/2: the annealed noise level, 1 at p = 0 and 0 at p = 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))
