"""The public API in binarize/__init__.py: one set of names in `__all__`, the lazy `_EXPORTS`
map and the TYPE_CHECKING re-exports type checkers read, and lazy loading that keeps the packed
runtime free of torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import binarize


def _type_checking_imports(package: object = binarize) -> dict[str, str]:
    """public name → module, from the ``if TYPE_CHECKING:`` block of a package's __init__.py."""
    tree = ast.parse(Path(package.__file__).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    found = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export as `import X as X`"
            found[alias.name] = f"{node.module}.{alias.name}" if alias.name == "estimators" else node.module
    return found


def test_all_type_checking_and_lazy_map_name_the_same_api() -> None:
    lazy = dict(binarize._EXPORTS, estimators="binarize.estimators")
    assert binarize.__all__ == sorted(lazy)
    assert _type_checking_imports() == lazy


def test_lazy_names_of_binarize_export_are_visible_to_type_checkers() -> None:
    import binarize.export

    assert _type_checking_imports(binarize.export) == binarize.export._LAZY
    assert set(binarize.export._LAZY) <= set(binarize.export.__all__)


def test_every_public_name_resolves_to_its_module() -> None:
    for name, module in binarize._EXPORTS.items():
        assert getattr(binarize, name) is getattr(importlib.import_module(module), name)
    assert binarize.estimators is importlib.import_module("binarize.estimators")
    assert sorted(dir(binarize)) == binarize.__all__


def test_importing_binarize_and_the_packed_runtime_loads_no_torch(tmp_path: Path) -> None:
    code = ("import sys, binarize; from binarize import load_packed, PackedModel, FormatError; "
            "print(sorted(m for m in ('torch', 'torch.fx', 'binarize.estimators', 'binarize.conversion') if m in sys.modules))")
    # run outside the source tree: `-c` puts the working folder first on sys.path, and the
    # source tree has no compiled kernels when binarize is installed (not editable)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"
