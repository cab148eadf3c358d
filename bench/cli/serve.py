"""``fastsock-bench serve``: be the peer of ``run --remote`` on this host.

Design note: the arguments and the process's life (signals, the banner,
warnings about an open, tokenless listener); the server itself is
:class:`bench.remote.server.Server`.  Bad arguments are one line and exit 2;
SIGINT or SIGTERM stop the server gracefully (exit 0).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from typing import Any

import fastsock
from bench.remote import protocol as P
from bench.remote.server import (
    DEFAULT_MAX_CLIENTS,
    MAX_CLIENTS_CEILING,
    ServeError,
    Server,
    is_loopback,
    listen,
)
from bench.remote.session import unmapped
from bench.run import matrix as M


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="be the peer of `run --remote` on this host",
        description="Serve the peer end of fastsock cases to `fastsock-bench run --remote`.",
    )
    p.add_argument("--listen", metavar="ADDR:PORT",
                   default=P.format_hostport(P.DEFAULT_HOST, P.DEFAULT_PORT),
                   help="control address (default %(default)s: loopback only; "
                        "0.0.0.0:PORT or [::]:PORT for every interface; port 0: any)")
    p.add_argument("--token", help="clients must present this token (default: "
                   "$FASTSOCK_TOKEN; the variable keeps it out of the process list)")
    p.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS, metavar="N",
                   help="connections served at once (default %(default)s)")
    p.add_argument("--max-size", default="4M", metavar="BYTES",
                   help="largest message size served, e.g. 64k, 4M (default %(default)s)")
    p.add_argument("--read-timeout", type=float, default=P.READ_TIMEOUT, metavar="SECONDS",
                   help="bound on receiving a whole request (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no log of clients")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    prog = "fastsock-bench serve"
    try:
        host, port = P.parse_hostport(args.listen, allow_zero=True)
        if not 1 <= args.max_clients <= MAX_CLIENTS_CEILING:
            raise ServeError(f"--max-clients must be from 1 to {MAX_CLIENTS_CEILING}")
        try:
            max_size = M.parse_size(args.max_size)
        except M.MatrixError as exc:
            raise ServeError(f"--max-size: {exc}") from None
        if max_size > M.MAX_STREAM_SIZE:
            raise ServeError(f"--max-size must be at most {M.MAX_STREAM_SIZE} bytes")
        if not (math.isfinite(args.read_timeout) and 0 < args.read_timeout <= 600):
            raise ServeError("--read-timeout must be > 0 and <= 600 seconds")
        token = args.token if args.token is not None else os.environ.get("FASTSOCK_TOKEN")
        listener = listen(host, port)
    except (ValueError, ServeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    server = Server(listener, token, args.max_clients, max_size, args.read_timeout,
                    quiet=args.quiet)
    bound = P.format_hostport(*unmapped(listener.getsockname())[:2])
    if fastsock.IMPLEMENTATION != "cython":
        print(f"{prog}: warning: the compiled extension is not loaded: cases are served "
              "by the pure-Python loops (recorded as remote_fastsock_loaded)",
              file=sys.stderr, flush=True)
    if not token and not is_loopback(listener):
        print(f"{prog}: warning: {bound} is reachable from other hosts and no token is "
              "set: anyone who reaches it can use this server", file=sys.stderr, flush=True)
    print(f"{prog}: listening on {bound} (protocol {P.PROTOCOL}, "
          f"{fastsock.IMPLEMENTATION} loops, clients at once: {args.max_clients}, "
          f"sizes up to {max_size} bytes, token {'required' if token else 'not required'})",
          flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        server.stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(f"{prog}: stopped", file=sys.stderr, flush=True)
    return 0
