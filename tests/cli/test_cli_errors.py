"""Issue #12 §3: every case ends in one line ``error: <what> — <fix>``, exit 1, no traceback, and
no file written or left behind. Full disks are real ENOSPC errors: the temporary file a write
goes to is a link to /dev/full."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from binarize import _files
from binarize.cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line(result, *fragments: str) -> str:
    """Exit 1, exactly one line on stderr starting ``error:`` with a fix, containing ``fragments``."""
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert " — " in result.stderr and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A converted digits CNN (1×8×8 inputs, 10 outputs)."""
    out = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    assert run("convert", "binarize:digits_cnn", "-o", out, "--json").exit_code == 0
    return out


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, tmp_path_factory) -> Path:
    """Exported from a copy of the checkpoint that is gone by now: eval has no reference."""
    folder = tmp_path_factory.mktemp("onnx")
    source = folder / "gone.pt"
    source.write_bytes(checkpoint.read_bytes())
    assert run("export", source, "--onnx", folder / "digits.onnx", "--no-check").exit_code == 0
    source.unlink()
    return folder / "digits.onnx"


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write goes to a link to /dev/full: the writer's real write raises ENOSPC."""
    def to_dev_full(prefix: str = "", suffix: str = "", dir: str | None = None):
        link = Path(dir) / f"{prefix}full{suffix}"
        link.symlink_to("/dev/full")
        return os.open(link, os.O_WRONLY), str(link)

    monkeypatch.setattr(_files.tempfile, "mkstemp", to_dev_full)


