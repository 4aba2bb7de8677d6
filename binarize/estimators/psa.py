"""PSA: the path sample-analytic estimator for chains of stochastic binary layers.

Shekhovtsov, Yanush, Flach, "Path Sample-Analytic Gradient Estimators for Stochastic Binary
Networks" (NeurIPS 2020); code: shekhovt/PSA-Neurips2020.

PSA is network-level: the gradient of a binary unit's flip probability travels along the chain
``linear → noise → sign → linear …`` as a derivative-only quantity q (value 0), and the last
binary layer turns it into an expectation. In binarize it lives in the ``input_estimator`` slot
of the layers that consume stochastic binary activations; `PSA.check_graph` (called by
`convert`) verifies the chain and links each estimator to its layer and to the binary layer
that produces its input:

* first binary layer (its input is a real pre-activation a): ``q ≐ −x·σ(a/s)``, through a;
* inner layer k: ``qᵏ_j ≐ Δ0_j·(1 − Σ_i q_i) + Σ_i Δ_ij·q_i`` with ``Δ0_j = −x_j·σ(a_j/s)``
  (differentiated w.r.t. the producer's W, b) and ``Δ_ij = −x_j·σ((a_j − 2W_ji·x_i)/s)``
  (constant: input i flipped), summed over each output's receptive field for convolutions;
* the last layer of the chain (whose output is not another PSA layer's input) returns
  ``E[f] ≈ f(a)(1 − Σ_i π_i) + Σ_i f(a − 2W_{:,i}x_i)·π_i``, ``π_i = (1 − p_i)/n + q_i``, n its
  fan-in and p_i the detached probability of the sampled input state. ``objective="identity"``
  (any loss on top; any layer) or ``"log_softmax"`` (the paper's; a Linear layer, train with
  ``nll_loss``).

The sampled values carry no gradient of their own. In eval, sign(a) (deterministic), or a
sample when ``sample_eval`` (the official test protocol: see `sampled_probabilities`). In the
weight slot PSA is an extension (the paper keeps weights real): sign with the DSTE gradient.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import functional as F

from binarize.errors import ConfigError, ConversionError
from binarize.estimators.base import Estimator, require
from binarize.estimators.dste import sample_sign
from binarize.estimators.registry import register
from binarize.functional import sign

#: Elements per chunk of flipped-input pre-activations [B, L, outputs, K] formed in backward.
CHUNK_ELEMENTS = 1 << 24
_OBJECTIVES = ("identity", "log_softmax")
#: Nodes that move values without computing: PSA's chain may pass through them.
_TRANSPARENT_MODULES = (nn.Flatten, nn.Identity, nn.Unflatten)
_TRANSPARENT_CALLS = {torch.flatten, torch.reshape, "view", "reshape", "flatten", "contiguous"}
_FIX = "PSA covers plain chains of Linear/Conv layers (no BatchNorm, activation, residual add or pooling between binary layers); use --estimator dste for this model"


@register("psa")
class PSA(Estimator):
    """Stochastic sign(a − Z) activations (P(+1) = σ(a/s)) with the PSA chain gradient."""

    paper = "PSA (Shekhovtsov et al., NeurIPS 2020)"
    summary = "path sample-analytic gradient for chains of stochastic binary layers"
    stochastic = True

    def __init__(self, s: float = 1.0, objective: str = "identity", sample_eval: bool = False) -> None:
        super().__init__()
        if objective not in _OBJECTIVES:
            raise ConfigError(f"psa objective {objective!r} is unknown", f"use one of {', '.join(_OBJECTIVES)}")
        self.s = float(s)
        require(self, "s", self.s > 0.0, "> 0")
        self.objective = objective
        self.sample_eval = bool(sample_eval)
        # Links set by check_graph, kept out of the module tree (they point at other modules).
        self.__dict__.update(_owner=None, _producer=None, _is_output=False, _role=None, _pass={})

    # -- per-tensor view (weight slot, plots, indicators) -------------------------------------
    def uniform(self, like: Tensor) -> Tensor:
        """The U(0, 1) draws behind a sample (a method so that tests can fix them)."""
        return torch.rand_like(like)

    def derivative(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(x / self.s)
        return (2.0 / self.s) * p * (1.0 - p)

    def surrogate(self, x: Tensor) -> Tensor:
        return torch.tanh(x / (2.0 * self.s))

    # -- the chain -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self._owner is None:
            if self.training and self._role != "weight":
                raise ConversionError(
                    "a psa input estimator is not linked to its layer",
                    "build the model with binarize.convert, or call PSA.check_graph(model, fqns)",
                )
            return super().forward(x)
        if not self.training:
            return sample_sign(torch.sigmoid(x / self.s), self.uniform(x)) if self.sample_eval else sign(x)
        producer = None if self._producer is None else self._producer.input_estimator
        a = x if producer is None else x.reshape(producer._pass["out_shape"])
        p = torch.sigmoid(a / self.s)
        sample = sample_sign(p, self.uniform(a)).detach()
        delta0 = -sample * p
        if producer is None:
            q = delta0
        else:
            upstream = producer._pass
            weight = self._producer.binary_weight().detach()
            geometry = _Geometry(self._producer)
            q = delta0 * (1.0 - geometry.window_sum(upstream["q"], weight))
            q = q + _FlipSum.apply(upstream["q"], upstream["x"], sample, a.detach(), weight, geometry, self.s)
            producer._pass.clear()
        q = q - q.detach()
        state_p = torch.where(sample > 0, p, 1.0 - p).detach()
        self._pass.update(x=sample.reshape(x.shape), q=q.reshape(x.shape), p=state_p.reshape(x.shape))
        return sample.reshape(x.shape)

    def _after_owner(self, owner: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        """Forward hook of the owning layer: record its output shape; at the chain's end,
        replace the output by the expectation."""
        if not self.training:
            return None
        self._pass["out_shape"] = output.shape
        if not self._is_output:
            return None
        x, q, p = self._pass.pop("x"), self._pass.pop("q"), self._pass.pop("p")
        self._pass.clear()
        weight = owner.binary_weight()
        pi = (1.0 - p) / weight[0].numel() + q
        if self.objective == "identity":
            # Σ_i (f(a − 2W_i x_i) − f(a))·π_i for f = identity is a layer applied to x·π.
            return output - 2.0 * _layer_without_bias(owner, x * pi, weight)
        flipped = output[:, None, :] - 2.0 * weight.t()[None] * x[..., None]  # [B, C_in, C_out]
        base = F.log_softmax(output, dim=-1) * (1.0 - pi.sum(dim=1, keepdim=True))
        return base + torch.einsum("bik,bi->bk", F.log_softmax(flipped, dim=-1), pi)

    def link(self, owner: nn.Module, producer: nn.Module | None, is_output: bool) -> None:
        """Attaches this estimator to the layer whose input it binarizes (``owner``), the
        binary layer producing that input (``producer``, None for the first) and its role."""
        for key, hook in list(owner._forward_hooks.items()):
            if getattr(hook, "__self__", None) is self:
                del owner._forward_hooks[key]
        self.__dict__.update(_owner=owner, _producer=producer, _is_output=is_output, _role="input")
        owner.register_forward_hook(self._after_owner)

    def __getstate__(self) -> dict[str, Any]:
        # Per-pass tensors hold autograd graphs: never copy or pickle them.
        state = self.__dict__.copy()
        state["_pass"] = {}
        return state

    @classmethod
    def check_graph(cls, model: nn.Module, binary_fqns: list[str]) -> None:
        """Refuses graphs outside PSA's structure, naming the node; links the estimators."""
        chain = _chain(model, binary_fqns)
        for fqn in binary_fqns:
            layer = model.get_submodule(fqn)
            if isinstance(layer.weight_estimator, PSA):
                layer.weight_estimator.__dict__["_role"] = "weight"
        consumers = {producer for producer, _ in chain.values() if producer is not None}
        for fqn, (producer, _node) in chain.items():
            layer = model.get_submodule(fqn)
            estimator = layer.input_estimator
            if estimator.objective == "log_softmax" and fqn not in consumers and not isinstance(layer, nn.Linear):
                raise ConversionError(
                    f"psa objective log_softmax needs a Linear last binary layer, {fqn!r} is {type(layer).__name__}",
                    "use objective=identity",
                )
            estimator.link(layer, None if producer is None else model.get_submodule(producer), fqn not in consumers)


