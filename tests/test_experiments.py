"""docs/experiments: the C ping-pong behind the README's crosscheck paragraph
builds, runs each wait style and refuses bad arguments; footprint.py refuses
what it does not know.  Kept working so that its figures can be made again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "docs", "experiments")

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="pingpong.c uses epoll (Linux)")


@pytest.fixture(scope="module")
def pingpong(tmp_path_factory: pytest.TempPathFactory) -> str:
    exe = str(tmp_path_factory.mktemp("pp") / "pingpong")
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", exe,
                    os.path.join(EXPERIMENTS, "pingpong.c")], check=True, timeout=60)
    return exe


@needs_cc
@linux_only
@pytest.mark.parametrize("argv", [["b", "0"], ["t", "0"], ["e", "0"], ["t", "2"],
                                  ["t", "2", "small"]])
def test_pingpong_runs(pingpong: str, argv: list[str]) -> None:
    out = subprocess.run([pingpong, "0.2", *argv], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rtt = float(out.stdout)
    assert 0.1 < rtt < 100_000  # microseconds: a round trip happened, in bounded time


@needs_cc
@linux_only
@pytest.mark.parametrize("argv", [[], ["1", "x", "0"], ["1", "", "0"], ["1", "t"],
                                  ["1", "t", "0", "small", "extra"]])
def test_pingpong_refuses_bad_arguments(pingpong: str, argv: list[str]) -> None:
    out = subprocess.run([pingpong, *argv], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith("usage: pingpong ")


@pytest.mark.parametrize("argv", [[], ["nothing"], ["process", "3", "4"], ["process", "x"],
                                  ["inprocess", "0"], ["inprocess", "-1"]])
def test_footprint_refuses_bad_arguments(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, os.path.join(EXPERIMENTS, "footprint.py"), *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "usage: footprint.py inprocess|process [ROUNDS]"
