"""Shared by the zoo sweeps (torchvision_convert.py, timm_convert.py): does a converted model train?

Per model, with the default `BinarizeConfig` (W1A1, float32, random weights): convert, run
forward/backward, then 3 SGD steps on one random batch and check that the loss and every
gradient stay finite, that every binary layer's latent weight gets a nonzero gradient, and the
smallest informative-sign fraction min(p, 1 − p) over the binary layers' inputs (p = fraction
of −1 signs on the example input; 0 means a constant input). Prints a table and counts and
writes the rows as JSON (after every model, so a long sweep that stops keeps its rows).

Binary layers with a zero gradient at the first step are checked once more with every
zero-initialised gain (a residual block's last BatchNorm γ under ``zero_init_last``, timm's
default) set to 1: when the gradient then reaches them, the zero is the block's initialisation
(pretrained weights, or the first SGD step, give γ ≠ 0), not a conversion fault, and is not
counted as a failure.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

import binarize
from binarize.conversion.signs import informative_fraction
from binarize.nn import BinaryLayer
from binarize import provenance_of

STEPS = 3
ZERO_INIT = "zero-initialised gain (e.g. last BN γ of a block): pretrained weights fix it"


def check(build: Callable[[], tuple[nn.Module, int]], batch: int = 2) -> dict:
    """The sweep row of the float model ``build() → (model, input size)``."""
    model, size = build()
    x = torch.randn(batch, 3, size, size)
    row: dict = {"size": size, "batch": batch}
    for param in model.parameters():  # a zero-initialised head (ViT) would stop every gradient
        if param.dim() > 1 and not param.ne(0).any():
            nn.init.normal_(param, std=0.02)
    for module in model.modules():  # random drops (dropout, stochastic depth) could stop a block's gradient
        if "Drop" in type(module).__name__ or type(module).__name__ == "StochasticDepth":
            for rate in ("p", "drop_prob"):
                if isinstance(getattr(module, rate, None), float):
                    setattr(module, rate, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binary = binarize.convert(model, example_inputs=(x,))
    del model  # only the binary copy trains: halves the memory of the largest models
    report = provenance_of(binary).report
    row.update(mode=report.mode, binarized=report.binarized_layers, layers=len(report.rows))
    row["rewrites"] = len(report.activation_rewrites)
    row["min_informative"] = min((informative_fraction(p) for p in report.input_signs.values()), default=None)
    binary.train()
    optimizer = torch.optim.SGD(binary.parameters(), lr=0.01, momentum=0.9)
    target = None
    row.update(losses=[], finite=True, grads=True)
    for step in range(STEPS):
        optimizer.zero_grad()
        loss, target = _loss(binary, x, target)
        loss.backward()
        row["losses"].append(loss.item())
        grads = [p.grad for p in binary.parameters() if p.grad is not None]
        row["finite"] &= math.isfinite(loss.item()) and all(bool(g.isfinite().all()) for g in grads)
        row["grads"] &= all(m.weight.grad is not None for m in binary.modules() if isinstance(m, BinaryLayer))
        if step == 0:
            dead = _zero_gradient_layers(binary)
            row.update(zero_grad=len(dead), zero_grad_layers=dead[:3])
            row["zero_grad_cause"] = _zero_gradient_cause(binary, x, target) if dead else None
        optimizer.step()
    row["zero_grad_after"] = len(_zero_gradient_layers(binary))
    row["nonzero"] = row["zero_grad"] == 0 or row["zero_grad_cause"] == ZERO_INIT
    row["ok"] = bool(
        row["binarized"] and row["finite"] and row["grads"] and row["nonzero"] and (row["min_informative"] or 0) > 0
    )
    return row


def _loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over the model's heads (auxiliary heads included), and its target
    (drawn on the first call)."""
    outputs = model(x)
    heads = [o for o in outputs if o is not None] if isinstance(outputs, (tuple, list)) else [outputs]
    if target is None:
        target = torch.randint(heads[0].shape[-1], (x.shape[0],))
    return sum(F.cross_entropy(h.float(), target) for h in heads), target  # type: ignore[return-value]


