"""The C tools of ``crosscheck``: iperf3 and sockperf, run and read.

Design note
-----------
Each :class:`Workload` pairs a tool's invocation with the suite case doing
the same work (the pairs and why they are fair: :mod:`bench.crosscheck.check`).
This module starts a tool's server (bound to 127.0.0.1 only, on a port found
by binding port 0, retried on a race), waits until it listens (read from
/proc/net: Linux), runs the client for ``-t`` seconds under a subprocess
timeout, stops the server by pid in a ``finally``, and parses the output into a
:class:`Figure`: MB/s with MB = 10**6 B (iperf3's own ``-f M`` would be
2**20), RTT in seconds (sockperf without ``--full-rtt`` prints half an RTT;
the parser doubles an ``avg-latency``).

CPU time: every tool run records the CPU time (user + system) of its
client and of its server, each read from the kernel's accounting of that
process when it is reaped (``getrusage(RUSAGE_CHILDREN)`` around the
client, ``wait4`` of the server), with the work done (bytes delivered,
round trips), so that :mod:`bench.crosscheck.check` can set CPU time per
byte or per round trip beside the suite's (its measured side and its peer).
iperf3's own ``cpu_utilization_percent`` is kept beside (``-J``).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.analysis.units import MB

# Seconds a tool's server may take to listen.
SERVER_START = 5.0
# Seconds past the -t duration a tool client may take before it is killed.
CLIENT_GRACE = 20.0
# Seconds a stopped server gets before SIGKILL.
STOP_GRACE = 2.0
# Attempts at a free port (another program may take it between the probe
# and the server's bind).
PORT_TRIES = 3
# iperf3 UDP datagram size: the largest UDP payload in a 1500 B MTU packet
# (bytes); the suite runs the same size.
UDP_SIZE = 1472
# iperf3's reporting interval (seconds, -i): windows about as long as one
# pyperf value of the suite (tens of ms), to compare the two distributions.
WINDOW = 0.1
# The quantile of those windows compared (a fraction): what the two reach
# when the machine leaves them alone, which a loaded machine's medians hide.
WINDOW_Q = 0.9

TOOLS = ("iperf3", "sockperf")
# Alternating tool/suite pairs per workload by default.  On a 2-vCPU VM a
# pair's log ratio moved with sd 0.20 (60 TCP stream pairs; two identical C
# programs, A against A, 0.19), so 10 pairs (the 2nd to 9th ratio) gave
# intervals of +-15-25%, 20 pairs (6th to 15th, 95.9%) about +-10%.  With
# fixed loops a pair costs ~5 s: 20 pairs, 1.5 minutes a workload.
REPEAT = 20


@dataclass(frozen=True)
class Workload:
    """One pair: a tool's invocation and the suite case doing the same work."""

    name: str
    tool: str           # "iperf3" or "sockperf"
    scenario: str       # the suite's case ...
    transport: str
    mode: str
    size: int
    epoll: bool = False  # sockperf: feed file + -F epoll + --nonblocked
    # the suite's --nodelay on: TCP_NODELAY on the sender, as iperf3's -N
    nodelay: bool = False

    @property
    def case(self) -> str:
        name = f"{self.scenario}/{self.transport}/{self.mode}/{self.size}/cython"
        return name + "/nodelay-on" if self.nodelay else name

    @property
    def udp(self) -> bool:
        return self.transport.startswith("udp")


WORKLOADS = (
    Workload("tcp-stream", "iperf3", "stream", "tcp4", "blocking", 65536, nodelay=True),
    Workload("udp-stream", "iperf3", "stream", "udp4", "blocking", UDP_SIZE),
    Workload("tcp-pingpong", "sockperf", "pingpong", "tcp4", "blocking", 64),
    Workload("tcp-pingpong-epoll", "sockperf", "pingpong", "tcp4", "nonblocking", 64, epoll=True),
    Workload("udp-pingpong", "sockperf", "pingpong", "udp4", "blocking", 64),
    Workload("udp-pingpong-epoll", "sockperf", "pingpong", "udp4", "nonblocking", 64, epoll=True),
)


class CrosscheckError(RuntimeError):
    """A tool or the suite failed; str() is one line."""


@dataclass
class Figure:
    """One measurement: throughput (MB/s) or mean RTT (s), and extras."""

    value: float                 # MB/s (stream) or seconds (pingpong, mean RTT)
    p50: float | None = None     # seconds (pingpong)
    p99: float | None = None     # seconds (pingpong)
    loss: float | None = None    # fraction (UDP)
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ parsing


