"""The case matrix (bench.run.matrix) and the run command's selection flags.

Design note: pure enumeration and parsing, no socket opened except the
probes the runner itself makes (``bench.run.transports.max_datagrams``,
``available``).  The run command's plan (``bench.cli.run.make_plan``) is
checked here too, since it is where the flags meet the matrix; the real CLI
in a subprocess is ``test_run_cli.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

import fastsock
from bench.analysis.report import CaseKey
from bench.cli import run as R
from bench.run import matrix as M
from bench.run import transports as T

# The largest datagrams the matrix is told about when it is tested alone
# (bytes): the real UDP bounds and a plausible Unix datagram bound.
MAX_DGRAM = {"udp4": 65507, "udp6": 65527, "unix-dgram": 65536}
POW4 = [64 * 4**k for k in range(8)]  # 64 B .. 1 MiB
KIB64 = 65536
MIB = 1 << 20


def all_cases(preset: str = "full", **sel: Any) -> list[CaseKey]:
    return M.cases(M.Selection(preset=preset, **sel), max_dgram=MAX_DGRAM)


def parse_name(name: str) -> CaseKey:
    """The grammar, read back: scenario/transport/mode/size/impl, then
    [/batchN][/sockbufN][/threadsN][/nodelay-on], each only off its default."""
    fields = name.split("/")
    scenario, transport, mode, size, impl = fields[:5]
    extra: dict[str, int] = {"batch": 1, "sockbuf": 0, "threads": 1}
    nodelay = False
    rest = fields[5:]
    for suffix in ("batch", "sockbuf", "threads"):
        if rest and rest[0].startswith(suffix):
            value = int(rest.pop(0)[len(suffix):])
            assert value != extra[suffix], name  # a default is never spelled out
            extra[suffix] = value
    if rest and rest[0] == "nodelay-on":
        rest.pop(0)
        nodelay = True
    assert not rest, name
    return CaseKey(scenario, transport, mode, int(size), impl, extra["batch"],
                   sockbuf=extra["sockbuf"], threads=extra["threads"], nodelay=nodelay)


def suffixes(key: CaseKey) -> list[str]:
    """The name's fields after impl, in the grammar's order."""
    return ([f"batch{key.batch}"] * (key.batch != 1) + [f"sockbuf{key.sockbuf}"] * bool(key.sockbuf)
            + [f"threads{key.threads}"] * (key.threads != 1) + ["nodelay-on"] * key.nodelay)


def plan(argv: list[str]) -> R.Plan:
    return R.make_plan(R.build_parser().parse_args(argv))


def sizes_of(cases: list[CaseKey], scenario: str, transport: str) -> list[int]:
    return sorted({c.size for c in cases if c.scenario == scenario and c.transport == transport})


def one_line_error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, repr(text)
    return text


# ------------------------------------------------------------ names


@pytest.mark.parametrize("preset", M.PRESETS)
def test_every_name_follows_the_grammar_and_round_trips(preset: str) -> None:
    cases = all_cases(preset)
    for key in cases:
        fields = key.name.split("/")
        assert fields == [key.scenario, key.transport, key.mode, str(key.size), key.impl,
                          *suffixes(key)]
        assert parse_name(key.name) == key
        assert key.scenario in M.SCENARIOS and key.transport in M.TRANSPORTS
        assert key.mode in M.MODES and key.impl in M.IMPLS
        assert key.size >= 1 if key.scenario != "connect" else key.size == M.CONNECT_SIZE
        assert 1 <= key.batch <= fastsock.MAX_BATCH
    assert len({k.name for k in cases}) == len(cases), "duplicate case names"


def test_metadata_carries_every_field_of_the_name() -> None:
    for key in all_cases("default"):
        meta = R.case_metadata(key)
        assert {f: meta[f] for f in ("scenario", "transport", "mode", "size", "impl")} == {
            "scenario": key.scenario, "transport": key.transport, "mode": key.mode,
            "size": key.size, "impl": key.impl,
        }
        assert isinstance(meta["size"], int)
        assert meta["batch"] == key.batch and isinstance(meta["batch"], int)
        for axis in ("sockbuf", "threads", "nodelay"):
            assert meta[axis] == getattr(key, axis) and isinstance(meta[axis], int)
        assert isinstance(meta["fastsock_schema"], int) and meta["fastsock_schema"] >= 1
        # the name is built from the metadata, never the other way round
        assert parse_name(key.name) == CaseKey(meta["scenario"], meta["transport"],
                                               meta["mode"], meta["size"], meta["impl"],
                                               meta["batch"], sockbuf=meta["sockbuf"],
                                               threads=meta["threads"],
                                               nodelay=bool(meta["nodelay"]))


def test_the_matrix_is_the_full_product() -> None:
    """For the scenarios with a peer; connect has its own rules (below)."""
    cases = [c for c in all_cases("quick") if c.scenario in M.PEER_SCENARIOS]
    plain = [c for c in cases if c.batch == 1]
    assert len(plain) == len(M.PEER_SCENARIOS) * len(M.TRANSPORTS) * len(M.MODES) * len(M.IMPLS)
    assert {(c.scenario, c.transport, c.mode, c.impl) for c in plain} == {
        (s, t, m, i) for s in M.PEER_SCENARIOS for t in M.TRANSPORTS for m in M.MODES
        for i in M.IMPLS
    }
    # plus the datagram stream cases at batch 32, compiled
    assert {(c.scenario, c.transport, c.mode, c.impl, c.batch) for c in cases
            if c.batch != 1} == {("stream", t, m, "cython", 32)
                                 for t in M.DGRAM_TRANSPORTS for m in M.MODES}


@pytest.mark.parametrize("impls", [("cython", "python"), ("python", "cython")])
def test_the_two_impls_of_a_case_are_adjacent(impls: tuple[str, ...]) -> None:
    cases = all_cases("full", impls=impls)
    plain = [k for k in cases if k.batch == 1]  # batch > 1: compiled only, alone
    assert len(plain) % 2 == 0
    pos = {k: i for i, k in enumerate(cases)}
    for k in plain:
        if k.impl == impls[0]:
            assert pos[k.other_impl(impls[1])] == pos[k] + 1


# ------------------------------------------------------------ presets


def test_quick_is_64_bytes_only() -> None:
    assert {c.size for c in all_cases("quick") if c.scenario != "connect"} == {64}


def test_default_sizes() -> None:
    cases = all_cases("default")
    for t in M.TRANSPORTS:
        assert sizes_of(cases, "pingpong", t) == [64]
        dgram = t in M.DGRAM_TRANSPORTS
        assert sizes_of(cases, "stream", t) == ([64, 16384] if dgram else [64, KIB64])


def test_full_stream_is_powers_of_4_from_64_b_to_1_mib() -> None:
    cases = all_cases("full")
    assert POW4[0] == 64 and POW4[-1] == MIB
    for t in ("tcp4", "tcp6", "unix-stream"):
        assert sizes_of(cases, "stream", t) == POW4
        assert sizes_of(cases, "pingpong", t) == [s for s in POW4 if s <= KIB64]


@pytest.mark.parametrize("transport", sorted(M.DGRAM_TRANSPORTS))
def test_full_datagrams_are_capped_at_the_transport_max(transport: str) -> None:
    top = MAX_DGRAM[transport]
    cases = all_cases("full")
    for scenario in M.PEER_SCENARIOS:  # the powers of 4 below the bound, then the bound
        assert sizes_of(cases, scenario, transport) == [s for s in POW4 if s < top] + [top]


def test_the_real_datagram_bounds() -> None:
    real = T.max_datagrams()
    assert real["udp4"] == 65507
    assert real["udp6"] == 65527
    assert 1 <= real["unix-dgram"] <= T.UNIX_DGRAM_CAP
    assert real["unix-dgram"] == T.unix_dgram_max()  # probed, stable


def test_full_preset_through_the_runner_uses_the_probed_bounds() -> None:
    p = plan(["--full", "--scenario", "stream", "--mode", "blocking", "--impl", "python"])
    real = T.max_datagrams()
    for t in ("udp4", "unix-dgram"):
        sizes = sizes_of(p.cases, "stream", t)
        assert sizes[-1] == real[t]
        assert sizes[:-1] == [s for s in POW4 if s < real[t]]
    assert sizes_of(p.cases, "stream", "udp4")[-1] == 65507
    assert sizes_of(p.cases, "stream", "tcp4") == POW4
    if "udp6" in T.available():
        assert sizes_of(p.cases, "stream", "udp6")[-1] == 65527


# ------------------------------------------------------------ parsing lists


def test_parse_list_comma_lists() -> None:
    assert M.parse_list("tcp4", M.TRANSPORTS, "transport") == ("tcp4",)
    assert M.parse_list("udp4,tcp4", M.TRANSPORTS, "transport") == ("udp4", "tcp4")
    assert M.parse_list(" tcp4 , unix-dgram ", M.TRANSPORTS, "transport") == ("tcp4", "unix-dgram")
    assert M.parse_list("spin,spin,blocking", M.MODES, "mode") == ("spin", "blocking")
    assert M.parse_list("all", M.MODES, "mode") == M.MODES
    assert M.parse_list("all", M.IMPLS, "impl") == M.IMPLS


@pytest.mark.parametrize("text, allowed, what, bad", [
    ("tcp5", M.TRANSPORTS, "transport", "tcp5"),
    ("tcp4,udp", M.TRANSPORTS, "transport", "udp"),
    ("TCP4", M.TRANSPORTS, "transport", "TCP4"),
    ("block", M.MODES, "mode", "block"),
    ("latency", M.SCENARIOS, "scenario", "latency"),
    ("pypy", M.IMPLS, "impl", "pypy"),
    ("all,tcp4", M.TRANSPORTS, "transport", "all"),
])
def test_parse_list_unknown_names(text: str, allowed: tuple[str, ...], what: str,
                                  bad: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.parse_list(text, allowed, what)
    msg = one_line_error(exc)
    assert f"unknown {what} {bad!r}" in msg
    assert ", ".join(allowed) in msg  # says what is allowed


@pytest.mark.parametrize("text", ["", ",", "tcp4,", ",tcp4", "tcp4,,udp4", " "])
def test_parse_list_empty_items(text: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.parse_list(text, M.TRANSPORTS, "transport")
    assert "empty item" in one_line_error(exc)


# ------------------------------------------------------------ parsing sizes


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("64", 64), (" 64 ", 64), ("4096", 4096), ("4k", 4096), ("4K", 4096),
    ("4KiB", 4096), ("4kb", 4096), ("64k", KIB64), ("1M", MIB), ("1m", MIB),
    ("1MiB", MIB), ("16MiB", 16 * MIB), ("65507", 65507),
])
def test_parse_size(text: str, value: int) -> None:
    assert M.parse_size(text) == value


@pytest.mark.parametrize("text, why", [
    ("0", "at least"), ("0k", "at least"), ("-5", "at least"), ("-1k", "at least"),
    ("abc", "not a number"), ("", "not a number"), ("k", "not a number"),
    ("1.5k", "not a number"), ("1e3", "not a number"), ("4x", "not a number"),
    ("0x40", "not a number"), ("64 bytes", "not a number"),
])
def test_parse_size_rejects(text: str, why: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.parse_size(text)
    msg = one_line_error(exc)
    assert why in msg and repr(text) in msg


def test_parse_sizes() -> None:
    assert M.parse_sizes("64") == (64,)
    assert M.parse_sizes("64,4k,1M") == (64, 4096, MIB)
    assert M.parse_sizes("4096,4k,64") == (4096, 64)  # duplicates dropped, order kept
    for bad in ("64,", ",64", "64,,4k", "64,abc", "64,0", "64,-5"):
        with pytest.raises(M.MatrixError) as exc:
            M.parse_sizes(bad)
        one_line_error(exc)


# ------------------------------------------------------------ sizes vs transports


@pytest.mark.parametrize("transport, ok, too_big", [
    ("udp4", 65507, 65508),
    ("udp6", 65527, 65528),
    ("unix-dgram", 65536, 65537),
])
def test_size_over_a_datagram_transports_max(transport: str, ok: int, too_big: int) -> None:
    sel: dict[str, Any] = {"transports": (transport,), "modes": ("blocking",)}
    cases = all_cases(sizes=(64, ok), **sel)
    assert {c.size for c in cases} == {64, ok}
    for size in (too_big, 70000, MIB):
        with pytest.raises(M.MatrixError) as exc:
            all_cases(sizes=(64, size), **sel)
        msg = one_line_error(exc)
        assert str(size) in msg and transport in msg and f"({ok} bytes)" in msg


def test_70000_is_refused_for_udp4_through_the_runner() -> None:
    with pytest.raises(M.MatrixError) as exc:
        plan(["--transport", "udp4", "--size", "70000"])
    assert "65507" in one_line_error(exc)


def test_stream_transports_take_large_sizes() -> None:
    cases = all_cases(transports=("tcp4", "unix-stream"), sizes=(MIB, M.MAX_STREAM_SIZE))
    assert {c.size for c in cases if c.scenario != "connect"} == {MIB, M.MAX_STREAM_SIZE}
    with pytest.raises(M.MatrixError) as exc:
        all_cases(transports=("tcp4",), sizes=(M.MAX_STREAM_SIZE + 1,))
    assert "largest message" in one_line_error(exc)


def test_a_size_applies_to_every_selected_transport() -> None:
    # 64 KiB fits tcp4 but not udp4: the whole selection is refused, not
    # silently trimmed
    with pytest.raises(M.MatrixError):
        all_cases(transports=("tcp4", "udp4"), sizes=(KIB64,))


# ------------------------------------------------------------ IPv6


NO_IPV6 = ["tcp4", "udp4", "unix-stream", "unix-dgram"]


def test_ipv6_transports_dropped_when_missing_unless_asked() -> None:
    sel = M.Selection(preset="quick")
    cases = M.cases(sel, max_dgram=MAX_DGRAM, available=NO_IPV6)
    assert {c.transport for c in cases} == set(NO_IPV6)
    # asked for explicitly: an error, one line, naming the transport
    for asked in (("tcp6",), ("tcp4", "udp6")):
        with pytest.raises(M.MatrixError) as exc:
            M.cases(M.Selection(transports=asked, preset="quick"), max_dgram=MAX_DGRAM,
                    available=NO_IPV6, explicit_transports=True)
        msg = one_line_error(exc)
        assert next(t for t in asked if t in M.IPV6_TRANSPORTS) in msg
    # explicitly asked, but only for what exists: fine
    ok = M.cases(M.Selection(transports=("tcp4",), preset="quick"), max_dgram=MAX_DGRAM,
                 available=NO_IPV6, explicit_transports=True)
    assert {c.transport for c in ok} == {"tcp4"}


def test_no_transport_at_all_is_an_error() -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.cases(M.Selection(preset="quick"), max_dgram=MAX_DGRAM, available=[])
    one_line_error(exc)


@pytest.fixture
def no_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "has_ipv6", lambda: False)


@pytest.mark.usefixtures("no_ipv6")
def test_runner_without_ipv6() -> None:
    assert "tcp6" not in T.available() and "udp6" not in T.available()
    default = plan(["--quick"])
    assert {c.transport for c in default.cases} == set(NO_IPV6)
    # `all` means every transport this machine has, not an explicit tcp6
    assert {c.transport for c in plan(["--quick", "--transport", "all"]).cases} == set(NO_IPV6)
    for argv in (["--transport", "tcp6"], ["--transport", "tcp4,udp6"]):
        with pytest.raises(M.MatrixError) as exc:
            plan(["--quick", *argv])
        assert "not available" in one_line_error(exc)


def test_runner_with_ipv6_where_there_is_one() -> None:
    if not T.has_ipv6():
        pytest.skip("no IPv6 on this machine")
    cases = plan(["--quick", "--scenario", "stream", "--mode", "blocking"]).cases
    assert {"tcp6", "udp6"} <= {c.transport for c in cases}


# ------------------------------------------------------------ the runner's plan


def test_plan_selection_flags() -> None:
    p = plan(["--scenario", "pingpong", "--transport", "udp4,tcp4", "--mode", "spin",
              "--size", "64,1k", "--impl", "python"])
    assert {(c.scenario, c.transport, c.mode, c.size, c.impl) for c in p.cases} == {
        ("pingpong", t, "spin", s, "python") for t in ("udp4", "tcp4") for s in (64, 1024)
    }
    # the order given is the order run
    assert [c.transport for c in p.cases][:2] == ["udp4", "udp4"]


def test_presets_are_exclusive() -> None:
    with pytest.raises(R.UsageError):
        R.build_parser().parse_args(["--quick", "--full"])
    with pytest.raises(R.UsageError):
        R.build_parser().parse_args(["--fast", "--rigorous"])


@pytest.mark.parametrize("argv", [
    [],
    ["--quick"],
    ["--full", "--transport", "udp4,unix-dgram", "--mode", "timeout"],
    ["--scenario", "pingpong", "--size", "4k,64", "--impl", "python,cython"],
    ["--quick", "--transport", "all", "--mode", "spin,blocking"],
])
def test_workers_enumerate_the_same_cases(argv: list[str]) -> None:
    """pyperf picks a worker's case by index: the worker, given only the
    forwarded flags and pyperf's own, must enumerate the same list."""
    main = plan(argv)
    worker_argv = ["--worker", "--pipe", "5", "--worker-task=3", "--values", "3",
                   "--min-time", "0.01", "--loops", "8", "--warmups", "1",
                   "--hook", "fastsock", *main.forward, "--quiet"]
    p = R._Parser(prog="w", allow_abbrev=False, add_help=False)
    R.add_selection_args(p)
    args, rest = p.parse_known_args(worker_argv)
    worker = R.make_plan(args)
    assert [k.name for k in worker.cases] == [k.name for k in main.cases]
    assert "--values" in rest and "--worker" in rest


