"""Run directories: one new folder per run, never reused, with a manifest of what ran."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import atomic_open, sha256_file, write_json

MANIFEST = "manifest.json"
PACKAGES = ("ftk", "llamafactory", "torch", "transformers", "peft", "trl", "datasets",
            "accelerate", "deepspeed", "tokenizers")
SECRET_RE = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL)", re.I)


def new_run_dir(runs_dir: str | Path, name: str, now: _dt.datetime | None = None) -> Path:
    """Create runs_dir/<name>-<YYYYmmdd-HHMMSS>[-k] exclusively (mkdir fails if it exists)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = runs_dir / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FtkError("could not create a new run directory", path=runs_dir)


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# The CPU features that decide CPU speed here (machines differ: some have AVX-512 with bf16, or AMX).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    """{"cpu_model", "cpu_flags" (those of CPU_FLAGS the CPU has), "load_avg"} from /proc (Linux)."""
    out: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "cpu_model" not in out:
            out["cpu_model"] = value.strip()
        elif key.strip() == "flags":
            have = set(value.split())
            out["cpu_flags"] = [f for f in CPU_FLAGS if f in have]
            break
    try:
        out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return out


def device_info() -> dict:
    """Host and accelerators, without importing torch (a second of start-up on every run)."""
    info: dict = {"host": socket.gethostname(), "platform": platform.platform(),
                  "python": platform.python_version(), "cpu_count": os.cpu_count(), "gpus": [], **cpu_info()}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def safe_env(env: dict[str, str]) -> dict[str, str]:
    """The launch-relevant environment with anything that looks like a secret left out."""
    keep = ("CUDA_VISIBLE_DEVICES", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR",
            "MASTER_PORT", "WANDB_MODE", "WANDB_PROJECT", "HF_HUB_OFFLINE", "FORCE_TORCHRUN")
    return {k: v for k, v in env.items() if k in keep and not SECRET_RE.search(k)}


def write_manifest(run_dir: Path, data: dict) -> None:
    write_json(run_dir / MANIFEST, data)