@pytest.fixture
def read_only(monkeypatch):
    """A read-only folder as the OS reports it (tests may run as root, which chmod does not stop)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(_files.tempfile, "mkstemp", refuse)


# --- output problems -------------------------------------------------------------------------

def test_convert_on_a_full_disk(tmp_path, full_disk):
    result = run("convert", "binarize:digits_cnn", "-o", tmp_path / "x.pt")
    assert_one_line(result, "no space left on the disk to write", "x.pt")
    assert files_in(tmp_path) == []


def test_export_onnx_on_a_full_disk_says_so(tmp_path, checkpoint, full_disk):
    stderr = assert_one_line(run("export", checkpoint, "--onnx", tmp_path / "x.onnx"), "no space left", "x.onnx")
    assert "report this model" not in stderr
    assert files_in(tmp_path) == []


def test_export_onnx_without_permission_says_so(tmp_path, checkpoint, read_only):
    stderr = assert_one_line(run("export", checkpoint, "--onnx", tmp_path / "x.onnx"), "read-only", "x.onnx")
    assert "report this model" not in stderr


def test_export_packed_on_a_full_disk(tmp_path, checkpoint, full_disk):
    assert_one_line(run("export", checkpoint, "--packed", tmp_path / "x.bnz", "--no-check"), "no space left", "x.bnz")
    assert files_in(tmp_path) == []


def test_estimators_plot_on_a_full_disk(tmp_path, full_disk):
    pytest.importorskip("matplotlib")
    assert_one_line(run("estimators", "--plot", tmp_path / "e.png"), "no space left", "e.png")
    assert files_in(tmp_path) == []


def test_finetune_on_a_full_disk_leaves_no_run_folder(tmp_path, full_disk):
    out = tmp_path / "run"
    result = run("finetune", "binarize:digits_cnn", "--epochs", "1", "--batch-size", "256", "-o", out, "--json")
    assert_one_line(result, "no space left", str(out))
    assert files_in(tmp_path) == []


def test_read_only_output_folder(tmp_path, read_only):
    assert_one_line(run("convert", "binarize:digits_cnn", "-o", tmp_path / "x.pt"), "read-only", "x.pt")
    assert files_in(tmp_path) == []


def test_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(_files.os, "access", lambda path, mode: False)
    assert_one_line(run("convert", "binarize:digits_cnn", "-o", tmp_path / "x.pt"), "permission denied")


def test_output_that_is_a_folder_even_with_force(tmp_path):
    folder = tmp_path / "out.pt"
    folder.mkdir()
    assert_one_line(run("convert", "binarize:digits_cnn", "-o", folder, "--force"), "is a folder")
    assert files_in(tmp_path) == ["out.pt"]


def test_parent_path_that_is_a_file(tmp_path, checkpoint):
    (tmp_path / "afile").write_text("x")
    assert_one_line(run("convert", "binarize:digits_cnn", "-o", tmp_path / "afile" / "x.pt"), "is a file, not a folder")
    assert_one_line(run("export", checkpoint, "--onnx", tmp_path / "afile" / "x.onnx"), "is a file, not a folder")
    assert files_in(tmp_path) == ["afile"]


def test_files_are_written_with_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        assert run("convert", "binarize:digits_cnn", "-o", tmp_path / "x.pt").exit_code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o644


# --- shape problems --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["1,3,8,8", "8,8"])
def test_summary_with_a_wrong_input_shape(checkpoint, shape):
    assert_one_line(run("summary", checkpoint, "--input-shape", shape), f"cannot take an input of shape {shape}")


@pytest.mark.parametrize("shape", ["1,3,8,8", "1,8,8,8,8"])
def test_eval_of_onnx_with_a_wrong_input_shape(onnx_file, shape):
    assert_one_line(run("eval", onnx_file, "--random", "4", "--input-shape", shape), "cannot take an input of shape")


def test_eval_of_a_checkpoint_with_a_wrong_channel_count(checkpoint):
    assert_one_line(run("eval", checkpoint, "--random", "4", "--input-shape", "1,3,8,8"), "to have 1 channels")


def test_convert_refuses_to_record_a_shape_the_model_cannot_take(tmp_path):
    result = run("convert", "binarize:digits_cnn", "--input-shape", "1,3,32,32", "-o", tmp_path / "x.pt")
    assert_one_line(result, "cannot take an input of shape 1,3,32,32")
    assert files_in(tmp_path) == []


def _one_class_imagefolder(root: Path) -> Path:
    for split in ("train", "val"):
        (root / split / "only").mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / "only" / f"{i}.png")
    return root


def test_finetune_on_data_with_another_class_count(tmp_path):
    data = _one_class_imagefolder(tmp_path / "images")
    out = tmp_path / "run"
    result = run("finetune", "binarize:resnet20", "--data", f"imagefolder:{data}", "--epochs", "1", "-o", out)
    assert_one_line(result, "has 1 classes but the model has 10 outputs")
    assert not out.exists()


def test_finetune_on_data_with_another_channel_count(tmp_path):
    data = _one_class_imagefolder(tmp_path / "images")
    result = run("finetune", "binarize:digits_cnn", "--data", f"imagefolder:{data}", "-o", tmp_path / "run")
    assert_one_line(result, "do not fit the model")


def test_eval_on_data_that_does_not_fit(tmp_path, onnx_file):
    data = _one_class_imagefolder(tmp_path / "images")
    assert_one_line(run("eval", onnx_file, "--data", f"imagefolder:{data}"), "do not fit the model")


# --- files and settings ----------------------------------------------------------------------

def test_summary_of_a_valid_pt2_archive(tmp_path):
    from binarize.models.digits import digits_cnn

    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(digits_cnn().eval(), (torch.zeros(1, 1, 8, 8),)), path)
    result = run("summary", path, "--trust", "--json")  # torch.export.load unpickles: .pt2 needs --trust
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["params"] > 0


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("o_end=0", "reste.o_end=0.0 is out of range"),
        ("m=0", "reste.m=0.0 is out of range"),  # t < m is allowed (official branch order)
        ("t=1e400", "reste.t=inf is out of range"),
    ],
)
def test_out_of_range_estimator_hyperparameters(tmp_path, arg, message):
    result = run("convert", "binarize:digits_cnn", "-e", "reste", "--estimator-arg", arg, "-o", tmp_path / "x.pt")
    assert_one_line(result, message)
    assert files_in(tmp_path) == []


def test_out_of_range_values_of_every_estimator_are_refused_at_construction():
    from binarize.errors import ConfigError
    from binarize.estimators import create

    bad = {"irnet": {"t_min": 0.0}, "dste": {"s": 0.0}, "psa": {"s": -1.0}, "adaste": {"alpha": 0.0},
           "reste": {"o_end": 0.5}}
    for name, hparams in bad.items():
        with pytest.raises(ConfigError, match="is out of range"):
            create(name, **hparams)


def test_a_rule_that_matches_no_layer_warns_and_fails_under_strict(tmp_path):
    result = run("convert", "binarize:digits_cnn", "--rule", "nothing.here=float", "-o", tmp_path / "x.pt", "--json")
    assert result.exit_code == 0, result.output
    assert "rule 'nothing.here' matches no layer" in json.loads(result.stdout)["warnings"]
    strict = run("convert", "binarize:digits_cnn", "--rule", "nothing.here=float", "--strict", "-o", tmp_path / "y.pt")
    assert_one_line(strict, "rule 'nothing.here' matches no layer")
    assert files_in(tmp_path) == ["x.pt"]


def test_weights_with_a_source_that_ignores_them(tmp_path, checkpoint):
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    assert_one_line(run("summary", checkpoint, "--weights", weights), "--weights is ignored")
    assert_one_line(run("summary", "binarize:digits_cnn", "--arch", "binarize:digits_cnn"), "--arch is ignored")


def test_a_crashed_run_folder_is_reported_and_force_starts_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 0, "stale": true}\n')
    args = ("finetune", "binarize:digits_cnn", "--epochs", "1", "--batch-size", "256", "-o", out)
    assert_one_line(run(*args), "stopped before its first checkpoint", "--force")
    (out / "last.pt").write_bytes(b"")
    assert_one_line(run(*args), f"--resume {out / 'last.pt'}")
    result = run(*args, "--force", "--json")
    assert result.exit_code == 0, result.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and all("stale" not in line for line in lines)


def test_full_disk_is_one_line_from_the_console_script(tmp_path):
    """A real process: the monkeypatched ENOSPC is set up inside it, the output checked outside."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from binarize import _files\n"
        "def full(prefix='', suffix='', dir=None):\n"
        "    link = Path(dir) / f'{prefix}full{suffix}'\n"
        "    link.symlink_to('/dev/full')\n"
        "    return os.open(link, os.O_WRONLY), str(link)\n"
        "_files.tempfile.mkstemp = full\n"
        "from binarize.cli.main import run\n"
        "sys.argv = ['binarize', 'convert', 'binarize:digits_cnn', '-o', sys.argv[1]]\n"
        "run()\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and binarize.cli exists only installed
    done = subprocess.run([sys.executable, "-c", script, str(out / "x.pt")], check=False, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no space left") and done.stderr.count("\n") == 1, done.stderr
    assert files_in(out) == []


def test_static_pt2_model_on_another_batch_size_is_one_line(tmp_path):
    from binarize.models.digits import digits_cnn

    archive = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(digits_cnn().eval(), (torch.zeros(1, 1, 8, 8),)), archive)
    converted = tmp_path / "digits.pt"
    assert run("convert", archive, "--trust", "-o", converted, "--json").exit_code == 0
    assert_one_line(run("eval", converted, "--trust", "--random", "8", "--batch-size", "8"),
                    "traced for one input shape only", "dynamic_shapes")


def test_static_pt2_model_exports_with_its_fixed_batch(tmp_path):
    # was: "ONNX export failed (torchscript: Guard failed: x.size()[0] == 1 ...) — report this model"
    from binarize.models.digits import digits_cnn

    archive = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(digits_cnn().eval(), (torch.zeros(1, 1, 8, 8),)), archive)
    converted = tmp_path / "digits.pt"
    assert run("convert", archive, "--trust", "-o", converted).exit_code == 0
    result = run("export", converted, "--trust", "--onnx", tmp_path / "d.onnx", "--packed", tmp_path / "d.bnz", "--json")
    assert result.exit_code == 0, result.output
    onnx_result = json.loads(result.stdout)["onnx"]
    assert onnx_result["passed"] and not onnx_result["dynamic_batch"] and onnx_result["batch_sizes"] == [1]
    import onnx

    batch = onnx.load(tmp_path / "d.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_value == 1
