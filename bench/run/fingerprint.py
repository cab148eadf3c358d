"""The environment fingerprint stored in every report.

Design note: pyperf already records the CPU model and count, Python,
platform, hostname and load average in each run; this adds what decides
socket performance and what identifies the build: kernel release, network
sysctls, affinity, fastsock's version and git commit, the Cython that built
it, and which implementation the measuring process loaded.  Collected once
in the main process and merged into each benchmark after its run.
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import fastsock

_SYSCTLS = ("rmem_max", "wmem_max", "rmem_default", "wmem_default", "busy_poll", "busy_read")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def git_commit() -> str:
    """The commit of the fastsock tree being measured ("-dirty" when it has
    uncommitted changes), or "unknown" outside a git checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastsock.__file__)))
    for where in (here, os.getcwd()):
        if not os.path.exists(os.path.join(where, "setup.py")):
            continue
        try:
            out = subprocess.run(
                ["git", "-C", where, "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out + ("-dirty" if dirty else "")
    return "unknown"


def cython_version() -> str:
    try:
        from importlib.metadata import version

        return version("Cython")
    except Exception:
        return "unknown"


def collect() -> dict[str, Any]:
    fp: dict[str, Any] = {
        "kernel": platform.release(),
        "cython_version": cython_version(),
        "fastsock_version": fastsock.__version__,
        "fastsock_commit": git_commit(),
        "fastsock_loaded": fastsock.IMPLEMENTATION,
    }
    for name in _SYSCTLS:
        value = _read_int(f"/proc/sys/net/core/{name}")
        if value is not None:
            fp[f"net_core_{name}"] = value
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        fp["affinity"] = ",".join(map(str, cpus))
    return fp
