"""Helpers for the `serve` / `run --remote` tests: a server in a subprocess,
stopped by its pid, and `python -m bench` commands run the same way.

Subprocesses import the fastsock the tests imported (they start in its
directory, which `python -m` puts first on sys.path, and have it first on
PYTHONPATH, then the source tree), so that "cython" means the same thing in
both; ``IMPL`` is the measured implementation they use.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import fastsock
from bench.analysis.report import Case

ROOT = Path(__file__).resolve().parent.parent
PURE = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")
IMPL = "cython" if not PURE and "cython" in fastsock.implementations() else "python"
# Bound on the server printing its address after start (s).
START_TIMEOUT = 20.0
# Bound on the server exiting after SIGTERM before SIGKILL (s).
STOP_TIMEOUT = 10.0
# Bound on one `run` command in a test (s).
RUN_TIMEOUT = 180.0
# pyperf's smallest settings: one worker process, one value, tiny min time.
TINY = ["-p", "1", "-n", "1", "-w", "1", "--min-time", "0.001", "--no-html"]


# Where the fastsock the tests imported lives: the source tree, or the
# installed package's directory (`python -m` puts the cwd first on sys.path).
HOME = Path(fastsock.__file__).resolve().parent.parent


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    paths = [str(HOME)] if HOME == ROOT else [str(HOME), str(ROOT)]
    out = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out.pop("FASTSOCK_TOKEN", None)
    out.update(extra or {})
    return out


class ServerProcess:
    """``python -m bench serve ...`` (optionally behind a prefix such as
    ``ip netns exec NS``); ``address`` is what it printed it listens on."""

    def __init__(self, args: Sequence[str], log: Path, prefix: Sequence[str] = (),
                 extra_env: dict[str, str] | None = None) -> None:
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 (closed with the server process)
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bench", "serve", *args],
            cwd=HOME, env=env(extra_env), stdout=subprocess.PIPE, stderr=self._err,
            stdin=subprocess.DEVNULL,
        )
        self.address = ""
        try:
            line = self._first_line()
            m = re.search(r"listening on (\S+)", line)
            if not m:
                raise AssertionError(f"server said {line!r}; log: {self.stderr()}")
            self.address = m.group(1)
        except BaseException:
            self.stop()
            raise

    def _first_line(self) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in buf:
            rest = deadline - time.monotonic()
            if rest <= 0 or not select.select([fd], [], [], rest)[0]:
                raise AssertionError(f"server printed no address within {START_TIMEOUT} s;"
                                     f" log: {self.stderr()}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"server exited ({self.proc.wait(5)}): {self.stderr()}")
            buf += chunk
        return buf.decode(errors="replace").splitlines()[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stderr(self) -> str:
        self._err.flush()
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM by pid, SIGKILL by pid after STOP_TIMEOUT; the exit status
        (None when it had to be killed)."""
        status: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            status = self.proc.returncode
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
        return status


def run_bench(args: Sequence[str], prefix: Sequence[str] = (),
              extra_env: dict[str, str] | None = None,
              timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS`` (behind ``prefix``), to completion."""
    return subprocess.run([*prefix, sys.executable, "-m", "bench", *args], cwd=HOME,
                          env=env(extra_env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def throughput(case: Case) -> float:
    """A stream case's delivered throughput (bytes/s) from pyperf's median."""
    return case.key.size / float(case.benchmark.median())
