"""Atomic writes: a failed write leaves the existing file and no temporary behind."""

import pytest

from binarize._files import atomic_path


def test_success_replaces_the_target(tmp_path):
    target = tmp_path / "model.bnz"
    target.write_bytes(b"old")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".bnz"
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_failure_keeps_the_target_and_cleans_up(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_first_line_quotes_one_clean_line():
    from binarize.errors import first_line

    assert first_line(RuntimeError("\x1b[31mboom\x1b[0m happened\nstack detail")) == "boom happened"
    assert first_line(ValueError("x" * 500), 120) == "x" * 120
    assert first_line(KeyError()) == "KeyError"
