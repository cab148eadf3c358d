"""The HTML report of bench.present.html: it parses, it refers to nothing outside
itself, it escapes what reports contain, it carries the tables, figures and
the compare verdict, and Chromium renders it to a page that is not blank;
plus the ``report`` subcommand."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from bench.analysis.report import CaseKey, load_report
from bench.present import html as _html
from tests import synth
from tests.test_plot import run_cli, small_keys

CHROMIUM_TIMEOUT = 120  # seconds; a loaded 2-core machine takes ~5


class Page(HTMLParser):
    """Collects what the checks need: tags, attributes, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in ("meta", "img", "br", "link"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> Page:
    page = Page()
    page.feed(markup)
    page.close()
    assert page.open == [], f"unclosed: {page.open}"
    return page


def assert_self_contained(markup: str, page: Page) -> None:
    assert "link" not in page.tags and "script" not in page.tags
    assert "iframe" not in page.tags and "object" not in page.tags
    for tag, name, value in page.attrs:
        if name == "src":
            assert value.startswith("data:image/png;base64,"), (tag, value[:40])
        if name == "href":
            assert value.startswith("#"), value
    # Outside the data URIs, nothing that names a place on a network.
    stripped = markup
    for _, name, value in page.attrs:
        if name == "src":
            stripped = stripped.replace(value, "")
    for needle in ("http:", "https:", "//", "@import", "url("):
        assert needle not in stripped, needle


TINY_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture(scope="module")
def real_html(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """The realistic matrix's page.  Its figures are built (titles become
    alt text) but not rasterised: test_plot checks them, and rasterising
    four large figures would be most of this module's time."""
    path = tmp_path_factory.mktemp("real") / "real.json"
    report = load_report(synth.write_realistic_report(path, processes=3, values=2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_html._plot, "render", lambda fig, fmt, dpi=0: TINY_PNG)
        return report, _html.render_html(report)


@pytest.fixture
def no_raster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures built but not rasterised (test_plot covers them): fast."""
    monkeypatch.setattr(_html._plot, "render", lambda fig, fmt, dpi=0: TINY_PNG)


def test_realistic_page(real_html: tuple[Any, str]) -> None:
    _report, markup = real_html
    page = parse(markup)
    assert_self_contained(markup, page)
    text = " ".join(page.text)
    assert synth.FINGERPRINT["cpu_model_name"] in text
    assert "6.1.0" in text  # the kernel
    assert page.tags.count("img") == 4  # throughput, rtt, two speedup heatmaps
    for heading in ("At a glance", "Summary: Stream throughput", "Summary: Ping-pong RTT",
                    "Environment", "Figures"):
        assert heading in text
    # units in every kind of figure the tables show
    for unit in ("MB/s", "msg/s", "µs", "×", "%"):
        assert unit in text, unit
    # every case is in a table: 6 transports x 4 modes x sizes, once per row
    stream_rows = sum(len(synth.stream_sizes(t)) for t in synth.TRANSPORTS) * 4
    assert markup.count("<tr><td>") >= stream_rows + 6 * 4
    # each figure has alt text: its title
    alts = [v for t, n, v in page.attrs if t == "img" and n == "alt"]
    assert all(synth.FINGERPRINT["cpu_model_name"] in a for a in alts)


def test_speedup_and_loss_cells(real_html: tuple[Any, str]) -> None:
    report, markup = real_html
    from bench.present import figures as _plot
    sp = _plot.speedups(report)[CaseKey("stream", "tcp4", "blocking", 64, "cython")]
    assert f"{sp:.2f}×" in markup
    assert "1.0 %" in markup  # synthetic UDP loss at 65507 B: 1%


def test_escapes_report_text(tmp_path: Path, no_raster: None) -> None:
    evil = "<script>alert('x')</script>"
    suite = synth.make_realistic_suite(small_keys(), processes=2,
                                       extra_meta={"cpu_model_name": evil, "hostname": "<b>h"})
    from bench.analysis.report import dump_suite

    dump_suite(suite, tmp_path / "evil.json")
    report = load_report(tmp_path / "evil.json")
    markup = _html.render_html(report)
    page = parse(markup)
    assert "script" not in page.tags and "b" not in page.tags
    assert "&lt;script&gt;" in markup
    assert_self_contained(markup, page)


def test_compare_section(tmp_path: Path, no_raster: None) -> None:
    keys = [k for k in synth.realistic_keys(transports=("tcp4", "unix-stream"),
                                            modes=("blocking", "spin"))
            if k.size in (64, 4096)]
    slower = {k: 1.2 for k in keys if k.transport == "tcp4" and k.impl == "python"}
    from bench.analysis.report import dump_suite

    dump_suite(synth.make_realistic_suite(keys, seed=3, processes=8), tmp_path / "base.json")
    dump_suite(synth.make_realistic_suite(keys, seed=4, processes=8, scale=slower),
               tmp_path / "new.json")
    base, new = load_report(tmp_path / "base.json"), load_report(tmp_path / "new.json")
    markup = _html.render_html(new, base)
    page = parse(markup)
    assert_self_contained(markup, page)
    text = " ".join(page.text)
    regressions = len(slower)
    assert f"Verdict: {regressions} regressions" in text
    assert "Compared with base.json" in text
    assert page.tags.count("img") == 5  # the compare figure too
    # time verdicts; a pingpong case may add an RTT p99 "slower" too
    assert markup.count('<td class="slower">slower</td>') >= regressions
    assert markup.index("Compared with base.json") < markup.index("At a glance")


def test_compare_same_run_has_no_regression(tmp_path: Path, no_raster: None) -> None:
    path = synth.write_realistic_report(tmp_path / "r.json", small_keys(), processes=8)
    report = load_report(path)
    text = " ".join(parse(_html.render_html(report, report)).text)
    assert "Verdict: no regression" in text


def test_write_html_atomic(tmp_path: Path) -> None:
    path = synth.write_realistic_report(tmp_path / "r.json", small_keys(), processes=2)
    out = _html.write_html(load_report(path), tmp_path / "r.html")
    assert out.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


def test_cli_report(tmp_path: Path) -> None:
    keys = [CaseKey("pingpong", "tcp4", "spin", 64, i) for i in ("cython", "python")]
    report = synth.write_realistic_report(tmp_path / "r.json", keys, processes=2)
    proc = run_cli("report", report)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r.html"  # default: beside the JSON
    assert out.stat().st_size > 10_000
    before = out.stat()
    proc = run_cli("report", report, "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"fastsock-bench report: error: {out}: exists; use --overwrite to replace it")
    assert out.stat() == before  # untouched
    proc = run_cli("report", report, "-o", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_ino != before.st_ino  # replaced (atomically: a new file)


def test_cli_report_errors(tmp_path: Path) -> None:
    report = synth.write_realistic_report(tmp_path / "r.json", small_keys(), processes=2)
    other = synth.write_realistic_report(
        tmp_path / "o.json", [CaseKey("stream", "tcp6", "spin", 64, "cython")], processes=2)
    cases = [
        (("report", str(tmp_path / "none.json"), "-o", str(tmp_path / "x.html")), "no such file"),
        (("report", report, "-o", str(tmp_path / "no" / "x.html")), "no such directory"),
        (("report", report, "-o", str(tmp_path)), "is a directory"),
        (("report", report, "-o", str(tmp_path / "x.html"), "--compare", other),
         "no case in common"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastsock-bench report: error: "), lines
        assert message in lines[0]
    assert not (tmp_path / "x.html").exists()


def test_chromium_renders_a_page(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); "
                    "CI installs it")
    path = synth.write_realistic_report(tmp_path / "r.json", small_keys(), processes=2)
    html = _html.write_html(load_report(path), tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    # A private profile: a shared one can be locked by another chromium and
    # make this one wait.
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert shot.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}"
    import matplotlib.image as mpimg
    import numpy as np

    image = mpimg.imread(shot)[..., :3]
    assert image.shape[:2] == (2000, 1200)
    colours = np.unique((image.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, tables and figures, not a flat page
    non_white = np.any(image < 0.95, axis=2).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is not white"
