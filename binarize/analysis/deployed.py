"""Evaluate a deployed file — checkpoint (``.pt``), ONNX (``.onnx``) or packed (``.bnz``, on
binarize's runtime or OpenVINO): analysis of any stage, above both exporters.

One small adapter per kind gives a common interface (logits for a batch, thread count, the
example shape it knows, per-layer time), and `evaluate_file` measures what a deployment
cares about: accuracy when labels exist, agreement with a reference model, size on disk and
latency per batch (median over repeats at batch 1 and batch N, one thread and all threads).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from binarize.errors import ConfigError, ModelSourceError, first_line
from binarize.packed.kernels import usable_cpus

Batches = Iterable[tuple[Tensor, Tensor | None]]


class DeployedModel:
    """A loaded file that maps a batch of inputs to logits."""

    kind: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        torch.set_num_threads(threads)

    def example_shape(self) -> tuple[int, ...] | None:
        """One example's shape (without the batch dimension) when the file records it."""
        return None

    def recorded_source(self) -> str | None:
        """The model source the file was exported from, when the file records it (a path the
        file states: callers follow it only when the user trusts the file)."""
        return None

    def per_layer_times(self, x: Tensor) -> dict[str, float] | None:
        """Seconds per layer for one call on ``x``, where the runtime can tell."""
        return None


class TorchFile(DeployedModel):
    """A binarize checkpoint or any model source `load_model` reads; run in eval mode."""

    kind = "checkpoint"

    def __init__(self, path: Path, model: nn.Module) -> None:
        super().__init__(path)
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        return _logits(self.model(x))

    def example_shape(self) -> tuple[int, ...] | None:
        from binarize.provenance import provenance_of

        shape = provenance_of(self.model).input_shape
        return None if shape is None else tuple(shape[1:])


class OnnxFile(DeployedModel):
    """An exported ONNX file run by onnxruntime (sessions per thread count, see `inference_session`)."""

    kind = "onnx"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._threads = 0
        self._sessions: dict[int, Any] = {}
        from binarize.export.onnx import verify_onnx_file

        verify_onnx_file(path)
        self._session()  # fail early on a file onnxruntime cannot run

    def _session(self) -> Any:
        from binarize.export.onnx import inference_session

        if self._threads not in self._sessions:
            try:
                self._sessions[self._threads] = inference_session(self.path, threads=self._threads)
            except Exception as exc:  # onnxruntime raises its own types for unreadable files
                raise ModelSourceError(f"onnxruntime cannot load {self.path} ({first_line(exc, 160)})",
                                       "re-export it with binarize export MODEL --onnx OUT.onnx") from None
        return self._sessions[self._threads]

    def set_threads(self, threads: int) -> None:
        self._threads = threads

    def __call__(self, x: Tensor) -> Tensor:
        from binarize.export.onnx import run_session

        return torch.from_numpy(np.asarray(run_session(self._session(), (x,))))

    def example_shape(self) -> tuple[int, ...] | None:
        dims = self._session().get_inputs()[0].shape[1:]
        return tuple(dims) if all(isinstance(d, int) for d in dims) else None

    def recorded_source(self) -> str | None:
        from binarize.export.onnx import SOURCE_KEY

        return self._session().get_modelmeta().custom_metadata_map.get(SOURCE_KEY)


class PackedFile(DeployedModel):
    """A packed ``.bnz`` file: binary layers in the native kernels, float parts in onnxruntime."""

    kind = "packed"

    def __init__(self, path: Path, *, int8_float_layers: bool = False) -> None:
        super().__init__(path)
        from binarize.packed import load_packed

        self.model = load_packed(path, int8_float_layers=int8_float_layers)

    def set_threads(self, threads: int) -> None:
        self.model.set_num_threads(threads)

    def __call__(self, x: Tensor) -> Tensor:
        return _logits(self.model(x.detach().cpu().numpy()))

    def example_shape(self) -> tuple[int, ...] | None:
        return self.model.input_shape()

    def recorded_source(self) -> str | None:
        from binarize.export.onnx import SOURCE_KEY

        return self.model.metadata.get(SOURCE_KEY)

    def per_layer_times(self, x: Tensor) -> dict[str, float]:
        self.model(x.detach().cpu().numpy(), profile=True)
        return self.model.per_layer_times()


class OpenVINOFile(PackedFile):
    """A packed ``.bnz`` file run by OpenVINO (`binarize.packed.openvino_engine`), which has the
    packed model's interface but no per-layer times."""

    kind = "packed on openvino"

    def __init__(self, path: Path) -> None:
        DeployedModel.__init__(self, path)  # not PackedFile's: that would load the packed runtime too
        from binarize.packed.openvino_engine import load_openvino

        self.model = load_openvino(path)  # type: ignore[assignment]  # the PackedModel interface, duck-typed

    def per_layer_times(self, x: Tensor) -> None:  # type: ignore[override]  # OpenVINO has none
        return None


