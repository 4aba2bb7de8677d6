"""The end-to-end demo on the offline digits data: train float → convert (ReSTE) → evaluate →
fine-tune with distillation → evaluate → export to ONNX and `.bnz` → evaluate the deployed files,
with a table of accuracy and size at each stage and one of the three deployed forms.

Runs in a few minutes on two CPU cores with no download. ``binarize/recipes/digits_demo.toml`` holds the
same settings for ``binarize finetune``.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from binarize.config import BinarizeConfig, LayerConfig
from binarize.train import EvalResult, FinetuneConfig, evaluate, finetune

MODEL = "binarize:digits_cnn"
ESTIMATOR = "reste"
FLOAT_TRAINING = FinetuneConfig(epochs=15, lr=3e-3, optimizer="adam", log_every=10_000)
CONVERSION = BinarizeConfig(layer=LayerConfig(weight_estimator=ESTIMATOR, input_estimator=ESTIMATOR))
FINETUNING = FinetuneConfig(
    epochs=15, lr=1e-3, optimizer="adam", distill_weight=0.5, temperature=2.0, bn_reestimate_batches=20, log_every=10_000
)


@dataclass(frozen=True)
class DemoRow:
    """One stage of the demo."""

    stage: str
    top1: float
    top5: float
    size_bytes: int
    binary_params: int


@dataclass(frozen=True)
class DeploymentRow:
    """The fine-tuned binary model in one deployed form, run on the test split.

    ``agreement`` is the fraction of test images whose top-1 equals the PyTorch model's;
    latencies are medians in milliseconds on one thread.
    """

    form: str
    file: str
    top1: float
    agreement: float
    max_abs_diff: float
    size_bytes: int
    latency_batch1_ms: float
    latency_batch64_ms: float


@dataclass(frozen=True)
class DemoResult:
    """The demo's tables (`rows`, `deployment`) and its settings."""

    rows: tuple[DemoRow, ...]
    model: str
    estimator: str
    seed: int
    checks: dict[str, Any] = field(default_factory=dict)
    deployment: tuple[DeploymentRow, ...] = ()

    def row(self, stage: str) -> DemoRow:
        return next(r for r in self.rows if r.stage == stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "estimator": self.estimator,
            "seed": self.seed,
            "rows": [asdict(r) for r in self.rows],
            "deployment": [asdict(r) for r in self.deployment],
            "checks": self.checks,
        }


def run_demo(
    *, seed: int = 0, output_dir: str | Path | None = None, stream: TextIO | None = None, threads: int | None = 1
) -> DemoResult:
    """Runs the demo and returns its table.

    Args:
        seed: seeds float training and fine-tuning (the result is reproducible).
        output_dir: where the fine-tuning checkpoints, metrics and the exported
            ``digits.binarized.pt``, ``digits.onnx`` and ``digits.bnz`` go (a temporary folder
            when None).
        stream: progress lines (stderr by default).
        threads: torch intra-op threads. One by default: on this 20 k-parameter network
            more threads cost more in synchronisation than they gain, and on a shared
            machine oversubscription makes a step over ten times slower.
    """
    from binarize.analysis.summary import summarize
    from binarize.conversion import convert
    from binarize.data import get_datasets
    from binarize.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    data = get_datasets("digits")
    example = (torch.zeros(1, *data.input_shape),)
    torch.manual_seed(seed)
    float_model = load_model(MODEL)
    finetune(float_model, data.train, config=FLOAT_TRAINING.replace(seed=seed), stream=stream)
    binary = convert(float_model, CONVERSION, example_inputs=example)
    before = evaluate(binary, data.test)
    finetune(
        binary,
        data.train,
        config=FINETUNING.replace(seed=seed),
        teacher=float_model,
        eval_data=data.test,
        output_dir=output_dir,
        stream=stream,
    )
    float_summary, binary_summary = summarize(float_model, example), summarize(binary, example)

    def row(stage: str, result: EvalResult, summary: Any, binarized: bool) -> DemoRow:
        bits = summary.binarized_bits if binarized else summary.float_bits
        return DemoRow(stage, result.top1, result.top5, (bits + 7) // 8, summary.binary_params if binarized else 0)

    rows = (
        row("float", evaluate(float_model, data.test), float_summary, False),
        row(f"binary ({ESTIMATOR}), before fine-tuning", before, binary_summary, True),
        row(f"binary ({ESTIMATOR}), fine-tuned", evaluate(binary, data.test), binary_summary, True),
    )
    gap = rows[0].top1 - rows[2].top1
    with tempfile.TemporaryDirectory() as scratch:
        deployment = deploy(binary, data, example, Path(output_dir or scratch))
    checks = {
        "finetuned_within_3_points_of_float": gap <= 3.0,
        "gap_points": gap,
        "deployed_top1_agreement": min(row.agreement for row in deployment),
    }
    return DemoResult(rows, MODEL, ESTIMATOR, seed, checks, deployment)


def deploy(binary: torch.nn.Module, data: Any, example: tuple[torch.Tensor, ...], folder: Path) -> tuple[DeploymentRow, ...]:
    """Saves, exports (ONNX, .bnz) and evaluates ``binary`` in each form against PyTorch."""
    from binarize.checkpoint import save_checkpoint
    from binarize.analysis.deployed import dataset_batches, evaluate_file, load_deployed
    from binarize.export.onnx import export_onnx
    from binarize.packed import save_packed

    binary.eval()
    folder.mkdir(parents=True, exist_ok=True)
    forms = (
        ("PyTorch checkpoint", save_checkpoint(binary, folder / "digits.binarized.pt")),
        ("ONNX (onnxruntime)", export_onnx(binary, folder / "digits.onnx", example).path),
        ("packed .bnz (ONNX + 1-bit kernels)", save_packed(binary, folder / "digits.bnz", example)),
    )

    def reference(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return binary(x)

    rows = []
    for form, path in forms:
        result = evaluate_file(
            load_deployed(path), dataset_batches(data.test, 64), data.input_shape,
            reference=reference, batch_size=64, repeats=20, threads=[1],
        )
        # labels and a reference were given, so all three measures exist
        assert result.accuracy is not None and result.agreement is not None and result.max_abs_diff is not None
        rows.append(
            DeploymentRow(
                form, Path(path).name, result.accuracy, result.agreement, result.max_abs_diff,
                result.size_bytes, result.latency_ms["batch1_threads1"], result.latency_ms["batch64_threads1"],
            )
        )
    return tuple(rows)
