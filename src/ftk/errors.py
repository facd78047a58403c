"""User-facing errors.

Every error a user can cause (bad recipe, missing file, malformed row) is raised as `FtkError`
with a one-line message naming the file and the key or line. The CLI prints it and exits with
code 2; nothing else in ftk calls `sys.exit`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_TERMINATED = 143  # SIGTERM (what supervisors, containers and `kill` send), as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, as Python turns SIGINT into KeyboardInterrupt: every handler
    that stops ftk's children on Ctrl-C (train/launch.py) stops them on SIGTERM too, every `finally`
    runs, and the CLI exits 143. A KeyboardInterrupt subclass, so code that treats an interrupt as an
    interrupt needs no second branch; `code` tells the two apart."""

    code = EXIT_TERMINATED


class TrainingFailed(RuntimeError):
    """A trainer (or exporter) process ended with a non-zero code: the CLI prints the message and exits
    with that code (130 / 143 when it was interrupted or terminated)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class RequestsFailed(TrainingFailed):
    """Some requests to a served model failed for good: the reports are written (those items count as
    invalid) and the command exits 1, so a pipeline sees it; the same command asks only for them."""

    def __init__(self, message: str):
        super().__init__(message, 1)


def interrupt_code(exc: BaseException) -> int:
    """The exit code an interrupt stands for: 143 for SIGTERM, 130 for Ctrl-C."""
    return getattr(exc, "code", EXIT_INTERRUPTED) if isinstance(exc, KeyboardInterrupt) else EXIT_INTERRUPTED


class FtkError(Exception):
    """An error in the user's input: printed as one line, exit code 2."""

    def __init__(self, message: str, *, path: str | Path | None = None, where: str | None = None):
        self.path = str(path) if path is not None else None
        self.where = where
        prefix = ""
        if self.path:
            prefix = f"{self.path}"
            if where:
                prefix += f":{where}" if where[:1].isdigit() else f": {where}"
            prefix += ": "
        elif where:  # no file (a command-line flag, a derived value): the key still leads the line
            prefix = f"line {where}: " if where[:1].isdigit() else f"{where}: "
        super().__init__(prefix + message)


_UNION_BRANCH = re.compile(r"^(bool|int|float|str|none|literal\[.*\]|function-.*|constrained-.*|json-or-python.*|"
                           r"union\[.*\]|list\[.*\]|dict\[.*\]|tagged-union\[.*\]|\[key\])$")


def suggest_key(model, loc: tuple) -> str | None:
    """The nearest valid key to an unknown one at `loc` (a path into the pydantic `model`), dotted."""
    import difflib
    import typing

    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        model = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and hasattr(a, "model_fields")),
                     None)
        if model is None:
            return None
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return ".".join([*map(str, loc[:-1]), close[0]]) if close else None


def error_locs(exc: "ValidationError") -> list[tuple]:
    """Each error's key path, without the branch names pydantic adds for unions."""
    return [tuple(x for x in err["loc"] if not _UNION_BRANCH.match(str(x))) for err in exc.errors()]


def hide_credentials(text: str) -> str:
    """A value as it may be shown: user:password@ in URLs and key/token/secret query values -> ***."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    return re.sub(r"(?i)([?&][^=&\s]*(?:key|token|secret|password|sig|auth)[^=&\s]*=)[^&\s]+", r"\1***", text)


def format_validation_error(exc: "ValidationError", suggest=None) -> str:
    """All pydantic errors on one line: `key.path`: problem (got value); `other.key`: problem.

    The alternatives of a union (`bool | Literal["neat"]`) become one problem: "a or b (got x)".
    `suggest(loc)` may name the nearest valid key for an unknown one ("did you mean").
    """
    by_loc: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err, path in zip(exc.errors(), error_locs(exc)):
        loc = ".".join(str(x) for x in path)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            near = suggest(path) if suggest else None
            msg = "unknown key" + (f"; did you mean `{near}`?" if near else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            value = err.get("input")
            if isinstance(value, str):
                value = hide_credentials(value)
            if isinstance(value, (str, int, float, bool)):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                if "got " not in msg and repr(value) not in msg:
                    got[loc] = shown
            msg = msg[:1].lower() + msg[1:]
        if msg not in by_loc.setdefault(loc, []):
            by_loc[loc].append(msg)
    parts = []
    for loc, msgs in by_loc.items():
        text = " or ".join(m.removeprefix("input should be ") if i else m for i, m in enumerate(msgs))
        text += f" (got {got[loc]})" if loc in got else ""
        parts.append(f"`{loc}`: {text}" if loc else text)
    return "; ".join(parts)