def parse_iperf3(text: str, udp: bool) -> Figure:
    """iperf3 ``-J`` output -> the receiver's rate in MB/s (and UDP loss).

    The receiver's figure is what was delivered: for UDP at ``-b 0`` the
    sender's is only what the socket accepted.  iperf3 >= 3.11 has
    ``end.sum_received`` for UDP; older ones only ``end.sum``, whose bytes
    are the sent ones, so delivered = sent * (1 - lost/packets).
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise CrosscheckError("iperf3 printed no JSON (is it iperf3 3.x?)") from None
    if not isinstance(doc, dict):
        raise CrosscheckError("iperf3 printed unexpected JSON")
    if doc.get("error"):
        raise CrosscheckError(f"iperf3: {doc['error']}")
    end = doc.get("end") or {}
    try:
        if not udp:
            rcv = end["sum_received"]
            extra: dict[str, Any] = {
                "retransmits": int(end.get("sum_sent", {}).get("retransmits", 0))}
            # the client's intervals (sent bytes: within a 100 ms window the
            # socket buffers, a few MB, shift little); a short last one dropped
            windows = [i["sum"]["bytes"] / i["sum"]["seconds"] / MB
                       for i in doc.get("intervals") or []
                       if i.get("sum", {}).get("seconds", 0) >= WINDOW / 2]
            if windows:
                extra["windows"] = windows
            extra["work"] = float(rcv["bytes"])  # bytes delivered
            cpu = end.get("cpu_utilization_percent") or {}
            for side in ("host_total", "remote_total"):
                if side in cpu:
                    extra[f"iperf3_{side}_pct"] = float(cpu[side])
            return Figure(rcv["bytes"] / rcv["seconds"] / MB, extra=extra)
        total = end["sum"]
        packets = int(total["packets"])
        lost = int(total["lost_packets"])
        loss = lost / packets if packets else 0.0
        if "sum_received" in end:
            rcv = end["sum_received"]
            delivered = float(rcv["bytes"])
            mbps = delivered / rcv["seconds"] / MB
        else:
            delivered = total["bytes"] * (1 - loss)
            mbps = delivered / total["seconds"] / MB
        sent = end.get("sum_sent", total)
        # work: bytes delivered, what the CPU per MB is of (as for TCP)
        extra = {"sent_mbps": sent["bytes"] / sent["seconds"] / MB, "packets": packets,
                 "work": delivered}
        return Figure(mbps, loss=loss, extra=extra)
    except (KeyError, TypeError, ZeroDivisionError, ValueError):
        raise CrosscheckError("iperf3 JSON lacks the end-of-test sums") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_AVG = re.compile(r"avg-(rtt|latency)=([0-9.]+)")
_PCT = re.compile(r"percentile\s+([0-9.]+)\s*=\s*([0-9.]+)")
_DROPPED = re.compile(r"# dropped messages = (\d+)")
_VALID = re.compile(r"\[Valid Duration\].*?SentMessages=(\d+); ReceivedMessages=(\d+)")
_TOTAL = re.compile(r"\[Total Run\].*?ReceivedMessages=(\d+)")


def parse_sockperf(text: str) -> Figure:
    """sockperf ping-pong output -> mean RTT and percentiles, in seconds.

    With ``--full-rtt`` sockperf prints ``avg-rtt`` and RTT percentiles;
    without, ``avg-latency`` and percentiles of half the RTT: those are
    doubled here, so the result is always an RTT.
    """
    text = _ANSI.sub("", text)
    m = _AVG.search(text)
    if not m:
        line = next((ln for ln in text.splitlines() if "ERROR" in ln or "rror" in ln), "")
        raise CrosscheckError(f"sockperf printed no average{': ' + line.strip() if line else ''}")
    factor = 1.0 if m.group(1) == "rtt" else 2.0  # half an RTT unless --full-rtt
    pct = {float(q): float(v) * factor * 1e-6 for q, v in _PCT.findall(text)}
    fig = Figure(float(m.group(2)) * factor * 1e-6, p50=pct.get(50.0), p99=pct.get(99.0))
    valid = _VALID.search(text)
    if valid:
        sent, received = int(valid.group(1)), int(valid.group(2))
        fig.extra["round_trips"] = received
        dropped = _DROPPED.search(text)
        if dropped and sent:
            fig.loss = int(dropped.group(1)) / sent
    total = _TOTAL.search(text)
    if total:  # every round trip of the run, warm-up included: what its CPU time paid for
        fig.extra["work"] = float(total.group(1))
    fig.extra["full_rtt"] = factor == 1.0
    return fig


# ----------------------------------------------------------- running tools


def missing_tools(path: str | None = None) -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


def _free_port() -> int:
    """A loopback port free for both TCP and UDP right now."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port: int = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CrosscheckError("no free loopback port")


def _listening(port: int, udp: bool) -> bool:
    """True when something is bound to 127.0.0.1:port (TCP: listening).
    Read from /proc/net: probing with a connection would use up iperf3's
    one test (-1)."""
    table, state = ("/proc/net/udp", "07") if udp else ("/proc/net/tcp", "0A")
    want = f"0100007F:{port:04X}"
    try:
        with open(table) as f:
            next(f)
            return any(ln.split()[1] == want and ln.split()[3] == state for ln in f)
    except OSError:
        return True  # no /proc: fall back on the start-up sleep below


