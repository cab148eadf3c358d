"""``fastsock-bench run --scenario connect`` end to end: the real CLI.

One small real run of the connect cases (quick preset: blocking mode, every
connection transport this machine has, both twins) through ``python -m
bench run`` in a subprocess, with the helpers of ``test_run_cli.py`` (a
private cwd and TMPDIR; after the run no process, no ``fastsock-*``
directory and no socket file may be left: the Unix listener's path and
directory included).  Checked: exit 0 and progress in conn/s, the report's
benchmark and run metadata (size 0, no peer, CPU time per connection),
the summary's connect table, the HTML page with its connect figure, and
the usage errors of a connect selection.  Never speed.
"""

from __future__ import annotations

import pytest
from test_run_cli import IMPLS, PURE, SMALL, expected_names, one_error_line, progress, run, where

from bench.analysis.report import SCHEMA_VERSION, load_report

CONNECT = ["--quick", "--scenario", "connect", "--impl", IMPLS, *SMALL]


@pytest.fixture(scope="module")
def connect_run(tmp_path_factory: pytest.TempPathFactory):
    w = where(tmp_path_factory.mktemp("connect"))
    proc = run(w, [*CONNECT, "-o", "out.json"])  # with the HTML page
    return proc, w, expected_names(CONNECT)


def test_connect_run_exits_0_with_progress_in_conn_per_s(connect_run) -> None:
    proc, w, names = connect_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    transports = {n.split("/")[1] for n in names}
    assert transports >= {"tcp4", "unix-stream"} and transports <= {"tcp4", "tcp6", "unix-stream"}
    assert len(names) == len(transports) * (1 if PURE else 2)
    assert all(n.split("/")[2:4] == ["blocking", "0"] for n in names)
    assert progress(proc.stdout) == dict.fromkeys(names, "ok")
    for n in names:
        line = next(ln for ln in proc.stdout.splitlines() if f"] {n}: " in ln)
        assert "conn/s" in line, line
    assert sorted(x.name for x in w.cwd.iterdir()) == ["out.html", "out.json"]


def test_connect_report_metadata(connect_run) -> None:
    _proc, w, names = connect_run
    report = load_report(w.cwd / "out.json")
    assert [c.name for c in report.cases] == names
    for case in report.cases:
        meta, k = case.metadata, case.key
        assert (meta["scenario"], meta["size"], meta["batch"]) == ("connect", 0, 1)
        assert (meta["transport"], meta["mode"], meta["impl"]) == (k.transport, k.mode, k.impl)
        assert meta["fastsock_schema"] == SCHEMA_VERSION and meta["unit"] == "second"
        assert "peer_impl" not in meta, "connect has no peer: it plays both ends"
        assert case.values and all(0 < v < 0.01 for v in case.values)  # s per connection
        for rm in case.run_metadata:
            # CPU time of both ends per connection; no RTT, no datagram counts
            assert 0 < rm["cpu_per_msg"] < 0.01, rm
            assert not {"rtt_p50", "rtt_p99", "sent", "delivered", "loss"} & set(rm), rm


def test_connect_summary_and_html(connect_run) -> None:
    proc, w, names = connect_run
    out = proc.stdout
    summary = out[out.index("connect: connections set up and torn down per second"):]
    header = summary.splitlines()[1].split()
    assert header == ["transport", "mode", "impl", "conn/s", "µs/conn", "CPU", "µs/conn",
                      "speedup"]
    rows = [ln.split() for ln in summary.splitlines()[3:3 + len(names)]]
    assert [f"connect/{r[0]}/{r[1]}/0/{r[2]}" for r in rows] == names
    for r in rows:
        rate, usec = float(r[3].replace(",", "")), float(r[4])
        assert rate == pytest.approx(1e6 / usec, rel=0.01)
        if r[2] == "cython" and not PURE:
            assert r[-1].endswith("x")  # the speedup, on the compiled row
    page = (w.cwd / "out.html").read_text(encoding="utf-8")
    assert 'id="fig-connect"' in page and 'id="summary-connect"' in page
    assert "conn/s" in page and "— (no peer)" in page


@pytest.mark.parametrize("argv, says", [
    (["--scenario", "connect", "--mode", "spin"], "mode spin does not apply to scenario connect"),
    (["--scenario", "connect", "--transport", "udp4"],
     "transport udp4 does not apply to scenario connect"),
])
def test_connect_usage_errors(tmp_path, argv, says) -> None:
    w = where(tmp_path)
    p = run(w, [*argv, "--impl", IMPLS, "-o", "out.json"])
    assert p.returncode == 2
    assert says in one_error_line(p.stderr)
    assert list(w.cwd.iterdir()) == []
