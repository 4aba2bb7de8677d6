"""ONNX export of a frozen binary model, checked against PyTorch with onnxruntime.

The exported graph uses standard ONNX operators only (default domain, opset ≥ 17): a binary
layer is ``GreaterOrEqual → Cast → Mul/Sub`` (±1 input), ``Conv``/``Gemm`` with ±1 weights,
then ``Mul`` by α and ``Add`` of the bias. The batch dimension is dynamic.

Why a session option matters: a ±1 convolution of ±1 inputs sums integers, which float32
holds exactly, so PyTorch and onnxruntime agree bit for bit on it. onnxruntime's
``ConvMulFusion`` folds α into the weights, which brings rounding back; an activation within
rounding distance of 0 then changes sign and the difference grows through the network (0.06
on a random MobileNetV2's logits). `inference_session` disables that one fusion and keeps all
others; the check and ``binarize eval`` use it, and the model's metadata names it.

What remains: float layers run on different kernels in PyTorch and onnxruntime, which differ
in the last bit, and an activation that close to 0 at a binary input still flips. GELU is the
worst case: for x ≈ −5.5 its value underflows to −0 (sign +1) in one runtime and stays a tiny
negative number (sign −1) in the other, so a binary layer fed by GELU disagrees on every such
activation. In the torchvision sweep with random weights and inputs this broke parity for
swin_v2_s/b (GELU before binary MLP layers) and once for efficientnet_b7 (55 binary layers on
millions of activations; other random weights for it pass at 2e-7).

Integrity: the metadata records the SHA-256 of the serialized graph (nodes and initializers),
and `verify_onnx_file` refuses a binarize file whose graph no longer matches it, or whose
float initializers hold NaN/Inf (export refuses such a model in the first place).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from binarize._files import atomic_path
from binarize.errors import ConversionError, ModelSourceError, OutputError, OutputExistsError, first_line
from binarize.integrity import first_non_finite
from binarize.nn.frozen import freeze

MIN_OPSET = 17
#: The default: the dynamo exporter implements 18 natively (17 would need a version conversion).
DEFAULT_OPSET = 18
#: Logit tolerance of the parity check (max abs difference, onnxruntime vs PyTorch).
TOLERANCE = 1e-4
#: onnxruntime optimizers that would fold α into ±1 weights (see the module docstring).
DISABLED_OPTIMIZERS = ("ConvMulFusion",)
DISABLED_OPTIMIZERS_KEY = "binarize.ort_disabled_optimizers"
#: Metadata key of the model source an export was made from (read back by ``binarize eval``).
SOURCE_KEY = "binarize.source"
#: Metadata key of the SHA-256 of the serialized graph (see `graph_digest`).
DIGEST_KEY = "binarize.graph_sha256"
PRODUCER = "binarize"
#: Tried in order: the TorchScript-based exporter is fast and gives plain graphs across
#: torchvision; the dynamo exporter handles what it cannot (e.g. non-divisible adaptive pooling).
EXPORTERS = ("torchscript", "dynamo")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and how well onnxruntime reproduces PyTorch on it."""

    path: Path
    opset: int
    exporter: str
    size_bytes: int
    operators: list[str]
    checked: bool
    dynamic_batch: bool = True
    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        """True when the check ran and met the tolerance with identical top-1."""
        return self.checked and self.max_abs_diff is not None and self.max_abs_diff <= self.tolerance and self.top1_agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path), "passed": self.passed}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: Sequence[torch.Tensor],
    *,
    check: bool = True,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> ExportResult:
    """Freezes ``model`` and writes it to ``path`` as ONNX with a dynamic batch dimension (a
    fixed one, ``dynamic_batch=False`` in the result, when the model itself takes no other batch
    size, e.g. a ``torch.export`` archive specialised to its example batch).

    The file passes ``onnx.checker`` (full check, with shape inference) and uses standard
    operators only. With ``check`` onnxruntime's logits on the example inputs and on a fresh
    batch of another size must match PyTorch's (max abs difference ≤ 1e-4, identical top-1).
    The TorchScript-based exporter is tried first (fast, plain graphs across torchvision), then
    the dynamo exporter; when neither passes, `ConversionError` says why for each, and the
    last file written stays for inspection. Refuses to overwrite
    ``path`` unless ``force``. ``metadata`` is stored in the model's ``metadata_props``
    (the CLI records the source it exported from as ``binarize.source``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from binarize import convert, export_onnx
        >>> binary = convert(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)))
        >>> result = export_onnx(binary, "model.onnx", (torch.randn(1, 16),))  # checked with onnxruntime
        >>> result.path.name
        'model.onnx'
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", "pass --force to overwrite it or choose another path")
    if opset < MIN_OPSET:
        raise ConversionError(f"opset {opset} is too old", f"use opset {MIN_OPSET} or newer")
    example_inputs = tuple(example_inputs)
    frozen = freeze(model)
    broken = first_non_finite(frozen.state_dict().items())
    if broken is not None:
        raise ConversionError(
            f"the model holds NaN or Inf in {broken!r}; not exporting it",
            "the weights are damaged or training diverged (try a lower learning rate)",
        )
    dynamic = _takes_another_batch(frozen, example_inputs)
    failures = []
    for exporter in EXPORTERS:
        try:
            _write(exporter, frozen, example_inputs, path, opset, dict(metadata or {}), dynamic)
            result = ExportResult(path, opset, exporter, path.stat().st_size, check_onnx_file(path), checked=False,
                                  dynamic_batch=dynamic)
            if not check:
                return result
            result = _parity(frozen, path, example_inputs, result)
        except OutputError:  # the file could not be written: no other exporter can help
            raise
        except Exception as exc:  # each exporter (and onnxruntime) fails in its own ways
            failures.append(f"{exporter}: {first_line(exc)}")
            continue
        if result.passed:
            return result
        failures.append(
            f"{exporter}: onnxruntime disagrees with PyTorch, max |Δlogit| {result.max_abs_diff:.3g} "
            f"(tolerance {TOLERANCE:g}), top-1 agreement {result.top1_agreement:.1%}"
        )
    raise ConversionError(f"ONNX export failed ({'; '.join(failures)})", "report this model with the message above")


def inference_session(path: str | Path, *, threads: int = 0) -> Any:
    """An onnxruntime CPU session for an exported file (``threads=0``: all cores).

    All graph optimizations except those that fold α into the ±1 weights (see module doc).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures raise; the C++ log would repeat them on stderr
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(DISABLED_OPTIMIZERS)
    )


