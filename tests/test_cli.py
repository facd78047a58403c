"""The installed `ftk` command, run as a user would: bad input gives one line, exit 2, no output."""


from conftest import REPO, run_ftk


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_data_file(tmp_path):
    out = tmp_path / "out"
    line = _one_line_error(run_ftk("prepare", "--task", "agnews", "--test", tmp_path / "missing.csv", "--out", out))
    assert "missing.csv: data file not found" in line
    assert not out.exists()


def test_class_index_out_of_range(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text('"1","t","d"\n"2","t","d"\n"5","t","d"\n')
    out = tmp_path / "out"
    line = _one_line_error(run_ftk("prepare", "--task", "agnews", "--test", src, "--out", out))
    assert f"{src}:3:" in line and "'5' is not one of 1, 2, 3, 4" in line
    assert not out.exists()


def test_recipe_unknown_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text((REPO / "configs" / "agnews_tiny_cpu.yaml").read_text().replace("runs_dir", "run_dirr")
                   + "modle: {}\n")
    runs = tmp_path / "runs"
    line = _one_line_error(run_ftk("train", bad, f"runs_dir={runs}"))
    assert str(bad) in line and "`modle`: unknown key" in line
    assert not runs.exists()


def test_train_dry_run_prints_yaml_and_command():
    before = sorted((REPO / "runs").glob("agnews_llama31_full-*"))
    proc = run_ftk("train", "configs/agnews_llama31_full.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "model_name_or_path: meta-llama/Llama-3.1-8B-Instruct" in proc.stdout
    assert "torchrun --nnodes 1 --node-rank 0 --nproc-per-node 8" in proc.stdout
    assert '"stage": 3' in proc.stdout
    assert sorted((REPO / "runs").glob("agnews_llama31_full-*")) == before  # nothing created


def test_help_lists_commands():
    proc = run_ftk("--help")
    assert proc.returncode == 0
    for cmd in ("prepare", "train", "eval", "tiny-model", "demo"):
        assert cmd in proc.stdout


def test_version():
    from ftk import __version__

    proc = run_ftk("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ftk {__version__}"


def _help_examples() -> list[tuple[str, str]]:
    """(command path, example line) for every example in every command's --help."""
    import typer

    from ftk.cli.main import app

    out = []

    def walk(cmd, path):
        doc = cmd.help or ""
        if "Examples:" in doc:
            for line in doc.split("Examples:", 1)[1].splitlines():
                line = line.strip().removesuffix("\\n").strip()
                if line.startswith("ftk "):
                    out.append((path, line))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "ftk")
    return out


def test_every_help_example_names_files_that_exist():
    """The recipes, studies, examples and shared data a --help example names are real files (an
    example once named studies/agnews_lr_tiny.yaml); output folders and run names are placeholders."""
    examples = _help_examples()
    assert len(examples) > 30
    missing = []
    for where, line in examples:
        for tok in line.split():
            if tok.startswith(("configs/", "studies/", "examples/", "../shared/")) and not (REPO / tok).exists():
                missing.append(f"{where}: {tok}")
    assert missing == []


def test_library_chatter_stays_off_the_terminal(tmp_path, synth_dir):
    """`ftk tiny-model` prints its one line: no "Writing model shards" bar from transformers, and
    DeepSpeed's accelerator notes ("Setting accelerator to CPU ...") are filtered from the "DeepSpeed"
    logger that ftk's entry point installs (its other messages pass)."""
    import logging

    from conftest import ftk_here

    from ftk.fileio import quiet_accelerator_notes

    out = tmp_path / "m"
    proc = ftk_here("tiny-model", out, "--text", synth_dir / "train.csv", "--hidden-size", "32", "--layers", "1")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).strip().splitlines() == [f"tiny model: {out}"]
    logger = logging.getLogger("DeepSpeed")
    quiet_accelerator_notes()  # idempotent: the entry point already installed it
    filters = [f for f in logger.filters if type(f).__name__ == "_AcceleratorNotes"]
    assert len(filters) == 1

    def record(path: str) -> logging.LogRecord:
        return logging.LogRecord("DeepSpeed", logging.WARNING, path, 209, "Setting accelerator to CPU.", None, None)

    assert not filters[0].filter(record("/venv/site-packages/deepspeed/accelerator/real_accelerator.py"))
    assert filters[0].filter(record("/venv/site-packages/deepspeed/runtime/engine.py"))


def test_a_symlink_loop_is_one_line_for_every_command(tmp_path):
    """Any --out, prepared, runs or study folder that is a symlink loop: one line naming it, exit 2
    (it was a RuntimeError / FileExistsError traceback, in 7 commands)."""
    from conftest import ftk_here

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    test_csv = tmp_path / "t.csv"
    test_csv.write_text('"3","Stocks up","Shares rose, then fell."\n')
    for args in (["prepare", "--task", "agnews", "--test", test_csv, "--out", tmp_path / "a"],
                 ["synth", tmp_path / "a"],
                 ["tiny-model", tmp_path / "a", "--text", test_csv]):
        proc = ftk_here(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr[-2000:])
        assert "a symlink loop" in lines[0] and str(tmp_path / "a") in lines[0]