class _Geometry:
    """How a producer layer maps inputs to outputs: Linear or convolution (via unfold)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.conv_dims = 0 if isinstance(layer, nn.Linear) else layer.weight.dim() - 2

    def window_sum(self, q: Tensor, weight: Tensor) -> Tensor:
        """Σ of q over every output's receptive field, broadcastable against the output."""
        if not self.conv_dims:
            return q.sum(dim=-1, keepdim=True)
        ones = weight.new_ones((1, *weight.shape[1:]))
        return _layer_without_bias(self.layer, q, ones)

    def columns(self, x: Tensor) -> Tensor:
        """``[B, C_in·k, L]``: each output location's inputs (a Linear is one location)."""
        if not self.conv_dims:
            return x[..., None]
        layer = self.layer
        if self.conv_dims == 1:
            return F.unfold(x[:, :, None], (1, *layer.kernel_size), (1, *layer.dilation), (0, *layer.padding), (1, *layer.stride))
        return F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)

    def gather(self, columns: Tensor, like: Tensor) -> Tensor:
        """Inverse of ``columns`` summing overlaps: column gradients → input gradient."""
        if not self.conv_dims:
            return columns[..., 0]
        layer = self.layer
        if self.conv_dims == 1:
            size = (1, like.shape[-1])
            out = F.fold(columns, size, (1, *layer.kernel_size), (1, *layer.dilation), (0, *layer.padding), (1, *layer.stride))
            return out[:, :, 0]
        return F.fold(columns, like.shape[-2:], layer.kernel_size, layer.dilation, layer.padding, layer.stride)