def test_pyperf_knobs() -> None:
    def pargs(argv: list[str]) -> list[str]:
        return R.pyperf_args(R.build_parser().parse_args(argv))

    def last(opts: list[str], flag: str) -> str:  # pyperf: the last one wins
        return opts[len(opts) - 1 - opts[::-1].index(flag) + 1]

    assert last(pargs(["--quick"]), "--processes") == "1"
    assert int(last(pargs([]), "--processes")) >= 8  # compare's unit of analysis
    # a run with a base is a gate: more slots, unless -p says otherwise
    with_base = ["--base-python", "py"]
    assert last(pargs(with_base), "--processes") == str(R.GATE_PROCESSES)
    assert int(last(pargs([]), "--processes")) < R.GATE_PROCESSES
    assert last(pargs([*with_base, "-p", "5"]), "--processes") == "5"
    assert last(pargs([*with_base, "--quick"]), "--processes") == "1"
    small = pargs(["--quick", "-p", "1", "-n", "1", "-w", "0", "--min-time", "0.005"])
    assert [last(small, f) for f in ("--processes", "--values", "--warmups", "--min-time")] \
        == ["1", "1", "0", "0.005"]
    assert "FASTSOCK_PUREPYTHON" in last(small, "--inherit-environ").split(",")
    assert "--fast" in pargs(["--fast"]) and "--rigorous" in pargs(["--rigorous"])
    # fixed loops replace the preset's calibration target (default) and its
    # own fixed loops (quick): one of each reaches pyperf, never both
    for preset in ([], ["--quick"]):
        fixed = pargs([*preset, "--loops", "250"])
        assert fixed.count("--loops") == 1 and last(fixed, "--loops") == "250"
        assert "--min-time" not in fixed
    assert "--loops" not in pargs(["--quick", "--min-time", "0.1"])
    with pytest.raises(R.UsageError, match="not allowed with"):  # one line, exit 2
        R.build_parser().parse_args(["--loops", "5", "--min-time", "0.1"])
    for bad in (["-p", "0"], ["-n", "-1"], ["-w", "-1"], ["--min-time", "0"], ["--loops", "0"],
                ["--min-time", "nan"], ["--min-time", "inf"]):
        with pytest.raises(R.UsageError):
            pargs(bad)


