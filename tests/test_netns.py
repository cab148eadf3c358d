"""`serve` and `run --remote` between two network namespaces.

The set-up: two namespaces of this test's own, joined by a veth pair, with
addresses only inside them (10.200.N.1/30, the server's, and 10.200.N.2/30,
the client's); nothing is added to the host's namespace.  The server runs
in one (``ip netns exec``), `run --remote` in the other.  Checked:

* unshaped: RTT and stream throughput are measured, and the link is much
  faster than the rate the next test sets (so that rate is what bounds it);
* bad control messages (malformed, oversized, slow) sent across the link
  are refused while the server keeps serving;
* shaped with ``tc qdisc add dev VETH root tbf rate 100mbit burst 32kb
  latency 50ms`` on the client's end (the data's direction): a stream case
  measured for at least 1 s delivers between 80% and 100% of that rate.

Needs root (``ip netns add``) and iproute2: where namespaces cannot be made
the tests skip saying why (CI, which runs as root, turns a skip into a
failure).  Namespaces, and with them the veth pair, are deleted in a
finalizer; the server is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_support import IMPL, TINY, ServerProcess, run_bench, throughput

from bench.analysis.report import Case, load_report

# The shaped rate, in bit/s and in bytes/s.
RATE_MBIT = 100
RATE = RATE_MBIT * 1e6 / 8
TBF = ["tbf", "rate", f"{RATE_MBIT}mbit", "burst", "32kb", "latency", "50ms"]
# The band the delivered throughput must land in (fractions of RATE).
LOW, HIGH = 0.80, 1.00
# Least time the shaped stream is measured for (s).
MIN_TIME = 1.0
# The server's read timeout here (s).
READ_TIMEOUT = 1.0


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def _must(*args: str) -> None:
    res = _ip(*args)
    if res.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {res.stderr.strip()}")


@dataclass
class Link:
    server_ns: str
    client_ns: str
    server_dev: str
    client_dev: str
    server_ip: str
    client_ip: str

    def in_client(self) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns]

    def in_server(self) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns]


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` not found: install iproute2")
    tag = f"fsk{os.getpid() % 100000}"
    net = 10 + os.getpid() % 240  # 10.200.<net>.0/30, inside the namespaces only
    ln = Link(f"{tag}s", f"{tag}c", f"{tag}vs", f"{tag}vc", f"10.200.{net}.1", f"10.200.{net}.2")
    created: list[str] = []
    try:
        res = _ip("netns", "add", ln.server_ns)
        if res.returncode != 0:
            pytest.skip(f"`ip netns add` refused ({res.stderr.strip()}): needs root "
                        "(CAP_SYS_ADMIN and CAP_NET_ADMIN)")
        created.append(ln.server_ns)
        _must("netns", "add", ln.client_ns)
        created.append(ln.client_ns)
        # both ends made inside the namespaces: the host's never sees them
        _must("-n", ln.server_ns, "link", "add", ln.server_dev, "type", "veth",
              "peer", "name", ln.client_dev, "netns", ln.client_ns)
        for ns, dev, ip in ((ln.server_ns, ln.server_dev, ln.server_ip),
                            (ln.client_ns, ln.client_dev, ln.client_ip)):
            _must("-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _must("-n", ns, "link", "set", "lo", "up")
            _must("-n", ns, "link", "set", dev, "up")
        yield ln
    finally:
        for ns in reversed(created):  # a namespace takes its veth end along
            _ip("netns", "del", ns)
        left = _ip("link", "show", ln.server_dev).returncode == 0 or \
            _ip("link", "show", ln.client_dev).returncode == 0
        assert not left, "a veth end was left in the host's namespace"


@pytest.fixture(scope="module")
def server(link: Link, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("netns") / "server.log"
    srv = ServerProcess(["--listen", f"{link.server_ip}:0", "--read-timeout",
                         str(READ_TIMEOUT)], log, prefix=link.in_server())
    try:
        yield srv
    finally:
        status = srv.stop()
    assert status == 0, f"server did not stop cleanly ({status}); log: {srv.stderr()}"


def run_remote(link: Link, srv: ServerProcess, out: Path, *args: str) -> list[Case]:
    res = run_bench(["run", "--remote", srv.address, *args, "--impl", IMPL, "-o", str(out),
                     "--no-html"], prefix=link.in_client())
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\nserver log:\n{srv.stderr()}"
    cases = load_report(str(out)).cases
    for case in cases:
        assert case.metadata["remote_address"] == srv.address
    return cases


def measured_seconds(case: Case) -> float:
    """The longest timed region of the case's value runs (s)."""
    runs = [r for r in case.benchmark.get_runs() if r.values]
    return float(max(v * r.get_total_loops() for r in runs for v in r.values))


