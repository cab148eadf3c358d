"""Figures of bench.present.figures, built from synthetic reports and checked on the
matplotlib objects (axes, labels, units, line counts, titles, legends), plus
the files plot_report writes and the ``plot`` subcommand.

The realistic matrix (6 transports x 4 modes x 8 sizes x 2 impls) is built
once per module; only small reports are rendered to files, so the module
stays within a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from bench.analysis.report import CaseKey, load_report  # noqa: E402
from bench.present import figures as _plot  # noqa: E402
from tests import synth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("real") / "real.json"
    return load_report(synth.write_realistic_report(path, processes=3, values=2))


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Ping-pong at three sizes, two transports, two modes."""
    keys = synth.realistic_keys(transports=("tcp4", "unix-stream"), modes=("blocking", "spin"),
                                stream=False, pingpong_sizes=(64, 4096, 65536))
    path = tmp_path_factory.mktemp("multi") / "multi.json"
    return load_report(synth.write_realistic_report(path, keys, processes=3, values=2))


def small_keys() -> list[CaseKey]:
    """The degenerate report: one size per scenario, one mode, two transports."""
    keys = synth.realistic_keys(transports=("tcp4", "udp4"), modes=("blocking",), stream=False)
    return keys + [CaseKey("stream", "tcp4", "blocking", 4096, i) for i in ("cython", "python")]


@pytest.fixture
def small(tmp_path: Path) -> Any:
    return load_report(synth.write_realistic_report(tmp_path / "small.json", small_keys(),
                                                    processes=3, values=2))


def visible_axes(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def assert_titled(fig: Any) -> None:
    title = fig.get_suptitle()
    assert synth.FINGERPRINT["cpu_model_name"] in title
    assert synth.FINGERPRINT["kernel"] in title


def assert_legends_outside(fig: Any) -> None:
    """Legends belong to the figure, below the panels: none on an axes, and
    the figure legend's box overlaps no panel's box."""
    fig.draw_without_rendering()
    assert fig.legends, "no figure legend"
    for ax in visible_axes(fig):
        assert ax.get_legend() is None
    for legend in fig.legends:
        box = legend.get_window_extent()
        for ax in visible_axes(fig):
            assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_throughput_realistic(real: Any) -> None:
    fig = _plot.throughput_figure(real)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "tcp4", "tcp6", "udp4 (delivered)", "udp6 (delivered)", "unix-stream",
        "unix-dgram (delivered)"]
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "bytes" in ax.get_xlabel()
        assert "MB/s" in ax.get_ylabel()
        assert len(ax.get_lines()) == 8  # 4 modes x 2 impls
        assert {line.get_color() for line in ax.get_lines()} == set(_plot.MODE_COLOURS.values())
        assert {line.get_linestyle() for line in ax.get_lines()} == {"-", "--"}
    # every panel on the same scales, so transports compare
    assert len({ax.get_ylim() for ax in axes}) == 1
    assert len({ax.get_xlim() for ax in axes}) == 1
    tcp4 = axes[0].get_lines()[0]
    assert list(tcp4.get_xdata()) == list(synth.STREAM_SIZES)
    assert max(axes[2].get_lines()[0].get_xdata()) == synth.UDP_MAX
    assert_titled(fig)
    assert_legends_outside(fig)


def test_throughput_values_are_mb_per_second(real: Any) -> None:
    fig = _plot.throughput_figure(real)
    line = visible_axes(fig)[0].get_lines()[0]  # tcp4, blocking, cython
    case = real.by_key()[CaseKey("stream", "tcp4", "blocking", 64, "cython")]
    assert line.get_ydata()[0] == pytest.approx(64 / _plot.case_seconds(case) / 1e6)


def test_x_ticks_are_sizes_with_units(real: Any) -> None:
    fig = _plot.throughput_figure(real)
    labels = [t.get_text() for t in visible_axes(fig)[0].get_xticklabels()]
    assert labels == ["64 B", "256 B", "1 KiB", "4 KiB", "16 KiB", "64 KiB", "256 KiB", "1 MiB"]


