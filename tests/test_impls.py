"""The impl registry (bench.run.impls) and the matrix's questions to it.

What is checked: each built-in's declaration (the twins everywhere, the
event loops in nonblocking mode over stream transports, each idiom where
it has a meaning, read from its own module); how an ``--impl`` item
resolves (built-in name, ``pkg.module``, ``label=pkg.module``, entry
point) and every way it can be bad, each a one-line ImplError (exit 2 on
the command line); what the matrix leaves out, with a note; where an
impl came from, as the report records it.  Entry points are faked (the
real install is tests/test_custom_impl.py); sample modules live in
tests/sample_impls.  No socket is opened here but in the CLI tests,
which run the real command in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_run_cli import REPO, RUN_TIMEOUT, one_error_line, where

import fastsock
from bench.run import impls as I
from bench.run import matrix as M
from fastsock._common import MODES

MAX_DGRAM = {"udp4": 65507, "udp6": 65527, "unix-dgram": 65536}
TESTS = Path(__file__).resolve().parent
STREAMS = ("tcp4", "tcp6", "unix-stream")
DGRAMS = ("udp4", "udp6", "unix-dgram")


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text.strip() and "\n" not in text, repr(text)
    return text


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test resolves from scratch: no impl known, no entry point read."""
    monkeypatch.setattr(I, "_KNOWN", {})
    monkeypatch.setattr(I, "_EPS", None)


class FakeEntryPoint:
    """What importlib.metadata gives for an entry point, enough for the registry."""

    def __init__(self, name: str, value: str, dist: str = "somepkg") -> None:
        self.name, self.value = name, value
        self.dist = type("Dist", (), {"name": dist})()


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    monkeypatch.setattr(I, "_EPS", {ep.name: ep for ep in eps})


# ------------------------------------------------------------ built-ins


def where_it_runs(name: str) -> set[tuple[str, str, str]]:
    impl = I.get(name)
    return {(s, t, m) for s in ("stream", "pingpong", "connect")
            for t in STREAMS + DGRAMS for m in MODES if impl.applies(s, t, m)}


def test_the_twins_run_everywhere() -> None:
    for name in ("cython", "python"):
        impl = I.get(name)
        assert impl.kind == "twin" and impl.builtin
        assert impl.functions == set(fastsock.LOOP_NAMES) and impl.modes == MODES
        assert len(where_it_runs(name)) == 2 * 6 * 4 + 3 * 3  # connect: no spin


def test_the_event_loops_run_stream_and_pingpong_nonblocking_over_streams() -> None:
    for name in M.ASYNC_IMPLS:
        assert where_it_runs(name) == {(s, t, "nonblocking") for s in ("stream", "pingpong")
                                       for t in STREAMS}
        assert I.get(name).scope() == ("stream and pingpong over tcp4, tcp6, unix-stream "
                                       "in nonblocking mode")


IDIOM_PLACES = {
    "socket-sendall": {(s, t, m) for s in ("stream", "pingpong") for t in STREAMS
                       for m in ("blocking", "timeout")},
    "socket-makefile": {(s, t, m) for s in ("stream", "pingpong") for t in STREAMS
                        for m in ("blocking", "timeout")},
    "socket-recv": {("pingpong", t, m) for t in STREAMS + DGRAMS for m in MODES},
    "socket-sendmsg": {(s, t, m) for s in ("stream", "pingpong") for t in DGRAMS
                       for m in MODES},
}


@pytest.mark.parametrize("name", M.IDIOM_IMPLS)
def test_each_idiom_runs_where_it_has_a_meaning(name: str) -> None:
    assert where_it_runs(name) == IDIOM_PLACES[name]


