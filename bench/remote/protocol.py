"""The wire format between ``fastsock-bench run --remote`` and ``serve``.

Design note
-----------
One TCP control connection per case.  Its first part is a handshake of
JSON lines (UTF-8, one object per line, ``\\n``-terminated), each bounded
in size and read against a deadline; after the handshake the connection
carries the local peer's fixed 9-byte frames (``bench.run.peer.FRAME``:
``R n``, ``G n``, ``Q``; answers ``A``, ``D n``), so the measured side
drives a remote peer exactly as it drives a forked one.

The handshake (protocol version 1)::

    server: {"fastsock": 1, "ok": true, "nonce": HEX, "auth": BOOL}
    client: {"fastsock": 1, "op": "hello", ["auth": HEX]}
        or  {"fastsock": 1, "op": "case", "scenario": S, "transport": T,
             "mode": M, "size": N, ["udp_port": P], ["auth": HEX]}
    server: {"ok": true, ...} or {"ok": false, "error": "one line"}

``hello`` answers the server's fingerprint and limits and ends.  ``case``
answers the port of the server's data socket (``"port"``).  TCP: the
client connects to it and the server answers a second line,
``{"ok": true, "ready": true}``, once it has accepted that connection.
UDP: the server's socket is already connected to the client's ``udp_port``
(at the control connection's address), so the first answer means ready;
it also says the server's ``"impl"`` and ``"peer_batch"`` (datagrams per
receive call; absent from older servers: 1).
Any error is one ``{"ok": false}`` line, then the server closes.

Authentication: with a token configured the server's greeting says
``"auth": true`` and ``"auth"`` in the request must be
``HMAC-SHA256(token, nonce)`` in hex: the token itself never crosses the
network, and a recorded request is useless on another connection.  This
authenticates the request, not the traffic after it (no encryption).

Limits: requests are at most ``MAX_REQUEST`` bytes, answers
``MAX_ANSWER``; a line that is not complete within the read timeout is an
error, as is anything the grammar here does not name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import socket
import time
from typing import Any

PROTOCOL = 1
DEFAULT_PORT = 7317
DEFAULT_HOST = "127.0.0.1"
# Largest request line the server reads, newline included (bytes).
MAX_REQUEST = 4096
# Largest answer line the client reads, newline included (bytes): the
# fingerprint is the longest, about 1.5 KiB.
MAX_ANSWER = 16384
# Bound on receiving one whole line (seconds).
READ_TIMEOUT = 5.0
# The transports a server can serve (Unix sockets do not cross hosts).
TRANSPORTS = ("tcp4", "tcp6", "udp4", "udp6")
OPS = ("hello", "case")
NONCE_BYTES = 16


class ProtocolError(Exception):
    """A message that breaks the protocol; ``str()`` is one line."""


def family_of(transport: str) -> int:
    return socket.AF_INET6 if transport.endswith("6") else socket.AF_INET


def parse_hostport(text: str, default_port: int = DEFAULT_PORT,
                   allow_zero: bool = False) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT', 'HOST' (default port), a bare IPv6 address
    -> (host, port).  Raises ValueError with a one-line message."""
    text = text.strip()
    if not text:
        raise ValueError("empty address (expected HOST:PORT)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r} (expected [IPV6]:PORT)")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port {port_text!r} in {text!r}") from None
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"port {port} out of range in {text!r}")
    return host, port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def literal_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal, None for a name."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def auth_digest(token: str, nonce: str) -> str:
    return hmac.new(token.encode("utf-8"), nonce.encode("ascii"), hashlib.sha256).hexdigest()


def auth_ok(token: str, nonce: str, given: object) -> bool:
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(auth_digest(token, nonce).encode("ascii"),
                               given.encode("utf-8", "replace"))


