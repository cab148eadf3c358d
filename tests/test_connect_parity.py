"""Parity of the twins' ``connect_accept``: the same syscalls per connection.

``strace`` runs ``strace_connect_child.py`` (N connections of one twin over
TCP and Unix stream sockets, in each mode) and the calls of the loop's
thread between two ``getppid()`` markers are read in order:

- the same successful calls, by name and count, in both twins, and per
  connection exactly those the mode promises (``fastsock._common``): in
  ``blocking`` socket, setsockopt (SO_SNDTIMEO), connect, accept4,
  getsockname, close, close; ``timeout`` adds CPython's ioctl (FIONBIO)
  on each socket and a poll before accept4 (and, where connect is
  EINPROGRESS, a poll and getsockopt SO_ERROR); ``nonblocking`` a poll
  and SO_ERROR after an EINPROGRESS connect and a poll per EAGAIN accept;
- accept4 with SOCK_CLOEXEC, sockets created with SOCK_CLOEXEC (and
  SOCK_NONBLOCK in nonblocking mode), as CPython's socket module does;
- the accepted socket is closed before its client (the TIME_WAIT choice);
- the same errors, and the same message for the same bad argument.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import TIMEOUT

import fastsock
from fastsock._common import CONNECT_MODES

CHILD = Path(__file__).with_name("strace_connect_child.py")
TRACED = "%network,poll,ppoll,select,pselect6,epoll_wait,epoll_pwait,ioctl,fcntl,close,getppid"
WAITS = {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait"}
# Bound on one traced child run (s).
STRACE_TIMEOUT = 120

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)\s*(\w+)?")


@dataclass
class Run:
    ok: Counter = field(default_factory=Counter)      # successful calls, by name
    errors: Counter = field(default_factory=Counter)  # (name, errno name)
    sockets: list[str] = field(default_factory=list)  # socket() type arguments
    accept_flags: set[str] = field(default_factory=set)
    close_order_ok: bool = True


def parse(text: str, tid: int) -> list[Run]:
    runs: list[Run] = []
    cur: Run | None = None
    client = accepted = -1
    closed: list[int] = []
    for line in text.splitlines():
        if not line.startswith(f"{tid} "):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        _, name, args, result, err = m.groups()
        if name == "getppid":
            if cur is None:
                cur = Run()
            else:
                runs.append(cur)
                cur = None
            continue
        if cur is None:
            continue
        if int(result) < 0:
            cur.errors[(name, err)] += 1
            continue
        cur.ok[name] += 1
        if name == "socket":
            cur.sockets.append(args.split(", ")[1])
            client, accepted, closed = int(result), -1, []
        elif name == "accept4":
            cur.accept_flags.add(args.rsplit(", ", 1)[1])
            accepted = int(result)
        elif name == "close":
            closed.append(int(args))
            if len(closed) == 2 and closed != [accepted, client]:
                cur.close_order_ok = False
    return runs


def trace(impl: str, transport: str, workdir: Path) -> list[tuple[dict, Run]]:
    out = workdir / f"{impl}-{transport}.strace"
    sockdir = workdir / f"{impl}-{transport}"
    sockdir.mkdir()
    env = dict(os.environ)
    pkg_parent = str(Path(fastsock.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = ["strace", "-f", "-qq", "-s", "0", "-e", f"trace={TRACED}", "-o", str(out),
           sys.executable, str(CHILD), impl, transport, str(sockdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=STRACE_TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    runs = parse(out.read_text(), lines[0]["tid"])
    infos = lines[1:]
    assert len(runs) == len(infos) == len(CONNECT_MODES), (len(runs), len(infos))
    assert os.listdir(sockdir) == [], "the child left socket files behind"
    return list(zip(infos, runs))


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    workdir = tmp_path_factory.mktemp("strace-connect")
    cache: dict[str, dict[str, dict[str, tuple[dict, Run]]]] = {}

    def get(transport: str) -> dict[str, dict[str, tuple[dict, Run]]]:
        if transport not in cache:
            cache[transport] = {
                impl: {info["mode"]: (info, run) for info, run in trace(impl, transport, workdir)}
                for impl in ("cython", "python")
            }
        return cache[transport]

    return get


def per_connection(mode: str, run: Run, n: int) -> Counter:
    """The successful calls the mode promises for n connections (polls and
    SO_ERROR reads depend on EINPROGRESS/EAGAIN: counted from the errors)."""
    inprogress = run.errors[("connect", "EINPROGRESS")]
    again = run.errors[("accept4", "EAGAIN")]
    want = Counter(socket=n, connect=n - inprogress, accept4=n, getsockname=n, close=2 * n)
    if mode == "blocking":
        want["setsockopt"] = n
    if mode == "timeout":
        want["ioctl"] = 2 * n
        want["poll"] = inprogress + n + again
    if mode == "nonblocking":
        want["poll"] = inprogress + again
    if inprogress:
        want["getsockopt"] = inprogress
    return +want


SETUP = {  # calls before the first connection, per mode (listener checks and set-up)
    "blocking": Counter(getsockopt=1, ioctl=1, setsockopt=2, getsockname=1),
    "timeout": Counter(getsockopt=1, ioctl=1, getsockname=1),
    "nonblocking": Counter(getsockopt=1, ioctl=1, getsockname=1),
}


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
@pytest.mark.parametrize("mode", CONNECT_MODES)
def test_same_syscalls_per_connection(twins, traces, transport, mode):
    runs = traces(transport)
    seen = {}
    for impl in ("cython", "python"):
        info, run = runs[impl][mode]
        n = info["n"]
        where = f"{impl}: ok={dict(run.ok)} errors={dict(run.errors)}"
        assert info["result"] == n, where
        assert run.ok == per_connection(mode, run, n) + SETUP[mode], where
        # only the retries a mode expects, never an error
        assert set(run.errors) <= {("connect", "EINPROGRESS"), ("accept4", "EAGAIN")}, where
        if mode == "blocking" or transport == "unix":
            # blocking waits in the kernel; Unix connects at once
            assert not run.errors, where
        elif transport == "tcp4":
            assert run.errors[("connect", "EINPROGRESS")] == n, where
        kind = "SOCK_STREAM|SOCK_CLOEXEC" + ("|SOCK_NONBLOCK" if mode == "nonblocking" else "")
        assert run.sockets == [kind] * n, where
        assert run.accept_flags == {"SOCK_CLOEXEC"}, where
        assert run.close_order_ok, f"{impl}: the client was closed before its accepted socket"
        seen[impl] = run
    cy, py = seen["cython"], seen["python"]
    # the premise: the same successful calls by name and count (in
    # nonblocking mode, up to the timing-dependent EAGAIN retries)
    if not (cy.errors[("accept4", "EAGAIN")] or py.errors[("accept4", "EAGAIN")]):
        assert cy.ok == py.ok
        assert cy.errors == py.errors


@pytest.mark.parametrize("kwargs", [
    dict(count=0, mode="blocking"),
    dict(count=3, mode="spin"),
    dict(count=3, mode="blocking", timeout=-1),
], ids=lambda k: "-".join(map(str, k.values())))
def test_same_error_for_the_same_bad_argument(twins, net, kwargs):
    pair = net.pair("tcp4")
    seen = {}
    for impl, module in twins.items():
        for sock in (pair.a, None):
            with pytest.raises((TypeError, ValueError)) as info:
                module.connect_accept(sock, **{"timeout": TIMEOUT, **kwargs})
            seen.setdefault(impl, []).append((type(info.value), str(info.value)))
    assert seen["cython"] == seen["python"]
