"""The import structure of binarize/ and cli/: layers that point one way, no cycles, and a CLI
that uses only public names (docs/design.md §2).

Every ``import`` statement is read with `ast`, wherever it stands: at module level, inside a
function (a deferred import is still a dependency, it only runs later) or in a ``try``. Imports
under ``if TYPE_CHECKING:`` are left out of every check: they never run, so they can neither
make an import cycle nor load a layer, and they let a lower layer name a higher layer's type in
an annotation (``functional`` names ``Estimator``; ``binarize/__init__`` re-exports the whole
public API for type checkers). The package's own lazy ``_EXPORTS`` map is not an import either.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The layers, lowest first. A module may import its own unit (a top-level module, or a
#: subpackage: ``nn`` is ``binarize/nn/*``) and the units of LOWER layers, never a unit of its
#: own layer or of a higher one. ``binarize`` is the package ``__init__`` (the public API) and
#: ``cli`` the command-line app (installed as ``binarize.cli``).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # imports nothing of binarize
    ("_registry", "_files", "_probe", "_version", "config", "integrity"),  # import errors only
    ("functional", "provenance"),  # the sign and the one autograd Function; a model's origin record
    ("estimators",),
    ("nn", "progress"),  # binary layers and frozen layers; set_progress
    ("models", "data"),  # float architectures and data sets: nothing binary
    ("conversion",),  # tracer, policy, swap, the pass, the report
    ("sources_timm",),
    ("sources",),  # where float models come from
    ("checkpoint",),  # the checkpoint payload: save, verify, the record of a converted model
    ("loading",),  # load_model over every kind of file; rebuilds checkpoints
    ("train", "export"),  # fine-tuning; freeze + ONNX
    ("packed",),  # the packed format: writer (uses export), reader and runtime (numpy only)
    ("analysis",),  # summaries, indicators, plots, evaluation of deployed files
    ("demo",),  # the end-to-end offline job
    ("binarize",),  # the public API
    ("cli",),  # parse → call the public API → render
)

#: The modules cli/ may import besides its own: the public API and the public subpackages
#: (names in their ``__all__``). Nothing private, no module inside a subpackage.
CLI_MAY_IMPORT = frozenset({"binarize", "binarize.analysis", "binarize.conversion", "binarize.data",
                            "binarize.estimators", "binarize.export", "binarize.models", "binarize.nn",
                            "binarize.packed", "binarize.train"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":
        parts = ["binarize", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of binarize/ and cli/ by dotted name; native extensions by their C source."""
    found = {}
    for folder in ("binarize", "cli"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py" or (path.suffix == ".c" and path.stem.startswith("_")):
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch does run
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _runtime_imports(node)


def _owner(name: str) -> str:
    """The module that defines dotted ``name``: itself, or the nearest module above it."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> list[tuple[str, int, tuple[str, ...]]]:
    """``(imported module, line, names imported from it)`` for every runtime import of a
    binarize module by ``module``; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    path = MODULES[module]
    if path.suffix != ".py":
        return []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(_owner(a.name), node.lineno, ()) for a in node.names if a.name.split(".")[0] == "binarize"]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        if base.split(".")[0] != "binarize":
            continue
        names: list[str] = []
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:
                found.append((f"{base}.{alias.name}", node.lineno, ()))
            else:
                names.append(alias.name)
        if names:
            found.append((_owner(base), node.lineno, tuple(names)))
    return [item for item in found if item[0] != module]


EDGES = {module: imports_of(module) for module in MODULES}


def unit_of(module: str) -> str:
    """``binarize.nn.layers`` → ``nn``; ``binarize.cli.main`` → ``cli``; ``binarize`` → ``binarize``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


LAYER_OF = {unit: depth for depth, layer in enumerate(LAYERS) for unit in layer}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"{a} → {b}" for a in component for b in sorted(graph.get(a, ())) if b in members]
    return "; ".join(edges)


def layer_order() -> str:
    lines = ["layer order enforced (lowest first; a unit imports only lower layers):"]
    lines += [f"  {depth:2d}  {'  '.join(layer)}" for depth, layer in enumerate(LAYERS)]
    return "\n".join(lines)


def test_layer_order_is_printed_and_covers_every_unit() -> None:
    print("\n" + layer_order())
    assert len(LAYER_OF) == sum(len(layer) for layer in LAYERS), "a unit is listed twice in LAYERS"
    unplaced = sorted({unit_of(m) for m in MODULES} - set(LAYER_OF))
    assert not unplaced, f"place these modules/folders in LAYERS: {unplaced}"
    stale = sorted(set(LAYER_OF) - {unit_of(m) for m in MODULES})
    assert not stale, f"LAYERS names units that no longer exist: {stale}"


def test_imports_follow_the_layer_order() -> None:
    wrong = []
    for module, imports in EDGES.items():
        for target, line, _ in imports:
            source_unit, target_unit = unit_of(module), unit_of(target)
            if source_unit == target_unit or source_unit not in LAYER_OF or target_unit not in LAYER_OF:
                continue
            if LAYER_OF[target_unit] >= LAYER_OF[source_unit]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} {module} → {target} "
                             f"({source_unit} is layer {LAYER_OF[source_unit]}, {target_unit} layer {LAYER_OF[target_unit]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong)) + "\n" + layer_order()


def test_no_import_cycle_between_modules() -> None:
    graph = {module: {target for target, _, _ in imports} for module, imports in EDGES.items()}
    cycles = _cycles(graph)
    assert not cycles, "module import cycles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_no_import_cycle_between_folders() -> None:
    """Between units: each subpackage (``binarize/data/`` ...) and each top-level module."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in EDGES.items():
        graph[unit_of(module)].update(unit_of(target) for target, _, _ in imports if unit_of(target) != unit_of(module))
    cycles = _cycles(graph)
    assert not cycles, "folder import cycles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_cli_imports_only_public_names() -> None:
    wrong = []
    for module, imports in EDGES.items():
        if unit_of(module) != "cli":
            continue
        for target, line, names in imports:
            if unit_of(target) == "cli":
                continue
            where = f"{MODULES[module].relative_to(ROOT)}:{line}"
            if target not in CLI_MAY_IMPORT:
                wrong.append(f"{where} imports {target} (not a public module)")
                continue
            public = set(importlib.import_module(target).__all__)
            wrong += [f"{where} imports {target}.{name} (not in its __all__)" for name in names if name not in public]
    assert not wrong, "cli/ must use public names only:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_import_reader_sees_deferred_and_skips_type_checking(tmp_path: Path) -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import binarize.errors\n"
        "if TYPE_CHECKING:\n    from binarize.nn import BinaryLayer\nelse:\n    import binarize.config\n"
        "def f():\n    from binarize.packed import load_packed\n"
    )
    seen = [(n.lineno, n.module if isinstance(n, ast.ImportFrom) else n.names[0].name) for n in _runtime_imports(tree)]
    assert seen == [(1, "typing"), (2, "binarize.errors"), (6, "binarize.config"), (8, "binarize.packed")]
