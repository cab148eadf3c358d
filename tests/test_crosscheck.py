"""``fastsock-bench crosscheck``: parsing the C tools, rendering, the CLI.

The fixtures are real output of iperf3 3.12 (``-J``) and sockperf 3.7
captured on the development machine (2 vCPUs, loaded), trimmed to what the
parsers read.  The end-to-end test runs the real tools for 1 s and skips,
saying why, where they are not installed (CI installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.crosscheck import check as X
from bench.crosscheck import tools as XT

# The tree whose bench (and so fastsock) this test imported: in CI the
# installed package, whose compiled loops the source tree does not have.
REPO = Path(X.__file__).resolve().parents[2]

# iperf3 -c 127.0.0.1 -l 64K -N -A 1,0 -t 2 -J (start and end sums only)
IPERF3_TCP = """{"start": {"version": "iperf 3.12", "test_start": {"protocol": "TCP",
 "num_streams": 1, "blksize": 65536, "omit": 0, "duration": 2, "bytes": 0, "blocks": 0,
 "reverse": 0, "tos": 0, "target_bitrate": 0}}, "end": {"sum_sent": {"start": 0,
 "end": 2.000105, "seconds": 2.000105, "bytes": 4062576640,
 "bits_per_second": 16249453463.693155, "retransmits": 167, "sender": true},
 "sum_received": {"start": 0, "end": 2.000147, "seconds": 2.000147, "bytes": 4062576640,
 "bits_per_second": 16249112250.249605, "sender": true}}}"""

# iperf3 -c 127.0.0.1 -l 64K -N -A 1,0 -t 1 -i 0.1 -J: 4 of its 10 intervals
IPERF3_TCP_INTERVALS = """{"start": {"version": "iperf 3.12"}, "intervals": [
 {"sum": {"start": 0, "end": 0.100095, "seconds": 0.1000949963927269, "bytes": 173015040}},
 {"sum": {"start": 0.100095, "end": 0.200101, "seconds": 0.10000599920749664,
  "bytes": 138936320}},
 {"sum": {"start": 0.800161, "end": 0.900079, "seconds": 0.09991800040006638,
  "bytes": 138936320}},
 {"sum": {"start": 0.900079, "end": 1.002006, "seconds": 0.10192699730396271,
  "bytes": 129761280}}],
 "end": {"sum_sent": {"seconds": 1.006065, "bytes": 1393950720, "retransmits": 0},
 "sum_received": {"start": 0, "end": 1.006065, "seconds": 1.006065, "bytes": 1393950720,
 "bits_per_second": 11084379001.356771, "sender": true}}}"""

# iperf3 -c 127.0.0.1 -u -b 0 -l 1472 -A 1,0 -t 2 -J: the sender offered
# 227 MB/s, the receiver got 66 MB/s (70.8% lost)
IPERF3_UDP = """{"start": {"version": "iperf 3.12", "test_start": {"protocol": "UDP",
 "num_streams": 1, "blksize": 1472, "omit": 0, "duration": 2}}, "end": {"sum": {"start": 0,
 "end": 2.000115, "seconds": 2.000115, "bytes": 455319040,
 "bits_per_second": 1821236092.8059583, "jitter_ms": 0.0023066446024297316,
 "lost_packets": 219112, "packets": 309320, "lost_percent": 70.83667399456873,
 "sender": true}, "sum_sent": {"start": 0, "end": 2.000044, "seconds": 2.000044,
 "bytes": 455319040, "bits_per_second": 1821236092.8059583, "jitter_ms": 0,
 "lost_packets": 0, "packets": 309320, "lost_percent": 0, "sender": true},
 "sum_received": {"start": 0, "end": 2.000115, "seconds": 2.000115, "bytes": 132786176,
 "bits_per_second": 531114164.9355162, "jitter_ms": 0.0023066446024297316,
 "lost_packets": 219112, "packets": 309320, "lost_percent": 70.83667399456873,
 "sender": false}}}"""

# what iperf3 -J prints when no server listens (exit status 1)
IPERF3_ERROR = """{"start": {"connected": [], "version": "iperf 3.12"}, "intervals": [],
 "end": {}, "error": "unable to connect to server: Connection refused"}"""

# sockperf pp --tcp -i 127.0.0.1 -p 5303 -m 64 -t 2 --full-rtt (stdout + stderr,
# colour codes kept)
SOCKPERF_TCP = """\
sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT =  5303 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=18874; ReceivedMessages=18873
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.544 sec; SentMessages=14422; ReceivedMessages=14422
sockperf: \x1b[2;35m====> avg-rtt=106.948 (std-dev=694.395)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Round trip is 106.948 usec
sockperf: \x1b[2;35mTotal 14422 observations\x1b[0m; each percentile contains 144.22 observations
sockperf: ---> <MAX> observation = 14857.351
sockperf: ---> percentile 99.999 = 14857.351
sockperf: ---> percentile 99.990 = 13765.071
sockperf: ---> percentile 99.900 = 9005.779
sockperf: ---> percentile 99.000 = 3964.201
sockperf: ---> percentile 90.000 =   32.100
sockperf: ---> percentile 75.000 =   21.938
sockperf: ---> percentile 50.000 =   19.190
sockperf: ---> percentile 25.000 =   17.521
sockperf: ---> <MIN> observation =   13.635
"""

# sockperf pp -i 127.0.0.1 -p 5320 -m 64 -t 1 (UDP, no --full-rtt: half RTTs)
SOCKPERF_UDP_HALF = """\
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=44674; ReceivedMessages=44674
sockperf: \x1b[2;35m====> avg-latency=6.129 (std-dev=59.508)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 6.129 usec
sockperf: ---> percentile 99.000 =   18.198
sockperf: ---> percentile 90.000 =    5.273
sockperf: ---> percentile 50.000 =    3.636
"""


# ------------------------------------------------------------ parsing


def test_iperf3_tcp_is_the_receivers_rate_in_mb() -> None:
    fig = XT.parse_iperf3(IPERF3_TCP, udp=False)
    assert fig.value == pytest.approx(4062576640 / 2.000147 / 1e6)  # MB = 10^6 B
    assert fig.extra["retransmits"] == 167
    assert fig.loss is None


def test_iperf3_tcp_intervals_are_the_short_windows() -> None:
    fig = XT.parse_iperf3(IPERF3_TCP_INTERVALS, udp=False)
    assert fig.extra["windows"] == pytest.approx(
        [173015040 / 0.1000949963927269 / 1e6, 138936320 / 0.10000599920749664 / 1e6,
         138936320 / 0.09991800040006638 / 1e6, 129761280 / 0.10192699730396271 / 1e6])
    doc = json.loads(IPERF3_TCP_INTERVALS)
    doc["intervals"][-1]["sum"]["seconds"] = 0.002  # a short last interval: dropped
    assert len(XT.parse_iperf3(json.dumps(doc), udp=False).extra["windows"]) == 3
    assert "windows" not in XT.parse_iperf3(IPERF3_TCP, udp=False).extra


def test_iperf3_udp_is_delivered_not_sent() -> None:
    fig = XT.parse_iperf3(IPERF3_UDP, udp=True)
    assert fig.value == pytest.approx(132786176 / 2.000115 / 1e6)
    assert fig.extra["sent_mbps"] == pytest.approx(455319040 / 2.000044 / 1e6)
    assert fig.loss == pytest.approx(219112 / 309320)


def test_iperf3_udp_without_sum_received_derives_delivery() -> None:
    doc = json.loads(IPERF3_UDP)
    del doc["end"]["sum_received"], doc["end"]["sum_sent"]  # iperf3 < 3.11
    fig = XT.parse_iperf3(json.dumps(doc), udp=True)
    assert fig.value == pytest.approx(455319040 * (1 - 219112 / 309320) / 2.000115 / 1e6)


def test_iperf3_udp_cpu_is_per_delivered_byte() -> None:
    """The CPU columns divide by what was delivered, for UDP as for TCP."""
    fig = XT.parse_iperf3(IPERF3_UDP, udp=True)
    assert fig.extra["work"] == pytest.approx(132786176)
    fig.extra.update(cpu_client=2.0, cpu_server=1.0)
    assert X.cpu_per_unit(fig, "client") == pytest.approx(2.0 / 132786176)


@pytest.mark.parametrize("text, message", [
    (IPERF3_ERROR, "iperf3: unable to connect to server: Connection refused"),
    ("iperf3: error - unable to connect", "no JSON"),
    ('{"start": {}, "end": {}}', "lacks the end-of-test sums"),
    ("[1, 2]", "unexpected JSON"),
])
def test_iperf3_bad_output_is_one_line(text: str, message: str) -> None:
    with pytest.raises(XT.CrosscheckError, match=message) as info:
        XT.parse_iperf3(text, udp=False)
    assert "\n" not in str(info.value)


def test_sockperf_full_rtt() -> None:
    fig = XT.parse_sockperf(SOCKPERF_TCP)
    assert fig.value == pytest.approx(106.948e-6)
    assert fig.p50 == pytest.approx(19.190e-6)
    assert fig.p99 == pytest.approx(3964.201e-6)
    assert fig.loss == 0
    # work: every round trip of the run (warm-up included), what its CPU time paid for
    assert fig.extra == {"round_trips": 14422, "full_rtt": True, "work": 18873.0}


def test_sockperf_half_rtt_is_doubled() -> None:
    fig = XT.parse_sockperf(SOCKPERF_UDP_HALF)
    assert fig.value == pytest.approx(2 * 6.129e-6)
    assert fig.p50 == pytest.approx(2 * 3.636e-6)
    assert fig.extra["full_rtt"] is False


def test_sockperf_counts_dropped_messages_as_loss() -> None:
    text = SOCKPERF_UDP_HALF.replace("# dropped messages = 0", "# dropped messages = 446")
    assert XT.parse_sockperf(text).loss == pytest.approx(446 / 44674)


def test_sockperf_without_figures_is_an_error() -> None:
    with pytest.raises(XT.CrosscheckError, match="no average: sockperf: ERROR: connect"):
        XT.parse_sockperf("sockperf: ERROR: connect() failed\n")


# ------------------------------------------------------------ rendering


def _result() -> X.Result:
    by = {w.name: w for w in XT.WORKLOADS}
    rows = [
        X.Row(by["tcp-stream"], [XT.Figure(2000.0), XT.Figure(2100.0), XT.Figure(1900.0)],
              [XT.Figure(1800.0), XT.Figure(1850.0), XT.Figure(1700.0)], command="iperf3 -c ..."),
        X.Row(by["tcp-pingpong"], [XT.Figure(20e-6, p50=19e-6, loss=0.0)],
              [XT.Figure(20.5e-6, p50=19.5e-6)], command="sockperf pp ..."),
        X.Row(by["udp-stream"], [XT.Figure(300.0, loss=0.5)], [], error="iperf3: boom"),
    ]
    return X.Result(rows, ["udp-pingpong: sockperf is not installed"], 2.0, 3, 4, (1, 0),
                    (0.5, 0.6, 0.7), (0.8, 0.9, 1.0))


def test_table_shows_medians_ratio_flag_and_units() -> None:
    text = X.render_table(_result())
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln and not ln.startswith(" ")}
    stream = lines["tcp-stream"]
    assert "2,000.0 MB/s" in stream and "1,800.0 MB/s" in stream  # medians
    # the median of the pairs' ratios (0.900, 0.881, 0.895), not of the medians' ratio
    assert "0.895" in stream and "DISAGREE >5%" in stream
    assert " 10%" in stream  # spread: tool runs 1900..2100 around 2000
    ping = lines["tcp-pingpong"]
    assert "20.00 µs" in ping and "20.50 µs" in ping and "1.025" in ping and " ok " in ping
    assert "p50 19.00/19.50 µs" in ping
    assert "ERROR" in lines["udp-stream"] and "iperf3: boom" in lines["udp-stream"]
    assert "load average 0.50/0.60/0.70 before, 0.80/0.90/1.00 after" in text
    assert "MB = 10^6 B" in text
    assert "skipped udp-pingpong: sockperf is not installed" in text


def test_verdict_needs_every_pair_off_the_same_way() -> None:
    w = XT.WORKLOADS[0]

    def row(tool: list[float], suite: list[float]) -> X.Row:
        return X.Row(w, [XT.Figure(v) for v in tool], [XT.Figure(v) for v in suite])

    assert row([100, 100, 100], [103, 98, 104]).verdict() == "ok"
    assert row([100, 100, 100], [120, 110, 130]).verdict() == "disagree"
    assert row([100, 100, 100], [80, 90, 70]).verdict() == "disagree"
    # medians 100 vs 120, but one pair agrees: the load moved both sides
    assert row([100, 200, 100], [120, 190, 125]).verdict() == "noisy"
    assert row([], []).verdict() is None
    assert row([100, 200], [120, 190]).paired() == [1.2, 0.95]


def test_window_quantile_pools_the_runs() -> None:
    w = XT.WORKLOADS[0]
    row = X.Row(w, [XT.Figure(1.0, extra={"windows": [float(v) for v in range(50)]}),
                    XT.Figure(1.0, extra={"windows": [float(v) for v in range(50, 101)]})],
                [XT.Figure(1.0, extra={"windows": [10.0, 20.0]})])
    assert row.window_q("tool") == pytest.approx(90.0)  # q90 of 0..100
    assert row.window_q("suite") == pytest.approx(19.0)
    assert X.Row(w).window_q("tool") is None
    res = _result()
    res.rows = [row]
    assert "q90 of windows 90/19 MB/s (0.21x)" in X.render_table(res)
    assert json.loads(X.render_json(res))["rows"][0]["tool_window_q"] == pytest.approx(90.0)


def test_a_loaded_machine_is_said() -> None:
    res = _result()
    assert "warning" not in X.render_table(res)
    res.load_after = (9.0, 1.0, 1.0)
    assert "warning: 1-minute load average up to 9.00" in X.render_table(res)


def test_json_has_the_figures_and_every_run() -> None:
    doc = json.loads(X.render_json(_result()))
    assert doc["threshold"] == 0.05 and doc["load_before"] == [0.5, 0.6, 0.7]
    row = doc["rows"][0]
    assert row["suite_case"] == "stream/tcp4/blocking/65536/cython/nodelay-on"
    assert row["unit"] == "MB/s" and row["tool_figure"] == 2000.0
    assert row["ratio"] == pytest.approx(1700 / 1900) and row["disagree"] is True
    assert row["verdict"] == "disagree" and len(row["paired"]) == 3
    assert row["spread"] == pytest.approx(max(200 / 2000, 150 / 1800))
    assert [r["value"] for r in row["tool_runs"]] == [2000.0, 2100.0, 1900.0]
    assert doc["rows"][1]["unit"] == "seconds" and doc["rows"][1]["disagree"] is False
    assert doc["rows"][2]["error"] == "iperf3: boom" and doc["rows"][2]["ratio"] is None
    assert doc["skipped"] == ["udp-pingpong: sockperf is not installed"]


def test_commands_are_the_documented_ones() -> None:
    by = {w.name: w for w in XT.WORKLOADS}
    server, client = XT.tool_command(by["tcp-stream"], 5201, 2, (1, 0))
    assert server == ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5201"]
    assert client[:2] == ["iperf3", "-c"] and "-N" in client and "-J" in client
    assert client[client.index("-l") + 1] == "65536" and client[-2:] == ["-A", "1,0"]
    assert client[client.index("-i") + 1] == "0.1"
    # iperf3's -N is TCP_NODELAY: the suite's case sets it too (the run
    # checks that the report's case is this one)
    assert by["tcp-stream"].case == "stream/tcp4/blocking/65536/cython/nodelay-on"
    _, udp = XT.tool_command(by["udp-stream"], 5201, 2, (None, None))
    assert udp[udp.index("-b") + 1] == "0" and "-u" in udp and "-A" not in udp
    server, client = XT.tool_command(by["tcp-pingpong"], 11111, 1, (1, 0))
    assert server == ["sockperf", "sr", "-i", "127.0.0.1", "-p", "11111", "--tcp"]
    assert client[-5:] == ["-m", "64", "-t", "1", "--full-rtt"]
    server, client = XT.tool_command(by["udp-pingpong-epoll"], 11111, 1, (1, 0), "feed")
    assert server == ["sockperf", "sr", "-f", "feed", "-F", "e", "--nonblocked"]


def test_a_missing_tool_skips_its_workloads(tmp_path: Path) -> None:
    res = X.crosscheck(XT.WORKLOADS, seconds=1, repeat=1, processes=1, path=str(tmp_path))
    assert res.rows == []
    assert len(res.skipped) == len(XT.WORKLOADS)
    assert "tcp-stream: iperf3 is not installed" in res.skipped


def _listener(port: int) -> list[str]:
    code = (f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); "
            "s.listen(); time.sleep(60)")
    return [sys.executable, "-c", code]


def test_a_server_is_stopped_when_the_block_ends() -> None:
    port = XT._free_port()
    with XT._Server(_listener(port), port, udp=False, cpu=None) as server:
        assert server.proc.poll() is None
    assert server.proc.poll() is not None  # stopped by pid, not left behind


def test_a_server_that_never_listens_is_an_error_and_stopped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(XT, "SERVER_START", 0.3)
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def spy(*a: object, **kw: object) -> subprocess.Popen[bytes]:
        started.append(real(*a, **kw))  # type: ignore[call-overload]
        return started[-1]

    monkeypatch.setattr(XT.subprocess, "Popen", spy)
    with pytest.raises(XT.CrosscheckError, match=r"did not listen within 0\.3 s"):
        XT._Server([sys.executable, "-c", "import time; time.sleep(60)"], XT._free_port(),
                  udp=False, cpu=None)
    assert started and started[0].poll() is not None


# ------------------------------------------------------------ the CLI


def _run(args: list[str], path: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if path is not None:
        env["PATH"] = path
    # cwd elsewhere: python -m puts the cwd first on sys.path
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "bench", "crosscheck", *args], cwd=cwd,
                              env=env, text=True, capture_output=True, timeout=timeout)


def test_no_tool_installed_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = _run([], path=str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert "neither iperf3 nor sockperf is installed" in res.stderr
    assert res.stdout == ""


def test_only_missing_tools_selected_is_exit_2(tmp_path: Path) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("needs iperf3 installed to hide sockperf alone")
    (tmp_path / "iperf3").symlink_to(shutil.which("iperf3"))  # type: ignore[arg-type]
    res = _run(["--workload", "tcp-pingpong"], path=str(tmp_path))
    assert res.returncode == 2 and "sockperf not installed" in res.stderr


@pytest.mark.parametrize("args", [["--workload", "tcp-nope"], ["-t", "0"], ["-r", "x"],
                                  ["--format", "html"], ["--placement", "nope"]])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    res = _run(args)
    assert res.returncode == 2 and "error" in res.stderr and "Traceback" not in res.stderr


def test_end_to_end_with_the_real_tools() -> None:
    missing = XT.missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install iperf3 sockperf)")
    import fastsock

    if fastsock.IMPLEMENTATION != "cython":
        pytest.skip("the compiled extension is not loaded: crosscheck compares compiled cases")
    res = _run(["-t", "1", "-r", "1", "-p", "1", "--format", "json",
                "--workload", "tcp-stream,udp-stream,tcp-pingpong-epoll"], timeout=240)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [r["workload"] for r in doc["rows"]] == ["tcp-stream", "udp-stream",
                                                    "tcp-pingpong-epoll"]
    for row in doc["rows"]:
        assert row["error"] is None
        assert row["tool_figure"] > 0 and row["suite_figure"] > 0 and row["ratio"] > 0
    assert 0 <= doc["rows"][1]["tool_loss"] < 1
    assert doc["rows"][0]["tool_window_q"] > 0 and doc["rows"][0]["suite_window_q"] > 0
    assert doc["rows"][2]["unit"] == "seconds" and doc["rows"][2]["tool_figure"] < 0.1


def test_placement_apart_pins_tool_and_suite_alike() -> None:
    """--placement apart: the tool gets two CPUs (iperf3 -A, sockperf's
    affinity) and the suite's run is asked the same placement, which its
    report then records; auto leaves a stream to the kernel."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to place apart")
    import fastsock

    if fastsock.IMPLEMENTATION != "cython":
        pytest.skip("the compiled extension is not loaded: crosscheck runs compiled cases")
    by = {w.name: w for w in XT.WORKLOADS}
    client, server = X.tool_cpus(by["tcp-stream"], "apart")
    assert client is not None and server is not None and client != server
    assert X.tool_cpus(by["tcp-stream"], "auto") == (None, None)
    fig = X.run_suite(by["tcp-stream"], 1, 120.0, "apart", seconds=0.5)
    assert fig.value > 0
    assert fig.extra["placement"] == "apart" and fig.extra["peer_cpu"] == str(server)
    # as long as the tool runs, in 0.1 s values: 5 of them for 0.5 s
    assert len(fig.extra["windows"]) == X.suite_values(0.5, 1) == 5
    assert X.run_suite(by["tcp-stream"], 1, 120.0, seconds=0.3).extra["placement"] == "os"
    # fixed loops reach the run: no calibration, the values are that long
    fixed = X.run_suite(by["tcp-stream"], 1, 120.0, seconds=0.3, loops=123)
    assert fixed.extra["loops"] == "123" and len(fixed.extra["windows"]) == 3


def test_window_loops_make_values_as_long_as_the_tools_intervals() -> None:
    by = {w.name: w for w in XT.WORKLOADS}
    # 2,000 MB/s of 64 KiB messages for 0.1 s; 1,000 of 1472 B datagrams
    assert X.window_loops(by["tcp-stream"], 2000.0) == round(2000e6 * 0.1 / 65536) == 3052
    assert X.window_loops(by["udp-stream"], 1000.0) == round(1000e6 * 0.1 / 1472)
    # a 25 µs round trip: 4,000 in 0.1 s; never fewer than one
    assert X.window_loops(by["tcp-pingpong"], 25e-6) == 4000
    assert X.window_loops(by["tcp-stream"], 1e-6) == 1


def test_the_suite_runs_as_long_as_the_tool() -> None:
    assert X.suite_values(2.0, 1) == 20  # iperf3 -t 2 -i 0.1: 20 windows
    assert X.suite_values(2.0, 4) == 5
    assert X.suite_values(0.1, 1) == 3  # never fewer than 3 values
