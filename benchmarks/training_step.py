"""Training-step cost of binary models against the float model they came from.

For resnet18 and resnet50 (torchvision, random weights, converted with ``keep_downsample=True``)
and for float and every registered estimator (psa is left out: it refuses residual graphs), in
eager and compiled mode, fp32 (and bf16 autocast on CUDA): median step time (SGD step on random
data, ``set_progress`` every step as the training loop does), ratio to the float step of the
same model and mode, images/s, peak memory (CUDA) or peak RSS delta (CPU, Linux), the bytes
autograd saves for backward in one step, and graph breaks / compiled graphs counted with
``torch._dynamo`` counters (progress changes every step, so a recompile would show up as an
extra graph). Each of ``--rounds`` rounds times the float step between every two binary
configurations (float, ste, float, reste, float, ...), and a ratio to float is the median over
rounds of a binary step ÷ the mean of the float steps just before and after it: the speed of a
shared machine drifts by 2× within a minute, and a float step measured a moment apart cancels
that drift (the spread of the per-round ratios is in the table and the JSON). Step times are
medians over rounds. On a crowded machine
``--clock cpu --threads 1`` times steps by this process's CPU time instead of wall time (with one
thread that is the step's own work, whatever else runs). Prints a table and writes JSON.

    python benchmarks/training_step.py                      # CPU: batch 8 at 112 px, a few minutes
    python benchmarks/training_step.py --models resnet18 --modes eager --json out.json
    python benchmarks/training_step.py --device cuda --batch 256 --size 224 --dtypes fp32,bf16
    python benchmarks/training_step.py --models resnet18 --modes eager --profile reste

``--profile NAME`` also runs ``torch.profiler`` over the timed steps of float and of estimator
NAME (eager) and prints the kernels by self CPU time side by side: where the gap goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import binarize
from binarize import estimators
from binarize.config import BinarizeConfig, LayerConfig
from binarize.progress import set_progress

#: Estimators that cannot run on a residual network (network-level chains only).
SKIPPED = {"psa": "refuses residual graphs (plain chains only)"}


@dataclass
class Case:
    model: str
    estimator: str  # "float" or a registry name
    mode: str  # eager | compiled
    dtype: str  # fp32 | bf16
    net: nn.Module
    optimizer: torch.optim.Optimizer
    step: Any
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


def build(model_name: str, estimator: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None)
    if estimator != "float":
        config = BinarizeConfig(layer=LayerConfig(weight_estimator=estimator, input_estimator=estimator), keep_downsample=True)
        model = binarize.convert(model, config)
    return model.to(device).train()


def make_step(net: nn.Module, optimizer: torch.optim.Optimizer, dtype: str, device: torch.device):
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast:
            loss = F.cross_entropy(net(inputs).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def saved_bytes(step, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward during one step (unique storages)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(inputs, targets)
    return sum(seen.values())


def rss_bytes(field_name: str) -> int | None:
    """VmRSS / VmHWM of this process from /proc (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak(device: torch.device) -> int | None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    return rss_bytes("VmRSS")


def peak_delta(device: torch.device, before: int | None) -> int | None:
    if before is None:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() - before
    peak = rss_bytes("VmHWM")
    return None if peak is None else peak - before


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def dynamo_counts() -> tuple[int, int]:
    """(graph breaks, graphs compiled) since the last ``torch._dynamo.utils.counters.clear()``."""
    counters = torch._dynamo.utils.counters
    return sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]


def prepare(model_name: str, args: argparse.Namespace, device: torch.device) -> list[Case]:
    names = ["float"] + [n for n in estimators.names() if n not in SKIPPED and (not args.estimators or n in args.estimators)]
    cases = []
    for mode in args.modes:
        for dtype in args.dtypes:
            for estimator in names:
                net = build(model_name, estimator, device)
                optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
                target = torch.compile(net, backend=args.backend) if mode == "compiled" else net
                step = make_step(target, optimizer, dtype, device)
                cases.append(Case(model_name, estimator, mode, dtype, net, optimizer, step))
    return cases


