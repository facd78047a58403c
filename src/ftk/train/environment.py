"""The software and hardware a run depends on: what `ftk env` prints for a bug report, and the known
bad combinations that `ftk env` reports and `ftk validate` refuses before a GPU hour is spent.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata

PACKAGES = ("ftk", "llamafactory", "torch", "torchvision", "torchaudio", "transformers", "peft", "trl",
            "accelerate", "datasets", "deepspeed", "flash-attn", "vllm", "tokenizers")


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class BadCombination:
    package: str
    versions: tuple[str, ...]
    recipe_key: str | None  # the recipe setting that triggers it (None: always bad)
    recipe_value: object
    problem: str
    fix: str

    def applies(self, installed: str | None, value: object = None) -> bool:
        if installed not in self.versions:
            return False
        return self.recipe_key is None or value == self.recipe_value


KNOWN_BAD = (
    BadCombination("transformers", ("5.6.0",), "distributed.flash_attn", "fa2",
                   "breaks the FlashAttention-2 forward ('NoneType' object has no attribute 'to' in "
                   "flash_attention_forward; LLaMA-Factory issue #10610)",
                   "install transformers 5.5.4 (pip install -c constraints.txt -e .) or use flash_attn sdpa"),
)


def recipe_problems(recipe) -> list[str]:
    """`key: problem (expected ...)` for each known bad combination this recipe would hit here."""
    out = []
    for bad in KNOWN_BAD:
        installed = version(bad.package)
        value = _get(recipe, bad.recipe_key) if bad.recipe_key else None
        if bad.applies(installed, value):
            out.append(f"`{bad.recipe_key}`: {value} with {bad.package} {installed} installed {bad.problem} "
                       f"(expected another {bad.package} version: {bad.fix})")
    return out


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def environment_problems(versions: dict[str, str | None]) -> list[str]:
    """Bad combinations of installed packages, whatever the recipe."""
    out = []
    torch_v = (versions.get("torch") or "").split("+")[0]
    audio_v = (versions.get("torchaudio") or "").split("+")[0]
    if torch_v and audio_v and torch_v.split(".")[:2] != audio_v.split(".")[:2]:
        out.append(f"torch {torch_v} with torchaudio {audio_v}: LLaMA-Factory imports torchaudio and training "
                   "fails its version check (install the matched trio from constraints.txt)")
    for bad in KNOWN_BAD:
        if versions.get(bad.package) in bad.versions:
            when = f" with `{bad.recipe_key}: {bad.recipe_value}`" if bad.recipe_key else ""
            out.append(f"{bad.package} {versions[bad.package]}{when} {bad.problem}; {bad.fix}")
    return out


def gpus() -> list[dict]:
    """Visible GPUs with their memory (torch when it is importable, else nvidia-smi)."""
    try:
        import torch

        if torch.cuda.is_available():
            return [{"name": torch.cuda.get_device_name(i),
                     "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                    for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.rsplit(",", 1) for line in out.splitlines() if "," in line]
    return [{"name": n.strip(), "memory_gib": round(float(m) / 1024, 1)} for n, m in rows]


def report() -> dict:
    versions = {name: version(name) for name in PACKAGES}
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "versions": versions, "cuda": cuda, "gpus": gpus(), "problems": environment_problems(versions)}


def format_report(r: dict) -> str:
    lines = [f"python        {r['python']} ({r['platform']}, {r['cpu_count']} CPUs)"]
    for name, v in r["versions"].items():
        extra = f" (CUDA {r['cuda']})" if name == "torch" and r["cuda"] else ""
        lines.append(f"{name:13} {v or 'not installed'}{extra}")
    if r["gpus"]:
        lines += [f"gpu {i}         {g['name']}, {g['memory_gib']} GiB" for i, g in enumerate(r["gpus"])]
    else:
        lines.append("gpus          none visible")
    lines += [f"PROBLEM: {p}" for p in r["problems"]] or ["known bad combinations: none found"]
    return "\n".join(lines) + "\n"
