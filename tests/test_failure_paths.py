"""The failure path of every `ftk` subcommand, through the installed console script (issue 32): the
exit code a scheduler reads, exactly one `error:` line on stderr, and never a traceback.

`test_every_subcommand_has_a_failure_case` walks the CLI itself, so a new subcommand without a case
here fails the suite. The cases need no trained model: each process fails within seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_ftk

# command -> (argv after `ftk`, with {tmp} for the test's folder; expected exit code; text the line holds)
CASES = {
    "baseline": (["baseline", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "compare": (["compare", "{tmp}/a", "{tmp}/b"], 2, "{tmp}/a"),
    "demo": (["demo", "--recipe", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "embed": (["embed", "{tmp}/no-run"], 2, "no-run"),
    "env": (["env", "--no-such-option"], 2, "--no-such-option"),
    "eval": (["eval", "{tmp}/no-run"], 2, "no-run"),
    "export": (["export", "{tmp}/no-run"], 2, "no-run"),
    "model fetch": (["model", "fetch", "gpt-17", "{tmp}/m"], 2, "unknown model 'gpt-17'"),
    "model import": (["model", "import", "{tmp}/missing.gguf", "{tmp}/m"], 2, "missing.gguf"),
    "model list": (["model", "list", "extra"], 2, "extra"),
    "prepare": (["prepare", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "runs": (["runs", "{tmp}/no-runs-here"], 2, "no-runs-here"),
    "schema": (["schema", "--no-such-option"], 2, "--no-such-option"),
    "study report": (["study", "report", "{tmp}/no-study"], 2, "no-study"),
    "study run": (["study", "run", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "synth": (["synth", "{tmp}/s", "--n-train", "-5"], 2, "--n-train"),
    "synth-data": (["synth-data", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "tasks show": (["tasks", "show", "no-such-task"], 2, "no-such-task"),
    "tiny-model": (["tiny-model", "{tmp}/t", "--text", str(REPO / "README.md"), "--heads", "3"], 2, "--heads"),
    "train": (["train", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    "validate": (["validate", "{tmp}/missing.yaml"], 2, "missing.yaml"),
}


def subcommands() -> list[str]:
    import typer

    from ftk.cli.main import app

    names: list[str] = []

    def walk(cmd, prefix: str = "") -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            if hasattr(sub, "commands"):
                walk(sub, f"{prefix}{name} ")
            else:
                names.append(prefix + name)

    walk(typer.main.get_command(app))
    return sorted(names)


def assert_one_line(proc, code: int, says: str) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == code, (proc.returncode, out[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert says in lines[0], (says, lines[0])


def test_every_subcommand_has_a_failure_case():
    assert subcommands() == sorted(CASES), "add a failure case for each new subcommand"


@pytest.mark.parametrize("command", sorted(CASES))
def test_failure_path_exits_with_its_code_and_one_line(tmp_path, command):
    argv, code, says = CASES[command]
    proc = run_ftk(*[a.format(tmp=tmp_path) for a in argv], cwd=tmp_path, timeout=180)
    assert_one_line(proc, code, says.format(tmp=tmp_path))
    assert not [p for p in tmp_path.iterdir()], "a failed command left files behind"


def test_damaged_trial_state_is_one_line(tmp_path):
    sdir = tmp_path / "study"
    (sdir / "trials").mkdir(parents=True)
    for name, text in (("t0.json", '{"id": "t0", "run_dir": "r", "eval_dir"'),
                       ("t1.json", json.dumps({"id": "t1", "run_dir": "r", "eval_dir": "e", "varied": [1]})),
                       ("t2.json", json.dumps({"id": "t2", "run_dir": "r"}))):
        for old in (sdir / "trials").iterdir():
            old.unlink()
        (sdir / "trials" / name).write_text(text)
        proc = run_ftk("study", "report", sdir, cwd=tmp_path)
        assert_one_line(proc, 2, str(sdir / "trials" / name))


def test_a_corrupt_import_manifest_is_one_line(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "ftk-import.json").write_text('{"sha256": ')
    proc = run_ftk("model", "fetch", "smollm2-135m-instruct", out, cwd=tmp_path)
    assert_one_line(proc, 2, "ftk-import.json")


@pytest.mark.parametrize("argv, says", [
    (["synth", "/proc/ftk-test/s"], "/proc/ftk-test"),
    (["model", "import", "{gguf}", "/proc/self/ftk-test"], "/proc/self"),
])
def test_an_output_where_nothing_can_be_written_is_one_line(tmp_path, argv, says):
    from test_gguf_integrity import tiny_llama_gguf

    gguf = tiny_llama_gguf(tmp_path / "m.gguf") if "{gguf}" in argv else None
    proc = run_ftk(*[a.format(gguf=gguf) for a in argv], cwd=tmp_path)
    assert_one_line(proc, 2, says)


def test_an_unforeseen_error_is_one_line_with_the_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    """The last line of defence (a bug, a library's failure): exit 1, one line that says where the
    traceback went; FTK_DEBUG=1 raises it instead."""
    from ftk.cli import main as cli_main

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("ftk.models.fetch.lookup", boom)
    monkeypatch.delenv("FTK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["model", "fetch", "x", str(tmp_path / "m")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unexpected ZeroDivisionError: a bug (traceback in ")
    saved = Path(err[0].split("traceback in ")[1].split(";")[0])
    assert "ZeroDivisionError" in saved.read_text() and "boom" in saved.read_text()
    saved.unlink()
    monkeypatch.setenv("FTK_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli_main.main(["model", "fetch", "x", str(tmp_path / "m")])


@pytest.mark.parametrize("argv, says", [
    (["eval", str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "--base", "--shots", "0"], "--shots"),
    (["eval", "--predictions", "{tmp}/p.jsonl", "--task", "agnews", "--out", "{tmp}/o", "--shots", "2"],
     "use it with --base"),
    (["baseline", str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "--method", "knn"], "expected tfidf or majority"),
])
def test_bad_shots_and_baseline_methods_are_one_line(tmp_path, argv, says):
    proc = run_ftk(*[a.replace("{tmp}", str(tmp_path)) for a in argv], cwd=tmp_path)
    assert_one_line(proc, 2, says)
    assert not (tmp_path / "o").exists()