def warm_up(case: Case, args: argparse.Namespace, data: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> None:
    torch._dynamo.utils.counters.clear()
    before = reset_peak(device)
    start = time.perf_counter()
    for i in range(args.warmup):
        set_progress(case.net, i / (args.warmup + args.steps))
        case.step(*data)
    synchronize(device)
    case.row["warmup_s"] = time.perf_counter() - start
    case.row["peak_delta_mib"] = None if before is None else peak_delta(device, before) / 2**20
    case.row["saved_mib"] = saved_bytes(case.step, *data) / 2**20
    case.row["graph_breaks"], case.row["graphs"] = dynamo_counts() if case.mode == "compiled" else (None, None)


def clock(args: argparse.Namespace) -> float:
    return time.process_time() if args.clock == "cpu" else time.perf_counter()


def timed_round(case: Case, args: argparse.Namespace, data: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    """Times ``args.steps`` steps of ``case``; records and returns their median (seconds)."""
    torch._dynamo.utils.counters.clear()
    times = []
    for i in range(args.steps):
        set_progress(case.net, (args.warmup + i) / (args.warmup + args.steps))
        synchronize(device)
        start = clock(args)
        case.step(*data)
        synchronize(device)
        times.append(clock(args) - start)
    case.times.append(statistics.median(times))
    if case.mode == "compiled":  # any graph compiled after warm-up is a recompile
        case.row["recompiles"] = case.row.get("recompiles", 0) + dynamo_counts()[1]
    return case.times[-1]


def paired_round(cases: list[Case], args: argparse.Namespace, data: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> None:
    """One round: per mode and dtype, float, then each binary case followed by float again;
    each binary case gets the ratio of its time to the mean of its two float neighbours."""
    for key in dict.fromkeys((c.mode, c.dtype) for c in cases):
        group = [c for c in cases if (c.mode, c.dtype) == key]
        base = next(c for c in group if c.estimator == "float")
        before = timed_round(base, args, data, device)
        for case in group:
            if case is base:
                continue
            binary = timed_round(case, args, data, device)
            after = timed_round(base, args, data, device)
            case.ratios.append(binary / ((before + after) / 2))
            before = after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,resnet50", type=lambda s: s.split(","))
    parser.add_argument("--estimators", default="", type=lambda s: [n for n in s.split(",") if n], help="subset (default: all)")
    parser.add_argument("--modes", default="eager,compiled", type=lambda s: s.split(","))
    parser.add_argument("--dtypes", default=None, type=lambda s: s.split(","), help="fp32,bf16 (default: bf16 too on CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CPU, 128 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="input resolution (default 112 on CPU, 224 on CUDA)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration and round (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation happens here)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; a ratio is the median of its per-round paired ratios")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for the compiled mode")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process CPU time (crowded CPU machines, with --threads 1)")
    parser.add_argument("--profile", default=None, help="estimator whose kernels to compare with float's (torch.profiler)")
    parser.add_argument("--json", default="training_step.json")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu times CPU work only: use it with --device cpu")
    if args.profile and (args.profile in SKIPPED or args.profile not in estimators.names() or "eager" not in args.modes):
        parser.error(f"--profile {args.profile}: give a benchmarked estimator, with eager among --modes")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.dtypes = args.dtypes or (["fp32", "bf16"] if cuda else ["fp32"])
    args.batch = args.batch or (128 if cuda else 8)
    args.size = args.size or (224 if cuda else 112)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = 64  # so that a recompile is counted, not hidden by a fallback

    generator = torch.Generator().manual_seed(0)
    data = (
        torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device),
        torch.randint(0, 1000, (args.batch,), generator=generator).to(device),
    )
    rows: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    for model_name in args.models:  # one model's cases at a time: resnet50 × 16 would not fit
        cases = prepare(model_name, args, device)
        for case in cases:
            warm_up(case, args, data, device)
        for _ in range(args.rounds):
            paired_round(cases, args, data, device)
        if args.profile:
            profiles.append(profile_gap(model_name, cases, args, data))
        for case in cases:
            step_s = statistics.median(case.times)
            ratios = case.ratios or [1.0]  # float against itself
            rows.append(
                {"model": case.model, "estimator": case.estimator, "mode": case.mode, "dtype": case.dtype,
                 "step_ms": 1e3 * step_s, "ratio_to_float": statistics.median(ratios),
                 "round_ratios": [min(ratios), max(ratios)], "images_per_s": args.batch / step_s, **case.row}
            )
        del cases
    report(rows, profiles, args, device)


def kernel_times(case: Case, args: argparse.Namespace, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Self CPU milliseconds per step of each aten kernel over ``args.steps`` steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            set_progress(case.net, (args.warmup + i) / (args.warmup + args.steps))
            case.step(*data)
    return {e.key: e.self_cpu_time_total / 1e3 / args.steps for e in prof.key_averages() if e.key.startswith("aten::")}


def profile_gap(model_name: str, cases: list[Case], args: argparse.Namespace, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Kernels of float and of estimator ``args.profile`` (eager, first dtype), sorted by the
    time the binary step spends in them beyond float's."""
    pick = {c.estimator: c for c in cases if c.mode == "eager" and c.dtype == args.dtypes[0]}
    base, binary = kernel_times(pick["float"], args, data), kernel_times(pick[args.profile], args, data)
    kernels = sorted(set(base) | set(binary), key=lambda k: binary.get(k, 0.0) - base.get(k, 0.0), reverse=True)
    return {"model": model_name, "estimator": args.profile, "total_ms": [sum(base.values()), sum(binary.values())],
            "kernels": [{"kernel": k, "float_ms": base.get(k, 0.0), "binary_ms": binary.get(k, 0.0)} for k in kernels]}


def report(rows: list[dict[str, Any]], profiles: list[dict[str, Any]], args: argparse.Namespace, device: torch.device) -> None:
    memory = "peak MiB" if device.type == "cuda" else "peak RSS Δ MiB"
    header = f"{'model':<9} {'estimator':<11} {'mode':<8} {'dtype':<5} {'step ms':>8} {'× float':>7} {'rounds':>9} {'img/s':>7} {memory:>14} {'saved MiB':>9} {'breaks':>6} {'graphs':>6} {'recomp':>6}"
    print(f"device {device}, batch {args.batch}, {args.size}×{args.size}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock, torch {torch.__version__}")
    print(header)
    print("-" * len(header))

    def show(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in rows:
        print(
            f"{r['model']:<9} {r['estimator']:<11} {r['mode']:<8} {r['dtype']:<5} {r['step_ms']:8.1f} {r['ratio_to_float']:7.2f} "
            f"{r['round_ratios'][0]:4.2f}–{r['round_ratios'][1]:4.2f} {r['images_per_s']:7.1f} {show(r['peak_delta_mib'], '14.0f')} {r['saved_mib']:9.0f} {show(r['graph_breaks'], '6d')} "
            f"{show(r['graphs'], '6d')} {show(r.get('recompiles'), '6d')}"
        )
    for name, why in SKIPPED.items():
        print(f"{name}: skipped, {why}")
    for prof in profiles:
        print(f"\n{prof['model']}: self CPU ms per step by kernel, float vs {prof['estimator']} (profiled, eager)")
        print(f"{'kernel':<40} {'float':>8} {prof['estimator']:>11} {'Δ':>8}")
        for k in prof["kernels"][:15]:
            print(f"{k['kernel']:<40} {k['float_ms']:8.1f} {k['binary_ms']:11.1f} {k['binary_ms'] - k['float_ms']:8.1f}")
        base, binary = prof["total_ms"]
        print(f"{'all aten kernels':<40} {base:8.1f} {binary:11.1f} {binary - base:8.1f}")
    meta = {"device": str(device), "batch": args.batch, "size": args.size, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "backend": args.backend, "clock": args.clock, "steps": args.steps, "rounds": args.rounds}
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "profiles": profiles, "skipped": SKIPPED}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