@pytest.mark.parametrize("name", M.IDIOM_IMPLS)
def test_an_idiom_is_described_by_its_own_module(name: str) -> None:
    """The registry reads an idiom's declarations, as it reads any impl's."""
    import importlib

    from fastsock._idioms import IDIOMS

    impl = I.get(name)
    module = importlib.import_module(IDIOMS[name])
    assert (impl.kind, impl.module, impl.source) == ("idiom", IDIOMS[name], "built in")
    assert module.FASTSOCK_CONTRACT == fastsock.CONTRACT_VERSION
    assert name == module.IMPLEMENTATION
    assert impl.functions == {f for f in fastsock.LOOP_NAMES if hasattr(module, f)}
    assert impl.modes == tuple(module.MODES)


def test_function_for_each_scenario_and_transport() -> None:
    assert [I.function_for(s, t) for s, t in (
        ("stream", "tcp4"), ("stream", "unix-dgram"), ("pingpong", "unix-stream"),
        ("pingpong", "udp6"), ("connect", "tcp6"))] == [
        "stream_send", "dgram_send", "stream_pingpong", "dgram_pingpong", "connect_accept"]


# ------------------------------------------------------------ resolving --impl


def test_a_module_path_names_an_impl_after_itself() -> None:
    impl = I.resolve("sample_impls.plain")
    assert (impl.name, impl.module, impl.kind, impl.source) == (
        "sample_impls.plain", "sample_impls.plain", "outside", "--impl")
    assert impl.functions == {"stream_send"} and impl.modes == ("blocking",)
    assert not impl.builtin


def test_a_label_names_a_module() -> None:
    assert M.select_impls("python,mine=sample_impls.plain", "quick", False) == (
        "python", "mine")
    assert I.get("mine").module == "sample_impls.plain"


@pytest.mark.parametrize("text, says", [
    ("nope", "unknown impl 'nope'"),
    ("python=sample_impls.plain", "is a built-in impl's name"),
    ("socket-recv=sample_impls.plain", "is a built-in impl's name"),
    ("a/b=sample_impls.plain", "impl label 'a/b'"),
    ("x=not a module", "is not a module path"),
    ("sample_impls.missing", "no module sample_impls.missing"),
    ("sample_impls.fails_import", "failed to import (RuntimeError: this module cannot be"),
    ("sample_impls.no_contract", "does not declare FASTSOCK_CONTRACT"),
    ("sample_impls.newer_contract", "keeps contract 99, newer than this fastsock's (1)"),
    ("sample_impls.no_functions", "provides none of the contract's functions"),
    ("sample_impls.bad_modes", "MODES must be a non-empty tuple of the contract's modes"),
    ("x=sample_impls.plain,x=sample_impls.miscounts", "impl x names two modules"),
    ("python,,cython", "empty item in --impl"),
])
def test_bad_impls_are_one_line_errors(text: str, says: str) -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.select_impls(text, "quick", True)
    assert says in one_line(exc)


def test_the_same_impl_twice_is_once() -> None:
    assert M.select_impls("sample_impls.plain,python,sample_impls.plain", "quick", False) == (
        "sample_impls.plain", "python")


# ------------------------------------------------------------ entry points


def test_entry_points_join_all_after_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, FakeEntryPoint("zeta", "sample_impls.plain"),
                      FakeEntryPoint("alpha", "sample_impls.plain"))
    every = M.select_impls("all", "quick", True)
    assert every == (*M.BUILTIN_IMPLS, "alpha", "zeta")
    assert I.get("alpha").source == "entry point" and I.get("alpha").kind == "outside"
    assert M.select_impls("zeta", "quick", True) == ("zeta",)


