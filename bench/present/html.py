"""The self-contained HTML report of a fastsock run.

Design note
-----------
One file that opens anywhere, offline, years later: figures are inline
base64 PNGs (``data:`` URIs), the style sheet is inline, and there are no
scripts, fonts or links to anything outside the file (anchors inside it
only).  PNG rather than inline SVG: matplotlib's SVG ids can collide
between figures on one page, and PNGs are smaller for dense figures.

A count report (``run --measure instructions``) gets its own tables
(:mod:`bench.present.counted`) and figures in place of the timing ones;
a time report given ``counts`` shows that count report's after its own.

Contents, in the order a reader asks: what was measured where (title,
environment fingerprint), the answer to "did it change?" when a base is
given (the verdict of :mod:`bench.analysis.compare`), the summary tables per
scenario (numbers with their units, from :mod:`bench.analysis.units`), then the
figures of :mod:`bench.present.figures`.  Every piece of text from a report goes
through :func:`html.escape`: benchmark metadata is input, not markup.

Numbers are those of the figures: per case, the median over worker
processes of each process's median; RTT percentiles, CPU per message and
loss are means over processes of what each process recorded.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.analysis import compare as _compare
from bench.analysis import shaping as _shaping
from bench.analysis import units as _units
from bench.analysis.compare import CaseResult, Comparison
from bench.analysis.report import (
    DGRAM_TRANSPORTS,
    FINGERPRINT_KEYS,
    INSTRUCTIONS,
    Case,
    CaseKey,
    Report,
    write_atomic,
)
from bench.analysis.stats import Verdict
from bench.present import counted as _counted
from bench.present import figures as _plot

FIGURE_DPI = 100  # inline PNGs: sharp at page width, a few hundred kB each
FINGERPRINT_LABELS = {
    "cpu_model_name": "CPU model",
    "cpu_count": "CPUs",
    "cpu_affinity": "CPU affinity",
    "platform": "platform",
    "kernel": "kernel",
    "python_version": "Python",
    "cython_version": "Cython",
    "fastsock_version": "fastsock version",
    "fastsock_commit": "fastsock commit",
    "fastsock_loaded": "fastsock implementation loaded",
    "net_core_rmem_max": "net.core.rmem_max (bytes)",
    "net_core_wmem_max": "net.core.wmem_max (bytes)",
    "net_core_busy_poll": "net.core.busy_poll (µs)",
    "net_core_busy_read": "net.core.busy_read (µs)",
    "load_avg_1min": "load average (1 min, at start)",
    "hostname": "hostname",
    "valgrind_version": "valgrind (instruction counts)",
}
FIGURE_CAPTIONS = {
    "compare": "Time ratio new/base per case with its 95% confidence interval.",
    "throughput": "Stream throughput (delivered bytes per second) vs message size.",
    "rtt": "Ping-pong round-trip time: p50, with p99 as the bar or band's top.",
    "speedup_stream": "Speedup of the compiled loops over pure Python, stream.",
    "speedup_pingpong": "Speedup of the compiled loops over pure Python, ping-pong.",
    "connect": "Connections set up and torn down per second (connect + accept + close, "
               "both ends in the measured process), with the compiled/Python speedup.",
    "counts_stream": "User-space instructions per message (valgrind; not the kernel's work).",
    "counts_pingpong": "User-space instructions per round trip (valgrind; not the kernel's "
                       "work).",
    "counts_connect": "User-space instructions per connection (valgrind; not the kernel's "
                      "work).",
}
SCENARIO_TITLES = {"stream": "Stream throughput", "pingpong": "Ping-pong RTT",
                   "connect": "Connections (connect + accept + close)"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
p.where { color: #444; margin-top: 0; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr.group th { background: #e8eef6; }
table.fp th { width: 16em; }
div.wide { overflow-x: auto; }
table.glance th { white-space: nowrap; }
span.where { color: #666; font-size: 0.9em; }
.slower { background: #fde0dc; }
.faster { background: #dff3e4; }
.inconclusive { background: #fff6d5; }
p.verdict { padding: 0.5em 0.8em; font-size: 1.1em; }
details summary { cursor: pointer; margin: 0.8em 0; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 1.2em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; margin-top: 0.3em; }
footer { margin-top: 3em; color: #666; font-size: 0.8em; }
"""


