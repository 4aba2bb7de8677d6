"""Export side of the packed format: freeze → standard ONNX → one `binarize` node per binary layer.

Each frozen binary layer is wrapped between two marker multiplications by 1 (named buffers that
survive the TorchScript-based ONNX export), so its nodes in the exported graph are exactly those
between the markers. They are replaced by one `BinaryConv`/`BinaryLinear` node (weights packed
from the PyTorch layer itself, not read back from ONNX), a standard ``Pad`` in front for
reflect/replicate/circular padding. Then what follows a node is fused into its epilogue where
the kernel can do it: an inference BatchNormalization (folded into scale and shift), one
residual Add of the same shape, and Relu, Clip(−1, 1) or a per-channel PRelu.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from binarize._files import atomic_path
from binarize.errors import ConversionError, OutputError, OutputExistsError
from binarize.nn.frozen import (
    FrozenBinaryConv,
    FrozenBinaryLayer,
    freeze,
    frozen_layers,
)
from binarize.packed import ops
from binarize.packed.bits import pack_signs
from binarize.packed.format import (
    CHECKSUM_KEY,
    CONFIG_KEY,
    FORMAT_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    VERSION_KEY,
    tensor_checksum,
)
from binarize.provenance import provenance_of

_ENTER, _EXIT = "binarize_marker_in", "binarize_marker_out"
#: ONNX Pad modes for the non-zero padding modes of torch convolutions (circular needs opset 19).
_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_BUG = "report this model as a bug"


class _Marked(nn.Module):
    """A frozen layer between two ×1 markers that the exporter keeps as named initializers."""

    def __init__(self, layer: FrozenBinaryLayer) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer(_ENTER, torch.ones(()))
        self.register_buffer(_EXIT, torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x * getattr(self, _ENTER)) * getattr(self, _EXIT)


def save_packed(model: nn.Module, path: str | Path, example_inputs: Sequence[torch.Tensor] | None = None, *,
                force: bool = False, check: bool = True, metadata: Mapping[str, str] | None = None) -> Path:
    """Writes ``model`` (binary or already frozen) as a packed ONNX file; returns the path.

    ``example_inputs`` default to one batch of the input shape recorded with the model. With
    ``check`` the written file is loaded back by the packed runtime and its output compared with
    the frozen model's (a `ConversionError` on disagreement; nothing is left behind).
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", "pass --force (force=True) to overwrite it")
    if example_inputs is None:
        shape = provenance_of(model).input_shape
        if shape is None:
            raise ConversionError("no example input and no recorded input shape", "pass example_inputs")
        example_inputs = (torch.randn((2, *shape[1:]), generator=torch.Generator().manual_seed(0)),)
    example_inputs = tuple(example_inputs)
    frozen = freeze(model)
    if not frozen_layers(frozen):
        raise ConversionError("the model has no binary layer to pack", "export it with --onnx instead")
    try:
        graph = _export_marked(frozen, example_inputs)
    except OutputError as exc:  # the intermediate ONNX lives in a temporary folder: name the user's file too
        raise OutputError(f"cannot write {path}: {exc.what}", exc.fix) from None
    config = provenance_of(model).config
    recorded = {
        **dict(metadata or {}),
        FORMAT_KEY: FORMAT_NAME, VERSION_KEY: str(FORMAT_VERSION),
        CONFIG_KEY: json.dumps(None if config is None else config.to_dict()),
        CHECKSUM_KEY: tensor_checksum(graph.graph),
    }
    onnx.helper.set_model_props(graph, recorded)
    with atomic_path(path) as temporary:
        temporary.write_bytes(graph.SerializeToString())
        if check:
            _check_agreement(frozen, temporary, example_inputs)
    return path


