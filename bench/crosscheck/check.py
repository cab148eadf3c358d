"""``crosscheck``: the suite's compiled cases beside iperf3 and sockperf.

Design note
-----------
A performance engineer trusts the suite's figures when they agree with the C
tools on the workloads both can run.  For each such workload this module
runs the tool and the suite's compiled case back to back, :data:`REPEAT`
pairs by default, the order alternating from pair to pair (tool then
suite, suite then tool, ...) so that neither always runs second.  A pair's
two runs share the machine's state, so the figure is the median of the
per-pair ratios suite/tool, with its distribution-free 95% interval (the
sign test's order statistics, :func:`bench.analysis.stats.median_interval`:
no assumption about how a shared machine's noise is distributed; with 20
pairs, the 6th and 15th smallest ratios, 95.9% coverage; with 10, the 2nd
and 9th, 97.9%).  Flagged when off
by more than :data:`AGREE` (5%): ``DISAGREE`` when the interval lies
wholly beyond it on one side, ``noisy`` when the median is beyond but the
interval reaches back (on a loaded machine runs of one tool differ by 2x:
a 5% verdict needs quiet).  With fewer than 6 pairs there is no interval:
``DISAGREE`` then needs every pair off the same way.

Work per CPU second: beside each figure, the CPU time (user + system) per
unit of work of both ends, each from the kernel's accounting: per MB
delivered (stream) or per round trip (ping-pong); the tools' client and
server (:mod:`bench.crosscheck.tools`), the suite's measured side
(``cpu_per_msg``) and its peer process (``peer_cpu_per_msg``).  Two
programs at the same rate can differ in what the rate costs, and a rate
limited by a busy machine shows it in neither figure.

The pairs, chosen so that the two sides do the same work:

* TCP stream, 64 KiB writes: ``iperf3 -l 64K -N`` vs
  ``stream/tcp4/blocking/65536/cython/nodelay-on``.  iperf3 (3.12, as
  strace shows) makes its data socket non-blocking and writes up to ten
  64 KiB blocks per ``select()``; the suite's blocking case stays the
  pair, the plainest loop: its nonblocking case (send until EAGAIN,
  then poll, as iperf3) ran at 0.999x of it, median of 16 alternating
  rounds, at the same sender CPU per MB (0.997x).  ``-N`` is
  TCP_NODELAY, which the suite's stream sets only with ``--nodelay
  on``: with Nagle each 64 KiB write's tail segment waits, and the
  suite's stream ran at 0.6x of iperf3's;
* UDP stream, 1472 B datagrams: ``iperf3 -u -b 0 -l 1472`` vs
  ``stream/udp4/blocking/1472``, both as *delivered* rate (iperf3's
  receiver figure), with loss beside;
* TCP and UDP ping-pong, 64 B, RTT: ``sockperf pp --full-rtt`` vs
  ``pingpong/*/blocking/64``, and sockperf with its epoll wait vs
  ``pingpong/*/nonblocking/64``.  sockperf with one ``-i`` address does
  *not* use epoll, whatever ``-F`` says: it blocks in ``recvfrom()`` (its
  own banner and strace say so).  Its iomux is used only with a feed file
  (``-f``), so the epoll rows give it one, plus ``--nonblocked``.

Fairness: both tools get the placement the suite gives its two sides
(:func:`tool_cpus`; ``crosscheck --placement``, passed to ``run
--placement``; by default ``auto``): for these workloads (none
spins) the kernel's, no pinning, as a user runs the tools; pinned CPUs, when
a placement has them, go to iperf3 through ``-A`` and to sockperf through
the affinity of its processes.  Placement is the largest single factor on a
VM: ends pinned apart ran loopback TCP at 64 KiB at half the rate of the
same ends placed by the kernel, iperf3 and the suite alike.  Figures: MB/s with MB = 10**6 B
(iperf3's own ``-f M`` would be 2**20), RTT in µs (sockperf without
``--full-rtt`` prints half an RTT; the parser doubles an ``avg-latency``).

Duration: the suite's run lasts as long as the tool's (``-t``): by
default one worker process, one connection, ``-t`` seconds in values of
:data:`WINDOW` (iperf3's ``-i 0.1`` intervals), not pyperf's default of
many short processes, each of which starts a new pair that the kernel
places again (with ``-p 4`` and 10 ms values the TCP stream measured
1,435-1,823 MB/s beside 1,840-2,212 MB/s as one 2 s process, three rounds
of three).  A value's messages are fixed (``run --loops``) from the tool's
median figure so far (:func:`window_loops`), not calibrated: pyperf's
calibration is a worker process of its own with 30-odd warm-up values, and
it settled the TCP stream on 0.25 s values, so a 2 s pair's suite side ran
5 s of values in a 10 s run.  One warm-up value, then ``-t`` seconds.

Load: on a shared machine runs of one tool differ by 2x, so besides the
medians the table compares what each side reaches when left alone: the
upper quantile (:data:`WINDOW_Q`) of short windows for the TCP stream
(iperf3's ``-i 0.1`` intervals against the suite's pyperf values, each tens
of ms) and the p50 RTT for ping-pong (per round trip on both sides).

Bounds: every tool runs for ``-t`` seconds under a subprocess timeout; a
server is stopped by pid in a ``finally``; ports come from binding port 0
on loopback (a race with another program is retried).  Servers only ever
listen on 127.0.0.1.

Limits: Linux (readiness is read from /proc/net); loopback only; a loaded
machine moves both sides, so the load average is recorded with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from bench.analysis.stats import median_interval
from bench.analysis.units import MB, fmt_loss, usec
from bench.crosscheck.tools import (
    WINDOW,
    WINDOW_Q,
    CrosscheckError,
    Figure,
    Workload,
    missing_tools,
    run_tool,
    tool_command,
)

# Suite/tool ratio beyond which the two disagree (a fraction).
AGREE = 0.05


def suite_values(seconds: float, processes: int) -> int:
    """Values per suite process so that its measured time is the tool's run
    (``-t``) in :data:`WINDOW`-long values, iperf3's ``-i`` intervals: one
    connection for as long as the tool's, not many short ones."""
    return max(3, round(seconds / (processes * WINDOW)))


