"""What a run shows and records: a progress display (rich on a terminal, plain lines
otherwise) on stderr and metrics as JSON lines. Only rank 0 makes one; others get `Silent`.

Epochs are numbered from 1 in every line, as in ``metrics.jsonl``. Plain progress lines start
at once (steps 1, 2, 4, 8, … up to ``log_every``), so a slow run shows life from the first
steps, then come every ``log_every`` steps."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunLog:
    """Progress for ``total_steps`` steps plus a ``metrics.jsonl`` in ``directory`` (if any)."""

    def __init__(
        self, total_steps: int, *, directory: Path | None, log_every: int, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self.metrics = (directory / "metrics.jsonl").open("a") if directory is not None else None
        self.started = time.monotonic()
        self.progress: Progress | None = None
        if self.stream.isatty():
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2f}%"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self.task = self.progress.add_task("finetune", total=total_steps, epoch=1, loss=0.0, acc=0.0)
            self.progress.start()
        self.total_steps = total_steps

    def step(self, step: int, epoch: int, loss: float, accuracy: float) -> None:
        """Called after each optimizer step (``step`` counts from 1, ``epoch`` is the loop's
        index from 0 and is shown from 1)."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=loss, acc=accuracy)
        elif self._shows(step):
            elapsed = time.monotonic() - self.started
            print(
                f"step {step}/{self.total_steps} epoch {epoch + 1} loss {loss:.4f} acc {accuracy:.2f}% "
                f"elapsed {elapsed:.0f}s",
                file=self.stream,
                flush=True,
            )

    def _shows(self, step: int) -> bool:
        early = step < self.log_every and step & (step - 1) == 0  # 1, 2, 4, 8, ...
        return early or step % self.log_every == 0 or step == self.total_steps

    def record(self, entry: dict[str, Any]) -> None:
        """Appends one metrics line and echoes it as a plain line."""
        if self.metrics is not None:
            self.metrics.write(json.dumps(entry) + "\n")
            self.metrics.flush()
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items())
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.metrics is not None:
            self.metrics.close()


class Silent(RunLog):
    """The log of ranks other than 0: shows and writes nothing."""

    def __init__(self) -> None:
        self.progress = None
        self.metrics = None

    def step(self, step: int, epoch: int, loss: float, accuracy: float) -> None:
        pass

    def record(self, entry: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
