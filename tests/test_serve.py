"""`fastsock-bench serve` and `run --remote` on loopback.

What is checked: the wire format's parsing and validation (no server
needed); a real server in a subprocess, end to end with `run --remote` and
pyperf's smallest settings (exit 0, a valid report carrying the server's
``remote_*`` environment); the clear one-line errors of `run --remote`;
and bad clients (malformed, oversized, non-UTF-8, deeply nested, slow,
unauthorised, too many at once, a stranger's data connection, a client
vanishing mid-case): each gets an error answer or a close, and after each
the server still serves a good client a real case and holds no leftover
connection.  Every server is stopped by its pid (SIGTERM) and must exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import HOME, IMPL, TINY, ServerProcess, env, run_bench

import fastsock
from bench.analysis.report import CaseKey, load_report
from bench.remote import client as _remote
from bench.remote import protocol as P
from bench.run.peer import Peer

TOKEN = "test-token-\u00e9"  # non-ASCII on purpose: UTF-8 on both ends
# The server's read timeout in these tests (s): short, so slow clients are quick.
READ_TIMEOUT = 1.0
MAX_CLIENTS = 3
MAX_SIZE = 65536


# ------------------------------------------------------------ the wire format


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)),
    ("example.org:1", ("example.org", 1)),
    ("example.org", ("example.org", P.DEFAULT_PORT)),
    ("[::1]:7000", ("::1", 7000)),
    ("[::1]", ("::1", P.DEFAULT_PORT)),
    ("fe80::1", ("fe80::1", P.DEFAULT_PORT)),
])
def test_parse_hostport(text: str, want: tuple[str, int]) -> None:
    assert P.parse_hostport(text) == want


@pytest.mark.parametrize("text", ["", ":7000", "host:port", "host:0", "host:70000", "[::1",
                                  "[::1]x"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError) as info:
        P.parse_hostport(text)
    assert "\n" not in str(info.value) and str(info.value)


GOOD_CASE = {"fastsock": 1, "op": "case", "scenario": "stream", "transport": "tcp4",
             "mode": "blocking", "size": 64}


@pytest.mark.parametrize("change, words", [
    ({"fastsock": None}, "no 'fastsock' version"),
    ({"fastsock": 2}, "protocol version 2"),
    ({"fastsock": True}, "protocol version"),
    ({"op": "shell"}, "unknown op"),
    ({"extra": 1}, "unknown field 'extra'"),
    ({"scenario": "flood"}, "scenario 'flood'"),
    ({"transport": "unix-stream"}, "transport 'unix-stream'"),
    ({"mode": 3}, "mode 3"),
    ({"size": 0}, "size 0 must be"),
    ({"size": True}, "size True must be"),
    ({"size": 1.5}, "size 1.5 must be"),
    ({"size": 1 << 40}, "size 1099511627776 must be"),
    ({"size": MAX_SIZE + 1}, f"from 1 to {MAX_SIZE} bytes"),
    ({"transport": "udp4", "size": 65508}, "from 1 to 65507 bytes"),
    ({"transport": "udp4"}, "needs udp_port"),
    ({"transport": "udp4", "udp_port": 0}, "needs udp_port"),
    ({"udp_port": 4000}, "only for udp"),
])
def test_check_request_refuses(change: dict[str, Any], words: str) -> None:
    req = {**GOOD_CASE, **change}
    if change.get("fastsock", 1) is None:
        del req["fastsock"]
    with pytest.raises(P.ProtocolError) as info:
        P.check_request(req, MAX_SIZE)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_check_request_accepts() -> None:
    assert P.check_request(dict(GOOD_CASE), MAX_SIZE)["size"] == 64
    udp = {**GOOD_CASE, "transport": "udp6", "size": 65527, "udp_port": 9}
    assert P.check_request(udp, 1 << 20) == udp
    assert P.check_request({"fastsock": 1, "op": "hello", "auth": "x"}, 1)["op"] == "hello"


def test_auth_is_an_hmac_of_the_nonce() -> None:
    d = P.auth_digest(TOKEN, "ab" * 16)
    assert P.auth_ok(TOKEN, "ab" * 16, d)
    assert TOKEN not in d
    assert not P.auth_ok(TOKEN, "cd" * 16, d)  # another connection's nonce
    assert not P.auth_ok("other", "ab" * 16, d)
    assert not P.auth_ok(TOKEN, "ab" * 16, None)
    assert not P.auth_ok(TOKEN, "ab" * 16, "\udcff")


def test_clean_metadata_keeps_only_safe_values() -> None:
    raw = {"cpu_count": 2, "kernel": " 6.1\n evil ", "empty": " ", "nan": float("nan"),
           "nested": {"a": 1}, "bad key": 1, "flag": True, "x" * 65: 1, "ok_float": 1.5}
    assert P.clean_metadata(raw, "remote_") == {
        "remote_cpu_count": 2, "remote_kernel": "6.1 evil", "remote_flag": 1,
        "remote_ok_float": 1.5}
    assert P.clean_metadata(["not", "a", "dict"], "remote_") == {}


def test_remote_peer_has_the_peer_interface() -> None:
    for name in ("order", "answer", "ready", "wait_ready", "close"):
        assert callable(getattr(_remote.RemotePeer, name))
        assert callable(getattr(Peer, name))
    a, b = socket.socketpair()
    with a, b:
        peer = _remote.RemotePeer(a, "here", "cython")
        assert (peer.impl, peer.cpu, peer.pid) == ("cython", None, -1)


# ------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a token, small limits and a short read timeout."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    srv = ServerProcess(["--listen", "127.0.0.1:0", "--max-clients", str(MAX_CLIENTS),
                         "--max-size", str(MAX_SIZE), "--read-timeout", str(READ_TIMEOUT)],
                        log, extra_env={"FASTSOCK_TOKEN": TOKEN})
    try:
        yield srv
    finally:
        status = srv.stop()
    assert status == 0, f"server did not stop cleanly ({status}); log: {srv.stderr()}"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without a token, default limits."""
    log = tmp_path_factory.mktemp("serve") / "open.log"
    srv = ServerProcess(["--listen", "127.0.0.1:0"], log)
    try:
        yield srv
    finally:
        status = srv.stop()
    assert status == 0, f"server did not stop cleanly ({status}); log: {srv.stderr()}"


