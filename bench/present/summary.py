"""The run summary: one table per scenario, every figure with its unit.

Design note: read back from the saved report (not from memory), so what is
printed is exactly what was stored.  Figures and speedups are those of
``compare``/``speedup``, the plots and the HTML report (one definition for
one thing): a case's figure is the median over worker processes of each
process's median; speedup = the Python loop's time / this impl's time for
the same case (> 1: faster than the Python loop, < 1: what the impl costs
over it), the Hodges-Lehmann estimate of ``bench.analysis.compare.speedup``
(``--base python --impl IMPL``), shown on every row but the Python loop's:
the compiled loop's is the interpreter's cost, an idiom's or an event
loop's is what it costs against the raw Python loop.
"""

from __future__ import annotations

from typing import Any

from bench.analysis.report import INSTRUCTIONS, Case, Report
from bench.analysis.shaping import (
    capped_sockbufs,
    case_seconds,
    fmt_sockbuf,
    granted_buffers,
    speedups_over,
)
from bench.analysis.units import count_unit, count_what, fmt_size, msg_rate, throughput_mbps

COUNT_TITLE = ("user-space instructions per {what} (valgrind callgrind: the measured "
               "process's interpreter, extension and libc; not the kernel's work)")


def _table(headers: list[str], rows: list[list[str]], left: int = 4) -> str:
    """Aligned columns: the first ``left`` (names) left, the figures right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_report(report: Report) -> str:
    if report.measure == INSTRUCTIONS:
        return render_counts(report)
    sp = speedups_over(report)
    parts = []
    for scenario in ("stream", "pingpong"):
        cases = [c for c in report.cases if c.key.scenario == scenario]
        if not cases:
            continue
        rows = []
        for c in cases:
            k = c.key
            t = case_seconds(c)
            cpu = c.run_mean("cpu_per_msg")
            cpu_s = f"{cpu * 1e6:.2f}" if cpu is not None else "-"
            loss = c.run_mean("loss")
            loss_s = f"{loss * 100:.1f}%" if loss is not None else "-"
            spd = f"{sp[k]:.2f}x" if k in sp else ""
            if scenario == "stream":
                rows.append([k.transport, k.mode, fmt_size(k.size), k.impl,
                             f"{throughput_mbps(k.size, t):,.1f}", f"{msg_rate(t):,.0f}",
                             cpu_s, loss_s, spd])
            else:
                p99 = c.run_mean("rtt_p99")
                rows.append([k.transport, k.mode, fmt_size(k.size), k.impl,
                             f"{t * 1e6:.2f}", f"{p99 * 1e6:.2f}" if p99 else "-",
                             cpu_s, loss_s, spd])
        if scenario == "stream":
            headers = ["transport", "mode", "size", "impl", "MB/s", "msg/s",
                       "CPU µs/msg", "loss", "speedup"]
            title = "stream throughput (MB = 10^6 B; datagrams: delivered, not sent)"
        else:
            headers = ["transport", "mode", "size", "impl", "RTT µs", "p99 µs",
                       "CPU µs/rt", "loss", "speedup"]
            title = "pingpong round-trip time (mean; p99 over round trips)"
        left = _name_columns(headers, rows, cases)
        parts.append(f"{title}\n{_table(headers, rows, left)}")
    connect = _connect_table(report, sp)
    if connect:
        parts.append(connect)
    capped = capped_sockbufs(report)
    if capped:
        parts.append("\n".join(f"note: {line}" for line in capped))
    if sp:  # first: the tables below end the text, readers parse them to the end
        parts.insert(0, "speedup: the Python loop's time / this row's for the same case "
                     "(above 1: faster than python; below 1: what that impl costs over it)")
    return "\n\n".join(parts)


def _name_columns(headers: list[str], rows: list[list[str]], cases: list[Case]) -> int:
    """After the four name columns (transport, mode, size, impl): batch
    where a case batches (datagrams per syscall), then the tuning axes off
    their defaults.  Returns how many name columns the table has."""
    left = 4
    if any(c.key.batch != 1 for c in cases):
        headers.insert(left, "batch")
        for row, c in zip(rows, cases):
            row.insert(left, str(c.key.batch))
        left += 1
    return left + _axis_columns(headers, rows, cases, left)


def _axis_columns(headers: list[str], rows: list[list[str]], cases: list[Case],
                  at: int) -> int:
    """Columns for the tuning axes the table's cases use off their defaults
    (socket buffer asked and granted, threads, nodelay), inserted at
    ``at``; with threads, the measured process's CPU use at the end (1.00:
    one CPU's worth).  Returns how many name columns were inserted."""
    added = 0
    if any(c.key.sockbuf for c in cases):
        headers[at:at] = ["sockbuf", "granted snd/rcv"]
        for row, c in zip(rows, cases):
            got = granted_buffers(c)
            row[at:at] = [fmt_sockbuf(c.key.sockbuf),
                          f"{fmt_size(got[0])}/{fmt_size(got[1])}" if got else "-"]
        added += 2
    if any(c.key.threads != 1 for c in cases):
        headers.insert(at + added, "threads")
        for row, c in zip(rows, cases):
            row.insert(at + added, str(c.key.threads))
        added += 1
        headers.append("CPU use")
        for row, c in zip(rows, cases):
            use = c.run_mean("cpu_use")
            row.append(f"{use:.2f}" if use is not None else "-")
    if any(c.key.nodelay for c in cases):
        headers.insert(at + added, "nodelay")
        for row, c in zip(rows, cases):
            row.insert(at + added, "on" if c.key.nodelay else "off")
        added += 1
    return added