class LineReader:
    """Reads bounded lines from a socket; keeps what follows a line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def read(self, limit: int, timeout: float, what: str) -> bytes:
        """One line (without its newline), at most ``limit`` bytes with it,
        complete within ``timeout`` seconds; else ProtocolError."""
        deadline = time.monotonic() + timeout
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                if end + 1 > limit:
                    break
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line
            if len(self.buf) >= limit:
                break
            rest = deadline - time.monotonic()
            if rest <= 0:
                raise ProtocolError(f"no complete {what} within {timeout:g} s")
            self.sock.settimeout(rest)
            try:
                chunk = self.sock.recv(limit + 1 - len(self.buf))
            except TimeoutError:
                raise ProtocolError(f"no complete {what} within {timeout:g} s") from None
            if not chunk:
                got = f" after {len(self.buf)} bytes" if self.buf else ""
                raise ProtocolError(f"connection closed before a complete {what}{got}")
            self.buf += chunk
        raise ProtocolError(f"{what} longer than {limit} bytes")

    def read_json(self, limit: int, timeout: float, what: str) -> dict[str, Any]:
        return decode(self.read(limit, timeout, what), what)


def decode(line: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid JSON ({_short(exc)})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return obj


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _short(value: object, n: int = 60) -> str:
    text = str(value).splitlines()[0] if str(value) else type(value).__name__
    return text if len(text) <= n else text[:n] + "..."


def check_request(req: dict[str, Any], max_size: int) -> dict[str, Any]:
    """Validate a request (before anything is allocated for it); returns it.
    Raises ProtocolError naming the first thing wrong."""
    from bench.run.matrix import MODES
    from bench.run.matrix import PEER_SCENARIOS as SCENARIOS  # a server is a peer
    from fastsock import UDP4_MAX, UDP6_MAX

    if "fastsock" not in req:
        raise ProtocolError("not a fastsock request (no 'fastsock' version field)")
    if req["fastsock"] != PROTOCOL or isinstance(req["fastsock"], bool):
        raise ProtocolError(f"protocol version {_short(req['fastsock'], 20)} not supported "
                            f"(this server speaks {PROTOCOL})")
    op = req.get("op")
    if op not in OPS:
        raise ProtocolError(
            f"unknown op {_short(repr(op), 20)} (expected one of: {', '.join(OPS)})")
    allowed = {"fastsock", "op", "auth"}
    if op == "case":
        allowed |= {"scenario", "transport", "mode", "size", "udp_port"}
    extra = sorted(set(req) - allowed)
    if extra:
        raise ProtocolError(f"unknown field {_short(extra[0], 30)!r} in a {op} request")
    if op == "hello":
        return req
    for name, choices in (("scenario", SCENARIOS), ("transport", TRANSPORTS), ("mode", MODES)):
        value = req.get(name)
        if value not in choices:
            raise ProtocolError(
                f"{name} {_short(repr(value), 20)} is not one of: {', '.join(choices)}")
    dgram = req["transport"].startswith("udp")
    limit = max_size
    if dgram:
        limit = min(limit, UDP6_MAX if req["transport"] == "udp6" else UDP4_MAX)
    size = req.get("size")
    if not (_is_int(size) and 1 <= int(size) <= limit):  # type: ignore[arg-type]
        raise ProtocolError(f"size {_short(size, 20)} must be an integer from 1 to {limit} bytes"
                            f" (this server's limit for {req['transport']})")
    if dgram:
        port = req.get("udp_port")
        if not (_is_int(port) and 1 <= int(port) <= 65535):  # type: ignore[arg-type]
            raise ProtocolError("a udp case needs udp_port, an integer from 1 to 65535")
    elif "udp_port" in req:
        raise ProtocolError("udp_port is only for udp cases")
    return req


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def clean_metadata(raw: object, prefix: str, max_keys: int = 64) -> dict[str, Any]:
    """A fingerprint received from the network, made safe for pyperf
    metadata: simple keys, finite numbers, one-line non-empty strings."""
    out: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in list(raw.items())[:max_keys]:
        if not (isinstance(key, str) and 0 < len(key) <= 64
                and all(c.isascii() and (c.isalnum() or c == "_") for c in key)):
            continue
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, str):
            value = " ".join(value.split())[:256]
            if not value:
                continue
        elif not isinstance(value, (int, float)):
            continue
        out[prefix + key.lower()] = value
    return out
