"""The connect scenario in the consumers of a report: the run summary,
compare, the figures and the HTML page, on synthetic reports (checked on
the objects and the text, never on a real run's speed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

matplotlib = pytest.importorskip("matplotlib")

from bench.analysis import compare as _compare  # noqa: E402
from bench.analysis import units as _units  # noqa: E402
from bench.analysis.report import CaseKey, load_report  # noqa: E402
from bench.present import figures as _plot  # noqa: E402
from bench.present import formats as _compare_format  # noqa: E402
from bench.present import html as _html  # noqa: E402
from bench.present import summary as _summary  # noqa: E402
from tests import synth  # noqa: E402

TRANSPORTS = ("tcp4", "tcp6", "unix-stream")
CONNECT_MODES = ("blocking", "nonblocking")


def connect_keys(modes=CONNECT_MODES, impls=("cython", "python")) -> list[CaseKey]:
    return [CaseKey("connect", t, m, 0, i) for t in TRANSPORTS for m in modes for i in impls]


def mixed_keys() -> list[CaseKey]:
    stream = [CaseKey("stream", "tcp4", "blocking", 64, i) for i in ("cython", "python")]
    return stream + connect_keys()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("connect") / "connect.json"
    return load_report(synth.write_realistic_report(path, mixed_keys(), processes=4, values=2))


def test_the_connect_figure(report: Any) -> None:
    fig = _plot.connect_figure(report)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 1
    ax = axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TRANSPORTS)
    assert "connections per second" in ax.get_ylabel()
    cases = [c for c in report.cases if c.key.scenario == "connect"]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == len(cases)
    heights = sorted(round(b.get_height(), 6) for b in bars)
    assert heights == sorted(round(_units.msg_rate(_plot.case_seconds(c)) / 1e3, 6)
                             for c in cases)
    # compiled filled in the mode's colour, Python hatched on white
    filled = [b for b in bars if not b.get_hatch()]
    assert len(filled) == len(bars) // 2
    assert all(b.get_facecolor()[:3] == (1.0, 1.0, 1.0) for b in bars if b.get_hatch())
    # a whisker per bar, and the speedup of each pair
    assert len(ax.containers) >= len(cases)
    texts = [t.get_text() for t in ax.texts]
    sp = _plot.speedups(report, "connect")
    assert len(sp) == len(cases) // 2
    for value in sp.values():
        assert _units.fmt_ratio(value) in texts
    title = fig.get_suptitle()
    assert "connect + accept + close" in title
    assert synth.FINGERPRINT["cpu_model_name"] in title
    fig.draw_without_rendering()
    box = fig.legends[0].get_window_extent()
    assert not box.overlaps(ax.get_window_extent())


def test_figures_of_a_mixed_report(report: Any, tmp_path: Path) -> None:
    figs = _plot.figures(report)
    assert "connect" in figs and "speedup_connect" not in figs
    # the throughput figure is the stream cases' only
    thr = _plot.throughput_figure(report)
    assert [ax.get_title() for ax in thr.axes if ax.get_visible()] == ["tcp4"]
    written = _plot.plot_report(report, tmp_path, formats=("png",))
    assert tmp_path / "connect_connect.png" in written


def test_no_connect_cases_no_connect_figure(tmp_path: Path) -> None:
    keys = [CaseKey("stream", "tcp4", "blocking", 64, i) for i in ("cython", "python")]
    rep = load_report(synth.write_realistic_report(tmp_path / "s.json", keys, processes=2))
    assert _plot.connect_figure(rep) is None


def test_summary_has_a_connect_table(report: Any) -> None:
    text = _summary.render_report(report)
    part = text[text.index("connect: connections"):]
    lines = part.splitlines()
    assert lines[1].split()[:4] == ["transport", "mode", "impl", "conn/s"]
    rows = [ln.split() for ln in lines[3:]]
    assert len(rows) == len(connect_keys())
    by = {c.key: c for c in report.cases}
    for r in rows:
        case = by[CaseKey("connect", r[0], r[1], 0, r[2])]
        assert float(r[3].replace(",", "")) == pytest.approx(
            1 / _plot.case_seconds(case), rel=1e-3)
        assert r[-1].endswith("x") == (r[2] == "cython")


def test_compare_speaks_conn_per_s(report: Any, tmp_path: Path) -> None:
    slower = dict.fromkeys(connect_keys(), 1.25)
    new = load_report(synth.write_realistic_report(tmp_path / "new.json", mixed_keys(),
                                                   processes=8, values=2, scale=slower))
    base = load_report(synth.write_realistic_report(tmp_path / "base.json", mixed_keys(),
                                                    processes=8, values=2))
    cmp = _compare.compare_reports(base, new)
    table = _compare_format.render_comparison(cmp, "table")
    line = next(ln for ln in table.splitlines()
                if ln.startswith("connect/tcp4/blocking/0/cython"))
    # time x 1.25 is 1/1.25 - 1 = -20% connections per second
    assert re.search(r" -(1[89]|2[0-2])\.\d% conn/s ", line), line
    assert "slower" in line
    assert "round trip or connection" in table


def test_html_connect_sections(report: Any) -> None:
    page = _html.render_html(report)
    assert 'id="summary-connect"' in page and 'id="fig-connect"' in page
    section = page[page.index('id="summary-connect"'):]
    section = section[:section.index("</section>")]
    assert "connections/s" in section and "CPU / connection" in section
    assert "conn/s" in section and "No payload" in section
    assert "0 B" not in section  # the size column says there is none
    glance = page[page.index('id="glance"'):]
    glance = glance[:glance.index("</section>")]
    assert "<th>connections</th>" in glance and "conn/s" in glance