def test_rtt_single_size_is_points_with_bars(real: Any) -> None:
    fig = _plot.rtt_figure(real)
    axes = visible_axes(fig)
    assert len(axes) == 6
    assert "64 B" in fig.get_suptitle()
    for ax in axes:
        assert "µs" in ax.get_ylabel() and "RTT" in ax.get_ylabel()
        assert ax.get_xlabel() == "mode"
        assert [t.get_text() for t in ax.get_xticklabels()] == list(_plot.MODE_ORDER)
        assert len(ax.containers) == 8  # one errorbar per mode x impl
        # spin's p50 to blocking's p99 spans > 10x: log, one scale for all
        assert ax.get_yscale() == "log"
    assert len({ax.get_ylim() for ax in axes}) == 1
    # the bar reaches p99: the synthetic p99 is 1.6 x the process level
    case = real.by_key()[CaseKey("pingpong", "tcp4", "blocking", 64, "cython")]
    bar = axes[0].containers[0]
    segments = bar.lines[2][0].get_segments()
    assert segments[0][1][1] == pytest.approx(case.run_mean("rtt_p99") * 1e6)
    assert_titled(fig)
    assert_legends_outside(fig)


def test_rtt_multi_size_has_lines_and_bands(multi: Any) -> None:
    fig = _plot.rtt_figure(multi)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "tcp4 · cython", "tcp4 · python", "unix-stream · cython", "unix-stream · python"]
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "µs" in ax.get_ylabel() and "bytes" in ax.get_xlabel()
        assert len(ax.get_lines()) == 2  # blocking, spin
        assert len(ax.collections) == 2  # a p50-p99 band each
    assert_legends_outside(fig)


def test_speedup_heatmap(real: Any) -> None:
    fig = _plot.speedup_figure(real, "stream")
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == list(_plot.MODE_ORDER)
    sizes = sorted(set(synth.STREAM_SIZES) | {synth.UDP_MAX})
    for ax in axes:
        assert "bytes" in ax.get_xlabel()
        assert [t.get_text() for t in ax.get_yticklabels()] == list(synth.TRANSPORTS)
        assert len(ax.images) == 1
        assert ax.images[0].get_array().shape == (6, len(sizes))
        measured = int(np.isfinite(ax.images[0].get_array().filled(np.nan)).sum())
        assert measured == sum(len(synth.stream_sizes(t)) for t in synth.TRANSPORTS)
        assert len(ax.texts) == measured  # every measured cell annotated
        assert ax.patch.get_hatch()  # the rest show the hatched background
    # the annotation is the speedup of that case
    sp = _plot.speedups(real, "stream")[CaseKey("stream", "tcp4", "blocking", 64, "cython")]
    assert axes[0].texts[0].get_text() == f"{sp:.2f}"
    assert sp > 1.5  # synthetic: the interpreter's per-call cost dominates at 64 B
    colourbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert colourbar and "×" in colourbar[0].get_ylabel()
    assert_titled(fig)


def test_speedup_single_size_pivots_to_modes(real: Any) -> None:
    fig = _plot.speedup_figure(real, "pingpong")
    axes = visible_axes(fig)
    assert len(axes) == 1
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(_plot.MODE_ORDER)
    assert axes[0].images[0].get_array().shape == (6, 4)