def run_session(session: Any, inputs: Sequence[torch.Tensor]) -> np.ndarray:
    """The first output of ``session`` on torch ``inputs`` (in the graph's input order)."""
    feeds = {meta.name: x.detach().cpu().numpy() for meta, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)[0]


def _write(
    exporter: str,
    frozen: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    metadata: dict[str, str],
    dynamic: bool,
) -> None:
    """Exports with ``exporter`` and adds the metadata; writes atomically (never a half file)."""
    with atomic_path(path) as temporary:
        _export_with(exporter, frozen, example_inputs, _input_names(example_inputs), temporary, opset, dynamic)
        _add_metadata(temporary, metadata)


def _export_with(
    exporter: str,
    frozen: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    names: list[str],
    path: Path,
    opset: int,
    dynamic: bool,
) -> None:
    common = {"input_names": names, "output_names": [OUTPUT_NAME], "opset_version": opset}
    with warnings.catch_warnings(), _silenced_output():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {name: {0: "batch"} for name in [*names, OUTPUT_NAME]} if dynamic else None
            torch.onnx.export(frozen, example_inputs, str(path), dynamo=False, dynamic_axes=axes, **common)
        else:
            batch = torch.export.Dim("batch")
            shapes = tuple({0: batch} for _ in example_inputs) if dynamic else None
            program = torch.onnx.export(
                frozen, example_inputs, dynamo=True, dynamic_shapes=shapes, external_data=False, **common
            )
            program.save(str(path))


