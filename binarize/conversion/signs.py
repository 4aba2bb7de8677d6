"""The check after conversion: does every binary layer's input carry both signs?

A binary layer whose input has one sign on the example input computes a constant; the
BatchNorm after it then normalises a constant and its backward divides by √eps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from binarize.nn.layers import BinaryLayer


@torch.no_grad()
def negative_sign_fractions(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> dict[str, float]:
    """For each binary layer with binary inputs: the fraction of its input elements whose sign
    is −1 (x < 0; sign(0) = +1) over one forward of ``example_inputs``."""
    counts: dict[str, list[int]] = {}

    def record(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        seen = counts.setdefault(name, [0, 0])
        seen[0] += int((x < 0).sum())
        seen[1] += x.numel()

    hooks = [
        module.register_forward_pre_hook(lambda _m, inputs, name=name: record(name, inputs))
        for name, module in model.named_modules()
        if isinstance(module, BinaryLayer) and module.input_estimator is not None
    ]
    # Train mode, as fine-tuning sees the layers: BatchNorm normalises with batch statistics
    # (in eval mode an untrained BatchNorm is the identity and passes on a one-signed input
    # it would centre in training). Its running statistics are put back afterwards.
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    was_training = model.training
    try:
        model.train()
        try:
            model(*example_inputs)
        except ValueError:  # BatchNorm1d refuses batch statistics of one example
            counts.clear()
            model.eval()
            model(*example_inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return {name: negative / max(total, 1) for name, (negative, total) in counts.items()}


def informative_fraction(fraction_negative: float) -> float:
    """The share of the less frequent sign: 0 means the input sign is constant."""
    return min(fraction_negative, 1.0 - fraction_negative)