def test_degenerate_report(small: Any, tmp_path: Path) -> None:
    figs = _plot.figures(small)
    assert set(figs) == {"throughput", "rtt", "speedup_stream", "speedup_pingpong"}
    thr = visible_axes(figs["throughput"])
    assert len(thr) == 1 and len(thr[0].containers) == 2  # points, not a line
    # nearby points: linear from zero
    assert thr[0].get_yscale() == "linear" and thr[0].get_ylim()[0] == 0
    for ax in visible_axes(figs["rtt"]):
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    assert "4 KiB" in figs["throughput"].get_suptitle()
    for fig in figs.values():
        assert fig.get_figwidth() >= 9  # the two-line title fits
        assert_titled(fig)
    written = _plot.plot_report(small, tmp_path / "out")
    assert len(written) == 8
    for path in written:
        assert path.stat().st_size > 1000
        assert path.name.startswith("small_")
    pngs = [p for p in written if p.suffix == ".png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for svg in (p for p in written if p.suffix == ".svg"):
        assert ET.parse(svg).getroot().tag.endswith("svg")
    assert not list((tmp_path / "out").glob(".tmp-*"))  # atomic writes left nothing


def test_only_python_impl_has_no_speedup(tmp_path: Path) -> None:
    keys = [k for k in small_keys() if k.impl == "python"]
    report = load_report(synth.write_realistic_report(tmp_path / "py.json", keys, processes=2))
    figs = _plot.figures(report)
    assert set(figs) == {"throughput", "rtt"}


def test_peer_noted_when_not_compiled(tmp_path: Path) -> None:
    suite = synth.make_suite(small_keys(), processes=2)
    path = tmp_path / "peer.json"
    import pyperf

    from bench.analysis.report import dump_suite

    benches = []
    for bench in suite.get_benchmarks():
        runs = [pyperf.Run(r.values, warmups=r.warmups, metadata={**r.get_metadata(),
                           "peer_impl": "python"}, collect_metadata=False)
                for r in bench.get_runs()]
        benches.append(pyperf.Benchmark(runs))
    dump_suite(pyperf.BenchmarkSuite(benches), path)
    fig = _plot.throughput_figure(load_report(path))
    assert "peer: python" in fig.get_suptitle()


def compare_pair(tmp_path: Path, slower: float = 1.2) -> tuple[Any, Any, dict[CaseKey, float]]:
    """A base and a new report, tcp4's Python cases made slower in the new."""
    from bench.analysis.report import dump_suite

    keys = [k for k in synth.realistic_keys(transports=("tcp4", "unix-stream"),
                                            modes=("blocking", "spin"))
            if k.size in (64, 4096)]
    scale = {k: slower for k in keys if k.transport == "tcp4" and k.impl == "python"}
    dump_suite(synth.make_realistic_suite(keys, seed=3, processes=8), tmp_path / "base.json")
    dump_suite(synth.make_realistic_suite(keys, seed=4, processes=8, scale=scale),
               tmp_path / "new.json")
    return load_report(tmp_path / "base.json"), load_report(tmp_path / "new.json"), scale


def test_compare_figure(tmp_path: Path) -> None:
    from bench.analysis.compare import compare_reports

    base, new, scale = compare_pair(tmp_path)
    comparison = compare_reports(base, new)
    fig = _plot.compare_figure(new, base, comparison)
    (ax,) = visible_axes(fig)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    (bars,) = [c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]
    assert len(labels) == len(comparison.cases) == len(bars)
    assert "×" in ax.get_xlabel() and "new / base" in ax.get_xlabel()
    slower = matplotlib.colors.to_hex(_plot.VERDICT_COLOURS[_plot.Verdict.SLOWER])
    # bars run bottom to top; labels too
    red = [(b, lab) for b, lab in zip(bars, labels)
           if matplotlib.colors.to_hex(b.get_facecolor()) == slower]
    assert len(red) == len(scale)  # every planted slowdown, nothing else
    for bar, label in red:
        assert "tcp4" in label and "python" in label
        assert bar.get_x() == 1 and bar.get_width() > 0.1  # from 1 to the ratio
    # the line at 1 and the threshold band behind the bars
    assert any(list(line.get_xdata()) == [1, 1] for line in ax.get_lines())
    t = comparison.settings.threshold
    band = [p for p in ax.patches if p not in list(bars)]
    assert len(band) == 1
    assert band[0].get_x() == pytest.approx(1 - t)
    assert band[0].get_width() == pytest.approx(2 * t)
    assert "all 24 cases" in fig.get_suptitle()
    assert_titled(fig)
    assert_legends_outside(fig)
    # a cap on rows: the largest changes are kept, the title says so
    fig = _plot.compare_figure(new, base, comparison, max_cases=5)
    (ax,) = visible_axes(fig)
    assert len(ax.get_yticklabels()) == 5
    assert "the 5 largest changes of 24 cases" in fig.get_suptitle()


def test_plot_report_with_base(tmp_path: Path) -> None:
    base, new, _ = compare_pair(tmp_path)
    written = _plot.plot_report(new, tmp_path / "out", base=base, formats=("svg",))
    assert (tmp_path / "out" / "new_compare.svg") in written


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The subcommands as bench/cli.py wires them, in a real process."""
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_plot(tmp_path: Path) -> None:
    keys = [CaseKey("stream", "unix-stream", "spin", 64, "python")]  # one figure: fast
    report = synth.write_realistic_report(tmp_path / "r.json", keys, processes=2)
    proc = run_cli("plot", report, "-o", str(tmp_path / "figs"))
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == ["r_throughput.png", "r_throughput.svg"]
    assert proc.stdout.splitlines() == [str(tmp_path / "figs" / n) for n in written]


@pytest.mark.parametrize("content", ["", "{not json", '{"version": "1.0", "benchmarks": []}'])
def test_cli_plot_bad_report(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = run_cli("plot", str(bad), "-o", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastsock-bench plot: error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_plot_missing_report(tmp_path: Path) -> None:
    proc = run_cli("plot", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("fastsock-bench plot: error: ")
    assert "no such file" in proc.stderr
