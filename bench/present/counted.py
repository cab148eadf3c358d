"""Instruction counts in the HTML report: their tables, beside the timing ones.

Design note
-----------
A count report (``run --measure instructions``) is shown by the same HTML
report as a time report (:mod:`bench.present.html`): alone (``report
COUNTS.json``), or beside a time report (``report TIME.json --counts
COUNTS.json``), where its tables and figures come after the timing ones,
never in their place: a count is the measured process's user-space work
(interpreter, extension, libc), not the kernel's, which is most of a
socket call's time.  Every table says so in its caption.

Per scenario, one row per (transport, mode, size, batch), each impl's count
and how it was made (``difference``: exact; ``fit ±se``: nonblocking, the
retry-free count with retries per message), the twins' instruction ratio
(Python's count / the compiled one's: labelled as such, never a speedup).
"""

from __future__ import annotations

import html

from bench.analysis import shaping as _shaping
from bench.analysis import units as _units
from bench.analysis.counts import count, count_se, instr_ratios
from bench.analysis.report import COMPILED, Case, CaseKey, Report

CAPTION = ("User-space instructions per {what} of the measured side, counted under "
           "valgrind (callgrind): the interpreter, the extension and libc, not the kernel's "
           "work. The same on any machine, so two separate runs compare directly; shown "
           "beside the timing figures, never in their place.")
TITLES = {"stream": "stream", "pingpong": "ping-pong", "connect": "connect"}


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def sections(counts: Report) -> list[tuple[str, str, str]]:
    """(anchor, title, body) of a count report's tables, one per scenario,
    and a note on what was left out."""
    out = []
    scenarios = _shaping.ordered((c.key.scenario for c in counts.cases),
                                 ("stream", "pingpong", "connect"))
    by_key, ratios = counts.by_key(), instr_ratios(counts)
    for scenario in scenarios:
        out.append((f"counts-{scenario}",
                    f"Instruction counts: {TITLES.get(scenario, scenario)}",
                    table(counts, scenario, by_key, ratios)))
    if out:  # the report's notes once, under its last table
        anchor, title, body = out[-1]
        out[-1] = (anchor, title, body + _notes(counts))
    return out


def _notes(counts: Report) -> str:
    left = sorted({str(c.metadata["count_left_out"]) for c in counts.cases
                   if "count_left_out" in c.metadata})
    notes = ["Method: difference = (count of 2N messages − count of N) / N, exact; fit = "
             "least squares over six intervals (nonblocking), the retries after EAGAIN "
             "separated, ± its standard error. Instr ratio py/cy: Python's count / the "
             "compiled loop's (not a speedup: a speedup is time)."]
    notes += [f"Left out: {text}." for text in left]
    return "".join(f"<p class=\"note\">{e(n)}</p>\n" for n in notes)


def _method(case: Case) -> str:
    how = str(case.metadata.get("count_method", "?"))
    se = count_se(case)
    if se:
        how += f" ±{se:.1f}"
    retries = case.metadata.get("retries_per_msg")
    if retries is not None:
        how += f", {float(retries):.3f} retries/msg"
    return how


def table(counts: Report, scenario: str, by_key: dict[CaseKey, Case],
          ratios: dict[CaseKey, float]) -> str:
    cases = [c for c in counts.cases if c.key.scenario == scenario]
    impls = _shaping.ordered((c.key.impl for c in cases), _shaping.IMPL_ORDER)
    unit = _units.count_unit(scenario)
    head1 = "<tr><th rowspan=\"2\">mode</th><th rowspan=\"2\">size</th>" + "".join(
        f"<th colspan=\"2\">{e(impl)}</th>" for impl in impls)
    if ratios:
        head1 += "<th rowspan=\"2\">instr ratio<br>py/cy</th>"
    head1 += "</tr>"
    head2 = "<tr>" + "".join(f"<th>{e(unit)}</th><th>method</th>" for _ in impls) + "</tr>"
    rows: dict[str, list[str]] = {}
    # one row per case but its impl (the axes off their defaults said by the size)
    seen = _shaping.table_rows(cases)
    for row_key in seen:
        transport, mode, size, batch = (row_key.transport, row_key.mode, row_key.size,
                                        row_key.batch)
        size_text = "—" if scenario == "connect" else _units.fmt_size(size)
        axes = _shaping.axes_label(row_key)
        cells = [f"<td>{e(mode)}</td>",
                 f"<td class=\"num\">{e(size_text)}{e(f' ×{batch}') if batch != 1 else ''}"
                 f"{e(f' ({axes})') if axes else ''}</td>"]
        for impl in impls:
            case = by_key.get(row_key.other_impl(impl))
            if case is None:
                cells += ["<td class=\"num\">—</td>", "<td></td>"]
                continue
            cells += [f"<td class=\"num\">{e(f'{count(case):,.1f}')}</td>",
                      f"<td>{e(_method(case))}</td>"]
        if ratios:
            r = ratios.get(row_key.other_impl(COMPILED))
            cells.append(f"<td class=\"num\">{e(f'{r:.2f}') if r else '—'}</td>")
        rows.setdefault(transport, []).append("<tr>" + "".join(cells) + "</tr>")
    ncols = 2 + 2 * len(impls) + (1 if ratios else 0)
    body = "".join(
        f"<tbody><tr class=\"group\"><th colspan=\"{ncols}\">{e(t)}</th></tr>"
        f"{''.join(r)}</tbody>" for t, r in rows.items())
    caption = CAPTION.format(what=_units.count_what(scenario))
    return (f"<div class=\"wide\"><table><thead>{head1}{head2}</thead>{body}</table></div>\n"
            f"<p class=\"note\">{e(caption)}</p>\n")
