"""Runs each loop of one twin over one transport, for test_parity.py to trace.

Usage: python strace_child.py IMPL TRANSPORT TMPDIR
       python strace_child.py batch TRANSPORT TMPDIR   (the compiled twin's
       dgram_send/dgram_recv at each of BATCHES, in every mode)

For every mode and scenario it sets up a fresh pair and the peer, then runs
the loop between two ``getppid()`` calls, the markers test_parity.py counts
syscalls between (only those of the thread that made the markers, whose id
it prints first: the peers are plain-Python threads and stay out of the
count).  Then it prints one JSON line per run: mode, scenario, messages
and the loop's result.

Scenarios, chosen so that the syscalls per message do not depend on timing
wherever that can be arranged (all data already waiting, all messages
fitting in the buffers):
- send: N messages into buffers that hold them all (a reader drains after);
- recv: N messages already waiting;
- echo: N messages and the end (EOF / an empty datagram) already waiting;
- pingpong: N round trips against a plain echo thread (timing-dependent
  EAGAINs in the non-blocking modes; test_parity.py compares those per
  successful call).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

import fastsock
from fastsock._common import MODES

TIMEOUT = 5.0
SIZE = 64
# Messages per run: Unix datagram queues hold net.unix.max_dgram_qlen (10)
# datagrams, so that transport's runs stay under it.
N = {"tcp4": 200, "unix": 200, "udp4": 64, "unix_dgram": 8}
PINGPONG_N = 50
BIG_BUFFER = 1 << 20  # bytes: room for every message of a run


def make_pair(transport: str, tmpdir: str, k: int) -> tuple[socket.socket, socket.socket]:
    if transport == "tcp4":
        with socket.socket() as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            a = socket.create_connection(lst.getsockname(), timeout=TIMEOUT)
            b, _ = lst.accept()
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    elif transport == "unix":
        path = os.path.join(tmpdir, f"s{k}")
        with socket.socket(socket.AF_UNIX) as lst:
            lst.bind(path)
            lst.listen(1)
            a = socket.socket(socket.AF_UNIX)
            a.connect(path)
            b, _ = lst.accept()
        os.unlink(path)
    elif transport == "udp4":
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
        b.connect(a.getsockname())
    else:
        pa, pb = os.path.join(tmpdir, f"a{k}"), os.path.join(tmpdir, f"b{k}")
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind(pa)
        b.bind(pb)
        a.connect(pb)
        b.connect(pa)
        os.unlink(pa)
        os.unlink(pb)
    for s in (a, b):
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BIG_BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BIG_BUFFER)
    return a, b


def plain_echo(b: socket.socket, stream: bool, rounds: int) -> None:
    b.settimeout(TIMEOUT)
    for _ in range(rounds):
        if stream:
            data = b""
            while len(data) < SIZE:
                data += b.recv(SIZE - len(data))
            b.sendall(data)
        else:
            b.send(b.recv(SIZE))


def drain(b: socket.socket, stream: bool, n: int) -> None:
    b.settimeout(TIMEOUT)
    if stream:
        left = n * SIZE
        while left:
            left -= len(b.recv(left))
    else:
        for _ in range(n):
            b.recv(SIZE)


def run(loops, transport: str, mode: str, scenario: str, tmpdir: str, k: int) -> dict:
    stream = transport in ("tcp4", "unix")
    n = N[transport]
    a, b = make_pair(transport, tmpdir, k)
    peer = None
    msg = bytes(SIZE)
    if scenario == "recv":
        for _ in range(n):
            b.sendall(msg) if stream else b.send(msg)
    elif scenario == "echo":
        for _ in range(n):
            b.sendall(msg) if stream else b.send(msg)
        b.shutdown(socket.SHUT_WR) if stream else b.send(b"")
    elif scenario == "pingpong":
        n = PINGPONG_N
        peer = threading.Thread(target=plain_echo, args=(b, stream, n), daemon=True)
        peer.start()

    os.getppid()  # start marker
    if scenario == "send":
        fn = loops.stream_send if stream else loops.dgram_send
        result = fn(a, n, SIZE, mode, TIMEOUT)
    elif scenario == "recv":
        result = (loops.stream_recv(a, n * SIZE, SIZE, mode, TIMEOUT) if stream
                  else loops.dgram_recv(a, n, SIZE, mode, TIMEOUT))
    elif scenario == "echo":
        result = (loops.stream_echo if stream else loops.dgram_echo)(a, SIZE, mode, TIMEOUT)
    else:
        result = (loops.stream_pingpong if stream else loops.dgram_pingpong)(
            a, n, SIZE, mode, TIMEOUT)
    os.getppid()  # end marker

    if scenario == "send":
        drain(b, stream, n)
    if peer is not None:
        peer.join(TIMEOUT)
        if peer.is_alive():
            raise SystemExit("the echo peer did not finish")
    a.close()
    b.close()
    return {"mode": mode, "scenario": scenario, "n": n,
            "result": list(result) if isinstance(result, tuple) else result}


# Batched runs: datagrams per run (a multiple of no batch: the last call is
# smaller) and the batches.
BATCH_N = 100
BATCHES = (1, 8, 32)


def run_batch(transport: str, mode: str, scenario: str, batch: int, tmpdir: str,
              k: int) -> dict:
    """The compiled dgram_send/dgram_recv at one batch, data waiting or room
    for it all (no EAGAIN), between the markers."""
    loops = fastsock.implementations()["cython"]
    a, b = make_pair(transport, tmpdir, k)
    msg = bytes(SIZE)
    if scenario == "recv":
        for _ in range(BATCH_N):
            b.send(msg)
    os.getppid()  # start marker
    if scenario == "send":
        result = loops.dgram_send(a, BATCH_N, SIZE, mode, TIMEOUT, batch=batch)
    else:
        result = loops.dgram_recv(a, BATCH_N, SIZE, mode, TIMEOUT, batch=batch)
    os.getppid()  # end marker
    if scenario == "send":
        drain(b, False, BATCH_N)
    a.close()
    b.close()
    return {"mode": mode, "scenario": scenario, "batch": batch, "n": BATCH_N,
            "result": result}


def main_batch(transport: str, tmpdir: str) -> None:
    print(json.dumps({"tid": threading.get_native_id()}), flush=True)
    k = 0
    for mode in MODES:
        for scenario in ("send", "recv"):
            for batch in BATCHES:
                print(json.dumps(run_batch(transport, mode, scenario, batch, tmpdir, k)),
                      flush=True)
                k += 1


def main() -> None:
    if sys.argv[1] == "batch":
        main_batch(*sys.argv[2:4])
        return
    impl, transport, tmpdir = sys.argv[1:4]
    loops = fastsock.implementations()[impl]
    # the markers' thread: test_parity.py counts only its syscalls
    print(json.dumps({"tid": threading.get_native_id()}), flush=True)
    k = 0
    for mode in MODES:
        for scenario in ("send", "recv", "echo", "pingpong"):
            print(json.dumps(run(loops, transport, mode, scenario, tmpdir, k)), flush=True)
            k += 1


if __name__ == "__main__":
    main()