def e(value: Any) -> str:
    """Escaped text of anything."""
    return html.escape(str(value), quote=True)


def write_html(report: Report, path: str | os.PathLike[str], base: Report | None = None,
               comparison: Comparison | None = None,
               pair: tuple[str, str] = _shaping.DEFAULT_PAIR,
               counts: Report | None = None) -> Path:
    """Render the report (and its comparison with ``base``: computed here
    unless given; and a count report's tables and figures beside a time
    report's, ``counts``) to ``path``, atomically; returns the path.  Raises
    ValueError (from bench.analysis.compare) when the two share no case.
    ``pair``: the (base, impl) whose speedup the tables and heatmaps show
    (by default Python and compiled)."""
    write_atomic(path, render_html(report, base, comparison, pair, counts))
    return Path(path)


def render_html(report: Report, base: Report | None = None,
                comparison: Comparison | None = None,
                pair: tuple[str, str] = _shaping.DEFAULT_PAIR,
                counts: Report | None = None) -> str:
    if base is not None and comparison is None:
        comparison = _compare.compare_reports(base, report)
    counting = report.measure == INSTRUCTIONS
    figures = _plot.figures(report, base, comparison, pair, counts)
    parts: list[str] = []
    name = Path(report.path).name
    parts.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 f"<title>fastsock report: {e(name)}</title>\n"
                 f"<style>{CSS}</style>\n</head>\n<body>\n")
    kind = "instruction-count report" if counting else "benchmark report"
    parts.append(f"<h1>fastsock {kind}: {e(name)}</h1>\n")
    parts.append(f"<p class=\"where\">Measured on {e(_shaping.where(report.fingerprint))}"
                 f"{e(_run_dates(report.cases))}.</p>\n")
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    if base is not None and comparison is not None:
        sections.append(("compare", f"Compared with {Path(base.path).name}",
                         _compare_section(report, base, comparison, figures)))
    # Look before reading: the short answers and the figures come before
    # the long per-case tables.
    glance = "" if counting else _glance_table(report, pair)
    if glance:
        sections.append(("glance", "At a glance", glance))
    shown = [(n, f) for n, f in figures.items() if n != "compare"]
    if shown:
        sections.append(("figures", "Figures", "".join(_figure(n, f, pair) for n, f in shown)))
    scenarios = _shaping.ordered((c.key.scenario for c in report.cases),
                              ("stream", "pingpong", "connect"))
    if counting:
        sections += _counted.sections(report)
    else:
        for scenario in scenarios:
            sections.append((f"summary-{scenario}",
                             f"Summary: {SCENARIO_TITLES.get(scenario, scenario)}",
                             _summary_table(report, scenario, pair)))
    if counts is not None:  # beside the timing tables, after them
        sections += _counted.sections(counts)
    sections.append(("environment", "Environment", _fingerprint_table(report, base)))
    parts.append("<nav><ul>" + "".join(
        f"<li><a href=\"#{e(a)}\">{e(t)}</a></li>" for a, t, _ in sections) + "</ul></nav>\n")
    for anchor, title, body in sections:
        parts.append(f"<section id=\"{e(anchor)}\">\n<h2>{e(title)}</h2>\n{body}</section>\n")
    if counting:
        parts.append(
            f"<footer>Written by fastsock-bench from {e(report.path)}. Per case: the "
            "measured side's user-space instructions per message, round trip or connection, "
            "counted under valgrind (callgrind): interpreter, extension and libc, not the "
            "kernel's work.</footer>\n</body>\n</html>\n")
        return "".join(parts)
    parts.append(
        "<footer>Written by fastsock-bench from "
        + (f"{e(report.path)} (instruction counts from {e(counts.path)})"
           if counts is not None else e(report.path))
        + ". Per case: the median over worker processes of each process's "
        "median; RTT percentiles, CPU time per message and loss are means over processes. "
        f"MB = 10<sup>6</sup> bytes. Speedup: {e(pair[0])} time / {e(pair[1])} time, the "
        "Hodges-Lehmann estimate over process medians (as <code>fastsock-bench speedup "
        f"--base {e(pair[0])} --impl {e(pair[1])}</code> gives it)."
        "</footer>\n"
        "</body>\n</html>\n")
    return "".join(parts)


