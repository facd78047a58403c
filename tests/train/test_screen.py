"""The training screen, ftk's loss plot, `ftk env` and the known-bad-version refusal, packing keys."""

import io
import json

import pytest

from conftest import REPO
from ftk.errors import FtkError
from ftk.recipe import load_recipe
from ftk.train import environment
from ftk.train.lossplot import plot_loss, read_log
from ftk.train.screen import Screen, status_line, tail

S0 = REPO / "configs" / "agnews_llama31_full.yaml"


def _log(path, steps=50, every=5, evals=()):
    with open(path, "a") as fh:
        for s in range(every, steps + 1, every):
            fh.write(json.dumps({"current_steps": s, "total_steps": steps, "loss": 5.0 / s, "lr": 1e-3 * (1 - s / steps),
                                 "epoch": s / steps, "percentage": 100 * s / steps, "elapsed_time": "0:00:01",
                                 "remaining_time": "0:00:09"}) + "\n")
            if s in evals:
                fh.write(json.dumps({"current_steps": s, "total_steps": steps, "eval_loss": 4.0 / s}) + "\n")


def test_log_screen_prints_a_line_per_fifth_of_the_steps(tmp_path):
    out = io.StringIO()
    screen = Screen("main", tmp_path / "trainer_log.jsonl", tty=False, out=out)
    screen.tick()  # nothing logged yet: nothing printed
    _log(tmp_path / "trainer_log.jsonl", steps=50, every=5)
    screen.tick()
    state = screen.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["10/50", "20/50", "30/50", "40/50", "50/50"]
    assert state.step == 50 and lines[-1].startswith("main: step 50/50  epoch 1.00  loss 0.1000")
    assert "ETA" not in lines[-1] and "ETA 0:00:09" in lines[0]


