"""Per-layer parameters, bits, memory and operations (BOPs vs FLOPs) of any model.

Operation counts follow Bi-Real Net / ReActNet: a multiply-accumulate with binary weights and
binary inputs is one BOP, any other multiply-accumulate of a Conv/Linear is one FLOP, and
``OPs = BOPs / 64 + FLOPs``. Sizes count every parameter at 32 bits except the latent weights of
binary layers, which deploy as 1 bit each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from binarize.conversion.policy import WEIGHTED_TYPES
from binarize.nn.layers import BinaryLayer

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerSummary:
    """One Conv/Linear layer's share of the model."""

    fqn: str
    type: str
    params: int
    binary_params: int
    bits: int
    macs: int
    bops: int
    flops: int
    weights: str
    inputs: str


@dataclass(frozen=True)
class ModelSummary:
    """Totals over the model plus one `LayerSummary` per weighted layer."""

    layers: tuple[LayerSummary, ...]
    params: int
    binary_params: int
    bops: int
    flops: int
    input_shape: tuple[int, ...]

    @property
    def ops(self) -> float:
        return self.bops / 64 + self.flops

    @property
    def float_bits(self) -> int:
        """Model size with every parameter in float32."""
        return self.params * FLOAT_BITS

    @property
    def binarized_bits(self) -> int:
        """Model size with binary weights at 1 bit and the rest in float32."""
        return self.binary_params + (self.params - self.binary_params) * FLOAT_BITS

    @property
    def compression(self) -> float:
        return self.float_bits / max(self.binarized_bits, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "layers": [asdict(layer) for layer in self.layers],
            "totals": {
                "params": self.params,
                "binary_params": self.binary_params,
                "float_params": self.params - self.binary_params,
                "bops": self.bops,
                "flops": self.flops,
                "ops": self.ops,
                "float_bits": self.float_bits,
                "binarized_bits": self.binarized_bits,
                "float_megabytes": self.float_bits / 8e6,
                "binarized_megabytes": self.binarized_bits / 8e6,
                "compression": self.compression,
            },
        }


def summarize(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> ModelSummary:
    """Runs one forward pass (eval mode, no grad) on ``example_inputs`` and counts.

    MACs are per example (the batch dimension is divided out).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from binarize import convert, summarize
        >>> binary = convert(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)))
        >>> summary = summarize(binary, (torch.randn(1, 16),))
        >>> summary.params, summary.binary_params, summary.bops
        (1732, 1024, 1024)
    """
    batch = int(example_inputs[0].shape[0]) if example_inputs and example_inputs[0].dim() else 1
    macs: dict[str, int] = {}
    weighted = {name: m for name, m in model.named_modules() if isinstance(m, WEIGHTED_TYPES)}

    def count(name: str, module: nn.Module, output: torch.Tensor) -> None:
        per_output = module.weight[0].numel()
        if isinstance(module, nn.Linear):
            outputs = output.numel() // module.out_features
            macs[name] = macs.get(name, 0) + outputs * module.in_features * module.out_features // batch
        else:
            macs[name] = macs.get(name, 0) + output.numel() * per_output // batch

    hooks = [
        module.register_forward_hook(lambda m, _i, out, name=name: count(name, m, out))
        for name, module in weighted.items()
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    layers = tuple(_layer(name, module, macs.get(name, 0)) for name, module in weighted.items())
    unique = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(
        layers=layers,
        params=sum(p.numel() for p in unique),
        binary_params=sum(layer.binary_params for layer in layers),
        bops=sum(layer.bops for layer in layers),
        flops=sum(layer.flops for layer in layers),
        input_shape=tuple(example_inputs[0].shape),
    )


def _layer(fqn: str, module: nn.Module, macs: int) -> LayerSummary:
    params = sum(p.numel() for p in module.parameters())
    binary = isinstance(module, BinaryLayer)
    binary_inputs = binary and module.input_estimator is not None
    binary_params = module.weight.numel() if binary else 0
    return LayerSummary(
        fqn=fqn,
        type=type(module).__name__,
        params=params,
        binary_params=binary_params,
        bits=binary_params + (params - binary_params) * FLOAT_BITS,
        macs=macs,
        bops=macs if binary_inputs else 0,
        flops=0 if binary_inputs else macs,
        weights="binary" if binary else "float",
        inputs="binary" if binary_inputs else "float",
    )