def _glance_table(report: Report, pair: tuple[str, str]) -> str:
    """Per transport and impl, the few numbers people quote: peak stream
    throughput, the message rate at the smallest size, the lowest RTT p50,
    each with the size and mode where it was reached; and per transport the
    range of ``pair``'s speedups (compiled/Python unless told) over its cases."""
    transports = _shaping.ordered((c.key.transport for c in report.cases), _shaping.TRANSPORT_ORDER)
    impls = _shaping.ordered((c.key.impl for c in report.cases), _shaping.IMPL_ORDER)
    cols = [("peak throughput", "stream"), ("rate at smallest size", "stream"),
            ("lowest RTT p50", "pingpong"), ("connections", "connect")]
    cols = [(h, sc) for h, sc in cols if any(c.key.scenario == sc for c in report.cases)]
    if not cols:
        return ""
    sp_all = _shaping.speedups(report, pair=pair)
    head = "<tr><th>transport</th><th>impl</th>" + "".join(f"<th>{e(h)}</th>" for h, _ in cols)
    head += (f"<th>speedup<br>{e(_shaping.pair_title(pair))}</th></tr>" if sp_all
             else "</tr>")
    rows = []
    for t in transports:
        for n, impl in enumerate(impls):
            cells = [f"<th rowspan=\"{len(impls)}\">{e(t)}</th>"] if n == 0 else []
            cells.append(f"<td>{e(impl)}</td>")
            for header, scenario in cols:
                cs = [c for c in report.cases if c.key.transport == t and c.key.impl == impl
                      and c.key.scenario == scenario and c.key.batch == 1
                      and _shaping.default_axes(c.key)]
                cells.append(f"<td class=\"num\">{_glance_cell(header, cs)}</td>")
            if sp_all and n == 0:
                sp = [v for k, v in sp_all.items() if k.transport == t]
                text = (f"{_units.fmt_ratio(min(sp))} to {_units.fmt_ratio(max(sp))}"
                        if sp else "—")
                cells.append(f"<td class=\"num\" rowspan=\"{len(impls)}\">{e(text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class=\"glance\"><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
            "</table>\n<p class=\"note\">Batch-1 cases at the kernel's socket buffers, one "
            "connection, with the size and mode where each figure was reached. The summary "
            "tables below have every case.</p>\n")


def _glance_cell(header: str, cases: list[Case]) -> str:
    """Markup (escaped) of one at-a-glance cell: the figure, then where."""
    if not cases:
        return "—"
    if header == "peak throughput":
        best = max(cases, key=lambda c: c.key.size / _shaping.case_seconds(c))
        value = _units.fmt_mbps(_units.throughput_mbps(best.key.size, _shaping.case_seconds(best)))
    elif header == "rate at smallest size":
        smallest = min(c.key.size for c in cases)
        best = min((c for c in cases if c.key.size == smallest), key=_shaping.case_seconds)
        value = _units.fmt_rate(_units.msg_rate(_shaping.case_seconds(best)))
    elif header == "connections":
        best = min(cases, key=_shaping.case_seconds)
        value = _units.fmt_conn_rate(_units.msg_rate(_shaping.case_seconds(best)))
        return f"{e(value)} <span class=\"where\">({e(best.key.mode)})</span>"
    else:
        def p50(c: Case) -> float:
            v = c.run_mean("rtt_p50")
            return v if v is not None else _shaping.case_seconds(c)
        best = min(cases, key=p50)
        value = _units.fmt_usec(p50(best))
    where = f"{_units.fmt_size(best.key.size)}, {best.key.mode}"
    return f"{e(value)} <span class=\"where\">({e(where)})</span>"


