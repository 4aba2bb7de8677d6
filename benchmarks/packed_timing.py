"""The clock every packed benchmark shares, and the background load of the contention columns.

`timed` warms a callable up, takes the median and minimum milliseconds of many calls, then
pauses: each runtime's worker threads keep spinning after a call and would steal the second
core from the next runtime measured. `busy_cores` starts processes that keep every core busy
(another program on a shared machine) for the runtimes measured inside it.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PAUSE_S = 0.5


def timed(fn: Callable[[], object], repeats: int, *, pause_s: float = PAUSE_S) -> dict[str, float]:
    """Median and minimum milliseconds of ``repeats`` calls after a warm-up, then a pause."""
    for _ in range(max(5, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    time.sleep(pause_s)
    return {"median_ms": 1e3 * statistics.median(samples), "min_ms": 1e3 * min(samples)}


def _spin(stop) -> None:  # a busy loop in pure Python: what another CPU-bound program looks like
    while not stop.is_set():
        sum(range(10_000))


@contextmanager
def busy_cores(count: int | None = None) -> Iterator[None]:
    """Runs the block while ``count`` processes (default: one per usable core) keep cores busy."""
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")  # no fork of a process holding thread pools
    stop = context.Event()
    workers = [context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(count)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let them start spinning
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
