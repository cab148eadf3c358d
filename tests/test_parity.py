"""Parity of the twins: the premise of the whole comparison.

The benchmark compares the compiled loops with the pure-Python ones; that
measures the interpreter only if both make the same syscalls per message.
``strace`` runs ``strace_child.py`` (each loop of one twin over TCP, UDP,
Unix stream and Unix datagram sockets, in each mode) and the syscalls of
the loop's thread between two ``getppid()`` markers are counted by name:

- the same successful send/recv calls, by name and count, in both twins
  (and where the scenario fixes them, the expected number per message);
- the same set-up calls (setsockopt, ioctl, fcntl...) and the same errors;
- the waits each mode promises, in each twin: none in ``blocking`` and
  ``spin``; in ``timeout`` a poll before every try; in ``nonblocking`` a
  poll after every EAGAIN (how many EAGAINs there are depends on timing,
  so those modes are compared per successful call).

Also here: same names and signatures, the same message for the same bad
argument, and the same outcome against a closed UDP port.
"""

from __future__ import annotations

import inspect
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
from support import MODES, TIMEOUT

import fastsock

CHILD = Path(__file__).with_name("strace_child.py")
TRACED = ("%network,poll,ppoll,select,pselect6,epoll_wait,epoll_pwait,"
          "epoll_create1,epoll_ctl,read,write,readv,writev,fcntl,ioctl,"
          "nanosleep,clock_nanosleep,getppid")