@pytest.mark.parametrize("ep, says", [
    (FakeEntryPoint("python", "sample_impls.plain", "evil"),
     "entry point python of group fastsock.impls (package evil) has a built-in impl's name"),
    (FakeEntryPoint("broken", "sample_impls.fails_import"),
     "entry point broken of group fastsock.impls (package somepkg) failed to load: "
     "RuntimeError: this module cannot be imported"),
    (FakeEntryPoint("attr", "sample_impls.plain:stream_send"), "must name a module"),
    (FakeEntryPoint("old", "sample_impls.no_contract"), "does not declare FASTSOCK_CONTRACT"),
])
def test_a_bad_entry_point_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                               ep: FakeEntryPoint, says: str) -> None:
    fake_entry_points(monkeypatch, ep)
    with pytest.raises(M.MatrixError) as exc:
        M.select_impls("all", "quick", True)
    assert says in one_line(exc)


def test_a_label_may_not_take_an_entry_points_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, FakeEntryPoint("gather", "sample_impls.plain"))
    with pytest.raises(M.MatrixError) as exc:
        M.select_impls("gather=sample_impls.miscounts", "quick", True)
    assert "is the name of an entry point" in one_line(exc)


def test_the_real_entry_point_lookup_answers() -> None:
    """importlib.metadata is asked for the group (whatever is installed)."""
    eps = I.entry_points()
    assert isinstance(eps, dict)
    assert all(not name.startswith("sample_impls") for name in eps)


# ------------------------------------------------------------ the matrix


def cases(impls: tuple[str, ...], **sel: Any) -> list[str]:
    return [k.name for k in M.cases(M.Selection(impls=impls, **sel), max_dgram=MAX_DGRAM)]


def test_the_matrix_leaves_out_what_an_impl_does_not_run() -> None:
    names = cases(("python", "socket-sendall", "socket-recv"), scenarios=("stream", "pingpong"),
                  transports=("tcp4", "udp4"), modes=("blocking", "spin"), sizes=(64,))
    assert names == [
        "stream/tcp4/blocking/64/python", "stream/tcp4/blocking/64/socket-sendall",
        "stream/tcp4/spin/64/python",
        "stream/udp4/blocking/64/python", "stream/udp4/spin/64/python",
        "pingpong/tcp4/blocking/64/python", "pingpong/tcp4/blocking/64/socket-sendall",
        "pingpong/tcp4/blocking/64/socket-recv",
        "pingpong/tcp4/spin/64/python", "pingpong/tcp4/spin/64/socket-recv",
        "pingpong/udp4/blocking/64/python", "pingpong/udp4/blocking/64/socket-recv",
        "pingpong/udp4/spin/64/python", "pingpong/udp4/spin/64/socket-recv",
    ]


def test_left_out_cases_get_a_note_per_impl() -> None:
    sel = M.Selection(impls=("python", "socket-sendall", "socket-recv"),
                      scenarios=("stream", "pingpong"), transports=("tcp4",),
                      modes=("blocking", "spin"), sizes=(64,))
    notes = M.left_out(sel, M.cases(sel, max_dgram=MAX_DGRAM))
    assert notes == [
        "socket-sendall runs only stream and pingpong over tcp4, tcp6, unix-stream in "
        "blocking or timeout mode: left out of 2 of the selection's 4 cases",
        "socket-recv runs only pingpong over tcp4, tcp6, udp4, udp6, unix-stream, unix-dgram "
        "in every mode: left out of 2 of the selection's 4 cases",
    ]
    twins = M.Selection(impls=M.IMPLS, transports=("tcp4", "udp4"), modes=("spin",))
    assert M.left_out(twins, M.cases(twins, max_dgram=MAX_DGRAM)) == []


def test_a_selection_no_impl_runs_says_why() -> None:
    with pytest.raises(M.MatrixError) as exc:
        M.cases(M.Selection(impls=("socket-sendall", "socket-makefile"), modes=("spin",)),
                max_dgram=MAX_DGRAM)
    assert one_line(exc) == (
        "the selection names no case: socket-sendall, socket-makefile run only stream and "
        "pingpong over tcp4, tcp6, unix-stream in blocking or timeout mode")


