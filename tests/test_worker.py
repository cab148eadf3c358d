"""bench.run.worker's timed region: what a stream value counts.

Each check runs a real case (forked peer, loopback TCP) in a subprocess: a
worker pins its CPU, registers atexit handlers and ends with ``os._exit``
on failure, none of which belongs in the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bench

REPO = Path(bench.__file__).resolve().parent.parent
# How late the measured side hears the peer's confirmation (s): far above
# what 64 KiB over loopback takes, even on a loaded machine.
DELAY = 0.5

CODE = textwrap.dedent(f"""
    import sys, time
    import fastsock
    from bench.run import peer as _peer
    from bench.run import worker as _worker
    from bench.analysis.report import CaseKey

    _peer.SHARED_CLOCK = sys.argv[1] == "stamp"
    real = _peer.Peer.answer

    def late(self, timeout, expect=b"D"):
        if expect == b"D":
            time.sleep({DELAY!r})  # the measured side wakes up late
        return real(self, timeout, expect)

    _peer.Peer.answer = late
    case = _worker.Case(CaseKey("stream", "tcp4", "blocking", 4096, fastsock.IMPLEMENTATION))
    print(case.time_func(16))
    case.close()
""")


def _elapsed(mode: str) -> float:
    with_env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", CODE, mode], env=with_env, cwd=os.sep,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return float(res.stdout)


def test_a_late_confirmation_is_not_timed_with_a_local_peer() -> None:
    from bench.run.peer import SHARED_CLOCK

    if not SHARED_CLOCK:
        pytest.skip("perf_counter is not CLOCK_MONOTONIC here: the peer cannot stamp")
    assert _elapsed("stamp") < DELAY  # ends at the peer's stamp of its last byte
    assert _elapsed("confirm") >= DELAY  # without the stamp: the wake-up is timed