ENGINES = ("packed", "openvino")


def load_deployed(path: str | Path, *, trust: bool = False, int8_float_layers: bool = False,
                  engine: str = "packed") -> DeployedModel:
    """The adapter for ``path`` by suffix: ``.onnx``, ``.bnz``, else a torch model source.
    ``int8_float_layers`` runs a ``.bnz`` file's float layers in int8 (U8S8); ``engine``
    ``openvino`` runs a ``.bnz`` file on OpenVINO instead of binarize's runtime."""
    path = Path(path)
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", "use --engine packed or --engine openvino")
    if engine == "openvino" and path.suffix != ".bnz":
        raise ConfigError(f"--engine openvino runs .bnz files, not {path.name}", "export one with --packed OUT.bnz")
    if engine == "openvino" and int8_float_layers:
        raise ConfigError("--int8-float-layers is an option of the packed runtime", "drop it with --engine openvino")
    if not path.exists():
        raise ModelSourceError(f"{path} not found", "give a .pt checkpoint, an .onnx or a .bnz file")
    if engine == "openvino":
        return OpenVINOFile(path)
    if path.suffix == ".onnx":
        return OnnxFile(path)
    if path.suffix == ".bnz":
        return PackedFile(path, int8_float_layers=int8_float_layers)
    from binarize.loading import load_model

    return TorchFile(path, load_model(path, trust=trust))


@dataclass(frozen=True)
class DeployedEval:
    """What `evaluate_file` measured. Latencies are milliseconds per batch (medians)."""

    path: str
    kind: str
    size_bytes: int
    examples: int
    accuracy: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    layer_ms: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_file(
    model: DeployedModel,
    batches: Batches,
    example_shape: tuple[int, ...],
    *,
    reference: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 32,
    repeats: int = 10,
    threads: Iterable[int] | None = None,
) -> DeployedEval:
    """Runs ``model`` over ``batches`` (inputs with labels, or None for unlabelled data).

    Accuracy (%) needs labels; agreement (fraction of identical top-1) and the max abs logit
    difference need a ``reference`` callable (e.g. the checkpoint the file was exported from).
    Latency is measured on random inputs of ``example_shape`` at batch 1 and ``batch_size``,
    with 1 thread and all threads (``threads`` overrides), median of ``repeats`` calls after
    one warm-up call.
    """
    torch_threads = torch.get_num_threads()
    model.set_threads(usable_cpus())
    correct = agree = labelled = count = 0
    worst = 0.0
    for inputs, labels in batches:
        logits = model(inputs)
        predicted = logits.argmax(1)
        if labels is not None:
            correct += int((predicted == labels).sum())
            labelled += len(labels)
        if reference is not None:
            expected = reference(inputs)
            agree += int((expected.argmax(1) == predicted).sum())
            worst = max(worst, float((expected.float() - logits.float()).abs().max()))
        count += len(inputs)
    if count == 0:
        raise ConfigError("no examples to evaluate", "give --data with a non-empty test split or --random N")
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((batch_size, *example_shape), generator=generator)
    thread_counts = list(threads) if threads is not None else sorted({1, usable_cpus()})
    latency = {
        f"batch{batch}_threads{count_}": median_ms(model, probe[:batch], count_, repeats)
        for batch in sorted({1, batch_size})
        for count_ in thread_counts
    }
    model.set_threads(usable_cpus())
    layer_times = model.per_layer_times(probe)
    torch.set_num_threads(torch_threads)
    return DeployedEval(
        path=str(model.path),
        kind=model.kind,
        size_bytes=model.path.stat().st_size,
        examples=count,
        accuracy=100.0 * correct / labelled if labelled else None,
        agreement=agree / count if reference is not None else None,
        max_abs_diff=worst if reference is not None else None,
        latency_ms=latency,
        layer_ms=None if layer_times is None else {k: 1000.0 * v for k, v in layer_times.items()},
    )


def median_ms(model: DeployedModel, x: Tensor, threads: int, repeats: int) -> float:
    """Median wall time of ``model(x)`` in milliseconds with ``threads`` threads (one warm-up)."""
    model.set_threads(threads)
    model(x)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def dataset_batches(data: Any, batch_size: int) -> Batches:
    """``(inputs, labels)`` batches of a labelled dataset."""
    from torch.utils.data import DataLoader

    for inputs, labels in DataLoader(data, batch_size=batch_size):
        yield inputs, labels


def random_batches(count: int, example_shape: tuple[int, ...], batch_size: int, seed: int = 0) -> Batches:
    """``count`` standard-normal inputs of ``example_shape`` (seeded), without labels."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch_size):
        yield torch.randn((min(batch_size, count - start), *example_shape), generator=generator), None


def _logits(output: Any) -> Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    return torch.as_tensor(output).detach()
