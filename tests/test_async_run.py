"""The event-loop impls in the suite: the matrix's rules, the run command,
the worker's metadata and fault handling, and the reports' consumers.

Design note: the matrix and the plan are checked in-process (no socket);
the runs are the real CLI in a subprocess with pyperf's smallest settings,
through the helpers of ``test_run_cli.py`` (private working directory and
TMPDIR, nothing left behind).  Speed is never asserted.
"""

from __future__ import annotations

import html
import importlib.util
import signal
import sys
from pathlib import Path

import pytest
from test_run_cli import (
    FAULT_BOUND,
    PURE,
    RUN_TIMEOUT,
    SMALL,
    assert_nothing_left,
    expected_names,
    fault_first_case,
    one_error_line,
    progress,
    run,
    where,
)

import fastsock
from bench.analysis import compare as _compare
from bench.analysis.report import PERCENTILES, CaseKey, load_report
from bench.cli import run as R
from bench.present import figures as _plot
from bench.run import matrix as M

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
TWINS = ("python",) if PURE else ("cython", "python")
ASYNCIO = ("asyncio-streams", "asyncio-sock")
MAX_DGRAM = {"udp4": 65507, "udp6": 65527, "unix-dgram": 65536}
# The main process of a run without uvloop: find_spec("uvloop") is None.
NO_UVLOOP = ("import sys; sys.modules['uvloop'] = None; "
             "from bench.cli import main; sys.exit(main())")


def needs_uvloop() -> None:
    if not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (pip install 'fastsock[uvloop]'; "
                    "the test extra installs it)")


def plan(argv: list[str]) -> R.Plan:
    return R.make_plan(R.build_parser().parse_args(argv))


def one_line_error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, repr(text)
    return text


# ------------------------------------------------------------ the matrix


def test_the_default_impls_of_each_preset() -> None:
    twins_and_asyncio = M.IMPLS + ASYNCIO
    for preset in ("quick", "default"):
        for uvloop in (True, False):
            assert M.select_impls(None, preset, uvloop) == twins_and_asyncio
    assert M.select_impls(None, "full", True) == M.ALL_IMPLS
    assert M.select_impls(None, "full", False) == twins_and_asyncio
    # all: every built-in (the idioms too), then any entry point installed here
    every = M.select_impls("all", "quick", True)
    assert every[:len(M.BUILTIN_IMPLS)] == M.BUILTIN_IMPLS == (*M.ALL_IMPLS, *M.IDIOM_IMPLS)
    without = M.select_impls("all", "full", False)
    assert without[:len(M.BUILTIN_IMPLS) - 2] == twins_and_asyncio + M.IDIOM_IMPLS
    assert M.select_impls("uvloop-sock,python", "quick", True) == ("uvloop-sock", "python")


@pytest.mark.parametrize("text", ["uvloop-sock", "python,uvloop-streams",
                                  "uvloop-streams,uvloop-sock"])