def _run_dates(cases: Iterable[Case]) -> str:
    dates = sorted(str(m["date"]) for c in cases for m in c.run_metadata if "date" in m)
    if not dates:
        return ""
    first, last = dates[0][:16].replace("T", " "), dates[-1][:16].replace("T", " ")
    return f", {first}" if first == last else f", {first} to {last}"


def _fingerprint_table(report: Report, base: Report | None) -> str:
    fp = report.fingerprint
    keys = [k for k in FINGERPRINT_KEYS if k in fp or (base and k in base.fingerprint)]
    rows = []
    head = "" if base is None else "<tr><th></th><th>this report</th><th>base</th></tr>"
    for k in keys:
        row = f"<tr><th>{e(FINGERPRINT_LABELS.get(k, k))}</th><td>{e(fp.get(k, '—'))}</td>"
        if base is not None:
            bval = base.fingerprint.get(k, "—")
            cls = "" if bval == fp.get(k, "—") else " class=\"inconclusive\""
            row += f"<td{cls}>{e(bval)}</td>"
        rows.append(row + "</tr>")
    # connect cases have no peer: they play both ends
    peers = sorted({str(c.metadata["peer_impl"]) for c in report.cases
                    if "peer_impl" in c.metadata}) or ["— (no peer)"]
    rows.append(f"<tr><th>peer implementation</th><td>{e(', '.join(peers))}</td>"
                + ("<td></td>" if base is not None else "") + "</tr>")
    loops = sorted({str(c.metadata["event_loop"]) for c in report.cases
                    if "event_loop" in c.metadata})
    if loops:  # the asyncio-* / uvloop-* impls' event loops
        rows.append(f"<tr><th>event loops</th><td>{e('; '.join(loops))}</td>"
                    + ("<td></td>" if base is not None else "") + "</tr>")
    outside = _outside_impls(report)
    if outside:  # where impls from outside fastsock came from
        rows.append(f"<tr><th>impls from outside fastsock</th><td>{e('; '.join(outside))}</td>"
                    + ("<td></td>" if base is not None else "") + "</tr>")
    nproc = sorted({len(c.process_values) for c in report.cases})
    rows.append("<tr><th>worker processes per case</th>"
                f"<td>{e(_span(nproc))}</td>"
                + ("<td></td>" if base is not None else "") + "</tr>")
    return f"<table class=\"fp\">{head}{''.join(rows)}</table>\n"