def test_namespace_defaults() -> None:
    args = R.build_parser().parse_args([])
    assert isinstance(args, argparse.Namespace)
    assert args.preset == "default" and not args.list and args.output is None


# ------------------------------------------------------------ connect


def test_connect_modes_are_the_loops() -> None:
    from fastsock import _common

    assert M.CONNECT_MODES == _common.CONNECT_MODES
    assert set(M.CONNECT_MODES) < set(M.MODES)


@pytest.mark.parametrize("preset, modes", [
    ("quick", ("blocking",)), ("default", ("blocking",)), ("full", M.CONNECT_MODES)])
def test_connect_cases_per_preset(preset: str, modes: tuple[str, ...]) -> None:
    cases = [c for c in all_cases(preset) if c.scenario == "connect"]
    assert [c.name for c in cases] == [
        f"connect/{t}/{m}/0/{i}" for t in M.CONNECT_TRANSPORTS for m in modes for i in M.IMPLS]


def test_connect_ignores_sizes_and_skips_what_it_lacks_unless_named() -> None:
    # --size, --mode spin, datagram transports: not for connect, skipped
    sel = M.Selection(transports=("udp4", "tcp4"), modes=("spin", "nonblocking"), sizes=(4096,),
                      preset="quick")
    cases = M.cases(sel, max_dgram=MAX_DGRAM, explicit_modes=True, explicit_transports=True)
    connect = [c for c in cases if c.scenario == "connect"]
    assert [c.name for c in connect] == ["connect/tcp4/nonblocking/0/cython",
                                        "connect/tcp4/nonblocking/0/python"]
    assert {c.size for c in cases if c.scenario != "connect"} == {4096}
    assert plan(["--scenario", "connect", "--size", "1M", "--transport", "unix-stream"]
                ).cases[0].name == "connect/unix-stream/blocking/0/cython"