def raw_connect(srv: ServerProcess) -> tuple[socket.socket, P.LineReader, dict[str, Any]]:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    reader = P.LineReader(sock)
    return sock, reader, reader.read_json(P.MAX_ANSWER, 5, "greeting")


def answer_or_close(sock: socket.socket, reader: P.LineReader, within: float = 5.0
                    ) -> dict[str, Any] | None:
    """The server's answer line, or None when it only closed; then the
    connection must be closed by the server."""
    try:
        ans: dict[str, Any] | None = reader.read_json(P.MAX_ANSWER, within, "answer")
    except P.ProtocolError as exc:
        assert "closed" in str(exc), exc
        return None
    except ConnectionResetError:
        return None
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return ans


def _hello_raw(srv: ServerProcess) -> dict[str, Any]:
    sock, reader, greeting = raw_connect(srv)
    with sock:
        sock.sendall(P.encode({"fastsock": 1, "op": "hello",
                               "auth": P.auth_digest(TOKEN, greeting["nonce"])}))
        return reader.read_json(P.MAX_ANSWER, 5, "answer")


def serves_a_good_client(srv: ServerProcess) -> None:
    """A real case (stream over TCP, the sink answering the byte count), then
    the server holds no connection but the checking one."""
    key = CaseKey("stream", "tcp4", "blocking", 4096, IMPL)
    deadline = time.monotonic() + 3
    while True:  # slots of clients that just left free as their threads see EOF
        try:
            sock, peer = _remote.open_case(f"127.0.0.1:{srv.port}", key, token=TOKEN)
            break
        except _remote.RemoteError as exc:
            if "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with sock:
        try:
            peer.order(b"R", 16 * 4096)
            fastsock.stream_send(sock, 16, 4096, "blocking", 5.0)
            assert peer.answer(5.0) == 16 * 4096
        finally:
            peer.close()
    deadline = time.monotonic() + 3
    while True:
        clients = _hello_raw(srv)["clients"]
        if clients == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert clients == 1, f"server still holds {clients - 1} connection(s): {srv.stderr()}"
    assert srv.alive()