@contextmanager
def _silenced_output() -> Iterator[None]:
    """Silences stdout/stderr at the file-descriptor level: the exporters print whole graphs
    from C++ when they fail, which would bury the one-line error."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (*saved, devnull):
            os.close(handle)


def _input_names(example_inputs: tuple[torch.Tensor, ...]) -> list[str]:
    if len(example_inputs) == 1:
        return [INPUT_NAME]
    return [f"{INPUT_NAME}{i}" for i in range(len(example_inputs))]


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    recorded = {DISABLED_OPTIMIZERS_KEY: ",".join(DISABLED_OPTIMIZERS), **metadata, DIGEST_KEY: graph_digest(model)}
    onnx.helper.set_model_props(model, recorded)
    model.producer_name = PRODUCER
    onnx.save(model, str(path))


def graph_digest(model: Any) -> str:
    """Hex SHA-256 of an ONNX model's graph (nodes, initializers, inputs, outputs) as protobuf
    serializes it deterministically; the metadata, which records it, is outside the graph."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def verify_onnx_file(path: str | Path) -> None:
    """Refuses (one-line `ModelSourceError`) an ONNX file that does not parse, a binarize export
    whose graph no longer matches the SHA-256 in its metadata (or records none), and any file
    whose float initializers hold NaN or Inf. Files from other tools have no digest to check."""
    import onnx
    from onnx import numpy_helper

    fix = "use an intact copy or export it again (binarize export MODEL --onnx OUT.onnx)"
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf and onnx raise their own types for unreadable files
        raise ModelSourceError(f"cannot read {path} as ONNX ({first_line(exc, 160)})", fix) from None
    if model.producer_name == PRODUCER:
        recorded = {prop.key: prop.value for prop in model.metadata_props}.get(DIGEST_KEY)
        if recorded is None:
            raise ModelSourceError(f"{path} records no checksum: it is damaged or was written by an older binarize", fix)
        if recorded != graph_digest(model):
            raise ModelSourceError(
                f"{path} is damaged: its graph does not match the SHA-256 recorded when it was written", fix
            )
    broken = first_non_finite((tensor.name, numpy_helper.to_array(tensor)) for tensor in model.graph.initializer)
    if broken is not None:
        raise ModelSourceError(f"{path} holds NaN or Inf in initializer {broken!r}", fix)


def check_onnx_file(path: Path) -> list[str]:
    """Full ``onnx.checker`` pass; every node in the default ONNX domain. Returns op types."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"exported ONNX fails onnx.checker ({first_line(exc)})", "report this model") from None
    model = onnx.load(str(path))
    custom = sorted({f"{n.domain}::{n.op_type}" for n in _all_nodes(model.graph) if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ConversionError(f"exported ONNX uses non-standard operators {custom}", "report this model")
    return sorted({n.op_type for n in _all_nodes(model.graph)})


def _all_nodes(graph: Any) -> list[Any]:
    """Nodes of ``graph`` and of every subgraph (If/Loop bodies)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                if sub is not None and len(sub.node):
                    nodes.extend(_all_nodes(sub))
    return nodes


@torch.no_grad()
def _parity(
    frozen: nn.Module, path: Path, example_inputs: tuple[torch.Tensor, ...], result: ExportResult
) -> ExportResult:
    """Compares onnxruntime and PyTorch on the example inputs and (for a dynamic batch) on a
    fresh batch of another size."""
    session = inference_session(path)
    worst, agree, total, batches = 0.0, 0, 0, []
    for inputs in (example_inputs, _another_batch(example_inputs)) if result.dynamic_batch else (example_inputs,):
        expected = _first_output(frozen(*inputs)).float().cpu().numpy()
        actual = run_session(session, inputs)
        if actual.shape != expected.shape:
            raise ConversionError(
                f"onnxruntime output shape {actual.shape} differs from PyTorch's {expected.shape}",
                "report this model",
            )
        worst = max(worst, float(np.abs(actual - expected).max()))
        if expected.ndim >= 2:
            agree += int((actual.argmax(1) == expected.argmax(1)).sum())
            total += expected.shape[0]
        batches.append(int(inputs[0].shape[0]))
    return replace(result, checked=True, batch_sizes=batches, max_abs_diff=worst, top1_agreement=agree / total if total else 1.0)


def _another_batch(example_inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Fresh random inputs shaped like ``example_inputs`` but for their batch size, + 2."""
    generator = torch.Generator().manual_seed(0)
    other_batch = example_inputs[0].shape[0] + 2
    return tuple(
        torch.randn((other_batch, *x.shape[1:]), generator=generator, dtype=x.dtype) if x.is_floating_point() else x
        for x in example_inputs
    )


@torch.no_grad()
def _takes_another_batch(frozen: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``frozen`` runs on a batch of another size (a `torch.export` program specialised
    to its example batch refuses one with a guard error): only then is the ONNX batch dynamic."""
    try:
        frozen(*_another_batch(example_inputs))
    except Exception:  # a specialised program fails with guard errors of several types
        return False
    return True


def _first_output(output: Any) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    return output
