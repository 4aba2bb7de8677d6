"""Plots of every estimator's surrogate f and backward φ (matplotlib is an optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from binarize._files import atomic_path
from binarize.errors import ConfigError, OutputExistsError
from binarize.estimators import create, names

#: Progress values drawn for estimators with a schedule.
SCHEDULE_POINTS = (0.0, 0.5, 1.0)


def estimator_curves(name: str, progress: float, points: int = 401) -> dict[str, list[float]]:
    """``x`` on [−2, 2] with the surrogate ``f`` and the backward ``phi`` (upstream g = +1)."""
    estimator = create(name).train()
    estimator.set_progress(progress)
    x = torch.linspace(-2.0, 2.0, points, dtype=torch.float64)
    with torch.no_grad():
        surrogate = estimator.surrogate(x)
        backward = estimator.backward(x, torch.ones_like(x))
    return {"x": x.tolist(), "f": surrogate.tolist(), "phi": backward.tolist()}


def is_scheduled(name: str) -> bool:
    """True when the estimator keeps schedule state (its curves change with progress)."""
    return any(True for _ in create(name).buffers())


def plot_estimators(path: str | Path, *, estimators: Sequence[str] | None = None, force: bool = False) -> Path:
    """Draws f (top) and φ (bottom) of each estimator on [−2, 2] into one PNG at ``path``.

    Scheduled estimators (reste, irnet, adaste) are drawn at progress 0, 0.5 and 1.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", "pass --force to overwrite it or choose another path")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib, which is not installed", "pip install 'binarize[plot]'") from None
    chosen = list(estimators or names())
    figure, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen), 5.2), sharex=True, squeeze=False)
    for column, name in enumerate(chosen):
        for progress in SCHEDULE_POINTS if is_scheduled(name) else (0.0,):
            curves = estimator_curves(name, progress)
            label = f"p={progress:g}" if is_scheduled(name) else None
            axes[0][column].plot(curves["x"], curves["f"], label=label)
            axes[1][column].plot(curves["x"], curves["phi"], label=label)
        axes[0][column].set_title(name)
        axes[0][column].plot([-2, 0, 0, 2], [-1, -1, 1, 1], color="0.6", linewidth=0.8, linestyle=":")
        if is_scheduled(name):
            axes[0][column].legend(fontsize=7)
        axes[1][column].set_xlabel("x")
    axes[0][0].set_ylabel("surrogate f(x)")
    axes[1][0].set_ylabel("backward φ(x)")
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110)
    finally:
        plt.close(figure)
    return path