def _outside_impls(report: Report) -> list[str]:
    """'name: module (dist version, contract N), file' of every impl that
    fastsock did not install (its report metadata, bench.run.impls)."""
    out: dict[str, str] = {}
    for c in report.cases:
        meta = c.metadata
        if "impl_module" not in meta or meta.get("impl_dist") == "fastsock":
            continue
        dist = (f"{meta['impl_dist']} {meta.get('impl_dist_version', '?')}, "
                if "impl_dist" in meta else "")
        out.setdefault(c.key.impl, f"{c.key.impl}: {meta['impl_module']} ({dist}contract "
                       f"{meta.get('impl_contract', '?')}), {meta.get('impl_origin', '?')}")
    return list(out.values())


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _summary_table(report: Report, scenario: str, pair: tuple[str, str]) -> str:
    """One row per (transport, mode, size, batch), the impls side by side,
    and ``pair``'s speedup."""
    cases = [c for c in report.cases if c.key.scenario == scenario]
    impls = _shaping.ordered((c.key.impl for c in cases), _shaping.IMPL_ORDER)
    by_key = report.by_key()
    speedups = _shaping.speedups(report, scenario, pair)
    datagram = any(c.key.transport in DGRAM_TRANSPORTS for c in cases)
    has_loss = datagram and any(c.run_mean("loss") is not None for c in cases)
    pingpong = scenario == "pingpong"
    if pingpong:
        per_impl = ["RTT mean", "RTT p50", "RTT p99", "CPU / round trip"]
    elif scenario == "stream":
        per_impl = ["throughput", "rate", "CPU / message"]
    elif scenario == "connect":
        per_impl = ["connections/s", "time / connection", "CPU / connection"]
    else:
        per_impl = ["time", "rate", "CPU / operation"]
    if has_loss:
        per_impl.append("loss")
    show_speedup = bool(speedups)
    head1 = "<tr><th rowspan=\"2\">mode</th><th rowspan=\"2\">size</th>" + "".join(
        f"<th colspan=\"{len(per_impl)}\">{e(impl)}</th>" for impl in impls)
    if show_speedup:
        head1 += f"<th rowspan=\"2\">speedup<br>{e(_shaping.pair_title(pair))}</th>"
    head1 += "</tr>"
    head2 = "<tr>" + "".join(f"<th>{e(h)}</th>" for _ in impls for h in per_impl) + "</tr>"
    ncols = 2 + len(impls) * len(per_impl) + (1 if show_speedup else 0)
    rows_by_transport: dict[str, list[str]] = {}
    # a row per case key without its impl (the impls side by side)
    seen = _shaping.table_rows(cases)
    for row in seen:
        transport, mode, size, batch = row.transport, row.mode, row.size, row.batch
        axes = _shaping.axes_label(row)
        axes_note = f"<br><span class=\"where\">{e(axes)}</span>" if axes else ""
        cells = [f"<td>{e(mode)}</td>",
                 f"<td class=\"num\">{e(_units.fmt_size(size) if scenario != 'connect' else '—')}"
                 f"{e(f' ×{batch}') if batch != 1 else ''}"
                 f"{axes_note}</td>"]
        compiled_key = None
        for impl in impls:
            case = by_key.get(row.other_impl(impl))
            if impl == pair[1]:
                compiled_key = row.other_impl(impl)
            if case is None:
                cells += ["<td class=\"num\">—</td>"] * len(per_impl)
                continue
            cells += [f"<td class=\"num\">{e(v)}</td>"
                      for v in _case_cells(case, scenario, has_loss)]
        if show_speedup:
            sp = speedups.get(compiled_key) if compiled_key else None
            cells.append(f"<td class=\"num\">{e(_units.fmt_ratio(sp)) if sp else '—'}</td>")
        rows_by_transport.setdefault(transport, []).append("<tr>" + "".join(cells) + "</tr>")
    body = "".join(
        f"<tbody><tr class=\"group\"><th colspan=\"{ncols}\">{e(t)}</th></tr>"
        f"{''.join(rows)}</tbody>"
        for t, rows in rows_by_transport.items())
    note = ""
    if scenario == "stream" and datagram:
        note = ("<p class=\"note\">Datagram throughput counts delivered datagrams only; "
                "loss = 1 − delivered / sent.</p>\n")
    elif pingpong and has_loss:
        note = "<p class=\"note\">Loss: lost round trips / rounds (datagram transports).</p>\n"
    if scenario == "connect":
        note = ("<p class=\"note\">No payload (size —): each connection is made, accepted "
                "and closed (the accepted end first) by the measured process itself; CPU "
                "time counts both ends.</p>\n")
    # six impls side by side are wider than a page: the table scrolls, not the page
    return (f"<div class=\"wide\"><table><thead>{head1}{head2}</thead>{body}</table></div>\n"
            f"{note}")


