"""Synthetic fastsock reports with known distributions, for tests of the
consumers (compare, plot, report) that must not depend on a real run."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pyperf

from bench.analysis.report import SCHEMA_VERSION, CaseKey

FINGERPRINT = {
    "cpu_model_name": "Synthetic CPU @ 3.0GHz",
    "cpu_count": 2,
    "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
    "kernel": "6.1.0",
    "python_version": "3.11.7 (64-bit)",
    "cython_version": "3.3.1",
    "fastsock_version": "0.1.0",
    "fastsock_commit": "0000000",
    "fastsock_loaded": "cython",
    "net_core_rmem_max": 212992,
    "net_core_wmem_max": 212992,
    "net_core_busy_poll": 0,
    "net_core_busy_read": 0,
    "hostname": "synthetic",
}


def make_benchmark(
    key: CaseKey,
    mean: float,
    *,
    processes: int = 8,
    values: int = 3,
    rel_sd: float = 0.02,
    process_sd: float = 0.02,
    rng: random.Random,
    extra_meta: dict | None = None,
) -> pyperf.Benchmark:
    """A benchmark whose per-process level is mean * N(1, process_sd) and
    whose values scatter around it by N(1, rel_sd)."""
    meta = {
        "name": key.name,
        "unit": "second",
        "scenario": key.scenario,
        "transport": key.transport,
        "mode": key.mode,
        "size": key.size,
        "impl": key.impl,
        "batch": key.batch,
        "peer_impl": "cython",
        "fastsock_schema": SCHEMA_VERSION,
        "loops": 1000,
    }
    meta.update(FINGERPRINT)
    if extra_meta:
        meta.update(extra_meta)
    runs = []
    for _ in range(processes):
        level = mean * max(0.5, rng.gauss(1.0, process_sd))
        vals = [level * max(0.5, rng.gauss(1.0, rel_sd)) for _ in range(values)]
        run_meta = dict(meta)
        run_meta["cpu_per_msg"] = level * 0.9
        run_meta["date"] = "2026-11-29T12:00:00"
        if key.scenario == "pingpong":
            run_meta.update(
                rtt_p50=level * 0.97, rtt_p90=level * 1.1,
                rtt_p99=level * 1.6, rtt_p999=level * 3.0,
            )
        if key.transport.startswith("udp") or key.transport == "unix-dgram":
            run_meta.update(loss=0.0)
            if key.scenario == "stream":
                run_meta.update(sent=100000, delivered=100000)
        runs.append(pyperf.Run(vals, warmups=[(1000, level)], metadata=run_meta,
                               collect_metadata=False))
    return pyperf.Benchmark(runs)


def default_keys() -> list[CaseKey]:
    keys = []
    for scenario, sizes in (("stream", (64, 65536)), ("pingpong", (64,))):
        for transport in ("tcp4", "udp4", "unix-stream"):
            for mode in ("blocking", "spin"):
                for size in sizes:
                    if transport == "udp4" and size > 65507:
                        size = 8192
                    for impl in ("cython", "python"):
                        keys.append(CaseKey(scenario, transport, mode, size, impl))
    return keys


def base_time(key: CaseKey) -> float:
    """A plausible seconds-per-message for a case."""
    if key.scenario == "pingpong":
        t = 12e-6 if key.mode == "blocking" else 4e-6
    else:
        t = 0.4e-6 + key.size / 3e9
    return t * (1.3 if key.impl == "python" else 1.0)


def make_suite(
    keys: Iterable[CaseKey] | None = None,
    *,
    seed: int = 1,
    scale: dict[CaseKey, float] | None = None,
    **kw,
) -> pyperf.BenchmarkSuite:
    rng = random.Random(seed)
    benches = []
    for key in keys if keys is not None else default_keys():
        mean = base_time(key) * (scale or {}).get(key, 1.0)
        benches.append(make_benchmark(key, mean, rng=rng, **kw))
    return pyperf.BenchmarkSuite(benches)


def write_report(path, keys=None, **kw) -> str:
    from bench.analysis.report import dump_suite

    dump_suite(make_suite(keys, **kw), path)
    return str(path)


# --- the realistic matrix (plots and the HTML report must scale to it) ---

TRANSPORTS = ("tcp4", "tcp6", "udp4", "udp6", "unix-stream", "unix-dgram")
MODES = ("blocking", "timeout", "nonblocking", "spin")
STREAM_SIZES = tuple(64 * 4**i for i in range(8))  # 64 B .. 1 MiB, powers of 4
UDP_MAX = 65507  # largest UDP/IPv4 payload, bytes


def stream_sizes(transport: str) -> tuple[int, ...]:
    """The stream sizes a transport can carry: datagrams stop at UDP_MAX."""
    if transport in ("udp4", "udp6", "unix-dgram"):
        return tuple(s for s in STREAM_SIZES if s < UDP_MAX) + (UDP_MAX,)
    return STREAM_SIZES


def realistic_keys(
    transports: Iterable[str] = TRANSPORTS,
    modes: Iterable[str] = MODES,
    stream: bool = True,
    pingpong_sizes: Iterable[int] = (64,),
    impls: Iterable[str] = ("cython", "python"),
) -> list[CaseKey]:
    keys = []
    transports, modes, impls = list(transports), list(modes), list(impls)
    for transport in transports:
        for mode in modes:
            for impl in impls:
                if stream:
                    for size in stream_sizes(transport):
                        keys.append(CaseKey("stream", transport, mode, size, impl))
                for size in pingpong_sizes:
                    keys.append(CaseKey("pingpong", transport, mode, size, impl))
    return keys


def realistic_time(key: CaseKey) -> float:
    """Seconds per message / round trip with the shape real runs have: a
    per-call cost the interpreter inflates (so the speedup is large at small
    sizes and fades towards 1 at large ones), plus a per-byte cost."""
    per_call = {"blocking": 1.0e-6, "timeout": 1.6e-6, "nonblocking": 1.3e-6, "spin": 0.9e-6}
    call = per_call.get(key.mode, 1.0e-6) * (1.8 if key.impl == "python" else 1.0)
    if key.transport.startswith("unix"):
        call *= 0.6
    if key.scenario == "pingpong":
        wake = 0.0 if key.mode == "spin" else 9e-6
        return wake + 2 * call + 2 * key.size / 2e9
    return call + key.size / (2.5e9 if key.transport.startswith("unix") else 1.5e9)


def make_realistic_suite(keys: Iterable[CaseKey] | None = None, *, seed: int = 1,
                         processes: int = 6, values: int = 3,
                         scale: dict[CaseKey, float] | None = None,
                         extra_meta: dict | None = None) -> pyperf.BenchmarkSuite:
    """The default run's matrix (or ``keys``) with realistic_time's levels
    (times ``scale[key]``: a planted change); datagram streams lose a little
    at large sizes so loss columns show."""
    rng = random.Random(seed)
    benches = []
    for key in keys if keys is not None else realistic_keys():
        mean = realistic_time(key) * (scale or {}).get(key, 1.0)
        bench = make_benchmark(key, mean, processes=processes, values=values, rng=rng,
                               extra_meta=extra_meta)
        if key.scenario == "stream" and key.transport in ("udp4", "udp6") and key.size > 4096:
            loss = 0.01 * key.size / UDP_MAX
            bench = pyperf.Benchmark([
                pyperf.Run(run.values, warmups=run.warmups,
                           metadata={**run.get_metadata(), "loss": loss},
                           collect_metadata=False)
                for run in bench.get_runs()
            ])
        benches.append(bench)
    return pyperf.BenchmarkSuite(benches)


def write_realistic_report(path, keys=None, **kw) -> str:
    from bench.analysis.report import dump_suite

    dump_suite(make_realistic_suite(keys, **kw), path)
    return str(path)


def make_report(keys=None, *, path: str = "synthetic.json",
                processes_by_key: dict[CaseKey, int] | None = None, **kw):
    """A loaded :class:`bench.analysis.report.Report` built in memory (no JSON round
    trip: fast enough for tests over many seeds).  ``processes_by_key``
    gives some cases another number of worker processes than the rest."""
    from bench.analysis.report import Report, _case_from_benchmark, fingerprint

    keys = list(keys if keys is not None else default_keys())
    rng = random.Random(kw.pop("seed", 1))
    scale = kw.pop("scale", None) or {}
    cases = []
    for key in keys:
        opts = dict(kw)
        if processes_by_key and key in processes_by_key:
            opts["processes"] = processes_by_key[key]
        bench = make_benchmark(key, base_time(key) * scale.get(key, 1.0), rng=rng, **opts)
        case = _case_from_benchmark(path, bench)
        assert case is not None
        cases.append(case)
    return Report(path, pyperf.BenchmarkSuite([c.benchmark for c in cases]), cases,
                  fingerprint(cases))


def write_foreign_report(path) -> str:
    """A valid pyperf report whose benchmark carries no fastsock metadata."""
    from bench.analysis.report import dump_suite

    run = pyperf.Run([1.0, 1.1], metadata={"name": "not_fastsock", "unit": "second"},
                     collect_metadata=False)
    dump_suite(pyperf.BenchmarkSuite([pyperf.Benchmark([run])]), path)
    return str(path)


def make_lockstep_pair(
    keys: Iterable[CaseKey] | None = None,
    *,
    seed: int = 1,
    slots: int = 8,
    values: int = 3,
    slot_sd: float = 0.3,
    pair_sd: float = 0.02,
    scale: dict[CaseKey, float] | None = None,
    run_id: str = "20261130T000000-1",
) -> tuple[pyperf.BenchmarkSuite, pyperf.BenchmarkSuite]:
    """(base, new) as ``run --base-python`` in lockstep makes them: each
    slot's machine state, a level drawn with a large ``slot_sd``, is shared
    by both sides' runs of that slot (the same run id, ``lockstep_slot``);
    values scatter around it by ``pair_sd``.  The new side's levels are
    times ``scale[key]``."""
    rng = random.Random(seed)
    sides: dict[str, list[pyperf.Benchmark]] = {"base": [], "new": []}
    for key in keys if keys is not None else default_keys():
        mean = base_time(key)
        factor = {"base": 1.0, "new": (scale or {}).get(key, 1.0)}
        runs: dict[str, list[pyperf.Run]] = {"base": [], "new": []}
        for slot in range(slots):
            level = mean * max(0.3, rng.lognormvariate(0.0, slot_sd))
            for side in ("base", "new"):
                bench = make_benchmark(key, level * factor[side], processes=1, values=values,
                                       rel_sd=pair_sd, process_sd=0.0, rng=rng,
                                       extra_meta={"interleaved": run_id,
                                                   "interleaved_side": side})
                (run,) = bench.get_runs()
                runs[side].append(pyperf.Run(
                    run.values, warmups=run.warmups, collect_metadata=False,
                    metadata={**run.get_metadata(), "lockstep_slot": slot}))
        for side in sides:
            sides[side].append(pyperf.Benchmark(runs[side]))
    return pyperf.BenchmarkSuite(sides["base"]), pyperf.BenchmarkSuite(sides["new"])