def test_greeting_and_hello(server: ServerProcess) -> None:
    sock, _reader, greeting = raw_connect(server)
    sock.close()
    assert greeting["ok"] is True and greeting["fastsock"] == P.PROTOCOL
    assert greeting["auth"] is True and len(greeting["nonce"]) == 2 * P.NONCE_BYTES
    info = _remote.hello(f"127.0.0.1:{server.port}", TOKEN)
    assert info.address == f"127.0.0.1:{server.port}"
    assert info.limits["max_size"] == MAX_SIZE and info.limits["max_clients"] == MAX_CLIENTS
    assert info.fingerprint["cpu_count"] >= 1 and info.fingerprint["kernel"]
    serves_a_good_client(server)


BAD_REQUESTS = {
    "malformed JSON": (b'{"fastsock": 1, "op": \n', "not valid JSON"),
    "not an object": (b"[1, 2, 3]\n", "not a JSON object"),
    "not UTF-8": (b'{"fastsock": 1, "op": "\xff"}\n', "not UTF-8"),
    "deeply nested": (b"[" * 4000 + b"\n", "not valid JSON"),
    "NaN": (b'{"fastsock": NaN}\n', "not valid JSON"),
    "oversized line": (b'{"fastsock": 1, "pad": "' + b"x" * 8000 + b'"}\n', "longer than 4096"),
    "oversized, no newline": (b"x" * 200_000, "longer than 4096"),
    "huge size": (None, "must be an integer from 1 to"),
    "wrong token": (b'{"fastsock": 1, "op": "hello", "auth": "00"}\n', "unauthorised: wrong"),
    "no token": (b'{"fastsock": 1, "op": "hello"}\n', "unauthorised"),
    "replayed token": ("replay", "unauthorised: wrong"),
    "trailing data": ("trailing", "unexpected data after the request"),
}


@pytest.mark.parametrize("what", list(BAD_REQUESTS))
def test_bad_request_refused_then_good_client_served(server: ServerProcess, what: str) -> None:
    payload, words = BAD_REQUESTS[what]
    sock, reader, greeting = raw_connect(server)
    with sock:
        auth = P.auth_digest(TOKEN, greeting["nonce"])
        if payload is None:
            payload = P.encode({**GOOD_CASE, "size": 1 << 40, "auth": auth})
        elif payload == "replay":  # a digest made for another connection's nonce
            payload = P.encode({"fastsock": 1, "op": "hello",
                                "auth": P.auth_digest(TOKEN, "00" * P.NONCE_BYTES)})
        elif payload == "trailing":
            payload = P.encode({"fastsock": 1, "op": "hello", "auth": auth}) + b"R\0\0"
        assert isinstance(payload, bytes)
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: an answer may still be there
        ans = answer_or_close(sock, reader)
    if ans is not None:
        assert ans["ok"] is False and words in ans["error"], ans
        assert "\n" not in ans["error"]
    elif what != "oversized, no newline":
        pytest.fail(f"{what}: closed without an answer")
    serves_a_good_client(server)


def test_slow_client_is_cut_at_the_read_timeout(server: ServerProcess) -> None:
    sock, reader, _ = raw_connect(server)
    with sock:
        sock.sendall(b'{"fastsock": 1, "op": "he')  # half a request, then nothing
        t0 = time.monotonic()
        ans = answer_or_close(sock, reader, within=READ_TIMEOUT + 5)
        elapsed = time.monotonic() - t0
    assert ans is not None and ans["ok"] is False
    assert f"no complete request within {READ_TIMEOUT:g} s" in ans["error"]
    assert READ_TIMEOUT * 0.8 <= elapsed <= READ_TIMEOUT + 2
    serves_a_good_client(server)