def _case_cells(case: Case, scenario: str, has_loss: bool) -> list[str]:
    seconds = _shaping.case_seconds(case)
    cpu = case.run_mean("cpu_per_msg")
    cells: list[str]
    if scenario == "pingpong":
        p50, p99 = case.run_mean("rtt_p50"), case.run_mean("rtt_p99")
        cells = [_units.fmt_usec(seconds),
                 _units.fmt_usec(p50) if p50 is not None else "—",
                 _units.fmt_usec(p99) if p99 is not None else "—"]
    elif scenario == "stream":
        cells = [_units.fmt_mbps(_units.throughput_mbps(case.key.size, seconds)),
                 _units.fmt_rate(_units.msg_rate(seconds))]
    elif scenario == "connect":
        cells = [_units.fmt_conn_rate(_units.msg_rate(seconds)), _units.fmt_usec(seconds)]
    else:
        cells = [_units.fmt_usec(seconds), _units.fmt_rate(_units.msg_rate(seconds))]
    cells.append(_units.fmt_usec(cpu) if cpu is not None else "—")
    if has_loss:
        loss = case.run_mean("loss")
        cells.append(_units.fmt_loss(loss) if loss is not None else "—")
    return cells


def _figure(name: str, fig: Any, pair: tuple[str, str] = _shaping.DEFAULT_PAIR) -> str:
    png = base64.b64encode(_plot.render(fig, "png", dpi=FIGURE_DPI)).decode("ascii")
    title = fig.get_suptitle().replace("\n", " — ") or name
    caption = FIGURE_CAPTIONS.get(name, "")
    if name.startswith("speedup_") and pair != _shaping.DEFAULT_PAIR:
        caption = f"Speedup of {pair[1]} over {pair[0]}, {name.split('_', 1)[1]}."
    return (f"<figure id=\"fig-{e(name)}\"><img src=\"data:image/png;base64,{png}\" "
            f"alt=\"{e(title)}\"><figcaption>{e(caption)}</figcaption></figure>\n")


def _compare_section(report: Report, base: Report, comparison: Comparison,
                     figures: dict[str, Any]) -> str:
    """The verdict of bench.analysis.compare: the headline, what differs between
    the two runs, the ratio figure, the calls, then the unchanged cases."""
    c = comparison
    st = c.settings
    out: list[str] = []
    if c.machine_differs:
        diffs = "; ".join(f"{d.key}: {d.base} (base) vs {d.new}" for d in c.machine_differs)
        out.append("<p class=\"slower\"><strong>Different machines</strong> "
                   f"({e(diffs)}): the numbers are not comparable; "
                   "<code>fastsock-bench compare</code> refuses such a pair.</p>\n")
    regressions = c.regressions()
    counts = c.counts()
    if regressions:
        head = f"{len(regressions)} regression{'s' if len(regressions) != 1 else ''}"
        cls = "slower"
    else:
        head, cls = "no regression", "faster"
    out.append(f"<p class=\"{cls} verdict\"><strong>Verdict: {e(head)}</strong> "
               f"({e(', '.join(f'{n} {v}' for v, n in counts.items()))} of "
               f"{len(c.cases)} cases compared).</p>\n")
    what = ("instruction ratio new/base (user-space instructions per message, exact for a "
            "difference, with the fit's standard error for a fit)"
            if c.measure == INSTRUCTIONS else
            "time ratio new/base (Hodges-Lehmann estimate over worker-process medians)")
    out.append(
        f"<p class=\"note\">Base {e(c.base_path)}, new {e(c.new_path)}. Per case: "
        f"{e(what)} with its "
        f"95% interval; a case is slower or faster when its {e(st.correction.value.upper())}"
        f"-adjusted p &lt; {e(f'{st.alpha:g}')} and the ratio is beyond "
        f"±{e(f'{100 * st.threshold:g}')}%, the same when the whole interval is within "
        f"±{e(f'{100 * st.threshold:g}')}%, inconclusive otherwise."
        + (" RTT p99 changes gate too." if st.gate_p99 else "") + "</p>\n")
    if c.geomeans:
        items = "".join(
            f"<li>{e(sc)}: {e(_units.fmt_ratio(g))} over {n} cases</li>"
            for sc, (g, n) in c.geomeans.items())
        ratio = "instruction" if c.measure == INSTRUCTIONS else "time"
        out.append(f"<p>Geometric mean of the {ratio} ratios (&gt; 1: slower):</p>"
                   f"<ul>{items}</ul>\n")
    if c.differs or c.case_differs:
        rows = "".join(f"<tr><th>{e(FINGERPRINT_LABELS.get(d.key, d.key))}</th>"
                       f"<td>{e(d.base)}</td><td>{e(d.new)}</td></tr>" for d in c.differs)
        rows += "".join(f"<tr><th>{e(k)}</th><td colspan=\"2\">differs in {n} matched cases"
                        "</td></tr>" for k, n in c.case_differs.items())
        out.append("<h3>What differs between the runs</h3>\n<table class=\"fp\"><tr><th></th>"
                   f"<th>base</th><th>new</th></tr>{rows}</table>\n")
    if c.notes:
        out.append("<ul class=\"note\">" + "".join(f"<li>{e(n)}</li>" for n in c.notes)
                   + "</ul>\n")
    for label, keys in (("only in the base", c.only_base), ("only in the new report", c.only_new)):
        if keys:
            shown = ", ".join(_plot.case_label(k) for k in keys[:20])
            more = f" and {len(keys) - 20} more" if len(keys) > 20 else ""
            out.append(f"<p class=\"note\">{len(keys)} cases {e(label)}, not compared: "
                       f"{e(shown)}{e(more)}.</p>\n")
    if "compare" in figures:
        out.append(_figure("compare", figures["compare"]))
    calls = [r for r in c.cases if r.time.verdict is not Verdict.SAME]
    same = [r for r in c.cases if r.time.verdict is Verdict.SAME]
    order = {Verdict.SLOWER: 0, Verdict.FASTER: 1, Verdict.INCONCLUSIVE: 2}
    calls.sort(key=lambda r: (order[r.time.verdict], -r.time.est.ratio))
    with_p99 = any(r.rtt_p99 is not None for r in c.cases)
    if calls:
        out.append("<h3>Cases that changed or could not be called</h3>\n"
                   + _compare_table(calls, with_p99, c.measure))
    if same:
        out.append(f"<details><summary>{len(same)} cases the same (95% interval within "
                   f"±{e(f'{100 * st.threshold:g}')}%)</summary>\n"
                   + _compare_table(sorted(same, key=lambda r: -r.time.est.ratio), with_p99,
                                    c.measure)
                   + "</details>\n")
    return "".join(out)


