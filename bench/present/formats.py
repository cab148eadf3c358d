"""Rendering a comparison or a speedup: terminal table, Markdown, JSON.

Design note
-----------
One renderer per format, fed by :mod:`bench.analysis.compare`'s results, so the
three outputs cannot disagree on a number.  Ratios are always time ratios
new/base (below 1 is faster), whatever the scenario, and beside them the
change a person reads in the case's own unit (-9.1% MB/s, +10.0% RTT,
-9.1% conn/s,
:func:`bench.analysis.units.fmt_change`).  The terminal table is colour-coded only
when asked (the CLI asks when stdout is a terminal and NO_COLOR is unset);
the Markdown puts the verdict and the flagged cases first, for a pull
request comment, the full table folded; the JSON carries raw seconds and
fractions, with ``null`` for an interval too few processes cannot bound.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from bench.analysis import units as _units
from bench.analysis.compare import CaseResult, Comparison, Difference, Metric, Speedup
from bench.analysis.report import INSTRUCTIONS, CaseKey
from bench.analysis.stats import Estimate, Verdict

FORMATS = ("table", "markdown", "json")
JSON_SCHEMA = 1  # version of the JSON documents below
_ANSI = {Verdict.SLOWER: "31", Verdict.FASTER: "32", Verdict.INCONCLUSIVE: "33"}
_CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm"}

Cell = tuple[str, "str | None"]  # text, ANSI colour code


def use_colour(stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set and not
    empty (no-color.org) or the terminal says it is dumb."""
    isatty = getattr(stream, "isatty", None)
    return bool(
        isatty is not None and isatty() and not env.get("NO_COLOR") and env.get("TERM") != "dumb"
    )


def fmt_ci(est: Estimate) -> str:
    if not est.bounded:
        return f"{est.ratio:.3f} [too few processes]"
    return f"{est.ratio:.3f} [{est.low:.3f}, {est.high:.3f}]"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _case_label(key: CaseKey) -> str:
    """A case without its implementation, for the speedup view."""
    label = f"{key.scenario}/{key.transport}/{key.mode}/{key.size}"
    return label if key.batch == 1 else f"{label}/batch{key.batch}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[Cell]], colour: bool) -> list[str]:
    """Aligned columns: the first left, the rest right but the last."""
    widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, h in enumerate(header)]
    last = len(header) - 1

    def line(cells: Sequence[Cell]) -> str:
        parts = []
        for i, (text, code) in enumerate(cells):
            padded = text.ljust(widths[i]) if i in (0, last) else text.rjust(widths[i])
            parts.append(f"\033[{code}m{padded}\033[0m" if colour and code else padded)
        return "  ".join(parts).rstrip()

    return [line([(h, None) for h in header])] + [line(r) for r in rows]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = [":--"] + ["--:"] * (len(header) - 2) + [":--"]
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(r) + " |" for r in esc),
    ]


def _differs_text(cmp: Comparison) -> str:
    parts = [f"{d.key} {d.base} -> {d.new}" for d in cmp.differs]
    parts += [f"{k} in {n} case{'s' * (n != 1)}" for k, n in sorted(cmp.case_differs.items())]
    return "; ".join(parts)


def _machine_text(machine: Mapping[str, Any], differs: Sequence[Difference] = ()) -> str:
    text = f"{machine.get('cpu_model_name', 'unknown CPU')}, {machine.get('cpu_count', '?')} CPUs"
    if differs:
        text += "; MACHINES DIFFER (compared with --force): " + "; ".join(
            f"{d.key} {d.base} -> {d.new}" for d in differs
        )
    return text


def _legend(cmp: Comparison) -> list[str]:
    s = cmp.settings
    t = f"{100 * s.threshold:g}%"
    if cmp.measure == INSTRUCTIONS:
        return [
            "instr ratio = new/base user-space instructions per message, round trip or "
            "connection (valgrind callgrind: interpreter, extension, libc; not the kernel's "
            "work); exact for a difference, for a fit a 95% CI from its standard error "
            "(Student's t: six intervals)",
            f"verdict: slower/faster = ratio beyond ±{t} (a fit's also p adjusted "
            f"({_CORRECTION_NAMES[s.correction.value]}) < {s.alpha:g}); same = CI within ±{t}",
        ]
    return [
        "time ratio = new/base time per message, round trip or connection (below 1 is faster), "
        "95% CI over worker processes (one median each)",
        f"verdict: slower/faster = p adjusted ({_CORRECTION_NAMES[s.correction.value]}) "
        f"< {s.alpha:g} and ratio beyond ±{t}; same = whole CI within ±{t}",
    ]


