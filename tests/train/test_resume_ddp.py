"""Exact resume after a real SIGKILL, and torchrun (2 processes, gloo) against one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

from binarize.loading import load_checkpoint

SCRIPT = Path(__file__).with_name("finetune_script.py")
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(*args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, env=ENV, capture_output=True, timeout=300)


def _final(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "final.pt", weights_only=True)


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    # 320 examples / batch 32 = 10 steps per epoch; checkpoints at steps 4, 8 (mid-epoch) and
    # each epoch end. The parent SIGKILLs the child once it reports the step-12 checkpoint.
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(killed)], env=ENV, stderr=subprocess.PIPE, text=True
    )
    for line in child.stderr:
        if line.startswith("checkpoint") and line.rstrip().endswith("step 12"):
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()
    saved = torch.load(killed / "last.pt", weights_only=True)
    assert 12 <= saved["position"]["step"] < 20 and saved["position"]["batch"] not in (0, 10)

    _run(str(killed), "--resume", str(killed / "last.pt"))
    straight = tmp_path / "straight"
    _run(str(straight))
    resumed, reference = _final(killed), _final(straight)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    # the training checkpoint is also a model checkpoint the lead's loader reads
    model = load_checkpoint(straight / "last.pt")
    assert torch.equal(model.state_dict()["block1.conv.weight"], reference["block1.conv.weight"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_matches_one(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run(str(single), "--model", "mlp")
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(SCRIPT), str(ddp), "--model", "mlp"],
        check=True, env=ENV, capture_output=True, timeout=300,
    )
    one, two = _final(single), _final(ddp)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4, rtol=1e-4), name
    lines = (ddp / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # two epochs and the final evaluation, written by rank 0 only