def _compare_table(results: Sequence[CaseResult], with_p99: bool,
                   measure: str = "time") -> str:
    head = ("<tr><th>case</th><th>base</th><th>new</th><th>ratio new/base [95% interval]</th>"
            "<th>p (adjusted)</th><th>verdict</th>"
            + ("<th>RTT p99 ratio</th><th>RTT p99 verdict</th>" if with_p99 else "") + "</tr>")
    rows = []
    for r in results:
        k, t = r.key, r.time
        cells = [
            f"<td>{e(_plot.case_label(k))}</td>",
            f"<td class=\"num\">{e(_figure_text(measure, k, t.base))}</td>",
            f"<td class=\"num\">{e(_figure_text(measure, k, t.new))}</td>",
            f"<td class=\"num\">{e(_interval(t.est))}</td>",
            f"<td class=\"num\">{e(f'{t.p_adj:.2g}')}</td>",
            f"<td class=\"{e(t.verdict.value)}\">{e(t.verdict.value)}</td>",
        ]
        if with_p99:
            p = r.rtt_p99
            cells += ([f"<td class=\"num\">{e(_interval(p.est))}</td>",
                       f"<td class=\"{e(p.verdict.value)}\">{e(p.verdict.value)}</td>"]
                      if p is not None else ["<td></td>", "<td></td>"])
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>\n"


def _figure_text(measure: str, key: CaseKey, value: float) -> str:
    if measure == INSTRUCTIONS:
        return _units.fmt_count(key.scenario, value)
    return _units.fmt_value(key.scenario, key.size, value)


def _interval(est: Any) -> str:
    if not est.bounded:
        return f"{_units.fmt_ratio(est.ratio)} [no interval: too few processes]"
    return (f"{_units.fmt_ratio(est.ratio)} "
            f"[{_units.fmt_ratio(est.low)} – {_units.fmt_ratio(est.high)}]")
