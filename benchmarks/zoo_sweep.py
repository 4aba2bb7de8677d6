"""Shared by the zoo sweeps (torchvision_convert.py, timm_convert.py): does a converted model train?

Per model, with the default `BinarizeConfig` (W1A1, float32, random weights): convert, run
forward/backward, then 3 SGD steps on one random batch and check that the loss and every
gradient stay finite, that every binary layer's latent weight gets a nonzero gradient, and the
smallest informative-sign fraction min(p, 1 − p) over the binary layers' inputs (p = fraction
of −1 signs on the example input; 0 means a constant input). Prints a table and counts and
writes the rows as JSON.
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


def check(model: nn.Module, x: torch.Tensor) -> dict:
    """The sweep row of one float model on example batch ``x``."""
    row: dict = {}
    for param in model.parameters():  # a zero-initialised head (ViT) would stop every gradient
        if param.dim() > 1 and not param.ne(0).any():
            nn.init.normal_(param, std=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binary = binarize.convert(model, example_inputs=(x,))
    report = provenance_of(binary).report
    row.update(mode=report.mode, binarized=report.binarized_layers, layers=len(report.rows))
    row["rewrites"] = len(report.activation_rewrites)
    row["min_informative"] = min((informative_fraction(p) for p in report.input_signs.values()), default=None)
    binary.train()
    for module in binary.modules():  # randomness (dropout, stochastic depth) could drop a block
        if "Drop" in type(module).__name__ or type(module).__name__ == "StochasticDepth":
            module.eval()
    layers = [m for m in binary.modules() if isinstance(m, BinaryLayer)]
    optimizer = torch.optim.SGD(binary.parameters(), lr=0.01, momentum=0.9)
    target = None
    row.update(losses=[], finite=True, grads=True, nonzero=True)
    for _ in range(STEPS):
        optimizer.zero_grad()
        outputs = binary(x)
        heads = [o for o in outputs if o is not None] if isinstance(outputs, (tuple, list)) else [outputs]
        if target is None:
            target = torch.randint(heads[0].shape[-1], (x.shape[0],))
        loss = sum(F.cross_entropy(h.float(), target) for h in heads)
        loss.backward()
        row["losses"].append(float(loss))
        grads = [p.grad for p in binary.parameters() if p.grad is not None]
        row["finite"] &= math.isfinite(float(loss)) and all(bool(g.isfinite().all()) for g in grads)
        row["grads"] &= all(m.weight.grad is not None for m in layers)
        dead = [name for name, m in binary.named_modules() if isinstance(m, BinaryLayer) and (m.weight.grad is None or not m.weight.grad.ne(0).any())]
        row["nonzero"] &= not dead
        row.setdefault("zero_grad_layers", dead[:3])
        optimizer.step()
    row["ok"] = bool(
        row["binarized"] and row["finite"] and row["grads"] and row["nonzero"] and (row["min_informative"] or 0) > 0
    )
    return row


def sweep(names: Sequence[str], build: Callable[[str], tuple[nn.Module, int]], json_path: str | None, title: str) -> list[dict]:
    """Checks every model ``build(name) → (model, input size)`` returns; prints and saves."""
    torch.manual_seed(0)
    rows = []
    print(f"{'model':32} {'mode':8} {'binarized':>10} {'bypass':>6} {'finite':>6} {'grad≠0':>6} {'min inf.':>8} {'loss 1→3':>15} {'s':>6}")
    for name in names:
        start = time.perf_counter()
        try:
            model, size = build(name)
            row = {"model": name, "size": size} | check(model, torch.randn(2, 3, size, size))
        except Exception as exc:  # report every failure and keep going
            row = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        if "error" in row:
            print(f"{name:32} FAILED {row['error']}", flush=True)
        else:
            informative = "-" if row["min_informative"] is None else f"{row['min_informative']:.3f}"
            losses = f"{row['losses'][0]:.2f}→{row['losses'][-1]:.2f}"
            print(
                f"{name:32} {row['mode']:8} {row['binarized']:>4}/{row['layers']:<5} {row['rewrites']:>6} {row['finite']!s:>6} "
                f"{row['nonzero']!s:>6} {informative:>8} {losses:>15} {row['seconds']:>6}",
                flush=True,
            )
        del row
        gc.collect()
    converted = sum("error" not in r for r in rows)
    print(f"\n{title}: {len(rows)} models")
    print(f"{converted}/{len(rows)} converted and ran forward/backward")
    print(f"{sum(r.get('finite', False) for r in rows)}/{len(rows)} finite loss and gradients after {STEPS} SGD steps")
    print(f"{sum(r.get('nonzero', False) for r in rows)}/{len(rows)} with a nonzero gradient in every binary layer")
    print(f"{sum((r.get('min_informative') or 0) > 0 for r in rows)}/{len(rows)} with no constant-signed binary input")
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} all of the above")
    if json_path:
        with open(json_path, "w") as stream:
            json.dump(rows, stream, indent=1)
    return rows


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    return parser.parse_args()
