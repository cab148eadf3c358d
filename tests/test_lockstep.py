"""Lockstep interleaving (``run --base-python``): the turn-taking between
the main process and two workers (bench.run.lockstep.alternate, with the
workers' side, bench.run.worker.Baton), then the paired statistics compare
applies to such reports (bench.analysis.stats.paired_estimates, synthetic reports
whose slots share a machine state that would swamp an unpaired test)."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

from bench.analysis import stats as _stats
from bench.analysis.compare import compare_reports
from bench.analysis.report import Report, _case_from_benchmark, fingerprint
from bench.analysis.stats import Verdict
from bench.run import lockstep as _interleave
from bench.run.worker import Baton, CaseFailed
from tests import synth

KEYS = synth.default_keys()
SCALED = KEYS[::3]


class FakeWorker(threading.Thread):
    """A worker's side of the baton, through the real Baton class: ``values``
    timed calls of ``hold`` seconds each, then ``linger`` seconds (pyperf's
    metadata collection) before it closes its socket."""

    def __init__(self, name: str, sock: socket.socket, log: list[tuple[float, float, str]],
                 values: int, hold: float = 0.002, linger: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.side, self.log, self.values = name, log, values
        self.hold, self.linger = hold, linger
        self.baton = Baton(f"{sock.detach()}:0")
        self.closed_at = 0.0

    def run(self) -> None:
        for _ in range(self.values):
            self.baton.take()
            t0 = time.monotonic()
            time.sleep(self.hold)
            self.log.append((t0, time.monotonic(), self.side))
            self.baton.give()
        time.sleep(self.linger)
        self.closed_at = time.monotonic()
        self.baton.sock.close()


def _pairs() -> tuple[dict[str, socket.socket], dict[str, socket.socket]]:
    mine, theirs = {}, {}
    for side in ("base", "new"):
        a, b = socket.socketpair()
        a.settimeout(5.0)
        mine[side], theirs[side] = a, b
    return mine, theirs


def _run(values: dict[str, int], first: str, **kw: Any) -> tuple[int, list, dict]:
    mine, theirs = _pairs()
    log: list[tuple[float, float, str]] = []
    workers = {s: FakeWorker(s, theirs[s], log, values[s], **kw) for s in values}
    for w in workers.values():
        w.start()
    try:
        turns = _interleave.alternate(mine, first)
    finally:
        for s in mine.values():  # first: a worker still waiting gets EOF, not 120 s
            s.close()
        for w in workers.values():
            w.join(5)
    return turns, log, workers


@pytest.mark.parametrize("first", ["base", "new"])
def test_turns_alternate_and_never_overlap(first: str) -> None:
    turns, log, _ = _run({"base": 4, "new": 4}, first)
    assert turns == 8 and len(log) == 8
    other = "new" if first == "base" else "base"
    # ABBA: who goes first alternates from round to round
    assert [side for _, _, side in log] == [first, other, other, first] * 2
    for (_, end, _), (start, _, _) in zip(log, log[1:]):
        assert start >= end, "two timed calls overlapped"


def test_a_side_that_finishes_early_leaves_the_turns_to_the_other() -> None:
    turns, log, _ = _run({"base": 2, "new": 5}, "base")
    assert turns == 7
    assert [side for _, _, side in log] == ["base", "new", "new", "base", "new", "new", "new"]


def test_the_other_side_waits_for_a_finished_worker_to_close() -> None:
    # after its last value a worker collects metadata and exits: the
    # other side's next timed call must not start before that is over
    _, log, workers = _run({"base": 1, "new": 3}, "base", linger=0.05)
    starts_of_new = [start for start, _, side in log if side == "new"]
    assert starts_of_new[1] >= workers["base"].closed_at


def test_a_worker_gone_inside_a_timed_call_is_an_error() -> None:
    mine, theirs = _pairs()
    theirs["base"].sendall(b"R")
    theirs["new"].sendall(b"R")

    def take_and_die() -> None:
        assert theirs["base"].recv(1) == b"G"
        theirs["base"].close()  # no "D": it died while timed

    t = threading.Thread(target=take_and_die, daemon=True)
    t.start()
    with pytest.raises(RuntimeError, match="base worker stopped inside a timed call"):
        _interleave.alternate(mine, "base")
    t.join(5)
    for s in [*mine.values(), theirs["new"]]:
        s.close()


def test_a_worker_dead_with_its_turn_unread_is_an_error_not_a_traceback() -> None:
    # a Unix socket closed with unread data resets the other end (ECONNRESET)
    mine, theirs = _pairs()
    theirs["base"].sendall(b"R")
    theirs["new"].sendall(b"R")

    def ask_and_die() -> None:
        time.sleep(0.05)  # the "G" arrives and is never read
        theirs["base"].close()

    t = threading.Thread(target=ask_and_die, daemon=True)
    t.start()
    with pytest.raises(RuntimeError, match="lockstep: the base worker"):
        _interleave.alternate(mine, "base")
    t.join(5)
    for s in [*mine.values(), theirs["new"]]:
        s.close()


def test_a_silent_worker_is_a_bounded_wait() -> None:
    mine, theirs = _pairs()
    for s in mine.values():
        s.settimeout(0.2)
    theirs["base"].sendall(b"R")  # "new" never asks for a turn
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="new worker did not answer"):
        _interleave.alternate(mine, "base")
    assert time.monotonic() - t0 < 2.0
    for s in [*mine.values(), *theirs.values()]:
        s.close()


def test_garbage_on_the_turn_socket_is_an_error() -> None:
    mine, theirs = _pairs()
    theirs["base"].sendall(b"X")
    theirs["new"].sendall(b"R")
    with pytest.raises(RuntimeError, match="base worker sent"):
        _interleave.alternate(mine, "base")
    for s in [*mine.values(), *theirs.values()]:
        s.close()


def test_baton_reports_a_vanished_main_process() -> None:
    a, b = socket.socketpair()
    baton = Baton(f"{b.detach()}:3")
    assert baton.slot == 3
    a.close()
    with pytest.raises(CaseFailed, match="lockstep"):
        baton.take()
    baton.sock.close()


@pytest.mark.parametrize("spec", ["", "x:1", "5:", "notanfd"])
def test_baton_refuses_a_bad_spec(spec: str) -> None:
    with pytest.raises(CaseFailed, match="FASTSOCK_LOCKSTEP"):
        Baton(spec)


# ------------------------------------------------------------ statistics


def _reports(**kw: Any) -> tuple[Report, Report]:
    out = []
    for side, suite in zip(("base", "new"), synth.make_lockstep_pair(KEYS, **kw)):
        cases = [_case_from_benchmark(f"{side}.json", b) for b in suite.get_benchmarks()]
        cases = [c for c in cases if c is not None]
        out.append(Report(f"{side}.json", suite, cases, fingerprint(cases)))
    return out[0], out[1]


def _flagged(cmp: Any) -> dict[str, set]:
    return {v.value: {c.key for c in cmp.cases if c.time.verdict is v}
            for v in (Verdict.SLOWER, Verdict.FASTER)}


def test_paired_estimate_of_a_known_shift() -> None:
    rng = np.random.default_rng(1)
    d = np.log(1.10) + rng.normal(0.0, 0.03, size=8)
    (e,) = _stats.paired_estimates([d])
    assert e.paired and e.n_base == e.n_new == 8
    assert e.low < 1.10 < e.high and e.p < 1e-4
    assert e.ratio == pytest.approx(float(np.exp(d.mean())))
    (one,) = _stats.paired_estimates([[0.1]])
    assert one.p == 1.0 and not one.bounded


def test_lockstep_a_a_is_not_flagged_and_its_p_values_are_honest() -> None:
    # pair noise large enough that the 5% threshold alone cannot hide a
    # miscalibrated test: the raw p-values must be uniform-ish under A/A
    ps = []
    for seed in range(1, 21):
        cmp = compare_reports(*_reports(seed=seed, pair_sd=0.08))
        flagged = _flagged(cmp)
        assert not flagged["slower"] and not flagged["faster"], seed
        assert all(c.time.est.paired for c in cmp.cases)
        ps += [c.time.est.p for c in cmp.cases]
    ps_arr = np.array(ps)
    assert len(ps_arr) == 20 * len(KEYS)
    assert 0.02 < np.mean(ps_arr < 0.05) < 0.09
    assert 0.4 < np.median(ps_arr) < 0.6


def test_lockstep_ten_percent_on_a_third_is_caught_where_unpaired_cannot() -> None:
    # slot levels scatter by 30%: far too much for 8 processes a side
    # compared as two groups, nothing for the slots' own ratios
    base, new = _reports(seed=5, scale=dict.fromkeys(SCALED, 1.1))
    cmp = compare_reports(base, new)
    assert _flagged(cmp) == {"slower": set(SCALED), "faster": set()}
    assert cmp.exit_code == 1
    assert not any("smallest possible p" in n for n in cmp.notes)
    # the same figures taken as two separate runs: no pairing, no call
    new.fingerprint["interleaved"] = "another-run"
    apart = compare_reports(base, new)
    assert not any(c.time.est.paired for c in apart.cases)
    assert len(_flagged(apart)["slower"]) < len(SCALED) // 2


def test_slots_that_do_not_pair_one_to_one_fall_back_to_two_groups() -> None:
    base, new = _reports(seed=7, scale=dict.fromkeys(SCALED, 1.1))
    first, second, third = base.cases[0], base.cases[1], base.cases[2]
    # a value lost on one side of one slot: no pairs for that case
    vals = first.process_values
    first.process_values = [vals[0][:-1], *vals[1:]]
    # a slot number twice on one side: not one run's slots
    second.run_metadata = [dict(m, lockstep_slot=0) for m in second.run_metadata]
    # no slots at all (a case from a worker-by-worker run)
    third.run_metadata = [{k: v for k, v in m.items() if k != "lockstep_slot"}
                          for m in third.run_metadata]
    cmp = compare_reports(base, new)
    paired = {c.key: c.time.est.paired for c in cmp.cases}
    assert not paired[first.key] and not paired[second.key] and not paired[third.key]
    assert sum(paired.values()) == len(KEYS) - 3  # the others, in one family
    assert any(f"{len(KEYS) - 3} of {len(KEYS)} cases were measured in lockstep" in n
               for n in cmp.notes)


def test_every_slot_the_same_ratio_is_a_sign_test() -> None:
    (e,) = _stats.paired_estimates([np.full(8, np.log(1.1))])
    assert e.ratio == pytest.approx(1.1) and (e.low, e.high) == (e.ratio, e.ratio)
    assert e.p == pytest.approx(2.0 / 2 ** 8)
    (z,) = _stats.paired_estimates([np.zeros(8)])
    assert z.p == 1.0 and z.ratio == 1.0 and z.bounded


def test_the_forked_peer_does_not_keep_the_workers_turn_socket() -> None:
    # the main process learns that a worker finished from its turn socket's
    # EOF: a peer holding an inherited copy would delay that to its own exit
    from bench.run.peer import Peer
    from bench.run.transports import make_pair

    mine, theirs = make_pair("unix-stream")
    turn, main_end = socket.socketpair()
    try:
        peer = Peer(theirs, "stream", False, "blocking", 64, None, measured=mine,
                    workers_own=(turn,))
        theirs.close()
        turn.close()
        main_end.settimeout(5.0)
        assert main_end.recv(1) == b""  # EOF while the peer still runs
        assert peer.pid > 0 and os.waitpid(peer.pid, os.WNOHANG) == (0, 0)
        peer.close()
    finally:
        mine.close()
        main_end.close()
