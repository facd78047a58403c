"""Real LLaMA-Factory training + ftk eval on the tiny model, through ftk's command line (one shared demo
run, `demo_run` in conftest, feeds every test here but the support-ticket one)."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, ftk_here

pytestmark = pytest.mark.slow


def test_training_screen_is_short_and_train_log_is_whole(demo_run):
    """`ftk train` in a log (no TTY): a handful of ftk lines; LLaMA-Factory's output is in train.log."""
    tmp, run_dir, proc = demo_run
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) <= 15, lines
    assert sum(line.startswith("main: step ") for line in lines) >= 3  # progress lines, read from trainer_log
    assert lines[-1] == f"[ftk] trained: {run_dir}"
    log = (run_dir / "train.log").read_text()
    assert "***** train metrics *****" in log and "train_loss" in log and "Running tokenizer on dataset" in log
    assert (run_dir / "loss.png").stat().st_size > 10_000


def test_results_are_kept_out_of_a_hand_rerun(demo_run, tmp_path):
    """The recorded llamafactory.yaml is what ran (a comment says how to rerun it by hand elsewhere);
    the trainer's result files are copied to results/ with their sha256 in the manifest, and ftk reads
    the copies: a rerun in place that rewrites model/'s files (resume at the last step: train_loss 0.0)
    changes nothing ftk reports."""
    import shutil

    from ftk.fileio import sha256_file
    from ftk.train.lossplot import read_log
    from ftk.train.runs import read_manifest, result_file, summarize

    _, run_dir, _ = demo_run
    manifest = read_manifest(run_dir)
    text = (run_dir / "llamafactory.yaml").read_text()
    assert text.startswith("# What ftk ran") and "llamafactory-cli train THIS_FILE output_dir=NEW_FOLDER" in text
    assert yaml.safe_load(text) == manifest["llamafactory_args"]
    kept = manifest["stages"][0]["results"]
    assert {"all_results.json", "trainer_state.json", "trainer_log.jsonl"} <= set(kept)
    for name, digest in kept.items():
        assert sha256_file(run_dir / "results" / name) == digest == sha256_file(run_dir / "model" / name)
    copy = tmp_path / run_dir.name  # a copy: the shared run stays as it is
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors"))
    steps = summarize(copy)["steps"]
    state = json.loads((copy / "model" / "trainer_state.json").read_text())
    state.update(global_step=0, log_history=[{"step": 0, "train_loss": 0.0}])
    (copy / "model" / "trainer_state.json").write_text(json.dumps(state))
    (copy / "model" / "all_results.json").write_text(json.dumps({"train_loss": 0.0}))
    (copy / "model" / "trainer_log.jsonl").write_text("")
    assert summarize(copy)["steps"] == steps == 120
    assert len([r for r in read_log(result_file(copy / "model", "trainer_log.jsonl")) if "loss" in r]) >= 10
    assert json.loads(result_file(copy / "model", "all_results.json").read_text())["train_loss"] > 0


