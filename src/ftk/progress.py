"""One progress line for work counted in items (evaluation, cleaning), drawn as a training stage's
is (train/screen.py): redrawn in place on a terminal, a plain line per fifth of the items in a log."""

from __future__ import annotations

import sys
import time


def hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def count_line(label: str, done: int, total: int, fresh: int, elapsed: float, unit: str = "ex") -> str:
    """`label: done/total unit  rate unit/s  elapsed  ETA` (the rate of the items done in this call)."""
    parts = [f"{label}: {done}/{total} {unit}"]
    rate = fresh / elapsed if elapsed > 0 and fresh else None
    if rate:
        parts.append(f"{rate:.1f} {unit}/s")
    parts.append(f"elapsed {hms(elapsed)}")
    if rate and done < total:
        parts.append(f"ETA {hms((total - done) / rate)}")
    return "  ".join(parts)


class CountScreen:
    """The live line of work counted in items (evaluation), drawn as a training stage's is: redrawn in
    place on a terminal, a plain line per fifth of the items in a log. A context manager."""

    def __init__(self, label: str, total: int, done: int = 0, *, unit: str = "ex", enabled: bool = True,
                 tty: bool | None = None, out=None, lines_in_log: int = 5):
        self.label, self.total, self.done, self.unit = label, total, done, unit
        self.fresh = 0
        self.out = out or sys.stdout
        self.enabled = enabled
        self.tty = self.out.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.step = max(1, -(-(total - done) // max(1, lines_in_log)))
        self.next_print = done + self.step
        self.live = None
        if enabled and self.tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._text = Text
            self.live = Live(Text(self.line()), console=Console(file=self.out), refresh_per_second=4, transient=False)
            self.live.start()

    def line(self) -> str:
        return count_line(self.label, self.done, self.total, self.fresh, time.monotonic() - self.start, self.unit)

    def update(self, n: int) -> None:
        self.done += n
        self.fresh += n
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self._text(self.line()))
        elif self.done >= self.next_print or self.done >= self.total:
            print(self.line(), file=self.out, flush=True)
            while self.next_print <= self.done:
                self.next_print += self.step

    def __enter__(self) -> CountScreen:
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._text(self.line()))
            self.live.stop()
