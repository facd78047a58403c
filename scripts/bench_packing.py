#!/usr/bin/env python
"""The same training (real AG News train head, a tiny LLaMA) unpacked, packed and neat-packed,
through `ftk train` with `train.packing` false / true / neat: examples/s, real tokens/s, padding
fraction and the test accuracy of each.

Real tokens are the fitted examples' own tokens (prompt + answer, as LLaMA-Factory encodes them)
times the epochs; the trainer counts every token it is fed, padding included
(`include_num_input_tokens_seen`), so padding = 1 - real / fed. Time is the trainer's own
`train_runtime` (no start-up).

Packing also cuts the number of optimizer steps (same epochs, fewer and longer sequences), so a
fourth row trains packed with a smaller batch (`--packed-batch-size`) to about as many steps as
unpacked: speed and accuracy at equal updates.

`--direct` answers "is it LLaMA-Factory's or ftk's?": for each packed row it runs the LLaMA-Factory
YAML that ftk wrote with `llamafactory-cli train` itself (no ftk process, the user's plain environment)
into another folder and compares the two loss logs step by step; identical logs mean the packed
training is LLaMA-Factory's own.

    python scripts/bench_packing.py                       # 2,000 train rows, 2 epochs, 2,000 test rows
    python scripts/bench_packing.py --cutoff 1024 --test-rows 7600
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AG = REPO.parent / "shared" / "realdata" / "ag_news"


def run(argv: list[str], cwd: Path, env: dict) -> None:
    proc = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def tool(name: str, module: str) -> list[str]:
    """A console script of this interpreter's environment, else `python -m module` with this interpreter
    (a `pip install --target` folder, as on the GPU kit's machine, has no console scripts; a script found on
    PATH may belong to another Python)."""
    own = BIN / name
    return [str(own)] if own.exists() else [sys.executable, "-m", module]


def real_tokens(recipe, manifest: dict, dataset_dir: str) -> int:
    """Tokens of the train split as LLaMA-Factory encodes it (prompt + answer per example)."""
    from transformers import AutoTokenizer

    from ftk.data.records import read_records
    from ftk.data.task import load_task
    from ftk.train.prompts import Prompter, load_template

    tok = AutoTokenizer.from_pretrained(recipe.model.name_or_path)
    task = load_task(recipe.task)
    prompter = Prompter(tok, load_template(tok, recipe.model.template), recipe.train.cutoff_len,
                        task.prompt(manifest.get("prompt_version")))
    recs = read_records(Path(dataset_dir) / manifest["splits"]["train"]["file"])
    return sum(len(p) + len(t) for p, t in map(prompter.encode, recs))


def losses(state: dict) -> dict[int | str, float]:
    """Every logged step's loss, and the run's mean training loss under "train_loss"."""
    out = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    out["train_loss"] = next(e["train_loss"] for e in reversed(state["log_history"]) if "train_loss" in e)
    return out


def direct_run(run_dir: Path, state: dict, tmp: Path) -> dict:
    """Train the LLaMA-Factory YAML that ftk wrote for `run_dir` with `llamafactory-cli train` (no ftk),
    then compare its loss log with ftk's."""
    cfg = yaml.safe_load((run_dir / "llamafactory.yaml").read_text())
    out = tmp / "direct" / run_dir.name
    cfg["output_dir"] = str(out)
    cfg["plot_loss"] = False
    path = tmp / "direct" / f"{run_dir.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTK_")}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    run([*tool("llamafactory-cli", "llamafactory.cli"), "train", str(path)], run_dir.parents[1], env)
    mine = json.loads((out / "trainer_state.json").read_text())
    a, b = losses(state), losses(mine)
    shared = set(a) & set(b)
    return {"steps": mine["global_step"], "compared": len(shared),
            "max_abs_diff": max((abs(a[s] - b[s]) for s in shared), default=float("nan")),
            "train_loss": b["train_loss"], "ftk_train_loss": a["train_loss"],
            "train_runtime_s": next(e["train_runtime"] for e in reversed(mine["log_history"]) if "train_loss" in e)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--cutoff", type=int, default=1024, help="cutoff_len: the length of a packed sequence")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--packed-batch-size", type=int, default=2, help="batch of the equal-steps packed row")
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--direct", action="store_true",
                    help="rerun each packed row with `llamafactory-cli train` on ftk's YAML and compare the loss logs")
    ap.add_argument("--recipe", default=str(REPO / "configs" / "agnews_tiny_real.yaml"),
                    help="base recipe (a real-model one, e.g. configs/real/agnews_smollm2_lora.yaml, keeps its model)")
    ap.add_argument("--configs", default="false:B,true:B,neat:B,true:P,neat:P",
                    help="packing:batch rows to run (B = --batch-size, P = --packed-batch-size)")
    ap.add_argument("--train-csv", help="AG News-format train CSV (default: the real train head in ../shared/realdata)")
    ap.add_argument("--test-csv", help="AG News-format test CSV (default: the real test set)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--no-eval", action="store_true", help="speed only: skip the test evaluation of each row")
    args = ap.parse_args()
    train_csv = Path(args.train_csv).resolve() if args.train_csv else AG / "train_head2000.csv"
    test_csv = Path(args.test_csv).resolve() if args.test_csv else AG / "test.csv"
    for f in (train_csv, test_csv):
        if not f.is_file():
            raise SystemExit(f"needs {f} (the real AG News files in {AG}, or --train-csv / --test-csv)")

    from ftk.recipe import load_recipe

    tmp = Path(tempfile.mkdtemp(prefix="ftk-bench-packing-"))
    env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = []
    try:
        recipe_path = tmp / "recipe.yaml"
        base = load_recipe(args.recipe, [])
        model = ({"name_or_path": str(tmp / "model"), "tiny": {"hidden_size": args.hidden_size, "layers": args.layers}}
                 if base.model.tiny else {"name_or_path": str(Path(base.model.name_or_path).resolve())})
        recipe_path.write_text(yaml.safe_dump({
            "extends": str(Path(args.recipe).resolve()), "name": "pack",
            "data": {"train": str(train_csv), "test": str(test_csv),
                     "prepared_dir": str(tmp / "prepared"),
                     "max_samples": {"train": args.train_rows, "test": args.test_rows}},
            "model": model,
            "runs_dir": str(tmp / "runs"),
            "train": {"num_train_epochs": args.epochs, "cutoff_len": args.cutoff, "save_steps": 100_000,
                      "per_device_train_batch_size": args.batch_size, "logging_steps": 1},
            "llamafactory_args": {"include_num_input_tokens_seen": True}}))
        sizes = {"B": args.batch_size, "P": args.packed_batch_size}
        configs = [(p, sizes.get(b) or int(b)) for p, b in (c.split(":") for c in args.configs.split(","))]
        ftk = tool("ftk", "ftk")
        for packing, batch in configs:
            run([*ftk, "train", str(recipe_path), f"train.packing={packing}",
                 f"train.per_device_train_batch_size={batch}"], tmp, env)
            run_dir = max((tmp / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
            if not args.no_eval:
                run([*ftk, "eval", str(run_dir)], tmp, env)
            manifest = json.loads((run_dir / "manifest.json").read_text())
            state = json.loads((run_dir / "model" / "trainer_state.json").read_text())
            # the closing summary (with include_num_input_tokens_seen every log row has a running train_runtime)
            runtime = next(e["train_runtime"] for e in reversed(state["log_history"]) if "train_loss" in e)
            fed = int(state.get("num_input_tokens_seen") or 0)
            last_loss = next((e["loss"] for e in reversed(state["log_history"]) if "loss" in e), float("nan"))
            recipe = load_recipe(recipe_path, [f"train.packing={packing}"])
            real = real_tokens(recipe, manifest["data"], manifest["llamafactory_args"]["dataset_dir"])
            real_total = real * args.epochs
            metrics = ({"accuracy": float("nan"), "macro_f1": float("nan"), "invalid": None} if args.no_eval else
                       json.loads((run_dir / "eval-test" / "metrics.json").read_text()))
            direct = direct_run(run_dir, state, tmp) if args.direct and packing != "false" else None
            results.append({
                "packing": packing, "batch": batch, "steps": state["global_step"], "train_runtime_s": runtime,
                "examples_per_s": args.train_rows * args.epochs / runtime, "real_tokens_per_s": real_total / runtime,
                "fed_tokens": fed, "padding_fraction": 1 - real_total / fed if fed else None,
                "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "invalid": metrics["invalid"],
                "last_loss": last_loss, "direct": direct,
            })
            print("row done: " + json.dumps(results[-1]), flush=True)  # a crash later keeps the rows so far
        what = (f"tiny LLaMA h{args.hidden_size}/{args.layers} layers" if base.model.tiny else
                f"{base.model.name_or_path} ({base.method.finetuning_type})")
        print(f"AG News ({train_csv.parent.name}/{train_csv.name}): {args.train_rows} train rows x {args.epochs} epochs, {what}, batch {args.batch_size}, "
              f"cutoff_len {args.cutoff}; {args.test_rows} test rows")
        print(f"{'packing':8} {'batch':>5} {'steps':>6} {'time s':>8} {'ex/s':>8} {'tok/s':>9} {'padding':>8} {'accuracy':>9} "
              f"{'macro-F1':>9} {'last loss':>9}")
        for r in results:
            pad = f"{r['padding_fraction']:.1%}" if r["padding_fraction"] is not None else "n/a"
            print(f"{r['packing']:8} {r['batch']:5d} {r['steps']:6d} {r['train_runtime_s']:8.1f} {r['examples_per_s']:8.1f} "
                  f"{r['real_tokens_per_s']:9.0f} {pad:>8} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} {r['last_loss']:9.4f}")
        for r in results:
            if r["direct"]:
                d = r["direct"]
                print(f"llamafactory-cli train directly, packing {r['packing']} batch {r['batch']}: {d['steps']} steps, "
                      f"{d['compared']} losses compared (each step + the mean), max |ftk - direct| = {d['max_abs_diff']:.2e}; "
                      f"train_loss {d['train_loss']:.4f} vs ftk {d['ftk_train_loss']:.4f}; train_runtime {d['train_runtime_s']:.1f} s")
        base = results[0]["examples_per_s"]
        first = f"{results[0]['packing']} (batch {results[0]['batch']})"
        print(f"speed-up vs {'unpacked' if results[0]['packing'] == 'false' else first}: " + ", ".join(f"{r['packing']} (batch {r['batch']}) "
                                                 f"{r['examples_per_s'] / base:.2f}x" for r in results[1:]))
        print(json.dumps(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