def test_train_then_eval_end_to_end(demo_run):
    tmp, run_dir, _ = demo_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0
    assert manifest["argv"][:3] == ["python", "-m", "llamafactory.launcher"]
    assert manifest["data"]["splits"]["train"]["rows"] == 2000
    assert (run_dir / "llamafactory.yaml").is_file() and (run_dir / "train.log").stat().st_size > 0
    assert (run_dir / "model" / "model.safetensors").is_file()
    log = [json.loads(l) for l in (run_dir / "model" / "trainer_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) >= 10 and losses[-1] < losses[0] / 2

    proc = ftk_here("eval", run_dir, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir / "eval-test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 200
    # Generative SFT learns: CHANCE is 0.25 (4 classes, 50 rows each); the run scores >= 0.9.
    chance = 0.25
    assert metrics["accuracy"] >= chance + 0.65, metrics["accuracy"]
    for key in ("macro_f1", "micro_f1", "weighted_f1", "mcc", "invalid_rate", "per_class", "confusion", "ci95"):
        assert key in metrics
    assert metrics["confusion"]["columns"][-1] == "[invalid]"
    for name in ("report.md", "confusion.png", "predictions.jsonl"):
        assert (out / name).stat().st_size > 0
    assert (out / "errors.jsonl").exists()
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 200 and len({p["id"] for p in preds}) == 200

    # A second eval resumes: nothing left to generate, same metrics, no duplicate rows.
    proc = ftk_here("eval", run_dir, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 200


def test_llamafactory_predictions_scored_like_ftk_eval(demo_run):
    """LLaMA-Factory's own predict (greedy) -> generated_predictions.jsonl -> ftk eval --predictions."""
    from ftk.train.llamafactory import render_predict_args

    tmp, run_dir, _ = demo_run
    out = run_dir / "eval-test"
    if not (out / "metrics.json").exists():
        assert ftk_here("eval", run_dir, cwd=tmp).returncode == 0
    ours = json.loads((out / "metrics.json").read_text())
    args = render_predict_args(model_name_or_path=str(run_dir / "model"), template="llama3",
                               dataset_dir=str(tmp / "prepared"), eval_dataset="agnews_test",
                               output_dir=str(tmp / "lf_predict"), batch_size=16, max_new_tokens=12)
    cfg = tmp / "predict.yaml"
    cfg.write_text(yaml.safe_dump(args))
    proc = subprocess.run([sys.executable, "-m", "llamafactory.launcher", str(cfg)], cwd=tmp,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lf_file = tmp / "lf_predict" / "generated_predictions.jsonl"
    proc = ftk_here("eval", "--predictions", lf_file, "--task", "agnews", "--data", tmp / "prepared",
                   "--out", tmp / "lf_eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads((tmp / "lf_eval" / "metrics.json").read_text())
    assert theirs["format"] == "llamafactory" and theirs["n"] == 200
    assert theirs["accuracy"] == ours["accuracy"]


def test_support_ticket_task_end_to_end_without_python(tmp_path, tiny_model):
    """A user-defined CSV task (own column names, own labels, its own ticket ids) prepares, trains,
    evaluates and compares through the command line only; the run keeps working after the task
    YAML is moved and is not changed by edits to it."""
    from ftk.data.synth import generate

    codes = {"1": "P", "2": "S", "3": "M", "4": "T"}
    for split, n, seed in (("train", 2000, 10), ("test", 200, 11)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ticket_id", "subject", "message", "queue"])
            for i, (cls, title, desc) in enumerate(generate(n, seed)):
                w.writerow([f"T-{split}-{1000 + i}", title, desc, codes[cls]])
    task_yaml = tmp_path / "tickets.yaml"
    task_yaml.write_text(yaml.safe_dump({
        "name": "tickets", "kind": "classification",
        "labels": ["politics", "sport", "money", "tech"],
        "sources": {"csv": {"reader": "csv", "label_column": "queue", "id_column": "ticket_id",
                            "label_map": {"P": "politics", "S": "sport", "M": "money", "T": "tech"},
                            "input": "{subject}. {message}", "required": ["message"]}},
        "prompts": {"default": "short", "versions": {"short": "Which queue gets this ticket (politics, sport, money or tech)?\n"}},
        "target": "{label}",
        "extraction": {"steps": ["strip", "label", "take_first"]},
        "metrics": ["accuracy"],
    }))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "name": "tickets", "task": str(task_yaml),
        "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"),
                 "prepared_dir": str(tmp_path / "prepared"), "prompt_version": "short"},
        "model": {"name_or_path": str(tiny_model)}, "runs_dir": str(tmp_path / "runs"),
        "train": {"max_steps": 100}}))
    assert ftk_here("validate", recipe, cwd=tmp_path).returncode == 0
    proc = ftk_here("prepare", recipe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train: 2000 rows" in proc.stdout and "politics" in proc.stdout
    proc = ftk_here("train", recipe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "task.yaml").read_text() == task_yaml.read_text()
    assert (run_dir / "data-manifest.json").is_file()

    # The task YAML moves away (and a new one with the same path says something else): the run
    # evaluates with its own copy.
    task_yaml.rename(tmp_path / "moved.yaml")
    task_yaml.write_text("name: tickets\nkind: classification\nlabels: [a, b]\nsources: {}\n")
    proc = ftk_here("eval", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "eval-test" / "metrics.json").read_text())
    assert m["task"] == "tickets" and m["n"] == 200
    assert set(m["per_class"]) == {"politics", "sport", "money", "tech"}
    assert m["accuracy"] >= 0.8, m["accuracy"]  # CHANCE 0.25: four queues, about 50 tickets each
    preds = [json.loads(line) for line in (run_dir / "eval-test" / "predictions.jsonl").open()]
    assert preds[0]["source_id"] == "T-test-1000" and len({p["source_id"] for p in preds}) == 200
    assert all(e["source_id"].startswith("T-test-") for e in map(json.loads, (run_dir / "eval-test" / "errors.jsonl").open()))

    proc = ftk_here("eval", run_dir, "--mode", "choice", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = ftk_here("compare", run_dir / "eval-test", run_dir / "eval-test-choice", "--out", tmp_path / "cmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "McNemar" in proc.stdout and json.loads((tmp_path / "cmp" / "compare.json").read_text())["task"] == "tickets"
    proc = ftk_here("runs", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0 and "finished" in proc.stdout and "accuracy" in proc.stdout


def test_choice_mode_agrees_with_generate_and_saves_probabilities(demo_run):
    tmp, run_dir, _ = demo_run
    assert ftk_here("eval", run_dir, cwd=tmp).returncode == 0
    proc = ftk_here("eval", run_dir, "--mode", "choice", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gen = {json.loads(l)["id"]: json.loads(l) for l in (run_dir / "eval-test" / "predictions.jsonl").open()}
    cho = {json.loads(l)["id"]: json.loads(l) for l in (run_dir / "eval-test-choice" / "predictions.jsonl").open()}
    assert set(gen) == set(cho)
    m = json.loads((run_dir / "eval-test-choice" / "metrics.json").read_text())
    assert m["mode"] == "choice" and m["invalid"] == 0  # every choice is a valid label
    agree = sum(gen[i]["predict"].strip() == cho[i]["predict"] for i in gen)
    assert agree / len(gen) >= 0.97, agree
    for row in cho.values():
        assert set(row["label_probs"]) == {"World", "Sports", "Business", "Sci/Tech"}
        assert sum(row["label_probs"].values()) == pytest.approx(1.0, abs=1e-4)


def test_killed_eval_resumes_without_duplicates_or_gaps(demo_run, tmp_path):
    import os
    import signal
    import time
    from pathlib import Path

    _, run_dir, _ = demo_run
    out = tmp_path / "ev"
    ref_out = tmp_path / "ref"
    assert ftk_here("eval", run_dir, "--out", ref_out).returncode == 0
    exe = Path(sys.executable).parent / "ftk"
    proc = subprocess.Popen([str(exe), "eval", str(run_dir), "--out", str(out), "--batch-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    preds = out / "predictions.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if preds.exists() and len(preds.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_killed = len(preds.read_text().splitlines())
    assert 3 <= n_killed < 200, n_killed  # really killed mid-way
    assert not (out / "metrics.json").exists()
    assert ftk_here("eval", run_dir, "--out", out).returncode == 0
    ids = [json.loads(l)["id"] for l in preds.read_text().splitlines()]
    assert len(ids) == 200 and len(set(ids)) == 200
    ref = json.loads((ref_out / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "invalid", "confusion"):
        assert got[key] == ref[key]


def test_two_shards_give_the_same_predictions(demo_run, tmp_path):
    _, run_dir, _ = demo_run
    assert ftk_here("eval", run_dir, "--out", tmp_path / "one", "--shards", "1").returncode == 0
    proc = ftk_here("eval", run_dir, "--out", tmp_path / "two", "--shards", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = [json.loads(l) for l in (tmp_path / "one" / "predictions.jsonl").open()]
    two = [json.loads(l) for l in (tmp_path / "two" / "predictions.jsonl").open()]
    assert [r["id"] for r in one] == [r["id"] for r in two]  # merged back in the original order
    assert [r["predict"] for r in one] == [r["predict"] for r in two]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["shards"] == 2
    assert "warning: --shards 2 with no GPU" in proc.stderr  # this machine has none: said, not silent
    assert not list((tmp_path / "two").glob("predictions.shard-*"))


def test_eval_says_what_it_reuses_and_never_relabels_another_engines_predictions(demo_run, tmp_path):
    """`--engine vllm` without vLLM is refused before anything is loaded (it used to reuse the hf
    predictions and write engine vllm over them); reused predictions are said on the screen; rows
    another engine made are never reported as this engine's."""
    import importlib.util

    _, run_dir, _ = demo_run
    before = (run_dir / "eval-test" / "metrics.json").read_bytes() if (run_dir / "eval-test").exists() else None
    if importlib.util.find_spec("vllm") is None:
        proc = ftk_here("eval", run_dir, "--engine", "vllm")
        assert proc.returncode == 2 and "vLLM is not installed" in proc.stderr, proc.stderr
        after = (run_dir / "eval-test" / "metrics.json").read_bytes() if (run_dir / "eval-test").exists() else None
        assert after == before
    out = tmp_path / "ev"
    proc = ftk_here("eval", run_dir, "--out", out, "--limit", "8")
    assert proc.returncode == 0
    # one progress line, as training's (in a log: a line per fifth of the items, the last one 8/8)
    progress = [line for line in proc.stdout.splitlines() if line.startswith("eval generate: ")]
    assert progress and progress[-1].startswith("eval generate: 8/8 ex") and "ex/s" in progress[-1]
    assert "Loading weights" not in proc.stdout + proc.stderr and "Setting accelerator" not in proc.stdout + proc.stderr
    first = json.loads((out / "metrics.json").read_text())
    assert first["examples_per_s"] > 0 and first["eval_seconds"] > 0  # its own 8 rows, timed
    proc = ftk_here("eval", run_dir, "--out", out, "--limit", "8")
    assert proc.returncode == 0 and f"reusing 8 of 8 predictions already in {out / 'predictions.jsonl'}" in proc.stdout
    assert "Loading weights" not in proc.stdout + proc.stderr  # transformers' own bar stays off ftk's terminal
    again = json.loads((out / "metrics.json").read_text())  # nothing predicted: the rate of the call that did
    assert again["examples_per_s"] == first["examples_per_s"] and "re-scored" in again["throughput_of"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert {r["engine"] for r in rows} == {"hf"}
    (out / "predictions.jsonl").write_text("".join(json.dumps(dict(r, engine="vllm")) + "\n" for r in rows))
    proc = ftk_here("eval", run_dir, "--out", out, "--limit", "8")
    assert proc.returncode == 2 and "predictions made by engine vllm" in proc.stderr, proc.stderr