def window_loops(w: Workload, tool: float) -> int:
    """Messages (round trips) in one :data:`WINDOW` at the tool's figure
    ``tool`` (MB/s, or a mean RTT in seconds): the suite's fixed loops (why
    not pyperf's calibration: the module's "Duration")."""
    per_window = WINDOW / tool if w.scenario == "pingpong" else tool * MB * WINDOW / w.size
    return max(1, round(per_window))


def run_suite(w: Workload, processes: int, timeout: float, placement: str = "auto",
              seconds: float = 2.0, loops: int | None = None) -> Figure:
    """The suite's compiled case as a subprocess (``python -m bench run``),
    measured for about ``seconds`` in all, as the tool runs: ``loops``
    messages a value (:func:`window_loops`), or pyperf's calibration to
    :data:`WINDOW` when None."""
    import bench
    from bench.analysis.report import ReportError, load_report

    root = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="fastsock-xc-") as tmp:
        out = os.path.join(tmp, "suite.json")
        argv = [sys.executable, "-m", "bench", "run", "--scenario", w.scenario,
                "--transport", w.transport, "--mode", w.mode, "--size", str(w.size),
                "--impl", "cython", "-o", out, "--no-html", "-p", str(processes),
                "-n", str(suite_values(seconds, processes)), "--placement", placement]
        argv += ["--loops", str(loops), "-w", "1"] if loops else ["--min-time", f"{WINDOW:g}"]
        if w.nodelay:
            argv += ["--nodelay", "on"]
        try:
            done = subprocess.run(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CrosscheckError(
                f"suite case {w.case} did not finish within {timeout:g} s") from None
        if done.returncode != 0 or not os.path.exists(out):
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = err[-1] if err else done.returncode
            raise CrosscheckError(f"suite case {w.case} failed: {why}")
        try:
            case = load_report(out).cases[0]
        except (ReportError, IndexError) as exc:
            raise CrosscheckError(f"suite case {w.case}: {exc}") from None
        if case.key.name != w.case:  # the run measured another case than paired
            raise CrosscheckError(f"suite case {w.case}: the run measured {case.key.name}")
    # The tools average over their whole run (iperf3: bytes / seconds;
    # sockperf: mean RTT), so the suite's figure here is the mean over its
    # values (every value times the same number of loops: total time / total
    # messages), not the median the run summary shows (kept in extra).
    seconds, median = statistics.fmean(case.values), statistics.median(case.values)
    loss = case.run_mean("loss") if w.udp else None
    # CPU time per unit of work: per byte (stream) or per round trip
    per = 1 if w.scenario == "pingpong" else w.size
    cpu: dict[str, float] = {}
    for side, key in (("client", "cpu_per_msg"), ("server", "peer_cpu_per_msg")):
        value = case.run_mean(key)
        if value is not None:
            cpu[f"cpu_{side}_per_unit"] = value / per
    # where its two ends ran (the run's placement facts) and the loops of a
    # value, for the record
    recorded = {k: str(case.metadata.get(k, "?")) for k in ("placement", "peer_cpu", "loops")}
    if w.scenario == "pingpong":
        return Figure(seconds, p50=case.run_mean("rtt_p50"), p99=case.run_mean("rtt_p99"),
                      loss=loss, extra={"median": median, **cpu, **recorded})
    return Figure(w.size / seconds / MB, loss=loss, extra={
        "median": w.size / median / MB, "windows": [w.size / v / MB for v in case.values],
        **cpu, **recorded})


def tool_cpus(w: Workload, placement: str = "auto") -> tuple[int | None, int | None]:
    """(client CPU, server CPU) for a workload's tool: where the suite's
    run puts its measured side and its peer under ``placement`` (``run
    --placement``; auto: the kernel's choice, no pinning, but for spin), so
    both run alike."""
    from bench.run.peer import choose_cpus, placement_for

    worker, peer = choose_cpus(placement_for(placement, w.mode))
    return (min(worker) if worker else None, peer)


def cpu_per_unit(fig: Figure, side: str) -> float | None:
    """CPU seconds per byte (stream) or per round trip of one end of a
    run: ``side`` "client" (sender, the suite's measured side) or "server"
    (receiver or echo, the suite's peer)."""
    given = fig.extra.get(f"cpu_{side}_per_unit")
    if given is not None:
        return float(given)
    cpu, work = fig.extra.get(f"cpu_{side}"), fig.extra.get("work")
    return float(cpu) / float(work) if cpu is not None and work else None


# ------------------------------------------------------------ the check


@dataclass
class Row:
    workload: Workload
    tool_runs: list[Figure] = field(default_factory=list)
    suite_runs: list[Figure] = field(default_factory=list)
    command: str = ""
    error: str | None = None
    loads: list[float] = field(default_factory=list)  # 1-minute load after each pair

    @staticmethod
    def _med(runs: list[Figure], attr: str) -> float | None:
        vals = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    def tool(self, attr: str = "value") -> float | None:
        return self._med(self.tool_runs, attr)

    def suite(self, attr: str = "value") -> float | None:
        return self._med(self.suite_runs, attr)

    def ratio(self, attr: str = "value") -> float | None:
        """The median of the per-pair ratios suite/tool (``value``); of
        another figure, the ratio of the medians (not every run has it)."""
        if attr == "value":
            pairs = self.paired()
            return statistics.median(pairs) if pairs else None
        t, s = self.tool(attr), self.suite(attr)
        return s / t if t and s else None

    def interval(self) -> tuple[float, float, float] | None:
        """The median ratio's distribution-free 95% interval: (low, high,
        exact coverage); None below 6 pairs."""
        return median_interval(self.paired())

    def cpu(self, who: str, side: str) -> float | None:
        """Median over runs of CPU seconds per unit of work: ``who`` "tool"
        or "suite", ``side`` "client" or "server" (see :func:`cpu_per_unit`)."""
        runs = self.tool_runs if who == "tool" else self.suite_runs
        vals = [v for v in (cpu_per_unit(r, side) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    def spread(self) -> float | None:
        """The larger of the two sides' (max - min) / median over the
        repetitions: how far apart runs of the same thing were (noise)."""
        out = []
        for runs in (self.tool_runs, self.suite_runs):
            vals = [r.value for r in runs]
            if len(vals) > 1:
                out.append((max(vals) - min(vals)) / statistics.median(vals))
        return max(out) if out else None

    def paired(self) -> list[float]:
        """suite/tool of each repetition: the two ran back to back, under
        the same load, so a real difference shows in every pair."""
        return [s.value / t.value for t, s in zip(self.tool_runs, self.suite_runs)
                if t.value and s.value]

    def verdict(self) -> str | None:
        """``ok`` (the median ratio within AGREE), ``disagree`` (off by
        more, and its interval wholly beyond AGREE on the same side; below
        6 pairs: every pair off the same way), ``noisy`` (off by more, but
        the interval reaches back: the runs' own spread hides it); None
        without figures."""
        r = self.ratio()
        if r is None:
            return None
        if abs(r - 1) <= AGREE:
            return "ok"
        ci = self.interval()
        if ci is not None:
            lo, hi, _ = ci
            return "disagree" if lo > 1 + AGREE or hi < 1 - AGREE else "noisy"
        pairs = self.paired()
        if all(p > 1 + AGREE for p in pairs) or all(p < 1 - AGREE for p in pairs):
            return "disagree"
        return "noisy"

    def disagrees(self) -> bool:
        return self.verdict() == "disagree"

    def window_q(self, side: str) -> float | None:
        """WINDOW_Q quantile of one side's short windows (MB/s), pooled over
        the repetitions: iperf3's 100 ms intervals, the suite's pyperf values."""
        from bench.run.worker import percentile

        runs = self.tool_runs if side == "tool" else self.suite_runs
        pooled = sorted(v for r in runs for v in r.extra.get("windows", ()))
        return percentile(pooled, WINDOW_Q) if pooled else None


@dataclass
class Result:
    rows: list[Row]
    skipped: list[str]
    seconds: float
    repeat: int
    processes: int
    cpus: tuple[int | None, int | None]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


def crosscheck(workloads: Sequence[Workload], *, seconds: float, repeat: int, processes: int,
               progress: Callable[[str], None] = lambda s: None,
               path: str | None = None, placement: str = "auto") -> Result:
    """Run each workload's tool and suite case alternately, ``repeat`` times,
    both where ``placement`` (``run --placement``) puts the suite's ends."""
    missing = set(missing_tools(path))
    result = Result([], [], seconds, repeat, processes, (None, None), os.getloadavg())
    for w in workloads:
        if w.tool in missing:
            result.skipped.append(f"{w.name}: {w.tool} is not installed")
            continue
        cpus = tool_cpus(w, placement)
        result.cpus = cpus
        row = Row(w, command=" ".join(tool_command(w, 0, seconds, cpus, "FEED")[1])
                  .replace("-p 0", "-p PORT"))
        result.rows.append(row)
        suite_timeout = 60.0 + 15.0 * processes + 3.0 * seconds
        tool_figures: list[float] = []
        try:
            for k in range(1, repeat + 1):
                # the order alternates: neither side always runs second
                for side in ("tool", "suite") if k % 2 else ("suite", "tool"):
                    if side == "tool":
                        progress(f"[{w.name} {k}/{repeat}] {w.tool}")
                        tool_run = run_tool(w, seconds, cpus)
                        tool_figures.append(tool_run.value)
                    else:
                        progress(f"[{w.name} {k}/{repeat}] suite {w.case}")
                        # the tool's median so far (pair 1 runs the tool first)
                        loops = window_loops(w, statistics.median(tool_figures))
                        suite_run = run_suite(w, processes, suite_timeout, placement,
                                              seconds, loops)
                # appended together: the two lists stay aligned pair by pair
                row.tool_runs.append(tool_run)
                row.suite_runs.append(suite_run)
                row.loads.append(os.getloadavg()[0])
        except CrosscheckError as exc:
            row.error = str(exc)
    result.load_after = os.getloadavg()
    return result


# -------------------------------------------------------------- rendering


def _fig(w: Workload, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{usec(value):,.2f} µs" if w.scenario == "pingpong" else f"{value:,.1f} MB/s"


def _detail(row: Row) -> str:
    w, parts = row.workload, []
    if w.scenario == "pingpong":
        t, s = row.tool("p50"), row.suite("p50")
        if t and s:
            parts.append(f"p50 {usec(t):.2f}/{usec(s):.2f} µs ({s / t:.2f}x)")
    else:
        t, s = row.window_q("tool"), row.window_q("suite")
        if t and s:
            parts.append(f"q{100 * WINDOW_Q:.0f} of windows {t:,.0f}/{s:,.0f} MB/s"
                         f" ({s / t:.2f}x)")
    lt, ls = row.tool("loss"), row.suite("loss")
    if lt is not None or ls is not None:
        parts.append(f"loss {fmt_loss(lt) if lt is not None else '-'}/"
                     f"{fmt_loss(ls) if ls is not None else '-'}")
    if row.error:
        parts.append(f"error: {row.error}")
    return "; ".join(parts)


_FLAGS = {"ok": "ok", "disagree": "DISAGREE >5%", "noisy": "noisy (>5%, interval reaches back)"}


def _where(cpus: tuple[int | None, int | None]) -> str:
    if cpus == (None, None):
        return "both ends where the kernel puts them (no pinning), tools and suite alike"
    return f"client/sender on CPU {cpus[0]}, server/peer on CPU {cpus[1]}"


def _interval(row: Row) -> str:
    ci = row.interval()
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "-"


def _cpu(row: Row) -> str:
    """CPU time per unit of work, tool's client+server / suite's measured
    side+peer: µs per MB delivered (stream) or per round trip."""
    w = row.workload
    scale, unit, digits = (1e6, "µs/rt", 2) if w.scenario == "pingpong" else (1e6 * MB, "µs/MB", 0)

    def pair(who: str) -> str:
        vals = [row.cpu(who, side) for side in ("client", "server")]
        return "+".join(f"{v * scale:,.{digits}f}" if v is not None else "?" for v in vals)

    if all(row.cpu(who, side) is None for who in ("tool", "suite")
           for side in ("client", "server")):
        return "-"
    return f"{pair('tool')} / {pair('suite')} {unit}"


def render_table(res: Result) -> str:
    def load(t: tuple[float, ...]) -> str:
        return "/".join(f"{x:.2f}" for x in t)

    head = ("workload", "tool", "tool figure", "suite case", "suite figure", "suite/tool",
            "95% interval", "flag", "spread", "CPU tool / suite", "tool/suite detail")
    lines: list[tuple[str, ...]] = []
    for row in res.rows:
        w, ratio = row.workload, row.ratio()
        verdict = row.verdict()
        flag = "ERROR" if row.error and ratio is None else _FLAGS.get(verdict or "", "-")
        spread = row.spread()
        lines.append((w.name, w.tool, _fig(w, row.tool()), w.case, _fig(w, row.suite()),
                      f"{ratio:.3f}" if ratio is not None else "-", _interval(row), flag,
                      f"{100 * spread:.0f}%" if spread is not None else "-", _cpu(row),
                      _detail(row)))
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = [
        f"crosscheck: {res.repeat} alternating tool/suite pairs per workload (tool"
        f" {res.seconds:g} s, suite -p {res.processes}); {_where(res.cpus)};"
        f" load average {load(res.load_before)} before, {load(res.load_after)} after",
        "MB = 10^6 B; stream: delivered (receiver) rate; pingpong: mean RTT; figures: medians"
        " over runs; suite: mean over pyperf values (as the tools average); suite/tool: the"
        " median of the per-pair ratios, with its sign-test 95% interval (order statistics,"
        " no distribution assumed); flag when it is off by > 5%: DISAGREE when the interval"
        " is wholly beyond, noisy when not; spread: (max - min) / median of one side's runs",
        "CPU tool / suite: CPU time (user + system) of sender+receiver (ping-pong:"
        " client+echo) per MB delivered or per round trip: the tool's client and server,"
        " the suite's measured side and its peer process",
        f"detail (tool/suite): pingpong p50 RTT; TCP stream q{100 * WINDOW_Q:.0f} of short"
        f" windows (iperf3 -i {WINDOW:g} intervals, pyperf values): what each reaches when"
        " the machine leaves it alone",
        "  ".join(h.ljust(wd) for h, wd in zip(head, widths)).rstrip(),
        "  ".join("-" * wd for wd in widths),
    ]
    out += ["  ".join(c.ljust(wd) for c, wd in zip(ln, widths)).rstrip() for ln in lines]
    for row in res.rows:
        out.append(f"  {row.workload.name}: {row.command}")
    out += [f"skipped {s}" for s in res.skipped]
    cpus = os.cpu_count() or 1
    if max(res.load_before[0], res.load_after[0]) > cpus / 2:
        out.append(f"warning: 1-minute load average up to "
                   f"{max(res.load_before[0], res.load_after[0]):.2f} on {cpus} CPUs: other "
                   "work shares the CPUs, figures move with it; repeat when the machine is quiet")
    return "\n".join(out)


def render_json(res: Result) -> str:
    def runs(figs: list[Figure]) -> list[dict[str, Any]]:
        return [asdict(f) for f in figs]

    rows = []
    for row in res.rows:
        w = row.workload
        unit = "seconds" if w.scenario == "pingpong" else "MB/s"
        rows.append({
            "workload": w.name, "tool": w.tool, "tool_command": row.command,
            "suite_case": w.case, "unit": unit,
            "tool_figure": row.tool(), "suite_figure": row.suite(), "ratio": row.ratio(),
            "interval": list(row.interval() or ()) or None,
            "verdict": row.verdict(), "disagree": row.disagrees(), "paired": row.paired(),
            "cpu_unit": "seconds per round trip" if w.scenario == "pingpong"
            else "seconds per byte",
            "tool_cpu_client": row.cpu("tool", "client"),
            "tool_cpu_server": row.cpu("tool", "server"),
            "suite_cpu_client": row.cpu("suite", "client"),
            "suite_cpu_server": row.cpu("suite", "server"),
            "loads": row.loads,
            "spread": row.spread(), "tool_p50": row.tool("p50"),
            "suite_p50": row.suite("p50"), "tool_loss": row.tool("loss"),
            "suite_loss": row.suite("loss"),
            "tool_window_q": row.window_q("tool"), "suite_window_q": row.window_q("suite"),
            "tool_runs": runs(row.tool_runs), "suite_runs": runs(row.suite_runs),
            "error": row.error,
        })
    doc = {
        "threshold": AGREE, "window_quantile": WINDOW_Q, "seconds": res.seconds,
        "repeat": res.repeat,
        "processes": res.processes, "client_cpu": res.cpus[0], "server_cpu": res.cpus[1],
        "load_before": list(res.load_before), "load_after": list(res.load_after),
        "rows": rows, "skipped": res.skipped,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)