def test_uvloop_named_without_uvloop_is_an_error_with_the_hint(text: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.select_impls(text, "default", False)
    msg = one_line_error(exc)
    assert "needs uvloop" in msg and "pip install 'fastsock[uvloop]'" in msg


def test_event_loop_impls_only_where_they_apply() -> None:
    cases = M.cases(M.Selection(preset="full", impls=M.ALL_IMPLS), max_dgram=MAX_DGRAM)
    on_loop = [c for c in cases if c.impl in M.ASYNC_IMPLS]
    assert {(c.scenario, c.transport, c.mode) for c in on_loop} == {
        (s, t, "nonblocking") for s in ("stream", "pingpong")
        for t in ("tcp4", "tcp6", "unix-stream")}
    # the preset's sizes, as for the twins
    for impl in M.ASYNC_IMPLS:
        for scenario in ("stream", "pingpong"):
            twin = sorted({c.size for c in cases if c.impl == "cython"
                           and c.scenario == scenario and c.transport == "tcp4"})
            mine = sorted({c.size for c in on_loop if c.impl == impl
                           and c.scenario == scenario and c.transport == "tcp4"})
            assert mine == twin
    # the twins keep the full product
    twins = [c for c in cases if c.impl in M.IMPLS]
    assert len(twins) == len(M.cases(M.Selection(preset="full"), max_dgram=MAX_DGRAM))


def test_the_impls_of_a_case_are_adjacent() -> None:
    cases = M.cases(M.Selection(preset="default", impls=M.ALL_IMPLS), max_dgram=MAX_DGRAM)
    for i, c in enumerate(cases):
        if c.impl == "cython" and c.mode == "nonblocking" and c.transport in M.ASYNC_TRANSPORTS:
            assert [k.impl for k in cases[i:i + len(M.ALL_IMPLS)]] == list(M.ALL_IMPLS)
            assert all(k == c.other_impl(k.impl) for k in cases[i:i + len(M.ALL_IMPLS)])


def test_the_default_run_has_the_asyncio_pair_at_the_preset_sizes() -> None:
    on_loop = [c for c in plan([]).cases if c.impl in M.ASYNC_IMPLS]
    transports = [t for t in M.ASYNC_TRANSPORTS if t in plan([]).selection.transports]
    assert {c.impl for c in on_loop} == set(ASYNCIO)
    assert {(c.scenario, c.transport, c.size) for c in on_loop} == (
        {("stream", t, s) for t in transports for s in (64, 65536)}
        | {("pingpong", t, 64) for t in transports})
    assert {c.mode for c in on_loop} == {"nonblocking"}
    assert all(c.size == 64 for c in plan(["--quick"]).cases if c.scenario != "connect")
    assert {c.impl for c in plan(["--quick"]).cases} == set(M.IMPLS + ASYNCIO)


def test_full_adds_uvloop_only_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "uvloop_installed", lambda: True)
    assert {"uvloop-streams", "uvloop-sock"} <= {c.impl for c in plan(["--full"]).cases}
    monkeypatch.setattr(M, "uvloop_installed", lambda: False)
    assert not {c.impl for c in plan(["--full"]).cases} & set(M.UVLOOP_IMPLS)
    assert not {c.impl for c in plan(["--impl", "all"]).cases} & set(M.UVLOOP_IMPLS)
    with pytest.raises(M.MatrixError) as exc:
        plan(["--impl", "uvloop-streams"])
    assert "pip install 'fastsock[uvloop]'" in one_line_error(exc)


def test_uvloop_installed_is_what_find_spec_says() -> None:
    assert M.uvloop_installed() == HAVE_UVLOOP


