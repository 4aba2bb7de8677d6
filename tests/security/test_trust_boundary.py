"""Nothing in a file runs, and no path a file names is opened, without --trust.

Each test builds its own payload: an object whose unpickling creates a marker file (by calling
``open(marker, "w")``). A `.pt2` archive carries it in its sample-inputs entry (which
``torch.export.load`` unpickles, falling back to the full unpickler); a checkpoint converted
from a `.pt2` embeds such an archive; an ONNX file's metadata names such a checkpoint.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from binarize.cli.main import app
from torch import nn
from typer.testing import CliRunner

import binarize
from binarize.checkpoint import save_checkpoint
from binarize.errors import UnsafeSourceError
from binarize.export.onnx import SOURCE_KEY, export_onnx
from binarize.integrity import seal
from binarize.train import FinetuneConfig
from binarize.train.state import KIND

runner = CliRunner()
BINARIZE = str(Path(sys.executable).with_name("binarize"))


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Linear(8, 10)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))).mean(dim=(2, 3)))


def benign_archive(path: Path) -> Path:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Small().eval(), (torch.randn(1, 1, 8, 8),)), path)
    return path


def poisoned_archive(path: Path, marker: Path) -> Path:
    """A valid `.pt2` whose sample-inputs entry is a pickle that creates ``marker``."""
    clean = benign_archive(path.with_name("clean-" + path.name)).read_bytes()
    poison = io.BytesIO()
    torch.save(Payload(marker), poison)
    with zipfile.ZipFile(io.BytesIO(clean)) as source, zipfile.ZipFile(path, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("sample_inputs/model.pt"):
                data = poison.getvalue()
            target.writestr(entry, data)
    return path


def poisoned_checkpoint(folder: Path, marker: Path) -> Path:
    """A checkpoint converted from a benign `.pt2`, whose embedded archive is then swapped for a
    poisoned one (what an attacker would do: the checkpoint stays plain data)."""
    model = binarize.load_model(benign_archive(folder / "benign.pt2"), trust=True)
    path = save_checkpoint(binarize.convert(model, binarize.BinarizeConfig(min_fan_in=0)), folder / "evil.pt")
    archive = poisoned_archive(folder / "evil.pt2", marker).read_bytes()
    payload = torch.load(path, weights_only=True)
    payload["model"]["source"]["archive"] = torch.frombuffer(bytearray(archive), dtype=torch.uint8)
    torch.save(seal(payload), path)  # the checksum guards against damage, not against an attacker
    return path


def poisoned_training_checkpoint(folder: Path, marker: Path) -> Path:
    record = torch.load(poisoned_checkpoint(folder, marker), weights_only=True)["model"]
    path = folder / "run" / "last.pt"
    path.parent.mkdir()
    torch.save(seal({"format": record["format"], "kind": KIND, "model": record, "config": FinetuneConfig().to_dict()}), path)
    return path


def assert_one_line_refusal(result, marker: Path, *words: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert not marker.exists(), "the file's payload ran"


def test_the_payload_is_real(tmp_path):
    """The poisoned archive does run its payload when loaded with trust (so the tests below can fail)."""
    marker = tmp_path / "marker"
    with pytest.raises(binarize.errors.ModelSourceError):  # the payload is no sample input
        binarize.load_model(poisoned_archive(tmp_path / "evil.pt2", marker), trust=True)
    assert marker.exists()


@pytest.mark.parametrize("command", [["summary"], ["convert", "-o", "{out}/x.pt"], ["export", "--onnx", "{out}/x.onnx"]])
def test_pt2_archive_is_not_read_without_trust(tmp_path, command):
    marker = tmp_path / "marker"
    evil = poisoned_archive(tmp_path / "evil.pt2", marker)
    args = [part.format(out=tmp_path) for part in command]
    result = runner.invoke(app, [args[0], str(evil), *args[1:]])
    assert_one_line_refusal(result, marker, "torch.export archive", "--trust")
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize("command", [["summary"], ["export", "--onnx", "{out}/x.onnx"]])
def test_checkpoint_embedding_an_archive_needs_trust(tmp_path, command):
    marker = tmp_path / "marker"
    evil = poisoned_checkpoint(tmp_path, marker)
    args = [part.format(out=tmp_path) for part in command]
    result = runner.invoke(app, [args[0], str(evil), *args[1:]])
    assert_one_line_refusal(result, marker, "embeds", "--trust")
    assert not (tmp_path / "x.onnx").exists()


def test_resume_of_a_checkpoint_embedding_an_archive_needs_trust(tmp_path):
    marker = tmp_path / "marker"
    last = poisoned_training_checkpoint(tmp_path, marker)
    result = runner.invoke(app, ["finetune", "--resume", str(last)])
    assert_one_line_refusal(result, marker, "embeds", "--trust")


def test_pickled_module_is_not_unpickled_without_trust(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "whole.pt"
    torch.save(Payload(marker), evil)
    result = runner.invoke(app, ["summary", str(evil)])
    assert_one_line_refusal(result, marker, "pickled Python objects (io.open)", "--trust")


def test_onnx_metadata_path_is_not_followed_without_trust(tmp_path):
    marker = tmp_path / "marker"
    evil = poisoned_checkpoint(tmp_path, marker)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(Small().eval(), onnx_path, (torch.randn(1, 1, 8, 8),), check=False, metadata={SOURCE_KEY: str(evil)})
    result = runner.invoke(app, ["eval", str(onnx_path), "--random", "4", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["agreement"] is None
    plain = runner.invoke(app, ["eval", str(onnx_path), "--random", "4", "--repeats", "1"])  # --json keeps stderr quiet
    assert plain.exit_code == 0, plain.output
    assert "pass --reference" in plain.stderr
    assert not marker.exists()
    # Given explicitly, the path is the user's choice; the checkpoint still asks for --trust.
    explicit = runner.invoke(app, ["eval", str(onnx_path), "--random", "4", "--repeats", "1", "--reference", str(evil)])
    assert_one_line_refusal(explicit, marker, "embeds", "--trust")


def test_real_process_refuses_poisoned_files(tmp_path):
    marker = tmp_path / "marker"
    for args in (
        ["summary", str(poisoned_archive(tmp_path / "evil.pt2", marker))],
        ["export", str(poisoned_checkpoint(tmp_path, marker)), "--onnx", str(tmp_path / "x.onnx")],
    ):
        done = subprocess.run([BINARIZE, *args], check=False, capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--trust" in lines[0], done.stderr
        assert not marker.exists()


def test_benign_archive_and_its_checkpoint_load_with_trust(tmp_path):
    path = benign_archive(tmp_path / "benign.pt2")
    with pytest.raises(UnsafeSourceError, match="--trust"):
        binarize.load_model(path)
    converted = tmp_path / "benign.binarized.pt"
    result = runner.invoke(app, ["convert", str(path), "-o", str(converted), "--trust"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["summary", str(converted), "--trust"])
    assert result.exit_code == 0, result.output
    assert "compression" in result.output
    refused = runner.invoke(app, ["summary", str(converted)])
    assert refused.exit_code == 1 and "--trust" in refused.output
    model = binarize.load_checkpoint(converted, trust=True).eval()
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)  # the archive fixed the batch at 1