def _summary(cmp: Comparison) -> str:
    counts = cmp.counts()
    text = f"{len(cmp.cases)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items())
    if cmp.settings.gate_p99:
        slow = sum(1 for c in cmp.cases if c.rtt_p99 and c.rtt_p99.verdict is Verdict.SLOWER)
        text += f"; p99 RTT slower in {slow}"
    gate = "regression" if cmp.exit_code else "no regression"
    return f"{text}: {gate} (exit {cmp.exit_code})"


def _time_row(c: CaseResult) -> list[Cell]:
    k, t = c.key, c.time
    code = _ANSI.get(t.verdict)
    return [
        (k.name, None),
        (f"{t.est.n_base}/{t.est.n_new}", None),
        (_units.fmt_figure(k.scenario, k.size, t.base), None),
        (_units.fmt_figure(k.scenario, k.size, t.new), None),
        (fmt_ci(t.est), code),
        (_units.fmt_change(k.scenario, t.est.ratio), code),
        (fmt_p(t.p_adj), None),
        (t.verdict.value, code),
    ]


def _p99_row(c: CaseResult, m: Metric) -> list[Cell]:
    code = _ANSI.get(m.verdict)
    return [
        (c.key.name, None),
        (f"{m.est.n_base}/{m.est.n_new}", None),
        (_units.fmt_usec(m.base), None),
        (_units.fmt_usec(m.new), None),
        (fmt_ci(m.est), code),
        (fmt_p(m.p_adj), None),
        (m.verdict.value, code),
    ]


TIME_HEADER = ("case", "procs", "base", "new", "time ratio [95% CI]", "change", "p adj", "verdict")
COUNT_HEADER = ("case", "method", "base", "new", "instr ratio [95% CI]", "change", "p adj",
                "verdict")


def _exact(est: Estimate) -> bool:
    """A count's estimate without uncertainty (two differences)."""
    return est.bounded and est.low == est.high


def _count_row(c: CaseResult) -> list[Cell]:
    k, t = c.key, c.time
    code = _ANSI.get(t.verdict)
    exact = _exact(t.est)
    return [
        (k.name, None),
        ("difference" if exact else "fit", None),
        (_units.fmt_count(k.scenario, t.base), None),
        (_units.fmt_count(k.scenario, t.new), None),
        (f"{t.est.ratio:.4f} (exact)" if exact else fmt_ci(t.est), code),
        (_units.fmt_count_change(t.est.ratio), code),
        ("-" if exact else fmt_p(t.p_adj), None),
        (t.verdict.value, code),
    ]


def _header(cmp: Comparison) -> tuple[str, ...]:
    return COUNT_HEADER if cmp.measure == INSTRUCTIONS else TIME_HEADER


def _row(cmp: Comparison, c: CaseResult) -> list[Cell]:
    return _count_row(c) if cmp.measure == INSTRUCTIONS else _time_row(c)
P99_HEADER = ("case", "procs", "base p99", "new p99", "ratio [95% CI]", "p adj", "verdict")


def _p99_title(cmp: Comparison) -> str:
    gate = "gating" if cmp.settings.gate_p99 else "shown, not gating (--gate-p99 to gate)"
    return f"p99 RTT (each worker process's p99 from run metadata; own correction; {gate})"


def _tail_lines(cmp: Comparison) -> list[str]:
    lines = []
    if cmp.geomeans:
        what = "instruction" if cmp.measure == INSTRUCTIONS else "time"
        lines.append(f"geometric mean of {what} ratios: " + "; ".join(
            f"{s} {r:.3f} over {n} cases" for s, (r, n) in cmp.geomeans.items()
        ))
    for path, keys in ((cmp.base_path, cmp.only_base), (cmp.new_path, cmp.only_new)):
        if keys:
            lines.append(f"only in {path} ({len(keys)}, not compared): "
                         + ", ".join(k.name for k in keys))
    lines += [f"note: {n}" for n in cmp.notes]
    return lines


