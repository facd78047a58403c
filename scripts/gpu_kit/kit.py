#!/usr/bin/env python
"""ftk's GPU check in one short run: each step a subprocess with its own time cap inside one overall
budget, a summary table at the end, every figure in JSON under --out. Run by run.sh (which installs
the wheelhouse first); nothing downloads: the data is ftk's synthetic AG News, the model a random-init
Llama-3.2-1B-shaped LLaMA built here (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192).

Steps:
  env      `ftk env --json`: GPU, driver/CUDA, versions, known-bad combinations
  model    `ftk tiny-model` at the size above (built once, shared by every later step)
  s2_head  S2's shape: sequence-classification head + LoRA (ftk's own Trainer + PEFT), 100 steps:
           samples/s and peak GPU memory
  s0_sft   S0's shape on one GPU: full SFT through LLaMA-Factory with FlashAttention-2 when `flash_attn`
           imports (else sdpa, said so): tokens/s, MFU, peak memory
  s0_zero3 the same under DeepSpeed ZeRO-3 (torchrun, one process)
  eval     scripts/bench_eval.py on the same model: ftk generate / choice vs transformers generate
           vs LLaMA-Factory predict, agreement; vLLM when it imports
  packing  scripts/bench_packing.py: unpacked vs packed vs neat-packed, tokens/s (no eval)

MFU = 6 * N * tokens/s / peak, N the model's parameters (embeddings included; attention's
sequence-length term left out: sequences here are ~150 tokens); peak = the GPU's dense bf16 figure
from its datasheet (H100/H200 SXM 989.4 TFLOP/s, A100 312); other GPUs: no MFU.

    python scripts/gpu_kit/kit.py --out $OUT                 # GPU sizes, budget 480 s
    python scripts/gpu_kit/kit.py --cpu-rehearsal --out /tmp/kit-out
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

SIZES = {
    "gpu": {"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "vocab": 32000, "n_train": 4000,
            "n_test": 1000, "head_steps": 100, "sft_steps": 50, "batch": 8, "cutoff": 512, "precision": "bf16",
            "eval_n": 500, "eval_batch": 64, "pack_rows": 1000, "pack_batch": 16, "pack_cutoff": 1024},
    "cpu": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 600, "n_train": 200,
            "n_test": 40, "head_steps": 5, "sft_steps": 4, "batch": 4, "cutoff": 256, "precision": "fp32",
            "eval_n": 16, "eval_batch": 8, "pack_rows": 64, "pack_batch": 4, "pack_cutoff": 256},
}
# Each step's own cap (seconds; x3 in the CPU rehearsal); the overall budget cuts the later ones short.
CAPS = {"env": 60, "model": 150, "s2_head": 120, "s0_sft": 120, "s0_zero3": 150, "eval": 180, "packing": 200}
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}


def ftk_cmd() -> list[str]:
    """ftk run by this interpreter: a `pip install --target` folder has no console scripts, and an `ftk`
    found on PATH may belong to another Python (an activated venv) that cannot import the wheelhouse."""
    return [sys.executable, "-m", "ftk"]


class GpuMemory:
    """Peak GPU memory in use (MiB) while a step runs, sampled from nvidia-smi every 0.5 s: the
    step is another process, so torch's own counters are out of reach."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._stop = threading.Event()
        self._smi = shutil.which("nvidia-smi")

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self._smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = max(int(x) for x in out.split())
                self.peak = used if self.peak is None else max(self.peak, used)
            except (ValueError, OSError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> GpuMemory:
        if self._smi:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._smi:
            self._thread.join(timeout=6)


class Kit:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "cpu" if args.cpu_rehearsal else "gpu"
        self.size = SIZES[self.mode]
        self.work = Path(args.work).resolve()
        self.out = Path(args.out).resolve()
        self.deadline = time.monotonic() + args.budget
        self.caps = {k: v * (3 if args.cpu_rehearsal else 1) for k, v in CAPS.items()}  # a CPU shared with other work
        self.rows: list[dict] = []
        import torch

        self.cuda = torch.cuda.is_available()
        self.gpu_name = torch.cuda.get_device_name(0) if self.cuda else None
        self.env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                        PYTHONUNBUFFERED="1")

    # -- plumbing ---------------------------------------------------------------------------------
    def run(self, step: str, argv: list[str], log: Path) -> tuple[str, float, int | None]:
        """Run argv with the step's cap (or what is left of the budget): (status, seconds, peak MiB)."""
        left = self.deadline - time.monotonic()
        cap = min(self.caps[step], left)
        if cap < 10:
            return "skipped: kit budget spent", 0.0, None
        t0 = time.monotonic()
        with GpuMemory() as mem, log.open("w") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()
            try:
                proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.work, env=self.env,
                                      timeout=cap, start_new_session=True)
                status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {cap:.0f} s"
        secs = time.monotonic() - t0
        if status != "ok":
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
            status += f": {tail[0][-160:]}" if tail else ""
        return status, secs, mem.peak

    def record(self, step: str, status: str, secs: float, figures: dict | None = None, note: str = "") -> None:
        row = {"step": step, "status": status, "seconds": round(secs, 1), "figures": figures or {}, "note": note}
        self.rows.append(row)
        (self.out / "kit.json").write_text(json.dumps(self.summary_json(), indent=2))  # a crash keeps the rows so far
        print(f"[kit] {step}: {status} ({secs:.0f} s) {json.dumps(figures or {})} {note}".rstrip(), flush=True)

    def summary_json(self) -> dict:
        return {"mode": self.mode, "sizes": self.size, "gpu": self.gpu_name, "budget_s": self.args.budget,
                "rows": self.rows}

    def recipe(self, name: str, method: dict, train: dict | None = None, distributed: dict | None = None,
               extra: dict | None = None) -> Path:
        s = self.size
        doc = {
            "name": name, "task": "agnews",
            "description": f"GPU kit {self.mode}: {name}",
            "data": {"train": str(self.work / "data" / "train.csv"), "test": str(self.work / "data" / "test.csv"),
                     "prepared_dir": str(self.work / "prepared" / name), "prompt_version": "v2", "seed": 42},
            "model": {"name_or_path": str(self.model_dir), "template": "llama3"},
            "method": method,
            "train": {"learning_rate": 1.0e-4, "max_steps": s["sft_steps"], "per_device_train_batch_size": s["batch"],
                      "gradient_accumulation_steps": 1, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03,
                      "cutoff_len": s["cutoff"], "precision": s["precision"], "logging_steps": 5 if self.cuda else 2,
                      "save_steps": 100000, "dataloader_num_workers": 2 if self.cuda else 0, "seed": 42,
                      **(train or {})},
            "distributed": {"nproc_per_node": 1, **(distributed or {})},
            "tracking": {"report_to": "none"},
            "runs_dir": str(self.work / "runs"),
            **(extra or {}),
        }
        path = self.work / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def newest_state(self, name: str) -> dict | None:
        """The final trainer_state.json of the newest run of `name` (ftk's results/ copy, else the trainer's)."""
        from ftk.train.runs import result_file

        runs = sorted((self.work / "runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
        path = result_file(runs[-1] / "model", "trainer_state.json") if runs else None
        return json.loads(path.read_text()) if path and path.is_file() else None

    @property
    def model_dir(self) -> Path:
        return self.work / "model"

    def params(self) -> int | None:
        """Parameters of the built model, read from the safetensors headers (no weights loaded)."""
        from safetensors import safe_open

        total = 0
        for f in self.model_dir.glob("*.safetensors"):
            with safe_open(str(f), "pt") as fh:
                total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118
        return total or None

    def mfu(self, tokens_per_s: float | None, n_params: int | None) -> float | None:
        peak = next((v for k, v in PEAK_BF16.items() if self.gpu_name and k in self.gpu_name), None)
        if not (peak and tokens_per_s and n_params) or self.size["precision"] != "bf16":
            return None
        return 6 * n_params * tokens_per_s / peak

    # -- steps ------------------------------------------------------------------------------------
    def step_env(self) -> None:
        status, secs, _ = self.run("env", ftk_cmd() + ["env", "--json"], self.work / "env.log")
        figures = {}
        if status == "ok":
            text = (self.work / "env.log").read_text()
            rep = json.loads(text[text.index("{"):])
            figures = {"gpus": [f"{g['name']} {g['memory_gib']} GiB" for g in rep.get("gpus") or []],
                       "cuda": rep.get("cuda"), "python": rep.get("python"),
                       "versions": {k: v for k, v in rep["versions"].items() if v},
                       "problems": rep.get("problems")}
            (self.out / "env.json").write_text(json.dumps(rep, indent=2))
        self.record("env", status, secs, figures)

    def step_model(self) -> None:
        from ftk.data.synth import write_dataset

        s = self.size
        write_dataset(self.work / "data", n_train=s["n_train"], n_test=s["n_test"], seed=0)
        argv = ftk_cmd() + ["tiny-model", str(self.model_dir), "--text", str(self.work / "data" / "train.csv"),
                            "--hidden-size", str(s["hidden"]), "--layers", str(s["layers"]), "--heads", str(s["heads"]),
                            "--kv-heads", str(s["kv_heads"]), "--vocab-size", str(s["vocab"])]
        status, secs, _ = self.run("model", argv, self.work / "model.log")
        n = self.params() if status == "ok" else None
        self.n_params = n
        self.record("model", status, secs, {"params": n, "hidden": s["hidden"], "layers": s["layers"]},
                    "random init, synthetic AG News tokenizer")

    def step_s2_head(self) -> None:
        s = self.size
        path = self.recipe("kit_s2_head", {"head": "sequence_classification", "finetuning_type": "lora",
                                           "lora_rank": 16, "lora_alpha": 32, "lora_target": "q_proj,v_proj"},
                           train={"max_steps": s["head_steps"]})
        status, secs, peak = self.run("s2_head", ftk_cmd() + ["train", str(path)], self.work / "s2_head.log")
        figures = {"peak_gpu_mib": peak}
        state = self.newest_state("kit_s2_head") if status == "ok" else None
        if state:
            end = next(e for e in reversed(state["log_history"]) if "train_runtime" in e)
            figures.update(steps=state["global_step"], samples_per_s=round(end["train_samples_per_second"], 2),
                           train_runtime_s=round(end["train_runtime"], 1))
        self.record("s2_head", status, secs, figures,
                    f"seq-cls head + LoRA r16 q,v, batch {s['batch']}, {s['precision']}")

    def sft(self, step: str, distributed: dict, note: str) -> None:
        path = self.recipe(f"kit_{step}", {"finetuning_type": "full"}, distributed=distributed,
                           extra={"llamafactory_args": {"include_num_input_tokens_seen": True}})
        status, secs, peak = self.run(step, ftk_cmd() + ["train", str(path)], self.work / f"{step}.log")
        figures = {"peak_gpu_mib": peak}
        state = self.newest_state(f"kit_{step}") if status == "ok" else None
        if state:
            end = next(e for e in reversed(state["log_history"]) if "train_loss" in e)
            tok = int(state.get("num_input_tokens_seen") or 0)
            tps = tok / end["train_runtime"] if tok else None
            mfu = self.mfu(tps, getattr(self, "n_params", None))
            figures.update(steps=state["global_step"], tokens=tok, train_runtime_s=round(end["train_runtime"], 1),
                           tokens_per_s=round(tps, 1) if tps else None, mfu=round(mfu, 4) if mfu else None)
        self.record(step, status, secs, figures, note)

    def step_s0(self) -> None:
        fa2 = self.cuda and importlib.util.find_spec("flash_attn") is not None
        attn = "fa2" if fa2 else ("sdpa" if self.cuda else "auto")
        why = "FlashAttention-2" if fa2 else ("sdpa: flash_attn is not installed" if self.cuda else "no CUDA: eager/sdpa on CPU")
        self.sft("s0_sft", {"flash_attn": attn}, f"full SFT via LLaMA-Factory, {why}")
        self.sft("s0_zero3", {"flash_attn": attn, "deepspeed": "z3"}, f"full SFT, DeepSpeed ZeRO-3 (torchrun, 1 process), {why}")

    def step_eval(self) -> None:
        s = self.size
        out = self.work / "bench_eval.json"
        argv = [sys.executable, str(REPO / "scripts" / "bench_eval.py"), "--model", str(self.model_dir),
                "--template", "llama3", "--n", str(s["eval_n"]), "--test-csv", str(self.work / "data" / "test.csv"),
                "--batch-size", str(s["eval_batch"]), "--skip-lf-bs1", "--skip-no-drafts",
                "--lf-batch-sizes", str(s["eval_batch"]), "--json", str(out)]
        status, secs, peak = self.run("eval", argv, self.work / "eval.log")
        figures = {"peak_gpu_mib": peak}
        if status == "ok" and out.is_file():
            res = json.loads(out.read_text())
            figures.update(rows_per_s={k: round(v, 1) for k, v in res["rows_per_s"].items()},
                           ratios={k: round(v, 2) for k, v in res["ratios"].items()},
                           agreement={k: f"{v['same_label']}/{v['n']}" for k, v in res["agreement"].items()})
        vllm = "vLLM: imports (no vLLM row in bench_eval yet)" if importlib.util.find_spec("vllm") else "vLLM: not installed, row skipped"
        self.record("eval", status, secs, figures, vllm + "; SmolLM2 not carried (its 98 MB GGUF is over the 64 MiB per call)")

    def step_packing(self) -> None:
        s = self.size
        out = self.work / "bench_packing.json"
        base = self.recipe("kit_pack", {"finetuning_type": "full"}, train={"max_steps": None})
        argv = [sys.executable, str(REPO / "scripts" / "bench_packing.py"), "--recipe", str(base),
                "--train-csv", str(self.work / "data" / "train.csv"), "--test-csv", str(self.work / "data" / "test.csv"),
                "--train-rows", str(s["pack_rows"]), "--test-rows", "10", "--epochs", "1",
                "--cutoff", str(s["pack_cutoff"]), "--batch-size", str(s["pack_batch"]),
                "--configs", "false:B,true:B,neat:B", "--no-eval", "--json", str(out)]
        status, secs, peak = self.run("packing", argv, self.work / "packing.log")
        figures = {"peak_gpu_mib": peak}
        if status == "ok" and out.is_file():
            rows = json.loads(out.read_text())
            figures["rows"] = [{"packing": r["packing"], "batch": r["batch"], "steps": r["steps"],
                                "real_tokens_per_s": round(r["real_tokens_per_s"]),
                                "padding": None if r["padding_fraction"] is None else round(r["padding_fraction"], 3)}
                               for r in rows]
        self.record("packing", status, secs, figures, f"{s['pack_rows']} rows, 1 epoch, cutoff {s['pack_cutoff']}")

    # -- the table --------------------------------------------------------------------------------
    def table(self) -> str:
        where = f", {self.gpu_name}" if self.gpu_name else ", no CUDA"
        lines = [(f"ftk GPU kit ({self.mode}{where}): "
                  f"{sum(r['seconds'] for r in self.rows):.0f} s of {self.args.budget} s budget"),
                 f"{'step':10} {'status':24} {'s':>6}  figures"]
        for r in self.rows:
            f = r["figures"]
            if r["step"] == "env":
                fig = f"gpus {f.get('gpus') or 'none'}; problems {len(f.get('problems') or [])}"
            elif r["step"] == "model":
                fig = f"{(f.get('params') or 0) / 1e6:.1f} M params"
            elif r["step"] == "s2_head":
                fig = f"{f.get('samples_per_s')} samples/s, {f.get('steps')} steps"
            elif r["step"] in ("s0_sft", "s0_zero3"):
                mfu = (f"{f['mfu']:.1%}" if f.get("mfu") else "skipped: no CUDA" if not self.cuda
                       else "n/a (no datasheet bf16 peak for this GPU)")
                fig = f"{f.get('tokens_per_s')} tokens/s, MFU {mfu}"
            elif r["step"] == "eval":
                fig = "; ".join(f"{k} {v}" for k, v in (f.get("rows_per_s") or {}).items()) + " rows/s"
            elif r["step"] == "packing":
                fig = "; ".join(f"{x['packing']} {x['real_tokens_per_s']} tok/s" for x in f.get("rows") or [])
            else:
                fig = ""
            if "peak_gpu_mib" in f:
                fig += (f"; peak GPU {f['peak_gpu_mib']} MiB" if f["peak_gpu_mib"] is not None
                        else "; GPU memory: skipped: no CUDA")
            status = r["status"] if len(r["status"]) <= 24 else r["status"][:21] + "..."
            lines.append(f"{r['step']:10} {status:24} {r['seconds']:6.0f}  {fig}")
            if r["note"]:
                lines.append(f"{'':42}{r['note']}")
        return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-rehearsal", action="store_true", help="tiny sizes, fp32: the same steps on a CPU")
    ap.add_argument("--out", default=os.environ.get("OUT") or "kit-out", help="JSON and the summary go here")
    ap.add_argument("--work", default="/tmp/ftk-kit-work", help="scratch folder (data, model, runs)")
    ap.add_argument("--budget", type=int, default=None, help="seconds for all steps (default 480 GPU, 1800 CPU)")
    ap.add_argument("--steps", default="env,model,s2_head,s0,eval,packing", help="which steps, in this order")
    args = ap.parse_args()
    args.budget = args.budget or (1800 if args.cpu_rehearsal else 480)
    kit = Kit(args)
    if not kit.cuda and not args.cpu_rehearsal:
        print("[kit] no CUDA device: GPU rows are skipped (run with --cpu-rehearsal for the tiny CPU rehearsal)")
    # --work is replaced only when the kit made it (its marker) or it is empty: never what a user pointed at
    marker = kit.work / ".ftk-kit-work"
    if kit.work.is_symlink() or (kit.work.exists() and not kit.work.is_dir()) or (
            kit.work.is_dir() and not marker.is_file() and any(kit.work.iterdir())):
        print(f"kit.py: --work {kit.work} exists and was not made by the kit (no {marker.name} in it): choose a new "
              "folder, or remove it yourself; nothing removed", file=sys.stderr)
        return 2
    shutil.rmtree(kit.work, ignore_errors=True)
    kit.work.mkdir(parents=True)
    marker.touch()
    kit.out.mkdir(parents=True, exist_ok=True)
    steps = {"env": kit.step_env, "model": kit.step_model, "s2_head": kit.step_s2_head, "s0": kit.step_s0,
             "eval": kit.step_eval, "packing": kit.step_packing}
    for name in args.steps.split(","):
        if name not in ("env",) and not kit.cuda and not args.cpu_rehearsal:
            for row in (("s0_sft", "s0_zero3") if name == "s0" else (name,)):
                kit.record(row, "skipped: no CUDA", 0.0)
            continue
        try:
            steps[name]()
        except Exception as exc:  # one step's surprise costs that step, never the run
            kit.record(name, f"failed: {type(exc).__name__}: {exc}"[:200], 0.0)
    table = kit.table()
    print("\n" + table)
    (kit.out / "summary.txt").write_text(table + "\n")
    with (kit.out / "steps-tail.log").open("w") as fh:  # what a failed step said (the work folder stays there)
        for log in sorted(kit.work.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            fh.write(f"==> {log.name} (last 80 of {len(lines)} lines)\n" + "\n".join(lines[-80:]) + "\n")
    (kit.out / "kit.json").write_text(json.dumps(kit.summary_json(), indent=2))
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in kit.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