@pytest.mark.parametrize("argv, says", [
    (["--scenario", "connect", "--mode", "spin"],
     "mode spin does not apply to scenario connect (its modes: blocking, timeout, nonblocking)"),
    (["--scenario", "stream,connect", "--mode", "blocking,spin"], "mode spin does not apply"),
    (["--scenario", "connect", "--transport", "tcp4,udp4"],
     "transport udp4 does not apply to scenario connect (its transports: tcp4, tcp6, unix-stream)"),
])
def test_connect_named_with_what_it_lacks_is_an_error(argv: list[str], says: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        plan(argv)
    assert one_line_error(exc) == says or says in one_line_error(exc)


def test_connect_is_not_for_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.remote import client as _remote
    monkeypatch.setattr(_remote, "transports", lambda remote, requested: ["tcp4", "udp4"])
    cases = plan(["--quick", "--remote", "127.0.0.1:9"]).cases
    assert cases and "connect" not in {c.scenario for c in cases}
    with pytest.raises(M.MatrixError) as exc:
        plan(["--quick", "--scenario", "connect", "--remote", "127.0.0.1:9"])
    assert one_line_error(exc) == "connect cases run on one host only: not with --remote"


def test_a_server_refuses_a_connect_case() -> None:
    from bench.remote import protocol as P
    with pytest.raises(P.ProtocolError) as exc:
        P.check_request({"fastsock": P.PROTOCOL, "op": "case", "scenario": "connect",
                         "transport": "tcp4", "mode": "blocking", "size": 1}, 1 << 20)
    assert "scenario 'connect' is not one of: stream, pingpong" in str(exc.value)


def test_connect_cases_only_for_the_twins() -> None:
    """Event-loop impls have no connect loop: a selection naming them with
    the twins gets connect cases for the twins only."""
    sel = M.Selection(scenarios=("connect",), impls=M.ALL_IMPLS, preset="full")
    cases = M.cases(sel, max_dgram={})
    assert cases
    assert {c.impl for c in cases} == set(M.IMPLS)


# ------------------------------------------------------------ batch


def batches_of(cases: list[CaseKey], transport: str, mode: str, size: int,
               scenario: str = "stream") -> dict[str, list[int]]:
    """{impl: batches} of one (scenario, transport, mode, size)."""
    out: dict[str, list[int]] = {}
    for c in cases:
        if (c.scenario, c.transport, c.mode, c.size) == (scenario, transport, mode, size):
            out.setdefault(c.impl, []).append(c.batch)
    return out


@pytest.mark.parametrize("preset", ["quick", "default"])
def test_quick_and_default_add_batch_32_at_64_bytes_compiled_only(preset: str) -> None:
    cases = all_cases(preset)
    for t in M.TRANSPORTS:
        for mode in M.MODES:
            want = {"cython": [1, 32], "python": [1]} if t in M.DGRAM_TRANSPORTS else \
                {"cython": [1], "python": [1]}
            assert batches_of(cases, t, mode, 64) == want, (t, mode)
            assert batches_of(cases, t, mode, 64, "pingpong") == {"cython": [1], "python": [1]}
    # the other sizes stay as they were
    assert {c.batch for c in cases if c.size != 64} <= {1}


def test_default_preset_count() -> None:
    cases = all_cases("default")  # every transport: the preset's own are make_plan's
    # stream 6 x 4 x 2 x 2, pingpong 6 x 4 x 2, connect 3 transports x 2 twins
    assert len([c for c in cases if c.batch == 1]) == 96 + 48 + 6
    assert len([c for c in cases if c.batch != 1]) == 3 * 4  # dgram transports x modes


def test_the_default_run_leaves_ipv6_out_unless_named() -> None:
    assert set(M.PRESET_TRANSPORTS["default"]) == set(M.TRANSPORTS) - M.IPV6_TRANSPORTS
    assert M.PRESET_TRANSPORTS["quick"] == M.PRESET_TRANSPORTS["full"] == M.TRANSPORTS
    default = plan([]).cases
    assert default and not {c.transport for c in default} & M.IPV6_TRANSPORTS
    assert {c.transport for c in plan(["--quick"]).cases} >= M.IPV6_TRANSPORTS & set(
        T.available())
    if "tcp6" in T.available():
        assert {c.transport for c in plan(["--transport", "tcp6,udp6"]).cases} == {"tcp6", "udp6"}
    else:  # no IPv6 here: naming it is the usual error
        with pytest.raises(M.MatrixError):
            plan(["--transport", "tcp6,udp6"])


def test_full_batches_datagram_stream_up_to_16_kib() -> None:
    cases = all_cases("full")
    for t in sorted(M.DGRAM_TRANSPORTS):
        for mode in M.MODES:
            for size in sizes_of(cases, "stream", t):
                want = [1, 8, 32] if size <= M.FULL_BATCH_UP_TO else [1]
                assert batches_of(cases, t, mode, size) == {"cython": want, "python": [1]}
    assert M.FULL_BATCH_UP_TO == 16384
    assert {c.batch for c in cases if c.scenario == "pingpong"} == {1}
    assert {c.batch for c in cases if c.transport not in M.DGRAM_TRANSPORTS} == {1}


def test_batch_cases_are_compiled_only_and_follow_batch_1() -> None:
    cases = all_cases("default", impls=("python", "cython"))
    for i, k in enumerate(cases):
        if k.batch != 1:
            assert k.impl == "cython"
            before = cases[i - 1]
            assert (before.scenario, before.transport, before.mode, before.size) == \
                (k.scenario, k.transport, k.mode, k.size) and before.batch < k.batch


def test_explicit_batches_replace_the_presets() -> None:
    cases = all_cases("default", batches=(1, 8), transports=("udp4", "tcp4"),
                      modes=("spin",))
    assert batches_of(cases, "udp4", "spin", 64) == {"cython": [1, 8], "python": [1]}
    assert batches_of(cases, "udp4", "spin", 16384) == {"cython": [1, 8], "python": [1]}
    assert batches_of(cases, "tcp4", "spin", 64) == {"cython": [1], "python": [1]}
    only = all_cases("default", batches=(32,), transports=("unix-dgram",), sizes=(64,),
                     scenarios=("stream", "pingpong"))
    assert {(c.scenario, c.impl, c.batch) for c in only} == {
        ("stream", "cython", 32), ("pingpong", "cython", 1), ("pingpong", "python", 1)}
    assert [c.batch for c in all_cases("quick", batches=(1,)) if c.batch != 1] == []


def test_batch_with_python_only_is_one_line_about_sendmmsg() -> None:
    for batches in ((8,), (1, 8)):
        with pytest.raises(M.MatrixError) as exc:
            all_cases("quick", batches=batches, impls=("python",))
        msg = one_line_error(exc)
        assert "--batch" in msg and "sendmmsg" in msg and "Python" in msg
    # batch 1 is every twin's; the presets' batches simply skip Python
    assert {c.impl for c in all_cases("quick", batches=(1,), impls=("python",))} == {"python"}
    assert {c.batch for c in all_cases("default", impls=("python",))} == {1}


def test_batch_without_a_datagram_stream_case_is_an_error() -> None:
    for sel in ({"transports": ("tcp4", "unix-stream")}, {"scenarios": ("pingpong",)}):
        with pytest.raises(M.MatrixError) as exc:
            all_cases("quick", batches=(8,), **sel)
        assert "datagram stream" in one_line_error(exc)


def test_without_batching_presets_drop_batches_and_asking_is_an_error() -> None:
    sel = M.Selection(preset="default")
    cases = M.cases(sel, max_dgram=MAX_DGRAM, batching=False)
    assert {c.batch for c in cases} == {1} and len(cases) == 96 + 48 + 6
    with pytest.raises(M.MatrixError) as exc:
        M.cases(M.Selection(preset="quick", batches=(1, 32)), max_dgram=MAX_DGRAM,
                batching=False)
    assert "Linux" in one_line_error(exc)
    ok = M.cases(M.Selection(preset="quick", batches=(1,)), max_dgram=MAX_DGRAM,
                 batching=False)
    assert {c.batch for c in ok} == {1}


@pytest.mark.parametrize("text, value", [
    ("1", (1,)), ("32", (32,)), ("1,8,32", (1, 8, 32)), (" 8 , 1 ", (8, 1)),
    ("8,8,1", (8, 1)), ("1024", (1024,)),
])
def test_parse_batches(text: str, value: tuple[int, ...]) -> None:
    assert M.parse_batches(text) == value


@pytest.mark.parametrize("text, why", [
    ("0", "1 to 1024"), ("-1", "1 to 1024"), ("1025", "1 to 1024"), ("x", "whole number"),
    ("1.5", "whole number"), ("8k", "whole number"), ("", "empty item"), ("1,", "empty item"),
    ("1,,8", "empty item"),
])
def test_parse_batches_rejects(text: str, why: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.parse_batches(text)
    assert why in one_line_error(exc)


def test_batch_flag_through_the_runner() -> None:
    p = plan(["--scenario", "stream", "--transport", "udp4,unix-dgram", "--mode", "blocking",
              "--size", "64", "--batch", "1,32"])
    assert [c.name for c in p.cases] == [
        "stream/udp4/blocking/64/cython", "stream/udp4/blocking/64/python",
        "stream/udp4/blocking/64/cython/batch32",
        "stream/unix-dgram/blocking/64/cython", "stream/unix-dgram/blocking/64/python",
        "stream/unix-dgram/blocking/64/cython/batch32",
    ]
    assert p.forward[p.forward.index("--batch") + 1] == "1,32"
    with pytest.raises(M.MatrixError) as exc:
        plan(["--batch", "8", "--impl", "python"])
    assert "sendmmsg" in one_line_error(exc)


@pytest.mark.parametrize("argv", [
    ["--batch", "1,8", "--transport", "udp4,tcp4"],
    ["--full", "--batch", "32", "--transport", "unix-dgram"],
])
def test_workers_enumerate_the_same_batched_cases(argv: list[str]) -> None:
    test_workers_enumerate_the_same_cases(argv)