def _zero_gradient_layers(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, BinaryLayer) and (m.weight.grad is None or not m.weight.grad.ne(0).any())
    ]


@torch.no_grad()
def _zero_gains(model: nn.Module) -> list[torch.Tensor]:
    """Zero-initialised gains: all-zero vector or scalar parameters that are not biases."""
    return [
        p for name, p in model.named_parameters() if p.dim() <= 1 and not name.endswith("bias") and not p.ne(0).any()
    ]


def _zero_gradient_cause(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> str:
    """Why binary layers got no gradient: re-runs the step with every zero gain set to 1."""
    gains = _zero_gains(model)
    if not gains:
        return "unexplained"
    saved = {name: p.grad for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad():
        for gain in gains:
            gain.fill_(1.0)
    model.zero_grad()
    _loss(model, x, target)[0].backward()
    cause = "unexplained" if _zero_gradient_layers(model) else ZERO_INIT
    with torch.no_grad():  # back to the step as it was: gains, gradients, running statistics
        for gain in gains:
            gain.zero_()
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    for name, p in model.named_parameters():
        p.grad = saved[name]
    return cause


def sweep(
    names: Sequence[str],
    build: Callable[[str], tuple[nn.Module, int]],
    args: argparse.Namespace,
    title: str,
) -> list[dict]:
    """Checks every model ``build(name) → (model, input size)`` returns; prints and saves."""
    json_path = args.json
    torch.manual_seed(0)
    rows = []
    print(
        f"{'model':32} {'size':>4} {'mode':8} {'binarized':>10} {'bypass':>6} {'finite':>6} {'0-grad':>6} "
        f"{'min inf.':>8} {'loss 1→3':>15} {'s':>6}"
    )
    for name in names:
        start = time.perf_counter()
        try:
            row = {"model": name} | check(lambda name=name: build(name), args.batch)
        except Exception as exc:  # report every failure and keep going
            row = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(_line(row), flush=True)
        gc.collect()
        if json_path:
            with open(json_path, "w") as stream:
                json.dump(rows, stream, indent=1)
    _summary(rows, title)
    return rows


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:32} FAILED {row['error']}"
    informative = "-" if row["min_informative"] is None else f"{row['min_informative']:.3f}"
    losses = f"{row['losses'][0]:.2f}→{row['losses'][-1]:.2f}"
    zero = f"{row['zero_grad']}{'*' if row['zero_grad_cause'] == ZERO_INIT else ''}"
    return (
        f"{row['model']:32} {row['size']:>4} {row['mode']:8} {row['binarized']:>4}/{row['layers']:<5} "
        f"{row['rewrites']:>6} {row['finite']!s:>6} {zero:>6} {informative:>8} {losses:>15} {row['seconds']:>6}"
    )


def _summary(rows: list[dict], title: str) -> None:
    converted = sum("error" not in r for r in rows)
    print(f"\n{title}: {len(rows)} models (* zero gradient only from a {ZERO_INIT})")
    print(f"{converted}/{len(rows)} converted and ran forward/backward")
    print(f"{sum(r.get('finite', False) for r in rows)}/{len(rows)} finite loss and gradients after {STEPS} SGD steps")
    print(f"{sum(r.get('zero_grad') == 0 for r in rows)}/{len(rows)} with a nonzero gradient in every binary layer at step 1")
    print(f"{sum(r.get('zero_grad_cause') == ZERO_INIT for r in rows)}/{len(rows)} with zero gradients only from a zero-initialised gain")
    print(f"{sum((r.get('min_informative') or 0) > 0 for r in rows)}/{len(rows)} with no constant-signed binary input")
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} all of the above")


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    # 2 is the smallest batch whose train-mode BatchNorm over 1x1 maps has a Jacobian; models
    # with BatchNorm after binary layers in 2x2 maps can need more values per channel (RegNet: 8)
    parser.add_argument("--batch", type=int, default=2, help="examples per batch")
    return parser.parse_args()