class _FlipSum(torch.autograd.Function):
    """Value 0; gradient w.r.t. q_i of ``Σ_j Δ_ij·q_i`` with Δ formed in chunks in backward."""

    @staticmethod
    def forward(ctx, q, x_in, x_out, a0, weight, geometry, s):  # type: ignore[override]
        ctx.save_for_backward(x_in, x_out, a0, weight)
        ctx.geometry, ctx.s = geometry, s
        return torch.zeros_like(x_out)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x_in, x_out, a0, weight = ctx.saved_tensors
        geometry, s = ctx.geometry, ctx.s
        # Layout [B, L, O, K]: the taps K are the contiguous inner dimension, and the sum over
        # outputs O is a batched matmul without copies.
        columns = geometry.columns(x_in).transpose(1, 2).contiguous()  # [B, L, K]
        batch, locations, taps = columns.shape
        scaled_a0 = (a0.reshape(batch, a0.shape[1], -1) / s).transpose(1, 2).contiguous()  # [B, L, O]
        h = (-x_out * grad).reshape(batch, a0.shape[1], -1).transpose(1, 2).contiguous()  # [B, L, O]
        flip = (2.0 / s) * weight.reshape(weight.shape[0], -1)  # [O, K]
        outputs = flip.shape[0]
        chunk = max(1, min(outputs, CHUNK_ELEMENTS // max(1, batch * locations * taps)))
        out = columns.new_zeros((batch, locations, 1, taps))
        for start in range(0, outputs, chunk):
            part = slice(start, start + chunk)
            # σ((a_j − 2·W_ji·x_i)/s) for every input i flipped, outputs j of this chunk
            flipped = torch.addcmul(scaled_a0[:, :, part, None], columns[:, :, None, :], flip[part], value=-1.0)
            out += h[:, :, None, part] @ flipped.sigmoid_()
        out = out.squeeze(2)
        return geometry.gather(out.transpose(1, 2), x_in), None, None, None, None, None, None


def _layer_without_bias(layer: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return layer._conv_forward(x, weight, None)


def _chain(model: nn.Module, binary_fqns: list[str]) -> dict[str, tuple[str | None, torch.fx.Node]]:
    """fqn of every PSA-input layer → (fqn of the PSA layer producing its input or None, node)."""
    psa_layers = [f for f in binary_fqns if isinstance(getattr(model.get_submodule(f), "input_estimator", None), PSA)]
    if not psa_layers:
        return {}
    graph = _graph(model)
    nodes: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in psa_layers:
            if node.target in nodes:
                raise ConversionError(f"psa layer {node.target!r} is called twice", _FIX)
            nodes[node.target] = node
    by_node = {node: fqn for fqn, node in nodes.items()}
    chain: dict[str, tuple[str | None, torch.fx.Node]] = {}
    for fqn, node in nodes.items():
        layer = model.get_submodule(fqn)
        if getattr(layer, "groups", 1) != 1 or getattr(layer, "padding_mode", "zeros") != "zeros":
            raise ConversionError(f"psa does not cover grouped or non-zero-padded convolution {fqn!r}", _FIX)
        source = node.args[0]
        while _transparent(model, source):
            source = source.args[0]
        if source in by_node:
            chain[fqn] = (by_node[source], node)
            continue
        offender = _first_node_after_binary(source, by_node)
        if offender is not None:
            upstream, culprit = offender
            raise ConversionError(
                f"psa cannot pass node {_label(culprit)!r} ({_describe(model, culprit)}) between binary "
                f"layers {upstream!r} and {fqn!r}",
                _FIX,
            )
        chain[fqn] = (None, node)
    for producer in {p for p, _ in chain.values() if p is not None}:
        consumers = {chain[f][1] for f in chain if chain[f][0] == producer}
        for user in _users_through_transparent(model, nodes[producer]):
            if user not in consumers:
                raise ConversionError(
                    f"psa layer {producer!r} also feeds node {_label(user)!r} ({_describe(model, user)})", _FIX
                )
    return chain


def _first_node_after_binary(start: torch.fx.Node, by_node: dict[torch.fx.Node, str]) -> tuple[str, torch.fx.Node] | None:
    """Walking back from ``start``, the nearest PSA layer and the node right after it."""
    parent: dict[torch.fx.Node, torch.fx.Node | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for arg in node.all_input_nodes:
            if arg in parent:
                continue
            parent[arg] = node
            if arg in by_node:
                return by_node[arg], node
            queue.append(arg)
    return None


def _users_through_transparent(model: nn.Module, node: torch.fx.Node) -> list[torch.fx.Node]:
    users: list[torch.fx.Node] = []
    for user in node.users:
        users.extend(_users_through_transparent(model, user) if _transparent(model, user) else [user])
    return users


def _transparent(model: nn.Module, node: Any) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), _TRANSPARENT_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _TRANSPARENT_CALLS


def _label(node: torch.fx.Node) -> str:
    """The module fqn for module calls (what users know), else the graph node's name."""
    return str(node.target) if node.op == "call_module" else node.name


def _describe(model: nn.Module, node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return type(model.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


class _LeafTracer(torch.fx.Tracer):
    """Binary layers (anything with an input-estimator slot) stay leaves."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return hasattr(m, "input_estimator") or super().is_leaf_module(m, qualified_name)


def _graph(model: nn.Module) -> torch.fx.Graph:
    try:
        return _LeafTracer().trace(model)
    except Exception as exc:  # any error the model's forward raises under tracing
        raise ConversionError(
            f"psa needs the model's graph and torch.fx cannot trace {type(model).__name__} ({type(exc).__name__})",
            _FIX,
        ) from None