def _export_marked(frozen: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Any:
    """The frozen model as ONNX with every binary layer one `binarize` node, epilogues fused."""
    from binarize.export.onnx import DEFAULT_OPSET, export_onnx

    marked = frozen if not isinstance(frozen, FrozenBinaryLayer) else nn.Sequential(frozen)
    layers = frozen_layers(marked)
    for name, layer in layers.items():
        marked.set_submodule(name, _Marked(layer))
    circular = any(isinstance(layer, FrozenBinaryConv) and layer.geometry.padding_mode == "circular"
                   for layer in layers.values())
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "float.onnx"
        result = export_onnx(marked, onnx_path, example_inputs, check=False, opset=max(DEFAULT_OPSET, 19 * circular))
        if result.exporter != "torchscript":
            raise ConversionError("the model exports to ONNX only through the dynamo exporter, which the packed "
                                  "writer cannot rewrite", "deploy it with `binarize export --onnx`")
        model = onnx.shape_inference.infer_shapes(_fold_small_constants(onnx.load(str(onnx_path))))
    rewriter = _Rewriter(model)
    for name, layer in layers.items():
        rewriter.replace_layer(name, layer)
    rewriter.fuse_epilogues()
    return rewriter.finish()


class _Rewriter:
    """Edits one exported ONNX graph in place (nodes listed, re-sorted at the end)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes: list[Any] = list(self.graph.node)
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in self.graph.initializer}
        self.shapes = {v.name: v.type.tensor_type.shape for v in [*self.graph.value_info, *self.graph.input, *self.graph.output]}
        self.new_initializers: list[Any] = []
        self.binary: list[Any] = []
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    # --- constants and consumers -------------------------------------------------------------

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer, a Constant or an Identity of one."""
        if name in self.constants:
            return self.constants[name]
        producer = self.producer(name)
        if producer is None:
            return None
        if producer.op_type == "Identity":
            return self.constant(producer.input[0])
        if producer.op_type == "Constant" and producer.attribute and producer.attribute[0].name == "value":
            return onnx.numpy_helper.to_array(producer.attribute[0].t)
        return None

    def producer(self, name: str) -> Any:
        return next((n for n in self.nodes if name in n.output), None)

    def consumers(self, name: str) -> list[Any]:
        return [n for n in self.nodes if name in n.input]

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        self.new_initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    # --- one binary layer ---------------------------------------------------------------------

    def replace_layer(self, fqn: str, layer: FrozenBinaryLayer) -> None:
        """Removes the nodes between the layer's markers; inserts [Pad →] one binarize node."""
        enter = self._marker_node(fqn, _ENTER)
        leave = self._marker_node(fqn, _EXIT)
        source = next(i for i in enter.input if not i.endswith(_ENTER))
        inner_output = next(i for i in leave.input if not i.endswith(_EXIT))
        inside = self._between(enter.output[0], inner_output)
        removed = {id(n) for n in [enter, leave, *inside]}
        escaping = {o for n in inside for o in n.output} & {i for n in self.nodes if id(n) not in removed for i in n.input}
        if escaping:
            raise ConversionError(f"layer {fqn}: its internal values are used elsewhere", _BUG)
        position = min(i for i, n in enumerate(self.nodes) if id(n) in removed)
        self.nodes = [n for n in self.nodes if id(n) not in removed]
        name = fqn
        signs = layer.signs.detach().cpu().float()
        out = signs.shape[0]
        inputs = [source,
                  self.add_initializer(f"{name}.W", pack_signs(signs.reshape(out, -1).numpy())),
                  self.add_initializer(f"{name}.scale", layer.alpha.detach().cpu().float().numpy().reshape(out)),
                  self.add_initializer(f"{name}.shift", np.zeros(out, np.float32) if layer.bias is None
                                       else layer.bias.detach().cpu().float().numpy().reshape(out))]
        new_nodes = []
        common: dict[str, Any] = {"binarize_input": int(layer.binary_input)}
        if isinstance(layer, FrozenBinaryConv):
            geometry = layer.geometry
            begins, ends = geometry.sides()
            if geometry.padding_mode != "zeros":
                pads = [0, 0, *begins, 0, 0, *ends]
                padded = f"{name}.padded"
                new_nodes.append(onnx.helper.make_node(
                    "Pad", [source, self.add_initializer(f"{name}.pads", np.array(pads, np.int64))], [padded],
                    name=f"{name}.pad", mode=_PAD_MODES[geometry.padding_mode]))
                inputs[0], begins, ends = padded, (0,) * len(begins), (0,) * len(ends)
            node = onnx.helper.make_node(
                ops.CONV, inputs, [leave.output[0]], name=name, domain=ops.DOMAIN, in_channels=layer.in_channels,
                kernel_shape=list(geometry.kernel_size), strides=list(geometry.stride), pads=[*begins, *ends],
                dilations=list(geometry.dilation), group=geometry.groups, **common)
        else:
            node = onnx.helper.make_node(ops.LINEAR, inputs, [leave.output[0]], name=name, domain=ops.DOMAIN,
                                         in_features=signs.shape[1], **common)
        new_nodes.append(node)
        self.nodes[position:position] = new_nodes
        self.binary.append(node)

    def _marker_node(self, fqn: str, marker: str) -> Any:
        # the exporter keeps the buffer's module path as the name of an initializer (or of the
        # Identity output that stands for it when equal initializers are shared)
        name = f"{fqn}.{marker}"
        found = [n for n in self.nodes if n.op_type == "Mul" and name in n.input]
        if len(found) != 1:
            raise ConversionError(f"layer {fqn} not found once in the exported graph "
                                  "(is it called more than once?)", "give each call its own layer")
        return found[0]

    def _between(self, start: str, end: str) -> list[Any]:
        """The nodes on some path from value ``start`` to value ``end``."""
        reachable, frontier = set(), [start]
        while frontier:
            value = frontier.pop()
            for node in self.consumers(value):
                if id(node) not in reachable:
                    reachable.add(id(node))
                    frontier.extend(node.output)
        result, frontier, seen = [], [end], set()
        while frontier:
            node = self.producer(frontier.pop())
            if node is None or id(node) in seen or id(node) not in reachable:
                continue
            seen.add(id(node))
            result.append(node)
            frontier.extend(node.input)
        return result

    # --- epilogue fusion -------------------------------------------------------------------------

    def fuse_epilogues(self) -> None:
        outputs = {v.name for v in self.graph.output}
        for node in self.binary:
            linear = node.op_type == ops.LINEAR
            while node.output[0] not in outputs:
                users = self.consumers(node.output[0])
                if len(users) != 1 or not self._fuse(node, users[0], linear):
                    break
                node.output[0] = users[0].output[0]
                self.nodes.remove(users[0])

    def _fuse(self, node: Any, user: Any, linear: bool) -> bool:
        """Folds ``user`` into ``node``'s epilogue when the kernel computes the same thing."""
        attributes = {a.name: a for a in node.attribute}
        activation = attributes.get("activation")
        has_residual = len(node.input) > ops.RESIDUAL and node.input[ops.RESIDUAL]
        if activation is not None:
            return False  # the activation is the epilogue's last step
        rank = self._rank(node.output[0])
        out = self.constants_of(node)[0].shape[0]
        if user.op_type == "BatchNormalization" and not has_residual and user.input[0] == node.output[0]:
            if (linear and rank != 2) or len(user.output) != 1:
                return False
            stats = [s for s in map(self.constant, user.input[1:5]) if s is not None and s.shape == (out,)]
            if len(stats) != 4:
                return False
            epsilon = next((a.f for a in user.attribute if a.name == "epsilon"), 1e-5)
            gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
            factor = gamma / np.sqrt(var + epsilon)
            scale, shift = self.constants_of(node)
            self._set_epilogue(node, scale.astype(np.float64) * factor, (shift.astype(np.float64) - mean) * factor + beta)
            return True
        if user.op_type == "Add" and not has_residual:
            other = user.input[1] if user.input[0] == node.output[0] else user.input[0]
            if other == node.output[0] or self.constant(other) is not None or not self._same_shape(other, node.output[0]):
                return False
            node.input.extend([""] * (ops.RESIDUAL - len(node.input) + 1))
            node.input[ops.RESIDUAL] = other
            return True
        if user.op_type == "Relu":
            return self._set_activation(node, "relu")
        if user.op_type == "Clip" and len(user.input) == 3:
            low, high = self.constant(user.input[1]), self.constant(user.input[2])
            if low is not None and high is not None and float(low) == -1.0 and float(high) == 1.0:
                return self._set_activation(node, "hardtanh")
            return False
        if user.op_type == "PRelu" and user.input[0] == node.output[0]:
            slope = self.constant(user.input[1])
            if slope is None or rank is None:
                return False
            vector = _per_channel(slope, rank, rank - 1 if linear else 1, out)
            if vector is None:
                return False
            node.input.extend([""] * (ops.SLOPE - len(node.input) + 1))
            node.input[ops.SLOPE] = self.add_initializer(f"{node.name}.slope", vector)
            return self._set_activation(node, "prelu")
        return False

    def constants_of(self, node: Any) -> tuple[np.ndarray, np.ndarray]:
        """The node's current scale and shift."""
        current = {t.name: t for t in self.new_initializers}
        scale, shift = (onnx.numpy_helper.to_array(current[node.input[i]]) for i in (ops.SCALE, ops.SHIFT))
        return scale, shift

    def _set_epilogue(self, node: Any, scale: np.ndarray, shift: np.ndarray) -> None:
        for index, value in ((ops.SCALE, scale), (ops.SHIFT, shift)):
            tensor = next(t for t in self.new_initializers if t.name == node.input[index])
            tensor.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), tensor.name))

    def _set_activation(self, node: Any, activation: str) -> bool:
        node.attribute.append(onnx.helper.make_attribute("activation", activation))
        return True

    def _rank(self, name: str) -> int | None:
        # the binarize node's output shape is the marker Mul's, which shape inference recorded
        shape = self.shapes.get(name)
        return None if shape is None else len(shape.dim)

    def _same_shape(self, a: str, b: str) -> bool:
        first, second = self.shapes.get(a), self.shapes.get(b)
        if first is None or second is None or len(first.dim) != len(second.dim):
            return False
        return all(
            (x.HasField("dim_value") and x.dim_value == y.dim_value) or (x.HasField("dim_param") and x.dim_param == y.dim_param)
            for x, y in zip(first.dim, second.dim)
        )

    # --- the result ---------------------------------------------------------------------------

    def finish(self) -> Any:
        """Dead nodes and tensors dropped, nodes sorted, every tensor raw bytes, domain declared."""
        sources = {v.name for v in self.graph.input} | {t.name for t in [*self.graph.initializer, *self.new_initializers]}
        needed = {v.name for v in self.graph.output}
        kept = []
        for node in reversed(_topological(self.nodes, sources)):
            if set(node.output) & needed:
                kept.append(node)
                needed.update(i for i in node.input if i)
        kept.reverse()
        initializers = [t for t in [*self.graph.initializer, *self.new_initializers] if t.name in needed]
        for tensor in initializers:
            if not tensor.raw_data:
                tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name))
        del self.graph.initializer[:]
        self.graph.initializer.extend(initializers)
        del self.graph.node[:]
        self.graph.node.extend(kept)
        del self.graph.value_info[:]
        del self.model.opset_import[:]
        self.model.opset_import.extend([onnx.helper.make_opsetid("", self.opset),
                                        onnx.helper.make_opsetid(ops.DOMAIN, ops.DOMAIN_VERSION)])
        return self.model