def _pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class _Server:
    """A tool's server on loopback; stopped by pid on exit from the block.
    ``cpu_time``: its CPU seconds once stopped (None: not known)."""

    def __init__(self, argv: list[str], port: int, udp: bool, cpu: int | None,
                 exits: bool = False) -> None:
        """``exits``: the server ends by itself after one test (iperf3 -1):
        it gets STOP_GRACE to do so before SIGTERM."""
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=_pin(cpu))
        self.argv = argv
        self.exits = exits
        self.cpu_time: float | None = None
        deadline = time.monotonic() + SERVER_START
        if not os.path.exists("/proc/net/tcp"):
            time.sleep(0.5)
        while not _listening(port, udp):
            if self.proc.poll() is not None:
                raise CrosscheckError(f"{argv[0]} server exited: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise CrosscheckError(f"{argv[0]} server did not listen within {SERVER_START:g} s")
            time.sleep(0.02)

    def output(self) -> str:
        self.log.seek(0)
        lines = _ANSI.sub("", self.log.read().decode("utf-8", "replace")).strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def _reap(self, timeout: float) -> bool:
        """Reap the server within ``timeout`` s (wait4: its CPU time)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already (it failed to start)
                return True
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_time = usage.ru_utime + usage.ru_stime
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc.returncode is None and not self._reap(STOP_GRACE if self.exits else 0.0):
            self.proc.terminate()
            if not self._reap(STOP_GRACE):
                self.proc.kill()
                self._reap(STOP_GRACE)
        self.log.close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _client(argv: list[str], seconds: float, cpu: int | None) -> tuple[str, str, float]:
    """Run a tool's client; (stdout, stderr, its CPU seconds)."""
    before = _children_cpu()
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=seconds + CLIENT_GRACE, preexec_fn=_pin(cpu))
    except subprocess.TimeoutExpired:
        raise CrosscheckError(f"{argv[0]} client did not finish within "
                              f"{seconds + CLIENT_GRACE:g} s") from None
    cpu_time = _children_cpu() - before  # only the client was reaped meanwhile
    out = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0 and not out.strip():
        err = _ANSI.sub("", done.stderr.decode("utf-8", "replace")).strip().splitlines()
        raise CrosscheckError(f"{argv[0]} exited {done.returncode}: {err[-1] if err else ''}")
    return out, done.stderr.decode("utf-8", "replace"), cpu_time


def tool_command(w: Workload, port: int, seconds: float, cpus: tuple[int | None, int | None],
                 feed: str | None = None) -> tuple[list[str], list[str]]:
    """(server argv, client argv) of a workload's tool."""
    client_cpu, server_cpu = cpus
    if w.tool == "iperf3":
        server = ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)]
        client = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}", "-J",
                  "-l", str(w.size)]
        client += ["-u", "-b", "0"] if w.udp else ["-N", "-i", f"{WINDOW:g}"]
        if client_cpu is not None and server_cpu is not None:
            client += ["-A", f"{client_cpu},{server_cpu}"]
        return server, client
    if w.epoll:
        assert feed is not None
        where = ["-f", feed, "-F", "e", "--nonblocked"]
        server, client = ["sockperf", "sr"] + where, ["sockperf", "pp"] + where
    else:
        where = ["-i", "127.0.0.1", "-p", str(port)] + ([] if w.udp else ["--tcp"])
        server, client = ["sockperf", "sr"] + where, ["sockperf", "pp"] + where
    client += ["-m", str(w.size), "-t", f"{seconds:g}", "--full-rtt"]
    return server, client


def run_tool(w: Workload, seconds: float, cpus: tuple[int | None, int | None]) -> Figure:
    """One run of the workload's tool (server and client), bounded in time."""
    last: CrosscheckError | None = None
    for _ in range(PORT_TRIES):
        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="fastsock-xc-") as tmp:
            feed = None
            if w.epoll:
                feed = os.path.join(tmp, "feed.txt")
                with open(feed, "w") as f:  # sockperf's feed file: one address
                    f.write(f"{'U' if w.udp else 'T'}:127.0.0.1:{port}\n")
            server_argv, client_argv = tool_command(w, port, seconds, cpus, feed)
            try:
                # iperf3's server listens on TCP (its control channel) even for -u
                with _Server(server_argv, port, w.udp and w.tool == "sockperf", cpus[1],
                             exits=w.tool == "iperf3") as server:
                    out, err, client_cpu = _client(client_argv, seconds, cpus[0])
            except CrosscheckError as exc:
                last = exc  # most likely the port was taken: try another
                continue
        fig = parse_iperf3(out, w.udp) if w.tool == "iperf3" else parse_sockperf(out + err)
        fig.extra["cpu_client"] = client_cpu  # sender / client: the suite's measured side
        if server.cpu_time is not None:
            fig.extra["cpu_server"] = server.cpu_time  # receiver / echo: the suite's peer
        return fig
    assert last is not None
    raise last