def test_unshaped_rtt_and_throughput(link: Link, server: ServerProcess, tmp_path: Path) -> None:
    cases = run_remote(link, server, tmp_path / "unshaped.json", "--scenario",
                       "stream,pingpong", "--transport", "tcp4", "--mode", "blocking",
                       "--size", "64,65536", *TINY[:-1])
    by = {(c.key.scenario, c.key.size): c for c in cases}
    rtt = by[("pingpong", 64)].benchmark.median()
    thr = throughput(by[("stream", 65536)])
    print(f"\nunshaped veth: RTT {rtt * 1e6:.1f} µs (64 B), "
          f"stream {thr / 1e6:.1f} MB/s (64 KiB, {IMPL})")
    assert 0 < rtt < 0.05
    # the link alone is far faster than the rate set next: tbf will be the bound
    assert thr > 2 * RATE, f"unshaped {thr / 1e6:.1f} MB/s: too slow to test the shaper"


BAD_CLIENTS = r"""
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
out = {}
for name, payload, wait in (("malformed", b'{"fastsock": 1, "op"\n', 0),
                            ("oversized", b"x" * 100000, 0),
                            ("slow", b'{"fastsock": 1, "op": "hel', 1)):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    f.readline()  # greeting
    try:
        s.sendall(payload)
    except OSError:
        pass
    t0 = time.monotonic()
    line = f.readline()
    out[name] = {"answer": json.loads(line) if line else None,
                 "seconds": time.monotonic() - t0}
    s.close()
print(json.dumps(out))
"""


def test_bad_clients_across_the_link(link: Link, server: ServerProcess, tmp_path: Path) -> None:
    host, port = server.address.rsplit(":", 1)
    res = subprocess.run([*link.in_client(), sys.executable, "-c", BAD_CLIENTS, host, port],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    for name, words in (("malformed", "not valid JSON"), ("oversized", "longer than"),
                        ("slow", "no complete request within")):
        ans = got[name]["answer"]
        assert ans is not None and ans["ok"] is False and words in ans["error"], (name, got)
    assert got["slow"]["seconds"] >= READ_TIMEOUT * 0.8
    # and the server still serves a real case across the link
    run_remote(link, server, tmp_path / "after.json", "--scenario", "pingpong",
               "--transport", "udp4", "--mode", "blocking", "--size", "64", *TINY[:-1])
    assert server.alive()


def test_shaped_stream_lands_just_under_the_rate(link: Link, server: ServerProcess,
                                                 tmp_path: Path) -> None:
    qdisc = ["tc", "qdisc", "add", "dev", link.client_dev, "root", *TBF]
    res = subprocess.run([*link.in_client(), *qdisc], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, f"{' '.join(qdisc)}: {res.stderr.strip()}"
    seen: list[float] = []
    try:
        # The shaper caps every reading (HIGH holds for each); a reading
        # below LOW can be a CPU taken by the other test process, not the
        # measure: one more reading then, and the better one must land.
        for attempt in range(2):
            cases = run_remote(link, server, tmp_path / f"shaped{attempt}.json", "--scenario",
                               "stream", "--transport", "tcp4", "--mode", "blocking",
                               "--size", "64k", "-p", "1", "-n", "1", "-w", "1",
                               "--min-time", str(MIN_TIME))
            (case,) = cases
            thr = throughput(case)
            seconds = measured_seconds(case)
            print(f"\nshaped to {RATE_MBIT} Mbit/s: stream {thr / 1e6:.2f} MB/s = "
                  f"{100 * thr / RATE:.1f}% of the rate, measured over {seconds:.2f} s")
            assert seconds >= MIN_TIME
            assert thr <= HIGH * RATE, \
                f"{thr / 1e6:.2f} MB/s is {100 * thr / RATE:.1f}% of {RATE / 1e6:.1f} MB/s"
            seen.append(thr)
            if thr >= LOW * RATE:
                break
    finally:
        subprocess.run([*link.in_client(), "tc", "qdisc", "del", "dev", link.client_dev,
                        "root"], capture_output=True, timeout=30)
    assert max(seen) >= LOW * RATE, \
        f"{', '.join(f'{100 * t / RATE:.1f}%' for t in seen)} of {RATE / 1e6:.1f} MB/s"