SENDS = {"sendto", "send", "sendmsg", "sendmmsg", "write", "writev"}
RECVS = {"recvfrom", "recv", "recvmsg", "recvmmsg", "read", "readv"}
WAITS = {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait"}
SCENARIOS = ("send", "recv", "echo", "pingpong")
TRANSPORTS = ("tcp4", "udp4", "unix", "unix_dgram")
# Bound on one traced child run (s).
STRACE_TIMEOUT = 120


@dataclass
class Calls:
    """The syscalls of one loop run, by kind."""

    ok: Counter = field(default_factory=Counter)      # successful send/recv
    again: Counter = field(default_factory=Counter)   # send/recv -> EAGAIN
    failed: Counter = field(default_factory=Counter)  # send/recv -> other errno
    waits: Counter = field(default_factory=Counter)   # poll & co
    other: Counter = field(default_factory=Counter)   # set-up: (name, ok?)

    def sends(self) -> int:
        return sum(v for k, v in self.ok.items() if k in SENDS)

    def recvs(self) -> int:
        return sum(v for k, v in self.ok.items() if k in RECVS)


_LINE = re.compile(r"^(\d+)\s+(.*)$")


def parse(text: str, tid: int) -> list[Calls]:
    """The runs of one child: the calls of thread ``tid`` between each pair
    of getppid() markers."""
    runs: list[Calls] = []
    current: Calls | None = None
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or int(m.group(1)) != tid:
            continue
        rest = m.group(2)
        if rest.startswith(("---", "+++")) or rest.endswith("<unfinished ...>"):
            continue  # signals, exits; an unfinished call counts when resumed
        name = rest[5:].split(" ", 1)[0] if rest.startswith("<... ") else rest.split("(", 1)[0]
        if name == "getppid":
            if current is None:
                current = Calls()
            else:
                runs.append(current)
                current = None
            continue
        if current is None:
            continue
        cut = rest.rfind(" = ")
        result = rest[cut + 3:].split() if cut >= 0 else ["?"]
        failed = result[0] == "-1"
        err = result[1] if failed and len(result) > 1 else ""
        if name in SENDS or name in RECVS:
            if not failed:
                current.ok[name] += 1
            elif err in ("EAGAIN", "EWOULDBLOCK"):
                current.again[name] += 1
            else:
                current.failed[(name, err)] += 1
        elif name in WAITS:
            current.waits[name] += 1
        else:
            current.other[(name, err or "ok")] += 1
    return runs


def traced_child(first: str, transport: str, workdir: Path) -> list[tuple[dict, Calls]]:
    """Run ``strace_child.py FIRST TRANSPORT DIR`` under strace: each run's
    info line with its calls."""
    out = workdir / f"{first}-{transport}.strace"
    sockdir = workdir / f"{first}-{transport}"
    sockdir.mkdir()
    env = dict(os.environ)
    # the child imports the fastsock this session imported
    pkg_parent = str(Path(fastsock.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = ["strace", "-f", "-qq", "-s", "0", "-e", f"trace={TRACED}", "-o", str(out),
           sys.executable, str(CHILD), first, transport, str(sockdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=STRACE_TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    tid = lines[0]["tid"]
    infos = lines[1:]
    runs = parse(out.read_text(), tid)
    assert len(runs) == len(infos), (len(runs), len(infos))
    assert os.listdir(sockdir) == [], "the child left socket files behind"
    return list(zip(infos, runs))


def trace(impl: str, transport: str, workdir: Path) -> dict[tuple[str, str], tuple[dict, Calls]]:
    runs = traced_child(impl, transport, workdir)
    assert len(runs) == len(MODES) * len(SCENARIOS), len(runs)
    return {(i["mode"], i["scenario"]): (i, c) for i, c in runs}


@pytest.fixture(scope="session")
def traces(tmp_path_factory: pytest.TempPathFactory):
    """Traced runs, by transport then twin, made when first asked for."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    workdir = tmp_path_factory.mktemp("strace")
    cache: dict[str, dict[str, dict]] = {}

    def get(transport: str) -> dict[str, dict]:
        if transport not in cache:
            cache[transport] = {impl: trace(impl, transport, workdir)
                                for impl in ("cython", "python")}
        return cache[transport]

    return get


def expected(transport: str, scenario: str, n: int) -> tuple[int, int]:
    """(successful sends, successful recvs) the scenario fixes."""
    stream = transport in ("tcp4", "unix")
    return {
        "send": (n, 0),
        "recv": (0, n),
        # the end: EOF is one more recv; an empty datagram is echoed too
        "echo": (n, n + 1) if stream else (n + 1, n + 1),
        "pingpong": (n, n),
    }[scenario]


def describe(c: Calls) -> str:
    return (f"ok={dict(c.ok)} again={dict(c.again)} failed={dict(c.failed)} "
            f"waits={dict(c.waits)} other={dict(c.other)}")


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_same_syscalls_per_message(twins, traces, transport, mode, scenario):
    runs = traces(transport)
    calls = {}
    for impl in ("cython", "python"):
        info, c = runs[impl][(mode, scenario)]
        n = info["n"]
        if scenario in ("send", "recv"):  # bytes for streams, datagrams else
            want = n * 64 if transport in ("tcp4", "unix") else n
            assert info["result"] == want, (impl, info)
        calls[impl] = c
    cy, py = calls["cython"], calls["python"]
    detail = f"\n  cython: {describe(cy)}\n  python: {describe(py)}"

    # the premise: the same successful calls, by name and count
    assert cy.ok == py.ok, "different send/recv calls" + detail
    assert (cy.sends(), cy.recvs()) == expected(transport, scenario, info["n"]), \
        "not the expected calls per message" + detail
    assert cy.failed == py.failed, "different errors" + detail
    assert cy.other == py.other, "different set-up calls" + detail
    assert len(set(cy.waits) | set(py.waits)) <= 1, "different wait calls" + detail

    for impl, c in calls.items():
        tries = sum(c.ok.values()) + sum(c.again.values()) + sum(c.failed.values())
        waits = sum(c.waits.values())
        again = sum(c.again.values())
        where = f"{impl}: {describe(c)}"
        if mode == "blocking":
            assert waits == 0 and again == 0, f"blocking mode polled or hit EAGAIN: {where}"
        elif mode == "timeout":
            assert waits == tries, f"timeout mode: not one poll before every try: {where}"
        elif mode == "nonblocking":
            assert waits == again, f"nonblocking mode: not one poll per EAGAIN: {where}"
        else:
            assert waits == 0, f"spin mode polled: {where}"
    if mode in ("blocking", "timeout"):
        assert cy.waits == py.waits, "different waits" + detail


# ------------------------------------------------------------ batching


@pytest.fixture(scope="session")
def batch_traces(tmp_path_factory: pytest.TempPathFactory):
    """The compiled dgram_send/dgram_recv over udp4 at batch 1, 8 and 32,
    in every mode (strace_child.py batch), by (mode, scenario, batch)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    loops = fastsock.implementations().get("cython")
    if loops is None or not loops.HAVE_MMSG:
        pytest.skip("no batching here: the compiled loops with sendmmsg/recvmmsg "
                    "(Linux) are needed")
    runs = traced_child("batch", "udp4", tmp_path_factory.mktemp("strace-batch"))
    return {(i["mode"], i["scenario"], i["batch"]): (i, c) for i, c in runs}


@pytest.mark.parametrize("batch", (1, 8, 32))
@pytest.mark.parametrize("scenario", ("send", "recv"))
def test_batch_makes_one_call_per_batch(batch_traces, mode, scenario, batch):
    """batch B: ceil(n / B) sendmmsg (recvmmsg) calls, the last one smaller,
    and no send/recv; batch 1: today's one send (recv) per datagram.  The
    mode's waits are those of one call, as for batch 1."""
    info, c = batch_traces[(mode, scenario, batch)]
    n = info["n"]
    assert info["result"] == n, info
    assert n % 8 and n % 32, "n must leave a smaller last batch"
    one = {"send": "sendto", "recv": "recvfrom"}[scenario]
    many = {"send": "sendmmsg", "recv": "recvmmsg"}[scenario]
    want = Counter({one: n}) if batch == 1 else Counter({many: -(-n // batch)})
    assert c.ok == want, describe(c)
    assert not c.failed, describe(c)
    tries = sum(c.ok.values()) + sum(c.again.values())
    waits = sum(c.waits.values())
    if mode in ("blocking", "spin"):
        assert waits == 0, describe(c)
    elif mode == "timeout":
        assert waits == tries, describe(c)
    else:
        assert waits == sum(c.again.values()), describe(c)


# ------------------------------------------------------------ the API


@pytest.mark.parametrize("name", fastsock.LOOP_NAMES)
def test_same_names_and_signatures(twins, name):
    sigs = {}
    for impl, module in twins.items():
        fn = getattr(module, name, None)
        assert callable(fn), f"{impl} has no {name}"
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"{impl}.{name} has no introspectable signature: {exc}")
        sigs[impl] = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
    assert sigs["cython"] == sigs["python"]


@pytest.mark.parametrize("case", [
    ("stream_send", dict(count=0, size=64), "tcp4"),
    ("stream_recv", dict(total=-5, size=64), "tcp4"),
    ("stream_pingpong", dict(count=3, size=64, samples=bytearray(8)), "tcp4"),
    ("dgram_send", dict(count=1, size=65508), "udp4"),
    ("dgram_recv", dict(count=1, size=64), "tcp4"),
    ("stream_echo", dict(size=64), "udp4"),
], ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1].values()))}-{c[2]}")
def test_same_error_for_the_same_bad_argument(twins, net, case):
    fn, kwargs, transport = case
    pair = net.pair(transport)
    seen = {}
    for impl, module in twins.items():
        with pytest.raises((TypeError, ValueError)) as info:
            getattr(module, fn)(pair.a, mode="spin", timeout=TIMEOUT, **kwargs)
        seen[impl] = (type(info.value), str(info.value))
    assert seen["cython"] == seen["python"]


def _outcome(call) -> str:
    try:
        return f"returned {call()!r}"
    except OSError as exc:
        return f"{type(exc).__name__} errno={exc.errno}"


def test_same_outcome_against_a_closed_udp_port(twins, net, mode):
    """The peer's port is closed: ICMP port unreachable comes back on
    loopback.  Whatever the twins make of it, they make the same."""
    outcomes = {}
    for impl, module in twins.items():
        pair = net.pair("udp4")
        pair.b.close()
        outcomes[impl] = _outcome(
            lambda module=module, pair=pair: module.dgram_pingpong(pair.a, 3, 32, mode,
                                                                   timeout=0.2))
    assert outcomes["cython"] == outcomes["python"]


def test_same_pingpong_bytes(twins, net, mode):
    """With pattern=True both twins put the same bytes on the wire."""
    seen = {}
    for impl, module in twins.items():
        pair = net.pair("tcp4")
        got = bytearray()

        def echo(b=pair.b, got=got):
            b.settimeout(TIMEOUT)
            while len(got) < 3 * 100:
                chunk = b.recv(100)
                if not chunk:
                    break
                got.extend(chunk)
                b.sendall(chunk)

        peer = net.peer(echo)
        module.stream_pingpong(pair.a, 3, 100, mode, timeout=TIMEOUT, pattern=True)
        peer.join()
        seen[impl] = bytes(got)
    assert seen["cython"] == seen["python"]