def comparison_table(cmp: Comparison, colour: bool = False) -> str:
    lines = [f"fastsock-bench compare: {cmp.base_path} -> {cmp.new_path}",
             "machine: " + _machine_text(cmp.machine, cmp.machine_differs)]
    if cmp.differs or cmp.case_differs:
        lines.append("differs: " + _differs_text(cmp))
    lines += _legend(cmp) + [""]
    lines += _grid(_header(cmp), [_row(cmp, c) for c in cmp.cases], colour)
    p99 = [(c, c.rtt_p99) for c in cmp.cases if c.rtt_p99 is not None]
    if p99:
        lines += ["", _p99_title(cmp)]
        lines += _grid(P99_HEADER, [_p99_row(c, m) for c, m in p99], colour)
    lines += [""] + _tail_lines(cmp) + [""]
    summary = _summary(cmp)
    lines.append(f"\033[1m{summary}\033[0m" if colour else summary)
    return "\n".join(lines) + "\n"


def _md_cells(row: Sequence[Cell], code_first: bool = True) -> list[str]:
    cells = [text for text, _ in row]
    if code_first:
        cells[0] = f"`{cells[0]}`"
    verdict = cells[-1]
    if verdict in (Verdict.SLOWER.value, Verdict.FASTER.value):
        cells[-1] = f"**{verdict}**"
    return cells


def comparison_markdown(cmp: Comparison) -> str:
    slower = sum(1 for c in cmp.cases if c.time.verdict is Verdict.SLOWER)
    head = (f"regression: {slower} of {len(cmp.cases)} cases slower" if cmp.exit_code
            else "no regression")
    lines = [f"### fastsock-bench compare: {head}", "",
             f"base `{cmp.base_path}` → new `{cmp.new_path}` · machine: "
             + _machine_text(cmp.machine, cmp.machine_differs)]
    if cmp.differs or cmp.case_differs:
        lines[-1] += " · differs: " + _differs_text(cmp)
    lines += ["", _summary(cmp), "", "<br>".join(_legend(cmp)), ""]
    flagged = [c for c in cmp.cases if c.time.verdict in (Verdict.SLOWER, Verdict.FASTER)]
    if flagged:
        lines += _md_table(_header(cmp), [_md_cells(_row(cmp, c)) for c in flagged]) + [""]
    lines += [f"<details><summary>All {len(cmp.cases)} cases</summary>", ""]
    lines += _md_table(_header(cmp), [_md_cells(_row(cmp, c)) for c in cmp.cases])
    p99 = [(c, c.rtt_p99) for c in cmp.cases if c.rtt_p99 is not None]
    if p99:
        lines += ["", _p99_title(cmp), ""]
        lines += _md_table(P99_HEADER, [_md_cells(_p99_row(c, m)) for c, m in p99])
    lines += ["", *(f"- {t}" for t in _tail_lines(cmp)), "", "</details>"]
    return "\n".join(lines) + "\n"


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _est_json(est: Estimate) -> dict[str, Any]:
    return {
        "ratio": est.ratio,
        "ci": [_num(est.low) if est.bounded else None, _num(est.high)],
        "p": est.p,
        "processes": [est.n_base, est.n_new],
        # "paired-t": lockstep slots, one log ratio each; "mann-whitney": two groups
        "test": "paired-t" if est.paired else "mann-whitney",
    }


def _metric_json(m: Metric, measure: str = "time") -> dict[str, Any]:
    if measure == INSTRUCTIONS:  # instructions per message, no worker processes
        est = {"ratio": m.est.ratio, "ci": [m.est.low, m.est.high], "p": m.est.p,
               "test": "exact" if _exact(m.est) else "fit-se"}
        return {"base_instructions": m.base, "new_instructions": m.new, **est,
                "p_adj": m.p_adj, "verdict": m.verdict.value}
    return {"base_s": m.base, "new_s": m.new, **_est_json(m.est),
            "p_adj": m.p_adj, "verdict": m.verdict.value}


def _key_json(key: CaseKey) -> dict[str, Any]:
    return {"name": key.name, "scenario": key.scenario, "transport": key.transport,
            "mode": key.mode, "size": key.size, "impl": key.impl, "batch": key.batch}


def _case_json(cmp: Comparison, c: CaseResult) -> dict[str, Any]:
    if cmp.measure == INSTRUCTIONS:  # "count", in instructions, never "time"
        return {**_key_json(c.key), "count": _metric_json(c.time, INSTRUCTIONS),
                "unit": _units.count_unit(c.key.scenario),
                "change": _units.fmt_count_change(c.time.est.ratio)}
    return {**_key_json(c.key), "time": _metric_json(c.time),
            "change": _units.fmt_change(c.key.scenario, c.time.est.ratio),
            "rtt_p99": _metric_json(c.rtt_p99) if c.rtt_p99 else None}


