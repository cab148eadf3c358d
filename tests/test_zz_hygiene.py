"""The end of the test run: nothing the suite started is left behind.

Design note
-----------
pytest runs the files of ``tests/`` in name order, so this one (``zz``) runs
after every other when the whole suite runs; alone, it checks the machine
as it is.  What it checks, of the pytest process:

* no child process, live or zombie (``/proc/<pid>/task/*/children``, then
  ``waitpid(-1, WNOHANG)``, which reaps and names a zombie);
* no ``fastsock-*`` folder in the temporary directory created since this
  process started.  fastsock removes its socket folder right after the pair
  connects, so a folder from another fastsock process (a benchmark running
  on the same machine) lives for milliseconds: only folders older than
  ``SETTLE`` seconds count.

The per-test checks (fds, threads, socket files) live in conftest.py and in
each CLI test; this is the net under them.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time

# Age (s) a fastsock-* folder must reach to count as left behind: far above
# the milliseconds a live run keeps one.
SETTLE = 5.0


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return found


def _start_time() -> float:
    """When this process started (epoch seconds), from /proc."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    with open("/proc/stat") as f:
        btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"{pid} ({cmd[:120]})"


def test_no_child_process_is_left() -> None:
    me = os.getpid()
    deadline = time.monotonic() + 3.0  # a child being reaped right now
    while (left := _children(me)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "children of the test process: " + ", ".join(map(_describe, left))
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return  # no child at all
    assert pid == 0, f"a zombie child was left: pid {pid}, status {status}"
    raise AssertionError("a child process is still running")


def test_no_fastsock_folder_is_left() -> None:
    tmp = tempfile.gettempdir()
    started = _start_time()
    now = time.time()
    left = []
    for name in os.listdir(tmp):
        if not name.startswith("fastsock-"):
            continue
        try:
            mtime = os.stat(os.path.join(tmp, name)).st_mtime
        except FileNotFoundError:
            continue  # removed while we looked
        if mtime >= started - 1 and now - mtime > SETTLE:
            left.append(name)
    assert not left, f"fastsock-* folders left in {tmp}: {sorted(left)}"