def test_trickling_client_is_cut_at_the_read_timeout(server: ServerProcess) -> None:
    """One byte at a time keeps each read short: the bound is on the whole line."""
    sock, reader, _ = raw_connect(server)
    with sock:
        t0 = time.monotonic()
        for _ in range(int(READ_TIMEOUT / 0.1) + 10):
            try:
                sock.sendall(b" ")
            except OSError:
                break
            if time.monotonic() - t0 > READ_TIMEOUT + 0.5:
                break
            time.sleep(0.1)
        ans = answer_or_close(sock, reader)
    assert ans is not None and "no complete request" in ans["error"]
    serves_a_good_client(server)


def test_too_many_clients_get_busy(server: ServerProcess) -> None:
    held = [raw_connect(server) for _ in range(MAX_CLIENTS)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with extra:
            ans = P.LineReader(extra).read_json(P.MAX_ANSWER, 5, "greeting")
            assert ans["ok"] is False and "busy" in ans["error"], ans
            assert extra.recv(1) == b""
    finally:
        for s, _, _ in held:
            s.close()
    serves_a_good_client(server)


def test_data_connection_from_a_stranger_is_dropped(server: ServerProcess) -> None:
    sock, reader, greeting = raw_connect(server)
    with sock:
        sock.sendall(P.encode({**GOOD_CASE, "auth": P.auth_digest(TOKEN, greeting["nonce"])}))
        ans = reader.read_json(P.MAX_ANSWER, 5, "answer")
        assert ans["ok"] is True
        stranger = socket.socket()
        with stranger:
            stranger.bind(("127.0.0.2", 0))  # loopback, but not the client's address
            stranger.settimeout(5)
            stranger.connect(("127.0.0.1", ans["port"]))
            assert stranger.recv(1) == b""  # accepted, then closed by the server
            mine = socket.create_connection(("127.0.0.1", ans["port"]), timeout=5)
            with mine:
                assert reader.read_json(P.MAX_ANSWER, 5, "answer") == {"ok": True,
                                                                     "ready": True}
    serves_a_good_client(server)


def test_client_vanishing_mid_case(server: ServerProcess) -> None:
    for transport in ("tcp4", "udp4"):
        key = CaseKey("stream", transport, "blocking", 1024, IMPL)
        sock, peer = _remote.open_case(f"127.0.0.1:{server.port}", key, token=TOKEN)
        if transport == "tcp4":
            peer.order(b"R", 1 << 40)  # and never send it
        else:
            peer.order(b"G", 1 << 30)
            assert peer.answer(5, expect=b"A") == 0
        sock.close()
        peer.ctl.close()  # gone without Q
    serves_a_good_client(server)


def test_no_data_connection_within_the_bound(server: ServerProcess) -> None:
    from bench.remote.session import ACCEPT_TIMEOUT

    sock, reader, greeting = raw_connect(server)
    with sock:
        sock.sendall(P.encode({**GOOD_CASE, "auth": P.auth_digest(TOKEN, greeting["nonce"])}))
        assert reader.read_json(P.MAX_ANSWER, 5, "answer")["ok"] is True
        ans = answer_or_close(sock, reader, within=ACCEPT_TIMEOUT + 5)
    assert ans is not None and "no data connection within" in ans["error"]
    serves_a_good_client(server)


# ------------------------------------------------------------ run --remote


def test_run_remote_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "remote.json"
    res = run_bench(["run", "--remote", server.address, "--scenario", "stream,pingpong",
                     "--transport", "tcp4,udp4", "--mode", "blocking", "--size", "64",
                     "--impl", IMPL, *TINY, "-o", str(out)],
                    extra_env={"FASTSOCK_TOKEN": TOKEN})
    assert res.returncode == 0, res.stdout + res.stderr
    report = load_report(str(out))
    names = sorted(c.name for c in report.cases)
    # the default preset's batch 32 at 64 B: a batched UDP sender, compiled
    batched = ["stream/udp4/blocking/64/cython/batch32"] if IMPL == "cython" else []
    assert names == sorted([f"{s}/{t}/blocking/64/{IMPL}" for s in ("stream", "pingpong")
                            for t in ("tcp4", "udp4")] + batched)
    for case in report.cases:
        meta = case.metadata
        if (case.key.scenario, case.key.transport) == ("stream", "udp4"):
            # the server says how it receives (recvmmsg where it is compiled)
            assert meta["peer_batch"] == (64 if meta["peer_impl"] == "cython" else 1)
        else:
            assert "peer_batch" not in meta
        assert meta["remote_address"] == server.address
        assert meta["remote_protocol"] == P.PROTOCOL
        assert meta["remote_cpu_count"] >= 1
        for key in ("remote_kernel", "remote_cpu_model_name", "remote_fastsock_loaded",
                    "remote_hostname", "remote_python_version"):
            assert isinstance(meta[key], str) and meta[key], key
        assert "cpu_model_name" in meta  # this end's, beside the server's
    assert "case stream/tcp4/blocking/64 started" in server.stderr()


def test_run_remote_token_option_reaches_the_workers(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "token.json"
    res = run_bench(["run", "--remote", server.address, "--token", TOKEN, "--scenario",
                     "stream", "--transport", "udp4", "--mode", "nonblocking", "--size", "512",
                     "--impl", IMPL, *TINY, "-o", str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert load_report(str(out)).cases[0].metadata["remote_address"] == server.address


def test_run_remote_default_selection_skips_unix_once(open_server: ServerProcess) -> None:
    res = run_bench(["run", "--remote", f"localhost:{open_server.port}", "--quick", "--list",
                     "--impl", IMPL])
    assert res.returncode == 0, res.stderr
    listed = res.stdout.split()
    assert listed and all(n.split("/")[1] in ("tcp4", "udp4") for n in listed), listed
    assert {n.split("/")[1] for n in listed} == {"tcp4", "udp4"}
    assert res.stderr.count("skipping unix-stream, unix-dgram") == 1, res.stderr
    assert "the server's address is IPv4" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["--transport", "unix-stream"], "run on one host only"),
    (["--transport", "tcp6"], "needs an IPv6 server address"),
    (["--transport", "tcp4", "--size", "128k"], "exceeds the limit of the server"),
])
def test_run_remote_refuses_what_cannot_run(server: ServerProcess, args: list[str],
                                            words: str) -> None:
    res = run_bench(["run", "--remote", server.address, "--quick", "--list", *args],
                    extra_env={"FASTSOCK_TOKEN": TOKEN})
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("fastsock-bench run: error:") and words in lines[-1], lines
    assert "Traceback" not in res.stderr


def test_run_remote_unreachable_or_unauthorised(server: ServerProcess) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    for remote, extra, words in (
        (f"127.0.0.1:{dead}", {}, "cannot reach a fastsock server"),
        ("127.0.0.1:notaport", {}, "bad port"),
        (server.address, {}, "needs a token"),
        (server.address, {"FASTSOCK_TOKEN": "wrong"}, "unauthorised: wrong token"),
    ):
        res = run_bench(["run", "--remote", remote, "--quick", "--list"], extra_env=extra)
        assert res.returncode == 2, (remote, res.stdout + res.stderr)
        err = res.stderr.strip()
        assert "\n" not in err and words in err and "Traceback" not in err, err
    serves_a_good_client(server)


def test_serve_refuses_bad_options() -> None:
    for args, words in ((["--listen", "127.0.0.1:x"], "bad port"),
                        (["--max-clients", "0"], "--max-clients"),
                        (["--max-size", "1G"], "--max-size"),
                        (["--max-size", "1024M"], "--max-size must be at most"),
                        (["--read-timeout", "nan"], "--read-timeout"),
                        (["--listen", "192.0.2.1:0"], "cannot listen on")):
        res = run_bench(["serve", *args], timeout=30)
        assert res.returncode == 2, (args, res.stderr)
        err = res.stderr.strip()
        assert err.startswith("fastsock-bench serve: error:") and words in err, err
        assert "\n" not in err


def test_serve_stops_cleanly_with_a_case_running(tmp_path: Path) -> None:
    srv = ServerProcess(["--listen", "127.0.0.1:0"], tmp_path / "s.log")
    try:
        key = CaseKey("pingpong", "udp4", "blocking", 64, IMPL)
        sock, peer = _remote.open_case(f"127.0.0.1:{srv.port}", key, token="", watch=False)
    except BaseException:
        srv.stop()
        raise
    with sock:
        t0 = time.monotonic()
        status = srv.stop()
        assert status == 0, srv.stderr()
        assert time.monotonic() - t0 < 5
        peer.ctl.settimeout(5)
        while True:  # heartbeats (H frames), then the server's close
            chunk = peer.ctl.recv(4096)
            if not chunk:
                break
            assert set(chunk[::9]) == {ord("H")}, chunk
        peer.close()


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_run_remote_stalled_or_killed_server_fails_within_seconds(tmp_path: Path,
                                                                   how: str) -> None:
    """A datagram pingpong waits only on datagrams: a stopped server would
    cost LOSS_TIMEOUT per round, for minutes; its missing heartbeat (or, once
    killed, the refused datagrams) ends the case within seconds, in one line."""
    srv = ServerProcess(["--listen", "127.0.0.1:0"], tmp_path / "s.log")
    pid = srv.proc.pid
    out = tmp_path / "r.json"
    try:
        cmd = [sys.executable, "-m", "bench", "run", "--remote", srv.address, "--scenario",
               "pingpong", "--transport", "udp4", "--mode", "blocking", "--size", "64",
               "--impl", IMPL, "-p", "50", "-n", "3", "-w", "1", "--min-time", "0.3",
               "--no-html", "-o", str(out)]
        run = subprocess.Popen(cmd, cwd=HOME, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while "started" not in srv.stderr() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # inside the timed loop by now
            os.kill(pid, getattr(signal, how))
            t0 = time.monotonic()
            stdout, stderr = run.communicate(timeout=30)
            took = time.monotonic() - t0
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    finally:
        if how == "SIGSTOP":
            os.kill(pid, signal.SIGCONT)
        srv.stop()
    assert run.returncode == 1, stdout + stderr
    assert took < 10, f"{took:.1f} s to notice; {stderr}"
    failure = [line for line in stderr.splitlines() if "failed:" in line]
    assert failure and "Traceback" not in stderr, stderr
    if how == "SIGSTOP":
        assert "sent no heartbeat" in stderr, stderr


def test_run_remote_against_a_one_client_server(tmp_path: Path) -> None:
    """Worker processes follow each other: each must find the slot free (the
    server frees it before the client sees its case closed)."""
    srv = ServerProcess(["--listen", "127.0.0.1:0", "--max-clients", "1"], tmp_path / "one.log")
    try:
        res = run_bench(["run", "--remote", srv.address, "--scenario", "pingpong",
                         "--transport", "tcp4,udp4", "--mode", "blocking", "--size", "64",
                         "--impl", IMPL, "-p", "3", "-n", "1", "-w", "1", "--min-time", "0.001",
                         "--no-html", "-o", str(tmp_path / "one.json")])
        assert res.returncode == 0, res.stdout + res.stderr + srv.stderr()
        assert "busy" not in srv.stderr()
    finally:
        assert srv.stop() == 0


def test_a_remote_stream_with_nodelay_sets_it_on_the_sender(server: ServerProcess) -> None:
    """--nodelay on over --remote: the measured end has TCP_NODELAY, as a
    local pair's sender does (bench.run.ends.set_nodelay); off: Nagle."""
    for nodelay in (True, False):
        key = CaseKey("stream", "tcp4", "blocking", 4096, IMPL, nodelay=nodelay)
        sock, peer = _remote.open_case(f"127.0.0.1:{server.port}", key, token=TOKEN)
        with sock:
            assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is nodelay
        peer.close()
    serves_a_good_client(server)