def comparison_json(cmp: Comparison) -> str:
    s = cmp.settings
    doc = {
        "fastsock_compare": JSON_SCHEMA,
        "measure": cmp.measure,
        "base": cmp.base_path,
        "new": cmp.new_path,
        "settings": {"threshold": s.threshold, "alpha": s.alpha,
                     "correction": s.correction.value, "confidence": 0.95,
                     "gate_p99": s.gate_p99},
        "machine": cmp.machine,
        "machine_differs": {d.key: [d.base, d.new] for d in cmp.machine_differs},
        "differs": {d.key: [d.base, d.new] for d in cmp.differs},
        "case_differs": cmp.case_differs,
        "cases": [_case_json(cmp, c) for c in cmp.cases],
        "geometric_mean": {k: {"ratio": r, "cases": n} for k, (r, n) in cmp.geomeans.items()},
        "only_in_base": [k.name for k in cmp.only_base],
        "only_in_new": [k.name for k in cmp.only_new],
        "summary": cmp.counts(),
        "regressions": [c.key.name for c in cmp.regressions()],
        "notes": cmp.notes,
        "exit_code": cmp.exit_code,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_comparison(cmp: Comparison, fmt: str, colour: bool = False) -> str:
    if fmt == "markdown":
        return comparison_markdown(cmp)
    if fmt == "json":
        return comparison_json(cmp)
    return comparison_table(cmp, colour)


# -- speedup --

# Version of the speedup JSON document (2: any two impls, ``base``/``impl``).
SPEEDUP_JSON_SCHEMA = 2


def _speedup_header(sp: Speedup) -> tuple[str, ...]:
    return ("case", f"procs {sp.base}/{sp.impl}", sp.base, sp.impl, "speedup [95% CI]")


def _speedup_legend(sp: Speedup) -> str:
    return (f"speedup = {sp.base} time / {sp.impl} time per message, round trip or connection "
            f"(above 1: {sp.impl} is faster), 95% CI over worker processes")


def _speedup_rows(sp: Speedup) -> list[list[Cell]]:
    return [
        [(_case_label(r.key), None), (f"{r.est.n_new}/{r.est.n_base}", None),
         (_units.fmt_figure(r.key.scenario, r.key.size, r.base_time), None),
         (_units.fmt_figure(r.key.scenario, r.key.size, r.impl_time), None),
         (fmt_ci(r.est), None)]
        for r in sp.results
    ]


def _speedup_tail(sp: Speedup) -> list[str]:
    lines = ["geometric mean of speedups: " + "; ".join(
        f"{s} {r:.2f}x over {n} cases" for s, (r, n) in sp.geomeans.items())]
    if sp.unpaired:
        lines.append(f"without their counterpart ({len(sp.unpaired)}): "
                     + ", ".join(k.name for k in sp.unpaired))
    return lines


def render_speedup(sp: Speedup, fmt: str, colour: bool = False) -> str:
    if fmt == "json":
        cases = []
        for r in sp.results:
            case = {k: v for k, v in _key_json(r.key).items() if k != "impl"}
            case.update(name=_case_label(r.key), base_s=r.base_time, impl_s=r.impl_time,
                        speedup=r.est.ratio, ci=_est_json(r.est)["ci"],
                        processes={"base": r.est.n_new, "impl": r.est.n_base})
            cases.append(case)
        doc = {
            "fastsock_speedup": SPEEDUP_JSON_SCHEMA,
            "report": sp.path,
            "base": sp.base,
            "impl": sp.impl,
            "machine": sp.machine,
            "cases": cases,
            "geometric_mean": {k: {"speedup": r, "cases": n} for k, (r, n) in sp.geomeans.items()},
            "unpaired": [k.name for k in sp.unpaired],
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    rows = _speedup_rows(sp)
    header = _speedup_header(sp)
    if fmt == "markdown":
        lines = [f"### fastsock-bench speedup: `{sp.path}`", "",
                 "machine: " + _machine_text(sp.machine), "", _speedup_legend(sp), ""]
        lines += _md_table(header, [_md_cells(r) for r in rows])
        lines += [""] + [f"- {t}" for t in _speedup_tail(sp)]
        return "\n".join(lines) + "\n"
    lines = [f"fastsock-bench speedup: {sp.path}", "machine: " + _machine_text(sp.machine),
             _speedup_legend(sp), ""]
    lines += _grid(header, rows, colour) + [""] + _speedup_tail(sp)
    return "\n".join(lines) + "\n"
