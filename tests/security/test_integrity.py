"""Damaged files are refused with one line, never run as a changed model with exit 0."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from binarize.cli.main import app
from onnx import numpy_helper
from typer.testing import CliRunner

from binarize import convert, load_checkpoint, save_checkpoint
from binarize.checkpoint import FORMAT, model_record
from binarize.errors import ConversionError, ModelSourceError
from binarize.export.onnx import DIGEST_KEY, export_onnx, graph_digest
from binarize.integrity import content_digest, seal
from binarize.models import create
from binarize import Provenance, set_provenance

runner = CliRunner()
#: Where in a data region bytes are flipped (fractions of its length): deterministic, spread out.
FRACTIONS = (0.0, 0.13, 0.29, 0.5, 0.71, 0.87, 0.999)


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(0)
    model = create("digits_cnn").eval()
    set_provenance(model, Provenance(source={"kind": "binarize", "name": "digits_cnn", "kwargs": {}}))
    return convert(model, example_inputs=(torch.randn(1, 1, 8, 8),)).eval()


def one_line_error(result, *words: str) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


def storage_region(path: Path) -> tuple[int, int]:
    """Start and length of the largest tensor storage inside a torch.save zip file."""
    with zipfile.ZipFile(path) as archive:
        entry = max((e for e in archive.infolist() if "/data/" in e.filename), key=lambda e: e.file_size)
        raw = path.read_bytes()
        name_length = int.from_bytes(raw[entry.header_offset + 26:entry.header_offset + 28], "little")
        extra_length = int.from_bytes(raw[entry.header_offset + 28:entry.header_offset + 30], "little")
        return entry.header_offset + 30 + name_length + extra_length, entry.file_size


def test_digest_is_canonical_and_sensitive():
    a = {"w": torch.arange(6.0).reshape(2, 3), "n": [1, "x", None], 3: 0.5}
    assert content_digest(a) == content_digest(dict(reversed(list(a.items()))))
    assert content_digest(a) != content_digest(a | {"w": torch.arange(6.0).reshape(3, 2)})  # shape counts
    assert content_digest(a) != content_digest(a | {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3)})
    assert content_digest(a) != content_digest(a | {"n": [1, "x", 0]})


def test_flipped_bytes_in_a_checkpoint_are_refused(tmp_path, converted):
    path = save_checkpoint(converted, tmp_path / "d.pt")
    start, length = storage_region(path)
    clean = path.read_bytes()
    for fraction in FRACTIONS:
        damaged = tmp_path / f"damaged-{fraction}.pt"
        damaged.write_bytes(flipped(clean, start + int(fraction * (length - 1))))
        result = runner.invoke(app, ["export", str(damaged), "--onnx", str(tmp_path / "out.onnx")])
        one_line_error(result, str(damaged), "is damaged")
        assert not (tmp_path / "out.onnx").exists()


def test_changed_content_with_valid_container_is_refused(tmp_path, converted):
    """A value changed and re-saved by torch (valid zip, valid pickle): only the digest tells."""
    path = save_checkpoint(converted, tmp_path / "d.pt")
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["model"]["state_dict"].items() if v.is_floating_point())
    payload["model"]["state_dict"][name].view(-1)[0] += 1.0
    torch.save(payload, path)
    one_line_error(runner.invoke(app, ["summary", str(path)]), "is damaged", "SHA-256")
    del payload["sha256"]
    torch.save(payload, path)
    one_line_error(runner.invoke(app, ["summary", str(path)]), "records no checksum")


def test_training_checkpoint_is_checked_on_resume(tmp_path, converted):
    from binarize.train import FinetuneConfig
    from binarize.train.state import KIND

    path = tmp_path / "run" / "last.pt"
    path.parent.mkdir()
    payload = seal({"format": FORMAT, "kind": KIND, "model": model_record(converted), "config": FinetuneConfig().to_dict(), "best": 50.0})
    payload["best"] = 99.0
    torch.save(payload, path)
    one_line_error(runner.invoke(app, ["finetune", "--resume", str(path)]), "is damaged")


def test_nan_is_refused_when_saving_and_loading(tmp_path, converted):
    poisoned = load_checkpoint(save_checkpoint(converted, tmp_path / "ok.pt"))
    with torch.no_grad():
        next(p for p in poisoned.parameters() if p.is_floating_point()).view(-1)[3] = float("nan")
    with pytest.raises(ModelSourceError, match="NaN or Inf"):
        save_checkpoint(poisoned, tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()
    with pytest.raises(ConversionError, match="NaN or Inf"):
        export_onnx(poisoned, tmp_path / "nan.onnx", (torch.randn(1, 1, 8, 8),))
    assert not (tmp_path / "nan.onnx").exists()
    # Written by hand with a valid checksum: the load still refuses it.
    path = tmp_path / "sealed-nan.pt"
    torch.save(seal({"model": model_record(poisoned), "format": FORMAT}), path)
    one_line_error(runner.invoke(app, ["summary", str(path)]), "NaN or Inf")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, converted):
    path = tmp_path_factory.mktemp("onnx") / "d.onnx"
    export_onnx(converted, path, (torch.randn(1, 1, 8, 8),), check=False)
    return path


def test_flipped_bytes_in_an_onnx_initializer_are_refused(tmp_path, exported):
    clean = exported.read_bytes()
    largest = max(onnx.load(str(exported)).graph.initializer, key=lambda t: len(t.raw_data))
    start, length = clean.index(largest.raw_data), len(largest.raw_data)
    for fraction in FRACTIONS:
        damaged = tmp_path / f"damaged-{fraction}.onnx"
        damaged.write_bytes(flipped(clean, start + int(fraction * (length - 1))))
        result = runner.invoke(app, ["eval", str(damaged), "--random", "2", "--repeats", "1"])
        one_line_error(result, str(damaged), "is damaged")


def test_onnx_without_checksum_or_with_nan_is_refused(tmp_path, exported):
    model = onnx.load(str(exported))
    kept = [p for p in model.metadata_props if p.key != DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "bare.onnx"))
    one_line_error(runner.invoke(app, ["eval", str(tmp_path / "bare.onnx"), "--random", "2"]), "records no checksum")

    model = onnx.load(str(exported))
    tensor = next(t for t in model.graph.initializer if numpy_helper.to_array(t).dtype.kind == "f")
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] = float("inf")
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    next(p for p in model.metadata_props if p.key == DIGEST_KEY).value = graph_digest(model)
    onnx.save(model, str(tmp_path / "inf.onnx"))
    one_line_error(runner.invoke(app, ["eval", str(tmp_path / "inf.onnx"), "--random", "2"]), "NaN or Inf")


def test_intact_files_still_load(tmp_path, converted, exported):
    path = save_checkpoint(converted, tmp_path / "d.pt")
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(load_checkpoint(path).eval()(x), converted(x))
    assert runner.invoke(app, ["eval", str(exported), "--random", "2", "--repeats", "1"]).exit_code == 0


def test_random_bytes_are_not_a_model_file(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).tolist()))
    line = one_line_error(runner.invoke(app, ["summary", str(path)]), "is not a model file")
    assert "--trust" not in line


def test_raw_pickle_gives_one_line_without_torch_warnings(tmp_path):
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    result = runner.invoke(app, ["summary", str(path)])
    one_line_error(result, "is not a model file")
    assert "Warning" not in result.output


def test_pickled_module_names_the_class_it_would_import(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    one_line_error(runner.invoke(app, ["summary", str(path)]), "torch.nn.modules.linear.Linear", "--trust")
