"""The usage examples in the docstrings run: every module of binarize/ that has a ``>>>``
example is collected here (nothing to list by hand), and each runs in a fresh folder so that
examples may write files (``export_onnx(model, "model.onnx", ...)``)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from binarize.estimators import registry

ROOT = Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    found = []
    for path in sorted((ROOT / "binarize").rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


MODULES = _modules_with_examples()


def test_the_public_api_has_examples() -> None:
    assert {"binarize.conversion.pipeline", "binarize.progress", "binarize.estimators.registry", "binarize.config",
            "binarize.packed", "binarize.loading", "binarize.analysis.summary"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # an example may register an estimator: it stays out of the registry the other tests see
    monkeypatch.setattr(registry._REGISTRY, "_entries", dict(registry._REGISTRY._entries))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
