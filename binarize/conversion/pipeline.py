"""The conversion pass: copy, trace, decide, swap, check."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from binarize.config import BinarizeConfig, LayerConfig
from binarize.conversion import activations
from binarize.conversion.copying import copy_model
from binarize.conversion.policy import WEIGHTED_TYPES, Decision, decide, input_readers
from binarize.conversion.report import ConversionReport, LayerRow
from binarize.conversion.signs import informative_fraction, negative_sign_fractions
from binarize.conversion.swap import build_binary, resolved
from binarize.conversion.thresholds import balancing, has_threshold, insert_thresholds
from binarize.conversion.tracer import called_modules_in_order, trace, untraceable_submodule
from binarize.errors import ConversionError, first_line
from binarize.estimators import get
from binarize.nn.layers import BinaryLayer
from binarize.nn.scaling import scaling_name
from binarize.nn.transforms import create_transform, transform_names
from binarize.provenance import Provenance, provenance_of, set_provenance

#: How many submodule classes conversion makes leaves of, one per failed trace, before it
#: falls back to swapping by name.
MAX_AUTOMATIC_LEAVES = 8

#: How many times conversion re-measures the binary inputs' signs after giving layers float
#: inputs or input thresholds (each round rebuilds the model and runs the example once).
SIGN_ROUNDS = 3


def convert(
    model: nn.Module,
    config: BinarizeConfig | None = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    leaves: Iterable[type[nn.Module] | str] = (),
) -> nn.Module:
    """Returns a binary copy of ``model``; ``model`` itself is never changed.

    The copy is traced with torch.fx and each Conv/Linear node the policy selects is swapped
    for its binary counterpart (first and last weighted layers and depthwise convolutions stay
    float by default; see `BinarizeConfig`). When tracing fails the copy's modules are swapped
    by name instead, with a warning (``config.strict`` makes it an error); ``example_inputs``
    then give the execution order that finds the first and last layers.

    ``leaves`` (module classes or fqns, added to the classes decorated with `register_leaf`)
    are traced as opaque calls, so that one untraceable submodule does not send the whole model
    to the fallback; the weighted layers inside a leaf are binarized like any other (found by a
    forward of ``example_inputs``), but the activation policy cannot rewrite inside it.

    Binary layers fed by a one-signed activation (ReLU, ReLU6, Hardsigmoid, Sigmoid) are
    handled by ``config.activation_policy`` (see `binarize.conversion.activations`). Then one
    train-mode forward of ``example_inputs`` (or of random input of the model's recorded shape)
    measures the sign of every binary layer's input. A layer whose input is nearly one-signed
    (the less frequent sign rarer than ``config.min_informative_fraction``) gets a learned
    input threshold τ (`binarize.nn.InputThreshold`, ReActNet's RSign) started at its
    channels' medians, so that it binarizes x − τ with balanced signs; one whose input sign is
    constant keeps float inputs (or, under the ``keep`` policy, is reported with its fix). The
    signs are measured again after such changes, up to `SIGN_ROUNDS` times.

    The result's `binarize.provenance_of` record holds the float model's source and input
    shape, ``config`` and the `ConversionReport` (``report``).

    Example:
        >>> import binarize, torch
        >>> float_model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.Conv2d(32, 32, 3),
        ...                                   torch.nn.Conv2d(32, 8, 3))
        >>> binary = binarize.convert(float_model, example_inputs=(torch.randn(1, 3, 16, 16),))
        >>> [row.reason for row in binarize.provenance_of(binary).report.rows]
        ['kept: first layer', 'binarized', 'kept: last layer']
    """
    config = config or BinarizeConfig()
    origin = provenance_of(model)
    leaves = tuple(leaves)
    binary, order, called, mode, notes, traced_leaves = _structure(
        _working_copy(model), config, example_inputs, leaves
    )
    decisions = plan(binary, config, order, called)
    report = apply_plan(binary, config, decisions, mode=mode, warnings_=list(notes), leaves=traced_leaves)
    example = _example_inputs(origin, example_inputs)
    if example is not None:
        signs, report = _input_signs(binary, example, report)
        constant = _constant(decisions, signs or {})
        for _ in range(SIGN_ROUNDS):
            # A layer balanced by a threshold can leave the next one nearly one-signed (AlexNet's
            # features.6 reads a max-pool of features.3 without BatchNorm): measure again.
            adjusted = _adjusted_for_signs(decisions, signs or {}, config)
            if adjusted == decisions:
                break
            decisions = adjusted
            binary = _structure(_working_copy(model), config, example_inputs, leaves)[0]
            report = apply_plan(binary, config, decisions, mode=mode, warnings_=list(notes), leaves=traced_leaves)
            signs, report = _input_signs(binary, example, report)
            constant += [name for name in _constant(decisions, signs or {}) if name not in constant]
        report = _report_signs(report, signs, constant)
    return set_provenance(binary, origin.replace(config=config, report=report))


def rebuild(
    model: nn.Module,
    config: BinarizeConfig,
    records: Sequence[Mapping[str, Any]],
    *,
    mode: str,
    leaves: Sequence[str] = (),
) -> nn.Module:
    """Replays a saved plan on a float model: the same layers, configured the same way (traced
    with the same ``leaves``, the report's fqns)."""
    work = copy_model(model)
    if mode == "fx":
        work = trace(work, leaves)[0]
    report = apply_plan(work, config, plan_from_records(records), mode=mode, leaves=tuple(leaves))
    return set_provenance(work, provenance_of(model).replace(config=config, report=report))


def plan(
    model: nn.Module, config: BinarizeConfig, order: Sequence[str], called: set[str] | None
) -> list[Decision]:
    """Decisions for every weighted layer of ``model`` (in execution order where known). The
    first layers are the first in execution order and, in a graph, every layer reading the
    model's input directly."""
    weighted = {name: m for name, m in model.named_modules() if isinstance(m, WEIGHTED_TYPES)}
    candidates = [name for name in order if name in weighted]
    first = set(candidates[:1]) | (input_readers(model) if isinstance(model, torch.fx.GraphModule) else set())
    last = candidates[-1] if candidates else None
    ordered = candidates + [name for name in weighted if name not in candidates]
    return [
        decide(
            config,
            name,
            weighted[name],
            first=first,
            last=last,
            called=called is None or name in called,
        )
        for name in ordered
    ]


def apply_plan(
    model: nn.Module,
    config: BinarizeConfig,
    decisions: Sequence[Decision],
    *,
    mode: str,
    warnings_: Sequence[str] = (),
    leaves: tuple[str, ...] = (),
) -> ConversionReport:
    """Swaps in the binary layers ``decisions`` select (in place); returns the report."""
    by_estimator: dict[str, list[str]] = {}
    layers = [(d.fqn, type(model.get_submodule(d.fqn))) for d in decisions]
    unmatched = [r.pattern for r in config.rules if not any(r.matches(fqn, kind) for fqn, kind in layers)]
    if unmatched and config.strict:
        raise ConversionError(f"rule {unmatched[0]!r} matches no layer",
                              "check the names in the conversion report, or drop --strict to only warn")
    built = []
    for decision in decisions:
        module = model.get_submodule(decision.fqn)
        layer = resolved(decision.layer) if decision.layer is not None else None
        if layer is not None:
            model.set_submodule(decision.fqn, build_binary(module, layer))
            for name in {n for n in (layer.weight_estimator, layer.input_estimator) if n is not None}:
                by_estimator.setdefault(name, []).append(decision.fqn)
        built.append((decision, module, layer))
    notes, rewrites = [*warnings_, *(f"rule {pattern!r} matches no layer" for pattern in unmatched)], []
    wanted = {d.fqn for d, _, layer in built if layer is not None and layer.input_threshold}
    thresholded: set[str] = set()
    if isinstance(model, torch.fx.GraphModule):
        binary_inputs = {d.fqn for d in decisions if d.layer is not None and d.layer.input_estimator}
        rewrites = _apply_activation_policy(model, binary_inputs, config.activation_policy, notes)
        thresholded = insert_thresholds(model, wanted)
        model.recompile()
        model.graph.lint()
    if wanted - thresholded:
        missing = sorted(wanted - thresholded)
        notes.append(
            f"{len(missing)} binary layer(s) got no input threshold (e.g. {missing[0]}): thresholds are "
            "placed in the traced graph, and these layers are not called in it (swap-by-name fallback or inside a leaf)"
        )
    rows = [_row(d.fqn, module, d.reason, layer, d.fqn in thresholded) for d, module, layer in built]
    for name, fqns in by_estimator.items():
        get(name).check_graph(model, fqns)
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return ConversionReport(
        tuple(rows), total, mode, tuple(notes), config.activation_policy, tuple(rewrites), leaves=leaves
    )


def _apply_activation_policy(
    gm: torch.fx.GraphModule, binary_inputs: set[str], policy: str, notes: list[str]
) -> list[str]:
    """Rewrites the graph where a binary layer reads a one-signed activation; the report lines."""
    fed = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or str(node.target) not in binary_inputs:
            continue
        feed = activations.one_signed_feed(gm, node)
        if feed is None:
            continue
        if policy == "keep":
            fed.append(str(node.target))
        else:
            rewrite = activations.bypass if policy == "bypass" else activations.clip
            fed.append(rewrite(gm, node, feed))
    if policy == "keep" and fed:
        notes.append(
            f"{len(fed)} binary layer(s) binarize a ReLU-type output, whose sign is constant "
            f"(e.g. {fed[0]}); use --activation-policy bypass (or hardtanh)"
        )
        return []
    return fed


def _working_copy(model: nn.Module) -> nn.Module:
    work = copy_model(model)
    work.train(model.training)
    return work


def _example_inputs(
    origin: Provenance, example_inputs: Sequence[torch.Tensor] | None
) -> Sequence[torch.Tensor] | None:
    """The given example inputs, else random ones of the model's recorded input shape."""
    if example_inputs is not None:
        return example_inputs
    return None if origin.input_shape is None else (torch.randn(origin.input_shape),)


def _input_signs(
    model: nn.Module, example: Sequence[torch.Tensor], report: ConversionReport
) -> tuple[dict[str, float] | None, ConversionReport]:
    """Fractions of −1 signs per binary input (after starting the input thresholds at the
    example's medians), or None (noted in the report) when the example fails."""
    try:
        with balancing(model):
            return negative_sign_fractions(model, example), report
    except Exception as exc:  # a wrong example input must not stop conversion, only the check
        note = f"input signs not checked: the example input failed ({type(exc).__name__}: {first_line(exc)})"
        return None, dataclasses.replace(report, warnings=(*report.warnings, note))


def _constant(decisions: Sequence[Decision], signs: Mapping[str, float]) -> list[str]:
    """The binary layers whose input had one sign only on the example input."""
    return [d.fqn for d in decisions if d.fqn in signs and informative_fraction(signs[d.fqn]) == 0.0]


def _adjusted_for_signs(
    decisions: Sequence[Decision], signs: Mapping[str, float], config: BinarizeConfig
) -> list[Decision]:
    """``decisions`` after the sign check: float inputs where the input sign was constant
    (unless the policy is ``keep``: the report then says what to do), an input threshold
    where it was nearly constant."""
    adjusted = []
    for decision in decisions:
        informative = informative_fraction(signs[decision.fqn]) if decision.fqn in signs else None
        if informative == 0.0 and decision.reason == "binarized" and config.activation_policy != "keep":
            # What the policy could not rewrite (e.g. channel shuffles of ReLU outputs) keeps float
            # inputs: a binary input of one sign computes a constant and BatchNorm after it blows up.
            decision = _float_inputs(decision)
        elif informative and informative < config.min_informative_fraction and decision.layer is not None:
            if not decision.layer.input_threshold:
                decision = _with_threshold(decision, informative, config.min_informative_fraction)
        adjusted.append(decision)
    return adjusted


def _float_inputs(decision: Decision) -> Decision:
    assert decision.layer is not None
    layer = dataclasses.replace(decision.layer, input_estimator=None, input_estimator_args={}, input_threshold=False)
    return Decision(decision.fqn, layer, "binarized, inputs float: one input sign on the example input")


def _with_threshold(decision: Decision, informative: float, cutoff: float) -> Decision:
    assert decision.layer is not None
    layer = dataclasses.replace(decision.layer, input_threshold=True)
    reason = f"{decision.reason}, input threshold: informative sign fraction {informative:.2g} < {cutoff:g}"
    return Decision(decision.fqn, layer, reason)


def _report_signs(report: ConversionReport, signs: dict[str, float] | None, constant: list[str]) -> ConversionReport:
    """The report with the measured signs, saying which layers saw a constant sign, and the fix."""
    notes = list(report.warnings)
    if constant and report.activation_policy == "keep":
        notes.append(
            f"{len(constant)} binary layer(s) see one input sign on the example input (e.g. {constant[0]}): "
            "they compute a constant; use --activation-policy bypass"
        )
    elif constant:
        notes.append(
            f"{len(constant)} binary layer(s) saw one input sign on the example input (e.g. {constant[0]}) "
            "that the activation policy could not rewrite: their inputs are kept float (W1A32)"
        )
    return dataclasses.replace(report, warnings=tuple(notes), input_signs=signs or {})


def plan_from_records(records: Sequence[Mapping[str, Any]]) -> list[Decision]:
    """Decisions saved in a checkpoint (`plan_records`), replayed exactly on reload."""
    return [
        Decision(r["fqn"], None if r["layer"] is None else LayerConfig.from_dict(r["layer"]), r["reason"])
        for r in records
    ]


def plan_records(model: nn.Module) -> list[dict[str, Any]] | None:
    """The plan a checkpoint saves, as plain data, read off the converted model itself: one
    record per row of its conversion report (the fqn and the reason) with the configuration of
    the binary layer now at that fqn (None: float). None for a model `convert` did not make."""
    report = provenance_of(model).report
    if report is None:
        return None
    layers = {name: m for name, m in model.named_modules() if isinstance(m, BinaryLayer)}
    return [
        {
            "fqn": row.fqn,
            "layer": dataclasses.replace(
                layer_config(layers[row.fqn]), input_threshold=has_threshold(model, row.fqn)
            ).to_dict()
            if row.fqn in layers
            else None,
            "reason": row.reason,
        }
        for row in report.rows
    ]


def layer_config(layer: BinaryLayer) -> LayerConfig:
    """The resolved `LayerConfig` that builds ``layer`` again (`build_binary` inverted)."""
    inputs = layer.input_estimator
    return LayerConfig(
        weight_estimator=layer.weight_estimator.name,
        weight_estimator_args=layer.weight_estimator.hparams(),
        input_estimator=None if inputs is None else inputs.name,
        input_estimator_args={} if inputs is None else inputs.hparams(),
        scaling=scaling_name(layer.scaling),
        weight_transform=_transform_name(layer.weight_transform),
    )


def _transform_name(transform: nn.Module | None) -> str:
    if transform is None:
        return "none"
    return next(name for name in transform_names() if type(create_transform(name)) is type(transform))


def _row(fqn: str, module: nn.Module, reason: str, layer: LayerConfig | None, threshold: bool) -> LayerRow:
    return LayerRow(
        fqn=fqn,
        type=type(module).__name__,
        shape=tuple(module.weight.shape),
        params=sum(p.numel() for p in module.parameters(recurse=False)),
        binarized=layer is not None,
        reason=reason,
        weight_estimator=layer.weight_estimator if layer else None,
        input_estimator=layer.input_estimator if layer else None,
        scaling=layer.scaling if layer else None,
        weight_transform=layer.weight_transform if layer else None,
        input_threshold=threshold,
    )


def _structure(
    work: nn.Module,
    config: BinarizeConfig,
    example_inputs: Sequence[torch.Tensor] | None,
    leaves: tuple[type[nn.Module] | str, ...],
) -> tuple[nn.Module, list[str], set[str] | None, str, list[str], tuple[str, ...]]:
    """(module to rewrite, execution order, called fqns or None, mode, warnings, traced leaves).

    Tracing that fails inside a submodule is retried with that submodule's class as a leaf
    (a few times); tracing that fails in the model's own forward falls back to swap by name.
    """
    gm, traced_leaves, notes, reason = _trace_with_automatic_leaves(work, leaves, strict=config.strict)
    if gm is None:
        if config.strict:
            raise ConversionError(
                f"torch.fx cannot trace {type(work).__name__} ({reason})",
                "drop --strict to swap modules by name instead, pass leaves=, or make forward traceable",
            ) from None
        note = f"tracing failed ({reason}); swapped modules by name instead"
        warnings.warn(f"binarize.convert: {note}", stacklevel=3)
        order, called = _order_without_graph(work, example_inputs)
        return work, order, called, "fallback", [*notes, note], ()
    for note in notes:
        warnings.warn(f"binarize.convert: {note}", stacklevel=3)
    gm.train(work.training)
    order = called_modules_in_order(gm)
    if traced_leaves:
        order, called = _with_leaf_layers(gm, order, traced_leaves, example_inputs)
        return gm, order, called, "fx", notes, traced_leaves
    return gm, order, set(order), "fx", notes, ()


def _trace_with_automatic_leaves(
    work: nn.Module, leaves: tuple[type[nn.Module] | str, ...], *, strict: bool
) -> tuple[torch.fx.GraphModule | None, tuple[str, ...], list[str], str]:
    """(graph or None when tracing failed in the model's own forward, the leaves it calls,
    a note per class made a leaf, the last tracing error)."""
    notes: list[str] = []
    while True:
        try:
            gm, traced_leaves = trace(work, leaves)
            return gm, traced_leaves, notes, ""
        except ConversionError:  # a leaf that names nothing: the user's input, not the model's
            raise
        except Exception as exc:  # tracing can fail with any error the model's forward raises
            reason = f"{type(exc).__name__}: {first_line(exc)}"
            culprit = None if strict else untraceable_submodule(work, exc)
            if culprit is None or len(notes) == MAX_AUTOMATIC_LEAVES:
                return None, (), notes, reason
            kind = type(work.get_submodule(culprit))
            notes.append(f"tracing failed in {culprit} ({reason}); traced every {kind.__name__} as an opaque leaf")
            leaves = (*leaves, kind)


def _with_leaf_layers(
    gm: torch.fx.GraphModule,
    order: list[str],
    leaves: tuple[str, ...],
    example_inputs: Sequence[torch.Tensor] | None,
) -> tuple[list[str], set[str]]:
    """The graph's order and called modules with the weighted layers inside ``leaves`` added
    where each leaf is called (those a forward of the example runs, as in the fallback)."""
    inner_order, inner_called = _order_without_graph(gm, example_inputs)
    inside = {leaf: [name for name in inner_order if name.startswith(f"{leaf}.")] for leaf in leaves}
    expanded = [name for node in order for name in (node, *inside.get(node, ()))]
    called = set(order) | {name for names in inside.values() for name in names if name in (inner_called or ())}
    return expanded, called


def _order_without_graph(
    model: nn.Module, example_inputs: Sequence[torch.Tensor] | None
) -> tuple[list[str], set[str] | None]:
    """Execution order from forward hooks when inputs are given, else registration order."""
    names = [name for name, m in model.named_modules() if isinstance(m, WEIGHTED_TYPES)]
    if example_inputs is None:
        inside_attention = {
            f"{name}.{child}" if name else child
            for name, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention)
            for child, _ in m.named_children()
        }
        return names, {n for n in names if n not in inside_attention}
    order: list[str] = []
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, _i, name=name: order.append(name) if name not in order else None
        )
        for name in names
    ]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return order, set(order)


__all__ = ["apply_plan", "convert", "layer_config", "plan", "plan_from_records", "plan_records", "rebuild"]