def _connect_table(report: Report, sp: dict[Any, float]) -> str:
    """Connections per second: no size column (no payload)."""
    rows = []
    for c in report.cases:
        k = c.key
        if k.scenario != "connect":
            continue
        t = case_seconds(c)
        cpu = c.run_mean("cpu_per_msg")
        rows.append([k.transport, k.mode, k.impl, f"{msg_rate(t):,.0f}", f"{t * 1e6:.2f}",
                     f"{cpu * 1e6:.2f}" if cpu is not None else "-",
                     f"{sp[k]:.2f}x" if k in sp else ""])
    if not rows:
        return ""
    headers = ["transport", "mode", "impl", "conn/s", "µs/conn", "CPU µs/conn", "speedup"]
    title = ("connect: connections set up and torn down per second "
             "(connect + accept + close, both ends in one process)")
    return f"{title}\n{_table(headers, rows, left=3)}"


def render_counts(report: Report) -> str:
    """A count report's tables: one per scenario, the method of each count
    (difference, or fit with its standard error and the retries it took
    out), loss where datagram, the twins' instruction ratio (not a speedup)."""
    from bench.analysis.counts import count, count_se, instr_ratios

    ratios = instr_ratios(report)
    parts = []
    for scenario in ("stream", "pingpong", "connect"):
        cases = [c for c in report.cases if c.key.scenario == scenario]
        if not cases:
            continue
        dgram = any(c.run_mean("loss") is not None for c in cases)
        rows = []
        for c in cases:
            k = c.key
            se = count_se(c)
            how = str(c.metadata.get("count_method", "?"))
            retries = c.metadata.get("retries_per_msg")
            row = [k.transport, k.mode, fmt_size(k.size) if scenario != "connect" else "-",
                   k.impl, f"{count(c):,.1f}",
                   f"{how} ±{se:.1f}" if se else how,
                   f"{float(retries):.3f}" if retries is not None else "-"]
            if dgram:
                loss = c.run_mean("loss")
                row.append(f"{loss * 100:.1f}%" if loss is not None else "-")
            row.append(f"{ratios[k]:.2f}" if k in ratios else "")
            rows.append(row)
        headers = ["transport", "mode", "size", "impl", count_unit(scenario), "method",
                   "retries/msg"] + (["loss"] if dgram else []) + ["instr ratio py/cy"]
        left = _name_columns(headers, rows, cases)
        title = COUNT_TITLE.format(what=count_what(scenario))
        parts.append(f"{title}\n{_table(headers, rows, left)}")
    left_out = {str(c.metadata["count_left_out"]) for c in report.cases
                if "count_left_out" in c.metadata}
    notes = ["method: difference = (count of 2N - count of N) / N, exact; fit = least "
             "squares over six intervals, retries after EAGAIN separated (± its standard "
             "error); instr ratio py/cy = Python's count / the compiled one's, not a speedup"]
    notes += [f"left out: {text}" for text in sorted(left_out)]
    return "\n\n".join(parts) + "\n\n" + "\n".join(notes)


def write_html_beside(path: str, report: Report) -> str:
    """Write ``<report>.html`` beside the JSON report; returns its path."""
    from bench.present import html as _html
    html_path = path[:-5] + ".html" if path.endswith(".json") else path + ".html"
    _html.write_html(report, html_path)
    print(f"HTML report: {html_path}")
    return html_path


def render_interleaved(base: Report, new: Report) -> str:
    """The comparison an interleaved run was made for (``run --base-python``)."""
    from bench.analysis.compare import compare_reports
    from bench.present.formats import comparison_table

    try:
        cmp = compare_reports(base, new)
    except ValueError as exc:
        return f"base vs new: {exc}"
    how = "in lockstep, value by value" if any(c.time.est.paired for c in cmp.cases) \
        else "worker by worker"
    return (f"base vs new, interleaved {how} (gate with: fastsock-bench compare "
            f"{base.path} {new.path})\n" + comparison_table(cmp))
