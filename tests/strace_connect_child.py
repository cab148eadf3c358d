"""Runs ``connect_accept`` of one twin, for test_connect_parity.py to trace.

Usage: python strace_connect_child.py IMPL TRANSPORT TMPDIR

For every mode of ``connect_accept`` it makes a fresh listener (Unix: bound
under TMPDIR, unlinked after) and runs N connections between two
``getppid()`` markers, the calls test_connect_parity.py counts (only those
of the thread that made the markers, whose id it prints first).  Then one
JSON line per run: mode, connections, the loop's result.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

import fastsock
from fastsock._common import CONNECT_MODES

TIMEOUT = 5.0
N = 40  # connections per run


def listener(transport: str, path: str) -> socket.socket:
    if transport == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def main() -> None:
    impl, transport, tmpdir = sys.argv[1:4]
    loops = fastsock.implementations()[impl]
    print(json.dumps({"tid": threading.get_native_id()}), flush=True)
    for k, mode in enumerate(CONNECT_MODES):
        path = os.path.join(tmpdir, f"l{k}")
        with listener(transport, path) as lst:
            os.getppid()  # start marker
            result = loops.connect_accept(lst, N, mode, TIMEOUT)
            os.getppid()  # end marker
        if transport == "unix":
            os.unlink(path)
        print(json.dumps({"mode": mode, "n": N, "result": result}), flush=True)


if __name__ == "__main__":
    main()