def test_an_outside_impl_in_the_matrix() -> None:
    M.select_impls("sample_impls.plain", "quick", False)
    assert cases(("sample_impls.plain",), preset="quick", modes=("blocking", "timeout")) == [
        f"stream/{t}/blocking/64/sample_impls.plain" for t in ("tcp4", "tcp6", "unix-stream")]


# ------------------------------------------------------------ where it came from


def test_the_metadata_of_an_outside_impl() -> None:
    meta = I.resolve("sample_impls.plain").metadata()
    assert meta["impl_module"] == "sample_impls.plain"
    assert meta["impl_origin"] == str(TESTS / "sample_impls" / "plain.py")
    assert meta["impl_contract"] == 1 and meta["impl_version"] == "1.2.3"
    assert "impl_dist" not in meta  # on sys.path, not installed


def test_the_metadata_of_a_builtin_names_fastsock() -> None:
    for name in ("python", "socket-recv", "asyncio-sock"):
        meta = I.get(name).metadata()
        assert (meta["impl_dist"], meta["impl_dist_version"]) == ("fastsock", fastsock.__version__)
        assert meta["impl_module"] == I.get(name).module
        assert Path(meta["impl_origin"]).is_file()


def test_a_twins_worker_with_the_idioms_imports_no_event_loop() -> None:
    code = ("import sys; from bench.cli import run as R; from bench.run import worker; "
            "p = R.make_plan(R.build_parser().parse_args(['--impl', 'python,socket-sendall,"
            "socket-recv,socket-makefile,socket-sendmsg'])); "
            "[worker.Case(k) for k in p.cases]; "
            "print(sorted(m for m in ('asyncio', 'uvloop', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, cwd=str(REPO))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------ the command line


def cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    w = where(tmp_path)
    env = dict(w.env, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return subprocess.run([sys.executable, "-m", "bench", "run", *argv], cwd=w.cwd, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.mark.parametrize("impl, says", [
    ("sample_impls.no_contract", "does not declare FASTSOCK_CONTRACT"),
    ("python=sample_impls.plain", "impl label python is a built-in impl's name"),
    ("sample_impls.fails_import", "failed to import"),
    ("nope", "unknown impl 'nope'"),
])
def test_cli_bad_impl_is_one_line_exit_2(tmp_path: Path, impl: str, says: str) -> None:
    p = cli(tmp_path, "--quick", "--impl", impl, "--list")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert says in one_error_line(p.stderr)
    assert p.stdout == ""


def test_cli_lists_an_outside_impls_cases_with_a_note(tmp_path: Path) -> None:
    p = cli(tmp_path, "--quick", "--impl", "python,sample_impls.plain", "--transport", "tcp4",
            "--scenario", "stream,pingpong", "--mode", "blocking,spin", "--list")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [
        "stream/tcp4/blocking/64/python", "stream/tcp4/blocking/64/sample_impls.plain",
        "stream/tcp4/spin/64/python", "pingpong/tcp4/blocking/64/python",
        "pingpong/tcp4/spin/64/python"]
    assert p.stderr.splitlines() == [
        "fastsock-bench run: note: sample_impls.plain runs only stream over tcp4, tcp6, "
        "unix-stream in blocking mode: left out of 3 of the selection's 4 cases",
        "5 cases"]


def test_compare_shows_a_changed_impl_version_where_both_reports_have_it() -> None:
    from bench.analysis.compare import compare_reports
    from bench.analysis.report import CaseKey
    from tests import synth

    keys = [CaseKey("stream", t, "blocking", 64, "mine") for t in ("tcp4", "unix-stream")]
    base, new = synth.make_report(keys, seed=1), synth.make_report(keys, seed=2)
    for report, version in ((base, "1.0"), (new, "1.1")):
        for case in report.cases:
            case.metadata.update(impl_module="mine.loops", impl_dist_version=version)
    del base.cases[1].metadata["impl_dist_version"]  # an older report: no key, no difference
    assert compare_reports(base, new).case_differs == {"impl_dist_version": 1}
