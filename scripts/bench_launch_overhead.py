#!/usr/bin/env python
"""Wall time of the same tiny training through `ftk train` and through `llamafactory-cli train`
on the YAML ftk rendered, N times each (interleaved), and the median ratio. Target <= 1.05.

    python scripts/bench_launch_overhead.py --runs 3 --steps 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()

    from ftk.data.sources import iter_lines
    from ftk.data.synth import write_dataset
    from ftk.train.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="ftk-bench-launch-"))
    env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning", HF_HUB_OFFLINE="1")
    try:
        paths = write_dataset(tmp / "data", n_train=2000, n_test=50)
        build_tiny_model(tmp / "model", iter_lines([paths["train"]]))
        recipe = tmp / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({
            "extends": str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "name": "bench",
            "data": {"train": str(paths["train"]), "test": str(paths["test"]), "prepared_dir": str(tmp / "prepared")},
            "model": {"name_or_path": str(tmp / "model")}, "runs_dir": str(tmp / "runs"),
            "train": {"max_steps": args.steps, "save_steps": 10_000}}))
        # Warm-up (prepares the data, fills the OS file cache) - not timed.
        timed([str(BIN / "ftk"), "train", str(recipe)], tmp, env)
        (warm,) = (tmp / "runs").iterdir()
        rendered = yaml.safe_load((warm / "llamafactory.yaml").read_text())
        t_ftk, t_lf = [], []
        for i in range(args.runs):
            t_ftk.append(timed([str(BIN / "ftk"), "train", str(recipe)], tmp, env))
            cfg = dict(rendered, output_dir=str(tmp / f"lf_out_{i}"))
            cfg_path = tmp / f"lf_{i}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            t_lf.append(timed([str(BIN / "llamafactory-cli"), "train", str(cfg_path)], tmp, env))
        m_ftk, m_lf = statistics.median(t_ftk), statistics.median(t_lf)
        print(f"tiny full SFT, {args.steps} steps, {args.runs} runs each (interleaved)")
        print("ftk train             " + "  ".join(f"{t:6.2f}s" for t in t_ftk) + f"   median {m_ftk:6.2f}s")
        print("llamafactory-cli train" + "  ".join(f"{t:6.2f}s" for t in t_lf) + f"   median {m_lf:6.2f}s")
        print(f"median ratio ftk / llamafactory-cli: {m_ftk / m_lf:.3f}  (target <= 1.05)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