#: the largest computed constant folded into an initializer (elements): shapes and pads, not weights
_FOLD_LIMIT = 4096
_NOT_FOLDED = {"Constant", "Identity", "If", "Loop", "Scan", "RandomNormal", "RandomNormalLike", "RandomUniform",
               "RandomUniformLike", "Multinomial", "Bernoulli"}


def _fold_small_constants(model: Any) -> Any:
    """Nodes computed from constants only (the exporter's shape arithmetic, e.g. the channel pads
    of an option-A shortcut) replaced by their small results, so that shape inference knows the
    shapes after them: a residual Add whose other operand was padded that way fuses into the
    binary node before it instead of leaving a float segment behind."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    folded, kept = [], []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        if node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx") or not all(i in values for i in node.input if i):
            kept.append(node)
            continue
        inputs = [onnx.numpy_helper.from_array(values[i], i) for i in dict.fromkeys(i for i in node.input if i)]
        single = onnx.helper.make_model(
            onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_empty_tensor_value_info(o) for o in node.output],
                                   inputs), opset_imports=model.opset_import, ir_version=model.ir_version)
        results = ReferenceEvaluator(single).run(None, {})
        if any(np.asarray(r).size > _FOLD_LIMIT for r in results):
            kept.append(node)
            continue
        for name, result in zip(node.output, results):
            values[name] = np.asarray(result)
            folded.append(onnx.numpy_helper.from_array(np.asarray(result), name))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    return model


def _per_channel(value: np.ndarray, rank: int, channel: int, out: int) -> np.ndarray | None:
    """``value`` as a float32 [out] vector when it broadcasts along the channel axis only."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(size != 1 for axis, size in enumerate(shape) if axis != channel) or shape[channel] not in (1, out):
        return None
    return np.broadcast_to(value.reshape(-1), (out,)).astype(np.float32)


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` in an order where each input is produced first (stable: original order wins)."""
    ready = set(available) | {""}
    pending, ordered = list(nodes), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            missing = sorted({i for n in pending for i in n.input if i not in ready} - {o for n in pending for o in n.output})
            raise ConversionError(f"the rewritten graph reads undefined values {missing[:3]}", _BUG)
        first = progress[0]
        ordered.append(first)
        ready.update(first.output)
        pending.remove(first)
    return ordered


def _check_agreement(frozen: nn.Module, path: Path, example_inputs: tuple[torch.Tensor, ...]) -> None:
    from binarize.packed.runtime import load_packed

    with torch.no_grad():
        expected = frozen(*example_inputs)
    if not isinstance(expected, torch.Tensor):
        return
    actual = load_packed(path)(*[x.numpy() for x in example_inputs])
    scale = max(1.0, float(expected.abs().max()))
    error = float(np.abs(expected.float().numpy() - actual).max())
    if not np.isfinite(error) or error > 1e-3 * scale:
        if np.isfinite(error) and _has_initial_batchnorm_statistics(frozen):
            # SPEC §6: at mean 0 / var 1 a sign threshold sits at exactly 0, where sums of ±α
            # cancel; PyTorch and onnxruntime round such ties differently (no engine at fault)
            raise ConversionError(
                f"the packed model disagrees with PyTorch (max |Δ| = {error:.3g}) on a model whose BatchNorms "
                "keep their initial statistics, where exact ties at sign thresholds round differently in each engine",
                "export a trained (or BatchNorm-calibrated) model, or pass --no-check to write it anyway",
            )
        raise ConversionError(f"the packed model disagrees with PyTorch (max |Δ| = {error:.3g})",
                              "report this as a bug, with the model")


def _has_initial_batchnorm_statistics(model: nn.Module) -> bool:
    """Whether some BatchNorm still has running mean 0 and variance 1 (never trained)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None
        and not m.running_mean.any() and bool((m.running_var == 1).all())
        for m in model.modules()
    )