def read_manifest(run_dir: str | Path) -> dict:
    """A run directory's manifest; every way it can be wrong is one FtkError naming the folder."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FtkError("run directory not found", path=run_dir)
    if not run_dir.is_dir():
        raise FtkError("not a run directory (expected a folder made by `ftk train`)", path=run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise FtkError("not a run directory (no manifest.json; expected a folder made by `ftk train`)", path=run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FtkError(f"not valid JSON: {getattr(exc, 'msg', exc)}", path=path,
                       where=str(getattr(exc, "lineno", "")) or None) from None
    if not isinstance(data, dict) or "recipe" not in data:
        what = ("a prepared-data folder (its manifest has splits, no recipe)" if isinstance(data, dict)
                and "splits" in data else "a manifest without a recipe")
        raise FtkError(f"not a run directory: this is {what}; expected a folder made by `ftk train`", path=run_dir)
    return data


def read_run(run_dir: str | Path):
    """(manifest, recipe of the last stage, whole recipe) of a run directory."""
    from pydantic import ValidationError

    from ftk.errors import format_validation_error
    from ftk.recipe import Recipe

    manifest = read_manifest(run_dir)
    try:
        recipe = Recipe.model_validate(manifest["recipe"])
        last = recipe.stage_recipes()[-1][1]
    except (ValidationError, ValueError) as exc:
        msg = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise FtkError(f"the run's recipe no longer validates ({msg}); it was made by another ftk version?",
                       path=Path(run_dir) / MANIFEST) from None
    return manifest, last, recipe


DATA_MANIFEST = "data-manifest.json"
TASK_COPY = "task.yaml"


def process_identity() -> dict:
    """Who runs this: host, pid and the process's start time (so a reused pid is not mistaken)."""
    info = {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": None}
    try:
        import psutil

        info["pid_started"] = psutil.Process().create_time()
    except Exception:  # psutil missing or no /proc: pid alone
        pass
    return info


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# SLURM job states that end a job without its own EXIT trap having said so (sacct's names)
SLURM_ENDED = {"CANCELLED", "TIMEOUT", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def slurm_state(job: str) -> str | None:
    """The scheduler's state of a job (sacct, else squeue), or None when neither can tell."""
    for argv in (["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], ["squeue", "-h", "-o", "%T", "-j", job]):
        exe = shutil.which(argv[0])
        if exe is None:
            continue
        try:
            proc = subprocess.run([exe, *argv[1:]], check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        words = proc.stdout.split()
        if proc.returncode == 0 and words:
            return words[0].split()[0].rstrip("+")  # "CANCELLED by 0" -> CANCELLED
    return None


def status_of(manifest: dict) -> str:
    """The recorded status, except that a `running` run whose process is gone is `interrupted`, and
    a submitted or running SLURM job is what the scheduler says it is (pending, running, or ended
    without a word: `failed (TIMEOUT)`).

    A process is only decidable on the host that ran it; elsewhere a running run stays `running`.
    """
    status = manifest.get("status", "unknown")
    job = manifest.get("slurm_job_id")
    if job and status in ("submitted", "running"):
        state = slurm_state(str(job))
        if state == "PENDING":
            return "pending"
        if state in SLURM_ENDED:
            return f"failed ({state})"
        if state == "COMPLETED":  # the job ended but its EXIT trap never wrote the manifest
            return "ended (COMPLETED), state not recorded"
        if state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            return "running"
        if status == "submitted":
            return status
    if status != "running" or manifest.get("host") != socket.gethostname() or not manifest.get("pid"):
        return status
    try:
        import psutil

        proc = psutil.Process(int(manifest["pid"]))
        started = manifest.get("pid_started")
        alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and (
            started is None or abs(proc.create_time() - float(started)) < 1.0)
    except Exception:
        alive = False
    return "running" if alive else "interrupted"


def keep_task_copy(run_dir: Path, task_ref: str) -> dict:
    """Copy the task YAML into the run (eval, compare and export read the copy, not the original)."""
    from ftk.data.task import load_task

    task = load_task(task_ref)
    (run_dir / TASK_COPY).write_text(task.yaml_text or "", encoding="utf-8")
    return {"name": task.name, "source": str(task.path), "sha256": task.sha256, "file": TASK_COPY}


RESULTS_DIR = "results"
RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "trainer_state.json",
                "trainer_log.jsonl")


def keep_results(stage_dir: Path) -> dict[str, str]:
    """Copy the trainer's result files of a finished stage from its output folder (`model/`) into
    `results/` beside it, out of the trainer's reach: the recorded YAML rerun by hand in place resumes
    from the last checkpoint and rewrites model/'s files (train_loss 0.0), never these. Returns
    {file: sha256} for the manifest."""
    src, dst = Path(stage_dir) / "model", Path(stage_dir) / RESULTS_DIR
    kept = {}
    for name in RESULT_FILES:
        if (src / name).is_file():
            with atomic_open(dst / name, "wb") as fh:
                fh.write((src / name).read_bytes())
            kept[name] = sha256_file(dst / name)
    return kept


def result_file(model_dir: str | Path, name: str) -> Path:
    """A stage's result file: ftk's copy (results/ beside model/) when there is one, else the trainer's."""
    copy = Path(model_dir).parent / RESULTS_DIR / name
    return copy if copy.is_file() else Path(model_dir) / name


def run_task(run_dir: Path, manifest: dict, recipe):
    """The task of a run: its own copy when it has one (runs of older ftk: the recipe's reference)."""
    from ftk.data.task import load_task

    copy = Path(run_dir) / TASK_COPY
    return load_task(copy) if copy.is_file() else load_task(recipe.task)


def summarize(run_dir: Path) -> dict | None:
    """One row of `ftk runs`: name, status, steps, headline metric (None if not a run directory)."""
    try:
        manifest = read_manifest(run_dir)
    except FtkError:
        return None
    steps = None
    for state in (result_file(manifest.get("model_dir") or run_dir / "model", "trainer_state.json"),):
        if state.is_file():
            try:
                steps = json.loads(state.read_text(encoding="utf-8")).get("global_step")
            except (ValueError, OSError):
                pass
    if steps is None:
        ckpts = [int(p.name.split("-")[1]) for p in Path(run_dir).glob("**/checkpoint-*")
                 if re.fullmatch(r"checkpoint-\d+", p.name)]
        steps = max(ckpts) if ckpts else None
    metric = None
    for mpath in sorted(Path(run_dir).glob("eval-*/metrics.json")):
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        head = m.get("headline")
        if head in m:
            metric = f"{head} {m[head]:.4f} ({mpath.parent.name})"
            break
    return {"name": manifest.get("name"), "status": status_of(manifest), "steps": steps, "metric": metric,
            "started": manifest.get("started"), "path": str(run_dir)}


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run directory directly under runs_dir (or runs_dir itself), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FtkError("runs folder not found", path=runs_dir)
    candidates = [runs_dir] if (runs_dir / MANIFEST).is_file() else sorted(p for p in runs_dir.iterdir() if p.is_dir())
    rows = [r for r in (summarize(p) for p in candidates) if r is not None]
    return sorted(rows, key=lambda r: (r["started"] or "", r["path"]))
