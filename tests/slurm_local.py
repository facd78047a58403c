"""A single-node SLURM on localhost for the real-scheduler test: Debian's `slurm-wlm` and `munge`
(installed with apt-get when missing and allowed: root and a reachable package registry), a
slurm.conf in a temporary folder (its own ports, linuxproc process tracking, no accounting, no
cgroups), and munged / slurmctld / slurmd started and stopped by this module only. Clients find the
cluster through SLURM_CONF."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]


def why_not() -> str | None:
    """Why a local SLURM cannot be had here (None when it can)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to start slurmctld, slurmd and munged"
    if shutil.which("slurmctld") and shutil.which("munged"):
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def install() -> None:
    """apt-get install the packages (after an apt-get update when the first try fails)."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.started: list[tuple[str, Path]] = []  # (name, pid file) of what this object started

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=ftktest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "MpiDefault=none", "ReturnToService=2",
            "MinJobAge=600", f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"NodeName={host} CPUs={cpus} RealMemory=2000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))

    def start(self, timeout: float = 60) -> None:
        install()
        self.write_conf()
        if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:  # no munged answering yet
            run_dir = Path("/run/munge")
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged") or "munged"], check=True,
                           capture_output=True, timeout=30)
            self.started.append(("munged", run_dir / "munged.pid"))
        env = dict(os.environ, **self.env)
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=env, capture_output=True, timeout=30)
        self.started.append(("slurmctld", self.root / "slurmctld.pid"))
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=env, capture_output=True, timeout=30)
        self.started.append(("slurmd", self.root / "slurmd.pid"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if "idle" in out:
                return
            time.sleep(1)
        raise RuntimeError(f"the local SLURM node never became idle; see {self.root / 'log'}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=dict(os.environ, **self.env), capture_output=True)
        for name, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        self.started.clear()
