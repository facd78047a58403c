"""Reading the YAML files users write (recipes, task definitions, study and synthetic-data specs).

One function, `read_yaml`, for all of them: `yaml.safe_load` on text that must be UTF-8 (a binary
or otherwise encoded file is one clear error), syntax errors on one line with the line number, and
aliases bounded: a document whose aliases expand past `MAX_NODES` nodes (a "billion laughs"
bomb) is refused before anything walks it, wherever the alias sits.
"""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any

import yaml

from ftk.errors import FtkError

MAX_NODES = 200_000
MAX_BYTES = 16 * 2**20


def read_text(path: str | Path, what: str = "file") -> str:
    """A user's text file as UTF-8, or an FtkError naming the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FtkError(f"{what} not found", path=path)
    if not path.is_file():
        raise FtkError(f"{what} is not a regular file (expected a YAML file)", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FtkError(f"cannot read {what}: {exc.strerror}", path=path) from None
    if len(data) > MAX_BYTES:
        raise FtkError(f"{what} is {len(data):,} bytes (expected a YAML file under {MAX_BYTES:,} bytes)", path=path)
    if b"\x00" in data:
        raise FtkError(f"binary {what} (expected YAML text)", path=path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FtkError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}; expected a UTF-8 YAML file)",
                       path=path, where=str(line)) from None


def expanded_size(node: Any, memo: dict[int, int] | None = None) -> int:
    """Nodes the document has once every alias is expanded (shared objects counted per use)."""
    memo = {} if memo is None else memo
    active: set[int] = set()

    def size(x: Any) -> int:
        if not isinstance(x, (dict, list)):
            return 1
        key = id(x)
        if key in memo:
            return memo[key]
        if key in active:  # a recursive alias: unbounded by definition
            return MAX_NODES + 1
        active.add(key)
        children = (list(x.keys()) + list(x.values())) if isinstance(x, dict) else x
        total = 1
        for c in children:
            total += size(c)
            if total > MAX_NODES:
                break
        active.discard(key)
        memo[key] = total
        return total

    return size(node)


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """Parse a user's YAML file safely; every problem is one FtkError line naming the file."""
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        col = f", column {mark.column + 1}" if mark else ""
        raise FtkError(f"not valid YAML: {problem}{col}", path=path,
                       where=str(mark.line + 1) if mark else None) from None
    except RecursionError:
        raise FtkError("YAML nested too deeply", path=path) from None
    memo: dict[int, int] = {}
    if expanded_size(data, memo) > MAX_NODES:
        where = ".".join(heaviest_path(data, memo)) or None
        raise FtkError(f"YAML aliases expand to more than {MAX_NODES:,} nodes (expected a plain config; "
                       "is this a billion-laughs document?)", path=path, where=where)
    return data


def heaviest_path(node: Any, memo: dict[int, int]) -> list[str]:
    """The key path down to where the expansion happens: through mappings (and lists of mappings, as
    stages are) into the heaviest child, stopping at the first key whose value is not a mapping."""
    path: list[str] = []
    while isinstance(node, (dict, list)):
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not items:
            break
        key, child = max(items, key=lambda kv: expanded_size(kv[1], memo))
        path.append(str(key))
        if isinstance(node, dict) and not isinstance(child, dict) and not (
                isinstance(child, list) and child and all(isinstance(c, dict) for c in child)):
            break
        node = child
    return path


def read_mapping(path: str | Path, what: str) -> dict:
    """`read_yaml`, and the document must be a mapping of keys (what every ftk file is)."""
    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise FtkError(f"a {what} must be a YAML mapping of keys, not {type(raw).__name__}", path=path)
    return raw


def read_model(path: str | Path, model, what: str):
    """A user's YAML file as a pydantic model; a schema error is one line naming the file and key."""
    from pydantic import ValidationError

    from ftk.errors import format_validation_error

    try:
        return model.model_validate(read_mapping(path, what))
    except ValidationError as exc:
        raise FtkError(format_validation_error(exc), path=path) from None


def deep_merge(base: dict, child: dict) -> dict:
    """`child` over `base`: mappings merge key by key, any other value replaces (both left as they are)."""
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