def test_screen_reads_only_complete_lines(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    screen = Screen("s", path, tty=False, out=io.StringIO())
    path.write_text('{"current_steps": 1, "total_steps": 4, "loss": 1.0}\n{"current_steps": 2, "tot')
    screen.tick()
    assert screen.state.step == 1  # the half-written row waits for its newline
    with open(path, "a") as fh:
        fh.write('al_steps": 4, "loss": 0.5}\n')
    screen.tick()
    assert screen.state.step == 2 and screen.state.loss == 0.5


def test_status_line_fields():
    from ftk.train.screen import State

    s = State(step=3, total=10, epoch=0.3, loss=1.23456, lr=2e-5, eval_loss=1.5, eta="0:01:00")
    assert status_line("sft", s, 61) == ("sft: step 3/10  epoch 0.30  loss 1.2346  eval_loss 1.5000  lr 2.00e-05  "
                                         "elapsed 0:01:01  ETA 0:01:00")


def test_tail_splits_progress_redraws(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("a\n" + "x\r" * 3 + "y\n" + "\n".join(f"line {i}" for i in range(40)) + "\n")
    lines = tail(log)
    assert len(lines) == 30 and lines[-1] == "line 39"


def test_loss_plot_from_trainer_log(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    _log(path, steps=100, every=5, evals=(50, 100))
    _log(path, steps=100, every=5)  # a resumed run logs some steps twice: the last wins
    assert len([r for r in read_log(path) if "loss" in r]) == 20
    png = plot_loss(path, tmp_path / "loss.png", "a very long run name " * 6)
    assert png.stat().st_size > 10_000
    assert plot_loss(tmp_path / "missing.jsonl", tmp_path / "x.png", "t") is None


def test_closing_row_without_loss_keeps_the_last_loss(tmp_path):
    """LLaMA-Factory ends trainer_log.jsonl with a row for the last step that has no loss: the summary,
    the plot and the checkpoint curve keep that step's logged loss (it used to be replaced)."""
    from ftk.train.run import _loss_summary

    path = tmp_path / "trainer_log.jsonl"
    rows = [{"current_steps": 10, "total_steps": 20, "loss": 6.8656, "lr": 1e-3},
            {"current_steps": 20, "total_steps": 20, "loss": 1.8865, "lr": 1e-5},
            {"current_steps": 20, "total_steps": 20, "epoch": 1.0, "percentage": 100.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = read_log(path)
    assert [(r["current_steps"], r["loss"]) for r in log] == [(10, 6.8656), (20, 1.8865)]
    assert _loss_summary(path) == ", 20 steps, loss 6.8656 -> 1.8865"
    one = tmp_path / "one.jsonl"  # a run with one logged step still gets its plot
    one.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    assert plot_loss(one, tmp_path / "one.png", "one step").stat().st_size > 5_000


def test_fa2_with_transformers_560_is_refused(monkeypatch):
    from ftk.validate import validate_recipe

    monkeypatch.setattr(environment, "version", lambda name: "5.6.0" if name == "transformers" else "1.0")
    with pytest.raises(FtkError) as exc:
        validate_recipe(S0, data="skip", llamafactory=False)
    msg = str(exc.value)
    assert "`distributed.flash_attn`: fa2 with transformers 5.6.0 installed" in msg and msg.count("\n") == 0
    validate_recipe(S0, ["distributed.flash_attn=sdpa"], data="skip", llamafactory=False)  # sdpa: fine
    monkeypatch.setattr(environment, "version", lambda name: "5.5.4")
    validate_recipe(S0, data="skip", llamafactory=False)  # the pinned version: fine


def test_env_report_lists_versions_and_problems(monkeypatch):
    r = environment.report()
    assert r["versions"]["transformers"] and "torch" in r["versions"] and isinstance(r["gpus"], list)
    text = environment.format_report(r)
    assert "transformers" in text and "llamafactory" in text and "flash-attn" in text
    bad = environment.environment_problems({"torch": "2.11.0", "torchaudio": "2.9.0", "transformers": "5.6.0"})
    assert any("torchaudio 2.9.0" in p for p in bad) and any("transformers 5.6.0" in p for p in bad)


@pytest.mark.parametrize("packing, expected", [(False, {}), (True, {"packing": True}),
                                               ("neat", {"packing": True, "neat_packing": True})])
def test_packing_renders_llamafactory_keys(packing, expected):
    from ftk.train.plan import dry_run

    (p,) = dry_run(load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", [f"train.packing={str(packing).lower()}"]))
    assert {k: p.train_args[k] for k in ("packing", "neat_packing") if k in p.train_args} == expected


def test_packing_rules_and_llamafactory_accepts_it(tmp_path):
    from ftk.validate import validate_recipe

    with pytest.raises(FtkError, match="needs `train.per_device_train_batch_size` 1"):
        load_recipe(S0, ["train.packing=neat"])  # fa2 + neat needs batch 1
    validate_recipe(S0, ["train.packing=neat", "train.per_device_train_batch_size=1"], data="skip")


def test_eval_count_line_is_the_same_kind_of_line_as_training():
    """Eval's progress: in a log, one plain line per fifth of the items (and the last); on a terminal,
    one line redrawn in place; resumed items count as done but not in the rate."""
    import io

    from ftk.progress import CountScreen, count_line

    assert count_line("eval generate", 50, 200, 40, 10.0) == \
        "eval generate: 50/200 ex  4.0 ex/s  elapsed 0:00:10  ETA 0:00:37"
    assert count_line("eval choice", 200, 200, 0, 3.0) == "eval choice: 200/200 ex  elapsed 0:00:03"
    out = io.StringIO()
    with CountScreen("eval generate", 100, 10, tty=False, out=out) as bar:
        for _ in range(45):
            bar.update(2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and all(line.startswith("eval generate: ") for line in lines)
    assert [int(line.split()[2].split("/")[0]) for line in lines] == [28, 46, 64, 82, 100]
    out = io.StringIO()
    with CountScreen("eval choice", 10, tty=True, out=out) as bar:
        bar.update(10)
    assert "eval choice: 10/10 ex" in out.getvalue() and "\n" not in out.getvalue().strip()
    out = io.StringIO()
    with CountScreen("eval choice", 10, tty=False, out=out, enabled=False) as bar:
        bar.update(10)
    assert out.getvalue() == ""
