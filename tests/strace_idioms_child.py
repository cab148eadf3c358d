"""Runs each idiom's loops and the Python twin's, for test_idioms.py to trace.

Usage: python strace_idioms_child.py

Blocking mode, 64-byte messages, over socketpairs with plain-Python peers
in threads (a reader, an echo): the test counts only the calls of the
thread that printed its id first, between two ``getppid()`` markers per
run, and prints one JSON line per run (impl, function, messages, result).
In blocking mode a send that finds the buffer full waits inside the
kernel, so the calls per message do not depend on timing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

from fastsock import _pyloops
from fastsock._idioms import makefile, recv, sendall, sendmsg

N = 100
SIZE = 64
TIMEOUT = 5.0
RUNS = [
    ("python", _pyloops, "stream_send"), ("socket-sendall", sendall, "stream_send"),
    ("socket-makefile", makefile, "stream_send"),
    ("python", _pyloops, "stream_pingpong"), ("socket-sendall", sendall, "stream_pingpong"),
    ("socket-recv", recv, "stream_pingpong"), ("socket-makefile", makefile, "stream_pingpong"),
    ("python", _pyloops, "dgram_send"), ("socket-sendmsg", sendmsg, "dgram_send"),
    ("python", _pyloops, "dgram_pingpong"), ("socket-recv", recv, "dgram_pingpong"),
    ("socket-sendmsg", sendmsg, "dgram_pingpong"),
]


def peer(sock: socket.socket, function: str) -> None:
    sock.settimeout(TIMEOUT)
    stream = sock.type == socket.SOCK_STREAM
    if function == "stream_send":
        got = 0
        while got < N * SIZE:
            got += len(sock.recv(65536))
        return
    for _ in range(N):
        data = sock.recv(SIZE)
        while stream and len(data) < SIZE:
            data += sock.recv(SIZE - len(data))
        if function.endswith("pingpong"):
            sock.sendall(data)


def main() -> None:
    print(json.dumps({"tid": threading.get_native_id()}), flush=True)
    for impl, loops, function in RUNS:
        kind = socket.SOCK_STREAM if function.startswith("stream") else socket.SOCK_DGRAM
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        with a, b:
            t = threading.Thread(target=peer, args=(b, function))
            t.start()
            os.getppid()
            result: Any = getattr(loops, function)(a, N, SIZE, "blocking", TIMEOUT)
            os.getppid()
            t.join(TIMEOUT)
        print(json.dumps({"impl": impl, "function": function, "n": N, "result": result}),
              flush=True)


if __name__ == "__main__":
    main()
