"""Human units for what pyperf stores in seconds.

Design note: pyperf's value is seconds per message (stream), per round
trip (pingpong) or per connection (connect), lower is better.  Everything
shown to a person is derived here, in one place, so the run summary,
compare, plots and the HTML report print the same figure the same way.
MB = 10**6 bytes (as iperf3 -f M is not: it uses 2**20; we say MB and mean
10**6).
"""

from __future__ import annotations

MB = 1e6  # bytes in a megabyte, as shown everywhere (not MiB)


def throughput_mbps(size: int, seconds_per_msg: float) -> float:
    """MB/s (10**6 bytes per second) for ``size``-byte messages."""
    return size / seconds_per_msg / MB


def msg_rate(seconds_per_msg: float) -> float:
    """Messages (or round trips) per second."""
    return 1.0 / seconds_per_msg


def usec(seconds: float) -> float:
    return seconds * 1e6


def fmt_size(size: int) -> str:
    """64 -> '64 B', 65536 -> '64 KiB', 1048576 -> '1 MiB'."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def fmt_mbps(value: float) -> str:
    return f"{value:,.1f} MB/s" if value >= 10 else f"{value:,.3g} MB/s"


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M msg/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k msg/s"
    return f"{value:.0f} msg/s"


def fmt_conn_rate(value: float) -> str:
    """Connections per second (connect: each one set up and torn down)."""
    return fmt_rate(value).replace("msg/s", "conn/s")


def fmt_usec(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 1000:
        return f"{us / 1000:,.2f} ms"
    return f"{us:.2f} µs" if us < 100 else f"{us:.1f} µs"


def fmt_value(scenario: str, size: int, seconds: float) -> str:
    """The headline figure of a case in its natural unit."""
    if scenario == "pingpong":
        return f"RTT {fmt_usec(seconds)}"
    if scenario == "connect":
        return fmt_conn_rate(1 / seconds)
    return f"{fmt_mbps(throughput_mbps(size, seconds))} ({fmt_rate(1 / seconds)})"


def fmt_loss(fraction: float) -> str:
    """Datagram loss, a fraction 0..1, as a percentage."""
    pct = fraction * 100
    if pct == 0:
        return "0 %"
    return f"{pct:.2g} %" if pct < 1 else f"{pct:.1f} %"


def fmt_ratio(ratio: float) -> str:
    """A ratio of times (a speedup, new/base): 1.234 -> '1.23×'."""
    return f"{ratio:.2f}×"


def fmt_figure(scenario: str, size: int, seconds: float) -> str:
    """The compact figure of a case for a table column: MB/s (stream),
    RTT in µs (pingpong), connections per second (connect)."""
    if scenario == "pingpong":
        return fmt_usec(seconds)
    if scenario == "connect":
        return fmt_conn_rate(1 / seconds)
    return fmt_mbps(throughput_mbps(size, seconds))


def fmt_change(scenario: str, time_ratio: float) -> str:
    """A time ratio new/base as the change a person reads in the case's own
    unit: throughput for stream and connect (a higher figure is better,
    so a time ratio of 1.10 is -9.1% MB/s), RTT for pingpong (+10.0% RTT)."""
    if scenario == "pingpong":
        return f"{100 * (time_ratio - 1):+.1f}% RTT"
    unit = "conn/s" if scenario == "connect" else "MB/s"
    return f"{100 * (1 / time_ratio - 1):+.1f}% {unit}"


# Counted instructions (``run --measure instructions``): per message, round
# trip or connection, of the measured process's user space only.
COUNT_UNITS = {"stream": "instr/msg", "pingpong": "instr/rt", "connect": "instr/conn"}


# What one count is per, in words: "instructions per message".
COUNT_WHAT = {"stream": "message", "pingpong": "round trip", "connect": "connection"}


def count_what(scenario: str) -> str:
    """What a count of ``scenario`` is per: 'message', 'round trip', 'connection'."""
    return COUNT_WHAT.get(scenario, "operation")


def count_unit(scenario: str) -> str:
    """The short unit of a count: 'instr/msg', 'instr/rt', 'instr/conn'."""
    return COUNT_UNITS.get(scenario, "instr/msg")


def fmt_count(scenario: str, instructions: float) -> str:
    """A count with its unit: 1713.3 -> '1,713.3 instr/msg'."""
    text = f"{instructions:,.1f}" if instructions < 1e5 else f"{instructions:,.0f}"
    return f"{text} {count_unit(scenario)}"


def fmt_count_change(ratio: float) -> str:
    """An instruction ratio new/base as a change: 1.0123 -> '+1.23% instr'."""
    return f"{100 * (ratio - 1):+.2f}% instr"
