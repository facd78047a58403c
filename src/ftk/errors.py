"""User-facing errors.

Every error a user can cause (bad recipe, missing file, malformed row) is raised as `FtkError`
with a one-line message naming the file and the key or line. The CLI prints it and exits with
code 2; nothing else in ftk calls `sys.exit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

EXIT_USER_ERROR = 2


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
        super().__init__(prefix + message)


def format_validation_error(exc: "ValidationError") -> str:
    """All pydantic errors on one line: `key.path: message; other.key: message`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"`{loc}`: {msg}" if loc else msg)
    return "; ".join(parts)
