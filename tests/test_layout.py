"""The package tree is the architecture: imports point down the pipeline, never up, never in a
cycle; only the cli package imports Typer; no module grows past 400 lines.

The layers, lowest first (a module may import its own layer and the layers below it):

    base      ftk, ftk.errors, ftk.fileio, ftk.yamlio,    shared helpers, import nothing of ftk's
              ftk.plots, ftk.progress                      (what every figure / progress line shares)
    recipe    ftk.recipe                                   the schema every stage reads
    data      ftk.data.*                                   stage 1
    train     ftk.train.*                                  stage 2 (may read data)
    eval      ftk.eval.*                                   stage 3 (may read data and run dirs)
    validate  ftk.validate                                 one check over every stage
    study     ftk.study.*                                  comparisons built from runs and evals
    app       ftk.demo, ftk.cli.*                          entry points; nothing imports ftk.cli
"""

from __future__ import annotations

import ast
import shutil
import warnings
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "src" / "ftk"
LAYERS = [
    ("base", ("ftk", "ftk.errors", "ftk.fileio", "ftk.yamlio", "ftk.plots", "ftk.progress")),
    ("models", ("ftk.models",)),  # base models brought in (GGUF import, fetch): what a recipe names
    ("recipe", ("ftk.recipe",)),
    ("data", ("ftk.data",)),
    ("train", ("ftk.train",)),
    ("eval", ("ftk.eval",)),
    ("validate", ("ftk.validate",)),
    ("study", ("ftk.study",)),
    ("app", ("ftk.demo", "ftk.cli")),
]
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS in tests/test_layout.py")
    return best


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """ftk modules imported anywhere in the file (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "ftk" or name.startswith("ftk."):
                # `import ftk.a.b.c` where c is an attribute: the longest known module prefix
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                out.add(name)
    out.discard(module)
    return out


def third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def check_layout(root: Path) -> list[str]:
    """Every violation in the package at `root` (a folder named ftk), as readable lines."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph = {m: imports_of(p, m, known) for m, p in files.items()}
    problems = []
    for m, targets in graph.items():
        for t in sorted(targets):
            if t == "ftk.cli" or t.startswith("ftk.cli."):
                if not (m in ("ftk.cli", "ftk.__main__") or m.startswith("ftk.cli.")):  # __main__: `python -m ftk`
                    problems.append(f"{m} imports {t}: nothing outside the cli package imports it")
                continue
            lm, lt = layer_of(m), layer_of(t)
            if lt > lm:
                problems.append(f"{m} ({LAYERS[lm][0]}) imports {t} ({LAYERS[lt][0]}): "
                                "an import against the pipeline direction")
        if "typer" in third_party_imports(files[m]) and not m.startswith("ftk.cli"):
            problems.append(f"{m} imports typer: only the cli package may")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_down_the_pipeline_without_cycles():
    assert check_layout(PKG) == []


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_python_file_compiles_without_warnings():
    """An invalid escape (a regex in a docstring) is a SyntaxWarning today, an error tomorrow."""
    bad = []
    for path in sorted([*(REPO / "src").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_text(encoding="utf-8"), str(path), "exec")
            except (SyntaxError, SyntaxWarning, DeprecationWarning) as e:
                bad.append(f"{path.relative_to(REPO)}: {e}")
    assert not bad, bad


def test_stage_folders_exist_and_tests_mirror_them():
    for stage in ("data", "train", "eval"):
        assert (PKG / stage / "__init__.py").is_file()
        assert list((REPO / "tests" / stage).glob("test_*.py")), f"tests/{stage}/ has no tests"


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    root = tmp_path / "ftk"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    assert check_layout(root) == []
    return root


def test_checker_catches_an_upward_import(tree_copy):
    (tree_copy / "data" / "upward.py").write_text("def f():\n    from ftk.eval.metrics import confusion\n")
    problems = check_layout(tree_copy)
    assert problems == ["ftk.data.upward (data) imports ftk.eval.metrics (eval): "
                        "an import against the pipeline direction"]


def test_checker_catches_a_cycle_and_an_import_of_cli(tree_copy):
    (tree_copy / "data" / "a.py").write_text("from ftk.data import b\n")
    (tree_copy / "data" / "b.py").write_text("import ftk.data.a\n")
    (tree_copy / "eval" / "c.py").write_text("from ftk.cli.app import app\nimport typer\n")
    problems = check_layout(tree_copy)
    assert "import cycle: ftk.data.a -> ftk.data.b -> ftk.data.a" in problems
    assert "ftk.eval.c imports ftk.cli.app: nothing outside the cli package imports it" in problems
    assert "ftk.eval.c imports typer: only the cli package may" in problems