@pytest.mark.parametrize("argv", [
    ["--impl", "asyncio-sock", "--mode", "blocking"],
    ["--impl", "asyncio-sock,uvloop-streams", "--transport", "udp4,unix-dgram"],
    ["--impl", "asyncio-streams", "--mode", "spin,timeout", "--transport", "tcp4"],
])
def test_a_selection_of_inapplicable_combinations_says_why(
        monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(M, "uvloop_installed", lambda: True)
    with pytest.raises(M.MatrixError) as exc:
        plan(argv)
    msg = one_line_error(exc)
    assert msg.startswith("the selection names no case: ")
    assert "nonblocking" in msg and "tcp4, tcp6, unix-stream" in msg


def test_inapplicable_combinations_are_left_out_silently() -> None:
    p = plan(["--impl", "python,asyncio-sock", "--mode", "blocking,nonblocking",
              "--transport", "tcp4,udp4", "--scenario", "pingpong"])
    assert [c.name for c in p.cases] == [
        "pingpong/tcp4/blocking/64/python",
        "pingpong/tcp4/nonblocking/64/python",
        "pingpong/tcp4/nonblocking/64/asyncio-sock",
        "pingpong/udp4/blocking/64/python",
        "pingpong/udp4/nonblocking/64/python",
    ]


@pytest.mark.parametrize("argv", [[], ["--full"], ["--impl", "all", "--quick"],
                                  ["--impl", "asyncio-sock,python", "--transport", "all"]])
def test_workers_enumerate_the_same_cases(argv: list[str]) -> None:
    main = plan(argv)
    p = R._Parser(prog="w", allow_abbrev=False, add_help=False)
    R.add_selection_args(p)
    args, _ = p.parse_known_args(["--worker", "--worker-task=3", *main.forward])
    assert [k.name for k in R.make_plan(args).cases] == [k.name for k in main.cases]


def test_a_twins_worker_imports_no_event_loop() -> None:
    """Every pyperf worker enumerates the cases: finding uvloop must not
    import it (nor asyncio), which would slow every worker's start."""
    import subprocess

    code = ("import sys; from bench.cli import run as R; from bench.run import worker; "
            "R.make_plan(R.build_parser().parse_args(['--full', '--impl', 'all'])); "
            "print(sorted(m for m in ('asyncio', 'uvloop') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, cwd=str(Path(M.__file__).parents[2]))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------ the CLI


def test_cli_uvloop_without_uvloop_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess

    w = where(tmp_path)
    p = subprocess.run([sys.executable, "-c", NO_UVLOOP, "run", "--quick", "--impl",
                        "asyncio-sock,uvloop-sock", "-o", "out.json"], cwd=w.cwd, env=w.env,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    assert "uvloop-sock needs uvloop" in line and "pip install 'fastsock[uvloop]'" in line
    assert p.stdout == "" and list(w.cwd.iterdir()) == []
    # --list without uvloop: the default and `all` leave the uvloop impls out
    # (both name cython too, refused where only the Python twin is loaded)
    for impl in ([] if PURE else [[], ["--impl", "all"]]):
        p = subprocess.run([sys.executable, "-c", NO_UVLOOP, "run", "--full", *impl,
                            "--list"], cwd=w.cwd, env=w.env, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
        assert p.returncode == 0, p.stderr
        assert "asyncio-sock" in p.stdout and "uvloop" not in p.stdout
    assert_nothing_left(w)


def test_cli_inapplicable_selection_is_one_line_exit_2(tmp_path: Path) -> None:
    w = where(tmp_path)
    p = run(w, ["--quick", "--impl", "asyncio-streams", "--transport", "udp4", "-o", "out.json"])
    assert p.returncode == 2
    assert "asyncio-streams runs only stream and pingpong" in one_error_line(p.stderr)
    assert list(w.cwd.iterdir()) == []


# ------------------------------------------------------------ a real run

SMOKE = ["--quick", "--scenario", "stream,pingpong", "--transport", "tcp4", "--mode",
         "nonblocking", "--impl",
         ",".join(TWINS + ASYNCIO + (M.UVLOOP_IMPLS if HAVE_UVLOOP else ())), *SMALL]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    w = where(tmp_path_factory.mktemp("async-smoke"))
    proc = run(w, [*SMOKE, "-o", "out.json"])
    return proc, w, expected_names(SMOKE)


def test_run_measures_every_impl(smoke: tuple) -> None:
    proc, w, names = smoke
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert progress(proc.stdout) == dict.fromkeys(names, "ok")
    report = load_report(w.cwd / "out.json")
    assert [c.name for c in report.cases] == names
    needs_uvloop()  # the rest of the run's checks hold without it; not the count
    assert len(names) == 2 * len(M.ALL_IMPLS if not PURE else ("python",) + M.ASYNC_IMPLS)


def test_run_metadata_of_event_loop_cases(smoke: tuple) -> None:
    _proc, w, _ = smoke
    report = load_report(w.cwd / "out.json")
    for case in report.cases:
        k, meta = case.key, case.metadata
        assert meta["impl"] == k.impl and meta["peer_impl"] == fastsock.IMPLEMENTATION
        if k.impl.startswith("asyncio-"):
            assert meta["event_loop"].startswith("asyncio ") and "EventLoop" in meta["event_loop"]
        elif k.impl.startswith("uvloop-"):
            import uvloop

            assert meta["event_loop"] == f"uvloop {uvloop.__version__}"
        else:
            assert "event_loop" not in meta
        if k.scenario == "pingpong":
            assert meta["tcp_nodelay"] == 1  # the case's, whatever the event loop sets
        for rm in case.run_metadata:
            assert rm["cpu_per_msg"] > 0
            if k.scenario == "pingpong":
                rtt = [rm[p] for p in PERCENTILES]
                assert all(r > 0 for r in rtt) and rtt == sorted(rtt)
            else:
                assert "sent" not in rm and "loss" not in rm


def test_summary_html_and_plots_show_every_impl(smoke: tuple) -> None:
    proc, w, names = smoke
    out = proc.stdout
    impls = sorted({n.split("/")[4] for n in names})
    for title in ("stream throughput", "pingpong round-trip time"):
        table = out[out.index(title):].split("\n\n")[0]
        rows = [ln for ln in table.splitlines() if ln.startswith("tcp4")]
        assert sorted(ln.split()[4] for ln in rows) == impls  # transport mode 64 B impl
        for ln in rows:  # speedup over the Python loop: on every row but its own
            assert ln.rstrip().endswith("x") == (ln.split()[4] != "python")
    report = load_report(w.cwd / "out.json")
    page = (w.cwd / "out.html").read_text(encoding="utf-8")
    for impl in impls:
        assert f">{impl}</th>" in page, impl  # a column group per impl
    for build in (_plot.throughput_figure, _plot.rtt_figure):
        fig = build(report)
        assert fig is not None
        labels = {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()}
        legend = {t.get_text() for lg in fig.legends for t in lg.get_texts()}
        assert set(impls) <= legend, (legend, labels)
    styles = {_plot.impl_style(i) for i in impls}
    assert len(styles) == len(impls)  # each impl drawn its own way
    loops = sorted({c.metadata["event_loop"] for c in report.cases if "event_loop" in c.metadata})
    assert f"<th>event loops</th><td>{html.escape('; '.join(loops))}</td>" in page
    assert page.count('<div class="wide"><table>') == 2  # the wide tables scroll
    if not PURE:  # speedup: the twins only; an event-loop impl has no twin to miss
        sp = _compare.speedup(report)
        assert {r.key.impl for r in sp.results} == {"cython"}
        assert sp.unpaired == []


def test_run_remote_with_event_loop_impls(tmp_path: Path) -> None:
    """Against `fastsock-bench serve`, the event loop drives the measured
    side of the remote connection as of a local one."""
    from serve_support import TINY, ServerProcess, run_bench

    srv = ServerProcess(["--listen", "127.0.0.1:0"], tmp_path / "serve.log")
    try:
        out = tmp_path / "remote.json"
        res = run_bench(["run", "--remote", srv.address, "--quick", "--transport", "tcp4",
                         "--mode", "nonblocking", "--impl", "asyncio-streams,asyncio-sock",
                         *TINY, "-o", str(out)])
    finally:
        status = srv.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert status == 0, srv.stderr()
    report = load_report(out)
    assert sorted(c.name for c in report.cases) == sorted(
        f"{s}/tcp4/nonblocking/64/{i}" for s in ("stream", "pingpong") for i in ASYNCIO)
    for case in report.cases:
        assert case.metadata["remote_address"] == srv.address
        assert case.metadata["event_loop"].startswith("asyncio ")


# ------------------------------------------------------------ figures of six impls


def six_impls(sizes: tuple[int, ...]) -> object:
    from tests import synth

    keys = [CaseKey(sc, t, m, size, impl) for sc in ("stream", "pingpong")
            for t in ("tcp4", "unix-stream") for m in ("blocking", "nonblocking")
            for size in sizes for impl in M.ALL_IMPLS if M.applies(impl, sc, t, m)]
    return synth.make_report(keys)


def assert_legend_fits(fig: object) -> list[str]:
    """Every legend entry inside the figure, below the panels; returns the
    legend's texts."""
    fig.draw_without_rendering()
    whole = fig.bbox
    texts = []
    for legend in fig.legends:
        box = legend.get_window_extent()
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1, (box, whole)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent()), ax.get_title()
        texts += [t.get_text() for t in legend.get_texts()]
    return texts


@pytest.mark.parametrize("sizes", [(64,), (64, 4096, 65536)], ids=["one-size", "sizes"])
def test_figures_of_six_impls_stay_readable(sizes: tuple[int, ...]) -> None:
    report = six_impls(sizes)
    for build in (_plot.throughput_figure, _plot.rtt_figure):
        fig = build(report)
        assert set(M.ALL_IMPLS) <= set(assert_legend_fits(fig))
    fig = _plot.rtt_figure(report)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    if len(sizes) > 1:  # a panel per transport and impl, three to a row
        assert [ax.get_title() for ax in panels] == [
            f"{t} · {i}" for t in ("tcp4", "unix-stream") for i in M.ALL_IMPLS]
        assert fig.get_figwidth() <= 3 * _plot.PANEL_W + 0.5
        for ax in panels:  # each panel: its impl's modes only
            impl = ax.get_title().split(" · ")[1]
            want = 2 if impl in M.IMPLS else 1
            assert len(ax.get_lines()) == want, ax.get_title()


# ------------------------------------------------------------ faults


@pytest.mark.parametrize("signum, scenario, transport, impls", [
    pytest.param(signal.SIGKILL, "pingpong", "unix-stream", "asyncio-streams,asyncio-sock",
                 id="SIGKILL-pingpong-unix-stream-asyncio"),
    pytest.param(signal.SIGSTOP, "stream", "tcp4", "asyncio-sock,asyncio-streams",
                 id="SIGSTOP-stream-tcp4-asyncio"),
    pytest.param(signal.SIGSTOP, "pingpong", "tcp4", "uvloop-sock,uvloop-streams",
                 id="SIGSTOP-pingpong-tcp4-uvloop"),
    pytest.param(signal.SIGKILL, "stream", "unix-stream", "uvloop-streams,uvloop-sock",
                 id="SIGKILL-stream-unix-stream-uvloop"),
])
def test_dead_or_stopped_peer_fails_its_case_and_the_run_goes_on(
        tmp_path: Path, signum: int, scenario: str, transport: str, impls: str) -> None:
    if "uvloop" in impls:
        needs_uvloop()
    w = where(tmp_path)
    argv = ["--quick", "--scenario", scenario, "--transport", transport, "--mode",
            "nonblocking", "--impl", impls, "-p", "1", "-n", "2", "-w", "0",
            "--min-time", "0.5", "-o", "out.json", "--no-html"]
    first, second = expected_names(argv)
    f = fault_first_case(w, argv, signum)
    line, stdout, stderr, peer_left = f.line, f.stdout, f.stderr, f.peer_left
    assert line.startswith(f"[1/2] {first}: FAILED"), line
    assert f.noticed < FAULT_BOUND, f"{f.noticed:.1f} s to notice"
    assert f.returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr + stdout
    said = [ln for ln in stderr.splitlines() if ln.startswith("fastsock-bench: case ")]
    assert len(said) == 1 and said[0].startswith(f"fastsock-bench: case {first} failed: "), stderr
    if signum == signal.SIGSTOP:
        # noticed by the SIGCHLD watch through the event loop, not by a timeout
        assert "stopped by SIGSTOP" in said[0], said[0]
    assert progress(stdout) == {first: "FAILED", second: "ok"}
    assert [c.name for c in load_report(w.cwd / "out.json").cases] == [second]
    assert not peer_left
    assert_nothing_left(w)
