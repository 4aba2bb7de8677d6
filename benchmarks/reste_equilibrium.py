"""ReSTE's equilibrium trend on the offline digits: as o grows, e falls and s rises.

For each o_end, ``binarize:digits_cnn`` is converted with ``reste`` (o annealed 1 → o_end by
progress, as in the paper), trained for a few epochs with SGD, and the indicators are measured
at the last iteration of every epoch as the official code does: the run summary is mean e and
Σ s over epochs. Prints the table and saves a plot (PNG).

    python benchmarks/reste_equilibrium.py [--epochs 8] [--out reste_equilibrium.png]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from binarize import BinarizeConfig, LayerConfig, convert, load_model, set_progress
from binarize.analysis.indicators import estimating_error, gradient_stability
from binarize.data import get_datasets

O_VALUES = (1.0, 1.5, 2.0, 2.5, 3.0)


def run(o_end: float, epochs: int, seed: int) -> dict[str, float]:
    """Trains one digits model with ReSTE(o_end); returns mean e, Σ s and test accuracy."""
    torch.manual_seed(seed)
    splits = get_datasets("digits", augment=False)
    layer = LayerConfig(weight_estimator="reste", weight_estimator_args={"o_end": o_end},
                        input_estimator="reste", input_estimator_args={"o_end": o_end})
    model = convert(load_model("binarize:digits_cnn"), BinarizeConfig(layer=layer)).train()
    loader = DataLoader(splits.train, batch_size=64, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    total = epochs * len(loader)
    errors, stabilities = [], []
    step = 0
    for _epoch in range(epochs):
        for x, y in loader:
            set_progress(model, step / total)
            for group in optimizer.param_groups:
                group["lr"] = 0.05 * 0.5 * (1 + math.cos(math.pi * step / total))
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        # the last iteration of the epoch, after its optimizer step (the official logging point)
        errors.append(estimating_error(model))
        stabilities.append(gradient_stability(model))
    model.eval()
    x, y = next(iter(DataLoader(splits.test, batch_size=len(splits.test))))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    return {"o_end": o_end, "e": sum(errors) / len(errors), "s": sum(stabilities), "accuracy": accuracy}


def plot(rows: list[dict[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    o = [r["o_end"] for r in rows]
    left.plot(o, [r["e"] for r in rows], marker="o")
    left.set(xlabel="o", ylabel="estimating error e (mean over epochs)")
    right.plot(o, [r["s"] for r in rows], marker="o", color="tab:red")
    right.set(xlabel="o", ylabel="gradient stability s (Σ over epochs)")
    figure.suptitle("ReSTE equilibrium on digits: e falls, s rises as o grows")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reste_equilibrium.png")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started = time.perf_counter()
    rows = [run(o, args.epochs, args.seed) for o in O_VALUES]
    print(f"{'o':>4} | {'mean e':>10} | {'sum s':>12} | {'test acc':>8}")
    for row in rows:
        print(f"{row['o_end']:>4.1f} | {row['e']:>10.4f} | {row['s']:>12.4e} | {row['accuracy']:>8.3f}")
    falling = all(a["e"] > b["e"] for a, b in zip(rows, rows[1:]))
    rising = all(a["s"] < b["s"] for a, b in zip(rows, rows[1:]))
    print(f"e falls monotonically: {falling}; s rises monotonically: {rising}; {time.perf_counter() - started:.0f} s")
    plot(rows, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
