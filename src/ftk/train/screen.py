"""What a person sees while a trainer runs: one progress line per stage, read from the trainer's own
`trainer_log.jsonl` (LLaMA-Factory's LogCallback writes it on rank 0; ftk's own trainer writes the
same keys), while the trainer's output goes to `train.log` only.

On a terminal the line is redrawn in place (rich); in a log (no TTY) a plain line is printed each
time another fifth of the steps is done, so CI logs stay short.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ftk.progress import CountScreen, count_line, hms  # noqa: F401 (screen's API)

TRAINER_LOG = "trainer_log.jsonl"
TAIL_LINES = 30


class TrainerLog:
    """Reads the complete lines appended to a trainer_log.jsonl since the last call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.entries: list[dict] = []

    def poll(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        new = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                new.append(row)
        self.entries += new
        return new


@dataclass
class State:
    step: int = 0
    total: int = 0
    epoch: float | None = None
    loss: float | None = None
    lr: float | None = None
    eval_loss: float | None = None
    eta: str | None = None

    def update(self, row: dict) -> None:
        self.step = int(row.get("current_steps", self.step))
        self.total = int(row.get("total_steps", self.total) or self.total)
        for key, attr in (("epoch", "epoch"), ("loss", "loss"), ("lr", "lr"), ("eval_loss", "eval_loss"),
                          ("remaining_time", "eta")):
            if row.get(key) is not None:
                setattr(self, attr, row[key])


def status_line(stage: str, s: State, elapsed: float) -> str:
    parts = [f"{stage}: step {s.step}/{s.total or '?'}"]
    if s.epoch is not None:
        parts.append(f"epoch {s.epoch:.2f}")
    if s.loss is not None:
        parts.append(f"loss {s.loss:.4f}")
    if s.eval_loss is not None:
        parts.append(f"eval_loss {s.eval_loss:.4f}")
    if s.lr is not None:
        parts.append(f"lr {s.lr:.2e}")
    parts.append(f"elapsed {hms(elapsed)}")
    if s.eta and s.step < s.total:
        parts.append(f"ETA {s.eta}")
    return "  ".join(parts)


class Screen:
    """The live line of one stage. Call `tick()` while the trainer runs and `close()` at the end."""

    def __init__(self, stage: str, trainer_log: str | Path, *, tty: bool | None = None, out=None,
                 lines_in_log: int = 5):
        self.stage = stage
        self.log = TrainerLog(trainer_log)
        self.state = State()
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.lines_in_log = max(1, lines_in_log)
        self.next_fraction = 1 / self.lines_in_log
        self.live = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._text = Text
            self.live = Live(Text(f"{stage}: starting"), console=Console(file=self.out), refresh_per_second=4,
                             transient=False)
            self.live.start()

    def tick(self) -> None:
        new = self.log.poll()
        elapsed = time.monotonic() - self.start
        for row in new:
            self.state.update(row)
            if self.live is None and self.state.total and "loss" in row:
                done = self.state.step / self.state.total
                if done + 1e-9 >= self.next_fraction:
                    print(status_line(self.stage, self.state, elapsed), file=self.out, flush=True)
                    while self.next_fraction <= done + 1e-9:
                        self.next_fraction += 1 / self.lines_in_log
        if self.live is not None:
            self.live.update(self._text(status_line(self.stage, self.state, elapsed)))

    def close(self) -> State:
        self.tick()
        if self.live is not None:
            self.live.stop()
        return self.state

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def tail(path: str | Path, n: int = TAIL_LINES) -> list[str]:
    """The last n lines of a log (progress-bar redraws split into lines, empty lines dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines: deque[str] = deque(maxlen=n)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            for part in line.replace("\r", "\n").split("\n"):
                if part.strip():
                    lines.append(part.rstrip())
    return list(lines)


def print_failure(what: str, log_path: str | Path, code: int) -> None:
    """The end of the log and where it is, on stderr (the trainer's own error is usually there)."""
    lines = tail(log_path)
    print(f"[ftk] {what} failed with exit code {code}; last {len(lines)} lines of {log_path}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
