"""Valgrind's callgrind as the counting run uses it: the command, the part files.

Design note
-----------
Why callgrind: it counts the user-space instructions a process executes
(``Ir``: the interpreter, the extension, libc; never the kernel's work,
which valgrind does not see), on any Linux machine, with no hardware
counters, and it can cut the count into intervals at a function call:
``--dump-before=getppid`` writes the instructions since the previous dump
to a new part file each time the process calls ``getppid()``
(:mod:`bench.run.count_worker` calls it between counted intervals).
cachegrind (``--cache-sim=no``) runs about 25% faster but valgrind 3.19's
cannot mark intervals; client requests (``callgrind.h``) would mark only
the compiled loops, not the Python twin.  Measured on this project's
2-CPU VM: notes in docs/compare.md ("Counting instructions").

Files: with ``--callgrind-out-file=DIR/cg.%p``, ``cg.PID.K`` is the part
ended by the K-th marker (counters reset at each dump); ``cg.PID``, without
a suffix, the rest up to the exit.  A part's total is the ``summary:``
line of its header; how many times it called a libc function is the sum
of the ``calls=`` lines under that function's ``cfn=`` entries (``fn=`` and
``cfn=`` share one table of compressed names: ``(id) name`` the first
time, ``(id)`` after).  The counting run reads the calls of the socket
calls and waits (:data:`CALLS`) to tell timing-dependent work (a retry
after EAGAIN, a resent end marker) from the work per message.

Environment: ``PYTHONHASHSEED=0`` (str hashes, hence dict and set orders
and their work, otherwise differ from run to run: connect's Python twin
moved 0.08-0.09%).  Not ``PYTHONMALLOC=malloc``: with glibc's malloc the
count depends on the heap's layout (an unrelated environment variable's
length moved connect/unix-stream/python by 1.0%; checked again here:
connect/tcp4/python 42677.4 or 42698.4 instructions as the length of an
unused variable changed); with pymalloc, 40912.3 in each of the same
runs.  So PYTHONMALLOC is unset for counting, with the other variables
that change the interpreter's path (:data:`UNSET`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

VALGRIND = "valgrind"
INSTALL_HINT = ("install it: apt-get install valgrind (Debian, Ubuntu), dnf install valgrind "
                "(Fedora), or see https://valgrind.org")
ENV = {"PYTHONHASHSEED": "0"}
# Unset for counting: each changes the interpreter's path (glibc's malloc,
# the debug allocator, tracemalloc, asyncio's debug mode), hence the count.
UNSET = ("PYTHONMALLOC", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONASYNCIODEBUG",
         "PYTHONMALLOCSTATS")
# The marker: callgrind dumps before each call of this function.  libc's
# getppid, by its exact name (``*getppid`` would also match CPython's
# os_getppid and dump twice per marker).
MARKER = "getppid"
# libc functions whose calls a part counts (aliases map to one name).
CALLS = ("send", "recv", "poll", "select", "epoll_wait", "sendmmsg", "recvmmsg")
_ALIASES = {f"__{n}": n for n in CALLS} | {f"__libc_{n}": n for n in CALLS}
_PART = re.compile(r"cg\.(\d+)\.(\d+)")
_SUMMARY = re.compile(rb"^summary: (\d+)", re.M)
_NAME = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")
# Bound on `valgrind --version` (seconds).
VERSION_TIMEOUT = 10.0


class CallgrindError(RuntimeError):
    """valgrind missing or a part file unreadable: one line."""


def version() -> str:
    """``valgrind --version`` ("valgrind-3.19.0"); CallgrindError without it."""
    exe = shutil.which(VALGRIND)
    if exe is None:
        raise CallgrindError(f"valgrind is not installed (or not on PATH): {INSTALL_HINT}")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=VERSION_TIMEOUT, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise CallgrindError(f"{exe} --version failed ({exc}): {INSTALL_HINT}") from None
    return out or "valgrind (unknown version)"


def environment(base: dict[str, str]) -> dict[str, str]:
    """The counted process's environment: ``base`` with :data:`ENV` set and
    :data:`UNSET` removed."""
    env = {k: v for k, v in base.items() if k not in UNSET}
    env.update(ENV)
    return env


def command(outdir: str) -> list[str]:
    """valgrind's arguments before the program's."""
    return [VALGRIND, "--tool=callgrind", f"--dump-before={MARKER}", "--dump-line=no",
            "-q",
            f"--callgrind-out-file={os.path.join(outdir, 'cg.%p')}"]


def part_path(outdir: str, pid: int, part: int) -> str:
    return os.path.join(outdir, f"cg.{pid}.{part}")


def parts(outdir: str, pid: int) -> list[int]:
    """The part numbers of ``pid`` in ``outdir``, sorted."""
    out = []
    for name in os.listdir(outdir):
        m = _PART.fullmatch(name)
        if m and int(m.group(1)) == pid:
            out.append(int(m.group(2)))
    return sorted(out)


def part_total(path: str) -> int:
    """A part's instructions only (its header: the file may be megabytes)."""
    try:
        with open(path, "rb") as f:
            m = _SUMMARY.search(f.read(4096))
    except OSError as exc:
        raise CallgrindError(f"{path}: cannot read ({exc.strerror})") from None
    if m is None:
        raise CallgrindError(f"{path}: no summary line (not a callgrind part?)")
    return int(m.group(1))


def read_part(path: str) -> tuple[int, dict[str, int]]:
    """(instructions, calls of each of :data:`CALLS`) of one part file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            m = _SUMMARY.search(head)
            if m is None:
                raise CallgrindError(f"{path}: no summary line (not a callgrind part?)")
            total = int(m.group(1))
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise CallgrindError(f"{path}: cannot read ({exc.strerror})") from None
    return total, _calls(text)


def _calls(text: str) -> dict[str, int]:
    out = dict.fromkeys(CALLS, 0)
    names: dict[str, str] = {}
    callee: str | None = None
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            m = _NAME.match(line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "")
            else:  # uncompressed
                name = line.split("=", 1)[1].strip()
            if line[0] == "c":
                name = name.split("'", 1)[0]  # recursion levels: poll'2
                callee = _ALIASES.get(name, name)
        elif line.startswith("calls=") and callee in out:
            out[callee] += int(line[6:].split()[0])
    return out
