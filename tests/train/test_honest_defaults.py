"""``binarize finetune``: same seed → same run, no distillation from a random teacher by
default, progress from the first steps with one epoch numbering, Ctrl-C says where to resume."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import torch
from binarize.cli.main import app
from typer.testing import CliRunner

import binarize.train.loop
from binarize.train.log import RunLog
from binarize.train.state import load_training_checkpoint

runner = CliRunner()
#: 1433 digits training examples in batches of 256: 5 steps per epoch (the last partial batch is dropped).
FAST = ["--batch-size", "256", "--device", "cpu"]
#: Batches of 512 (the last option given wins): 2 steps per epoch.
TWO_SHORT_EPOCHS = ["--epochs", "2", "--batch-size", "512"]


def finetune(*args: str):
    return runner.invoke(app, ["finetune", "binarize:digits_cnn", *FAST, *[str(a) for a in args]])


def test_same_seed_gives_identical_metrics_and_no_random_teacher(tmp_path):
    first = finetune("--seed", "3", *TWO_SHORT_EPOCHS, "-o", tmp_path / "a")
    torch.randn(100)  # whatever the global RNG did in between must not matter
    second = finetune("--seed", "3", *TWO_SHORT_EPOCHS, "-o", tmp_path / "b")
    other = finetune("--seed", "4", *TWO_SHORT_EPOCHS, "-o", tmp_path / "c")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    metrics = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert metrics == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert metrics != (tmp_path / "c" / "metrics.jsonl").read_text(), other.output
    # An untrained architecture is no teacher: distillation is off by default, and said so.
    assert "random weights" in first.output and "distillation is off" in first.output
    assert load_training_checkpoint(tmp_path / "a" / "last.pt")["config"]["distill_weight"] == 0.0
    # Progress lines start at step 1 and number epochs from 1, as metrics.jsonl does.
    shown = [(int(s), int(e)) for s, e in re.findall(r"^step (\d+)/4 epoch (\d+) ", first.output, re.MULTILINE)]
    assert shown == [(1, 1), (2, 1), (4, 2)]
    assert [json.loads(line).get("epoch") for line in metrics.splitlines()] == [1, 2, None]


def test_distill_flag_overrides_with_a_warning(tmp_path):
    result = finetune("--distill", "--epochs", "1", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "warning: distilling from binarize:digits_cnn, which has random weights" in result.output
    assert load_training_checkpoint(tmp_path / "run" / "last.pt")["config"]["distill_weight"] == 0.5


def test_log_shows_first_steps_then_every_log_every():
    stream = io.StringIO()
    log = RunLog(120, directory=None, log_every=50, stream=stream)
    for step in range(1, 121):
        log.step(step, 0, 1.0, 50.0)
    steps = [int(n) for n in re.findall(r"^step (\d+)/120 epoch 1 ", stream.getvalue(), re.MULTILINE)]
    assert steps == [1, 2, 4, 8, 16, 32, 50, 100, 120]


def interrupt_at_call(monkeypatch, call: int) -> None:
    """Ctrl-C arrives at the ``call``-th training step."""
    calls = []
    original = binarize.train.loop.set_progress

    def set_progress(model, progress):
        calls.append(progress)
        if len(calls) == call:
            raise KeyboardInterrupt
        original(model, progress)

    monkeypatch.setattr(binarize.train.loop, "set_progress", set_progress)


def test_ctrl_c_says_where_to_resume_and_resuming_works(tmp_path, monkeypatch):
    run = tmp_path / "run"
    interrupt_at_call(monkeypatch, 5)
    result = finetune("--epochs", "1", "--checkpoint-every", "2", "-o", run)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert lines[-1] == (f"error: interrupted; {run / 'last.pt'} holds step 4 (epoch 1, 4 batches in) — "
                         f"continue with: binarize finetune --resume {run / 'last.pt'}")
    monkeypatch.undo()
    resumed = runner.invoke(app, ["finetune", "--resume", str(run / "last.pt")])
    assert resumed.exit_code == 0, resumed.output
    assert load_training_checkpoint(run / "last.pt")["position"]["step"] == 5


def test_ctrl_c_before_any_checkpoint(tmp_path, monkeypatch):
    interrupt_at_call(monkeypatch, 1)
    result = finetune("--epochs", "1", "-o", tmp_path / "run")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: interrupted before the first checkpoint")
    assert not Path(tmp_path / "run" / "last.pt").exists()
