"""fastsock reports: the schema, the loader, atomic writes.

Design note
-----------
A fastsock report is a pyperf ``BenchmarkSuite`` JSON file (``pyperf show``,
``stats`` and ``compare_to`` work on it) whose benchmarks carry fastsock's
metadata.  Every consumer (compare, plot, report) reads a case's fields from
metadata, never from its name, and goes through :func:`load_report`, which
turns every way a file can be wrong into one :class:`ReportError` line.

Schema (``fastsock_schema`` = 2)
--------------------------------
Two measures share the schema: ``time`` (pyperf's seconds; the default,
and what a report without ``measure`` is: schema 1 had only it) and
``instructions`` (``run --measure instructions``: user-space instructions
per message counted under valgrind, see "Count reports" below).  One
report holds one measure.

Benchmark metadata (the same in every run of a benchmark).  Schema 2 added
the case fields ``sockbuf``, ``threads`` and ``nodelay`` (and the set-up
facts and run metadata that go with them); a schema 1 report reads as
their defaults (:data:`FIELD_DEFAULTS`), which are what schema 1 measured,
so old and new reports compare case by case.

=================  =====  ==================================================
key                type   meaning
=================  =====  ==================================================
name               str    ``scenario/transport/mode/size/impl``, then
                          ``/batchN``, ``/sockbufN``, ``/threadsN``,
                          ``/nodelay-on`` for each field off its default
unit               str    ``second`` (pyperf's value, lower is better)
scenario           str    ``stream`` (throughput), ``pingpong`` (RTT) or
                          ``connect`` (connections set up and torn down)
transport          str    tcp4 tcp6 udp4 udp6 unix-stream unix-dgram
mode               str    blocking timeout nonblocking spin
size               int    message / datagram payload, bytes (connect: 0)
impl               str    measured side: ``cython`` or ``python`` (the
                          twins), an event-loop impl: ``asyncio-streams``,
                          ``asyncio-sock``, ``uvloop-streams``, ``uvloop-sock``,
                          an idiom (``socket-sendall``, ``socket-recv``,
                          ``socket-makefile``, ``socket-sendmsg``), or an
                          impl from outside (its label, entry-point name or
                          module path: docs/impls.md)
impl_module        str    the module holding the measured loops
impl_origin        str    that module's file
impl_contract      int    the loop contract version it keeps
impl_dist          str    the distribution that installed it, where known
impl_dist_version  str    that distribution's version
impl_version       str    the module's ``__version__``, when it has one
                          (the impl_* keys: absent in older reports)
batch              int    datagrams per syscall (1 when absent: schema 1)
sockbuf            int    SO_SNDBUF and SO_RCVBUF asked of both ends before
                          they connect, bytes; 0: the kernel's defaults
                          (and autotuning), as in schema 1
threads            int    connections, each driven by its own thread of the
                          measured process (event loops: N connections on
                          one loop); 1 as in schema 1
nodelay            int    1 when a stream sender over TCP ran with
                          TCP_NODELAY on (``--nodelay on``); 0 otherwise,
                          including pingpong, which always sets it (see
                          tcp_nodelay)
peer_impl          str    the peer's implementation (absent for connect,
                          which plays both ends itself)
peer_batch         int    datagrams per receive call of the peer (datagram
                          stream only; recvmmsg when > 1; absent in older
                          reports, whose peer took one per recv)
fastsock_schema    int    this schema's version
measure            str    ``time`` (absent: time) or ``instructions``
fastsock_version   str    fastsock's version
fastsock_commit    str    git commit of the measured tree ("unknown" if none)
fastsock_loaded    str    implementation the measuring process loaded
tcp_nodelay        int    1 when TCP_NODELAY was set (pingpong over TCP)
event_loop         str    event-loop impls only: asyncio's loop class and
                          selector (``asyncio _UnixSelectorEventLoop/
                          EpollSelector``) or ``uvloop <version>``
sndbuf, rcvbuf     int    effective SO_SNDBUF / SO_RCVBUF of the measured
                          end after set-up, bytes (what the kernel granted:
                          it doubles a request, capped at net.core.w/rmem_max)
peer_sndbuf,       int    the same of the peer's end (local peers; with
peer_rcvbuf               sockbuf > 0 only)
warm_up            float  seconds a stream case over a connection ran, untimed,
                          before its first value (schema 2; absent: none)
placement          str    ``apart`` (measured side and peer pinned to a CPU
                          each) or ``os`` (the kernel's placement); with
                          ``measured_cpus`` (the measured process's CPUs)
                          and ``peer_cpu`` (``any``: not pinned); schema 1
                          reports pinned apart and lack these keys
sockbuf_capped     int    1 when the kernel granted less than asked for
                          (sockbuf above net.core.wmem_max or rmem_max:
                          granted = 2 x the cap); sockbuf > 0 only
interleaved        str    id shared by the two reports of one ``run
                          --base-python`` (absent otherwise)
interleaved_side   str    ``base`` or ``new`` in such a run
+ fingerprint      ...    see :data:`FINGERPRINT_KEYS` (pyperf adds
                          cpu_model_name, cpu_count, python_version,
                          platform, hostname, load_avg_1min, ...)
=================  =====  ==================================================

pyperf's value: seconds per message (stream), seconds per round trip
(pingpong), elapsed / *delivered* datagrams (datagram stream: never the send
rate), seconds per connection (connect).  With ``threads`` N > 1: stream,
wall time per message delivered over all N connections together (so MB/s
is the aggregate); pingpong, the mean over connections of each one's time
per round trip (the RTT a connection sees; N / value is round trips per
second over all).  Derived when shown: MB/s = size /
value / 1e6, msg/s = 1 / value, conn/s = 1 / value.

Run metadata (one pyperf run = one worker process; calibration runs have
no values and are ignored):

================  =====  =====================================================
cpu_per_msg       float  measured side's CPU time (user + system) per message,
                         round trip or connection (connect: both ends), seconds;
                         with threads: the whole process's, per message or
                         round trip of all its connections together
cpu_use           float  measured process's CPU time / wall time over its
                         timed calls: 1.0 is one CPU's worth (schema 2)
peer_cpu_per_msg  float  the local peer process's CPU time (all its threads)
                         per message or round trip over the timed calls,
                         seconds (schema 2; absent for remote peers)
sent              int    datagrams sent (datagram stream)
delivered         int    datagrams the peer received (datagram stream)
loss              float  1 - delivered / sent (datagram stream); lost round
                         trips / rounds (datagram pingpong)
rtt_p50 ...       float  rtt_p50, rtt_p90, rtt_p99, rtt_p999: round-trip time
                         percentiles over that process's timed round trips, s
lockstep_slot     int    runs of ``run --base-python`` in lockstep only: the
                         slot, shared by the base's and the candidate's run
                         that took turns value by value (compare pairs them)
================  =====  =====================================================

Count reports (``measure`` = ``instructions``): one run of one value per
benchmark, instructions per message, round trip or connection of the
measured process's user space (interpreter, extension, libc; not the
kernel's work), retry-free where fitted.  pyperf's ``unit`` is
``integer`` (pyperf knows no other unit for a count); fastsock's own keys:

=================  =====  ==============================================
count_unit         str    ``instructions per message`` (round trip,
                          connection)
count_tool         str    ``callgrind``
valgrind_version   str    ``valgrind-3.19.0``
count_method       str    ``difference`` (N and 2N messages) or ``fit``
                          (least squares over six intervals)
count_n            int    N, messages of the unit interval
count_msgs         str    messages per interval, comma-separated
count_ir           str    instructions per interval, comma-separated
count_calls        str    calls per interval of the libc functions that
                          tell timing-dependent work (``send:2001,4001;
                          poll:3,3``)
count_setup_ir     int    instructions before the case's first interval
                          (the previous case's teardown, this one's
                          set-up and warm-up; the first case: start-up):
                          not counted
count_se           float  fit only: standard error of the value
count_dof          int    fit only: its residual degrees of freedom
                          (intervals - unknowns; absent: derived so)
retries_per_msg    float  fit only: waits after EAGAIN per message;
                          likewise continuations_per_msg, resends_per_msg
instr_per_retry    float  fit only: instructions per retry (where fitted;
                          likewise instr_per_continuation, instr_per_resend)
count_env          str    the environment fixed for counting
count_left_out     str    cases not counted and why (spin), if any
sent, delivered,   ...    as in a time report; a count is per *sent*
loss                      datagram (the sender's work does not depend on
                          the loss, which is information)
=================  =====  ==============================================
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the counting worker starts under
    import pyperf  # valgrind, where pyperf's import alone costs ~4 s

SCHEMA_VERSION = 2
# Reports larger than this are refused before parsing (bytes): a default
# run is well under 10 MB; a larger file is not a fastsock report.
MAX_REPORT_BYTES = 256 * 1024 * 1024

CASE_FIELDS = ("scenario", "transport", "mode", "size", "impl")
# The values of those fields this fastsock knows, in the order they are
# shown (bench.run.matrix enumerates cases of them; a report may hold others,
# which readers show after these).
SCENARIOS = ("stream", "pingpong", "connect")
TRANSPORTS = ("tcp4", "tcp6", "udp4", "udp6", "unix-stream", "unix-dgram")
DGRAM_TRANSPORTS = ("udp4", "udp6", "unix-dgram")
MODES = ("blocking", "timeout", "nonblocking", "spin")
COMPILED, PYTHON = "cython", "python"  # the twins
TWIN_IMPLS = (COMPILED, PYTHON)
# The event-loop comparators, "<event loop>-<API>" (fastsock._asyncloops).
ASYNC_IMPLS = ("asyncio-streams", "asyncio-sock", "uvloop-streams", "uvloop-sock")
# The standard library's idioms, "<family>-<API>" (fastsock._idioms).  Any
# other name is an impl from outside fastsock (docs/impls.md).
IDIOM_IMPLS = ("socket-sendall", "socket-recv", "socket-makefile", "socket-sendmsg")
# Defaults for fields added after schema 1, so older reports still load
# (what the older suite measured): batch 1, the kernel's socket buffers,
# one connection, Nagle as the scenario always had it.
FIELD_DEFAULTS: dict[str, Any] = {"batch": 1, "sockbuf": 0, "threads": 1, "nodelay": 0}
# What a report's values are: pyperf's seconds, or counted instructions
# (a report without ``measure`` is a time report: schema 1 had only it).
TIME, INSTRUCTIONS = "time", "instructions"
MEASURES = (TIME, INSTRUCTIONS)
FINGERPRINT_KEYS = (
    "cpu_model_name",
    "cpu_count",
    "cpu_affinity",
    "platform",
    "kernel",
    "python_version",
    "cython_version",
    "fastsock_version",
    "fastsock_commit",
    "fastsock_loaded",
    "net_core_rmem_max",
    "net_core_wmem_max",
    "net_core_busy_poll",
    "net_core_busy_read",
    "load_avg_1min",
    "hostname",
    "interleaved",
    "interleaved_side",
    "valgrind_version",
)
PERCENTILES = ("rtt_p50", "rtt_p90", "rtt_p99", "rtt_p999")


class ReportError(Exception):
    """A report that cannot be used; ``str()`` is one line naming the file."""


@dataclass(frozen=True)
class CaseKey:
    scenario: str
    transport: str
    mode: str
    size: int
    impl: str
    batch: int = 1
    # schema 2; the defaults are what schema 1 measured
    sockbuf: int = 0  # bytes asked of SO_SNDBUF/SO_RCVBUF; 0: the kernel's
    threads: int = 1  # connections, a thread each
    nodelay: bool = False  # stream over TCP: the sender's TCP_NODELAY on

    @property
    def name(self) -> str:
        """The grammar: a suffix per field off its default, so schema 1's
        names stay what they were."""
        name = f"{self.scenario}/{self.transport}/{self.mode}/{self.size}/{self.impl}"
        if self.batch != 1:
            name += f"/batch{self.batch}"
        if self.sockbuf:
            name += f"/sockbuf{self.sockbuf}"
        if self.threads != 1:
            name += f"/threads{self.threads}"
        if self.nodelay:
            name += "/nodelay-on"
        return name

    def other_impl(self, impl: str) -> CaseKey:
        return replace(self, impl=impl)


@dataclass
class Case:
    """One benchmark of a report, with what consumers need from it."""

    key: CaseKey
    benchmark: pyperf.Benchmark
    metadata: dict[str, Any]
    # values per worker process (warmups and calibration runs excluded)
    process_values: list[list[float]] = field(default_factory=list)
    run_metadata: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def values(self) -> list[float]:
        return [v for vals in self.process_values for v in vals]

    def process_medians(self) -> list[float]:
        import statistics

        return [statistics.median(v) for v in self.process_values if v]

    def slots(self) -> dict[int, tuple[list[float], dict[str, Any]]]:
        """Runs of a lockstep interleaved run by slot: values and metadata;
        empty when a slot number repeats (not one run's slots)."""
        out: dict[int, tuple[list[float], dict[str, Any]]] = {}
        for vals, meta in zip(self.process_values, self.run_metadata):
            slot = meta.get("lockstep_slot")
            if vals and isinstance(slot, int):
                if slot in out:
                    return {}
                out[slot] = (vals, meta)
        return out

    def run_mean(self, key: str) -> float | None:
        """Mean over processes of a numeric run-metadata key, or None."""
        vals = [float(m[key]) for m in self.run_metadata if key in m]
        return sum(vals) / len(vals) if vals else None


@dataclass
class Report:
    path: str
    suite: pyperf.BenchmarkSuite
    cases: list[Case]
    fingerprint: dict[str, Any]
    measure: str = TIME  # what the values are (MEASURES)

    def by_key(self) -> dict[CaseKey, Case]:
        return {c.key: c for c in self.cases}


def _case_from_benchmark(path: str, bench: pyperf.Benchmark) -> Case | None:
    meta = bench.get_metadata()
    if "fastsock_schema" not in meta:
        return None
    missing = [k for k in CASE_FIELDS if k not in meta]
    if missing:
        raise ReportError(
            f"{path}: benchmark {bench.get_name()!r} lacks fastsock metadata: {', '.join(missing)}"
        )
    try:
        size = int(meta["size"])
        extra = {k: int(meta.get(k, v)) for k, v in FIELD_DEFAULTS.items()}
    except (TypeError, ValueError):
        raise ReportError(
            f"{path}: benchmark {bench.get_name()!r} has a non-integer size, batch,"
            " sockbuf, threads or nodelay") from None
    key = CaseKey(
        str(meta["scenario"]), str(meta["transport"]), str(meta["mode"]), size,
        str(meta["impl"]), extra["batch"], sockbuf=extra["sockbuf"],
        threads=extra["threads"], nodelay=bool(extra["nodelay"]),
    )
    process_values: list[list[float]] = []
    run_meta: list[dict[str, Any]] = []
    for run in bench.get_runs():
        if not run.values:
            continue  # calibration run
        vals = [float(v) for v in run.values]
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise ReportError(f"{path}: benchmark {key.name!r} has a non-positive value")
        process_values.append(vals)
        run_meta.append(run.get_metadata())
    if not process_values:
        raise ReportError(f"{path}: benchmark {key.name!r} has no values")
    full_meta: dict[str, Any] = {**FIELD_DEFAULTS, "measure": TIME}
    full_meta.update(meta)
    return Case(key, bench, full_meta, process_values, run_meta)


def load_report(path: str | os.PathLike[str]) -> Report:
    """Load and validate a fastsock report; every failure is a ReportError."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror}") from None
    if os.path.isdir(path):
        raise ReportError(f"{path}: is a directory, not a report")
    if st.st_size == 0:
        raise ReportError(f"{path}: empty file, not a report")
    if st.st_size > MAX_REPORT_BYTES:
        raise ReportError(
            f"{path}: {st.st_size} bytes, over the {MAX_REPORT_BYTES} byte cap for a report"
        )
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = json.loads(raw)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReportError(f"{path}: not JSON ({_first_line(exc)}), truncated or corrupt?") from None
    if not isinstance(data, dict) or "version" not in data or (
        "benchmarks" not in data and "runs" not in data
    ):
        raise ReportError(f"{path}: JSON but not a pyperf report")
    import pyperf

    try:
        suite = pyperf.BenchmarkSuite.loads(raw.decode("utf-8"))
    except Exception as exc:  # pyperf raises many types on malformed input
        raise ReportError(f"{path}: not a valid pyperf report ({_first_line(exc)})") from None
    cases: list[Case] = []
    for bench in suite.get_benchmarks():
        case = _case_from_benchmark(path, bench)
        if case is not None:
            cases.append(case)
    if not cases:
        raise ReportError(f"{path}: a pyperf report without fastsock metadata")
    seen: set[CaseKey] = set()
    for case in cases:
        if case.key in seen:
            raise ReportError(f"{path}: case {case.name!r} appears twice")
        seen.add(case.key)
    schema = max(int(c.metadata.get("fastsock_schema", 0)) for c in cases)
    if schema > SCHEMA_VERSION:
        raise ReportError(
            f"{path}: report schema {schema} is newer than this fastsock ({SCHEMA_VERSION});"
            " upgrade"
        )
    measures = {str(c.metadata.get("measure", TIME)) for c in cases}
    unknown = sorted(measures - set(MEASURES))
    if unknown:
        raise ReportError(f"{path}: unknown measure {unknown[0]!r} (this fastsock knows "
                          f"{', '.join(MEASURES)})")
    if len(measures) > 1:
        raise ReportError(f"{path}: mixes measures ({', '.join(sorted(measures))}); "
                          "a report holds one")
    return Report(path, suite, cases, fingerprint(cases), measures.pop())


def fingerprint(cases: Iterable[Case]) -> dict[str, Any]:
    """The environment keys shared by the report's cases (first case wins)."""
    fp: dict[str, Any] = {}
    for case in cases:
        for key in FINGERPRINT_KEYS:
            if key not in fp and key in case.metadata:
                fp[key] = case.metadata[key]
    return fp


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory
    and a rename, so a crash mid-write leaves the previous file intact."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=directory)
    try:
        # mkstemp makes the file 0600; a report is as readable as any file
        # this user creates (the umask decides)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dump_suite(suite: pyperf.BenchmarkSuite, path: str | os.PathLike[str]) -> None:
    """Atomically write a pyperf suite as JSON (pyperf's own ``dump`` is not
    atomic and refuses existing files)."""
    import io

    buf = io.StringIO()
    suite.dump(buf, compact=False)
    write_atomic(path, buf.getvalue())
