"""The loop contract, public: what a module needs to be an impl fastsock measures.

Design note: this module only re-exports (trio's habit: a public module
over private ones).  The contract's text, the source of truth for every
function's signature and meaning, is ``fastsock._common``'s docstring;
``docs/impls.md`` says what an impl must do, what it may leave out and how
it declares it.  An impl module::

    from fastsock.contract import check_stream, check_mode, check_timeout, configure

    FASTSOCK_CONTRACT = 1            # the contract version it keeps
    MODES = ("blocking", "timeout")  # optional: the modes it runs (default: all)

    def stream_send(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, pattern=False): ...

The helpers are the twins' own: argument checks that raise before any I/O
(``check_*``), the mode's socket state (``configure``), the integrity
pattern (``pattern_buffer``) and the contract's errors (``timed_out``,
``peer_closed``, ``pattern_error``).
"""

from __future__ import annotations

from fastsock import LOOP_NAMES
from fastsock._common import (
    CONNECT_MODES,
    CONTRACT_VERSION,
    DEFAULT_TIMEOUT,
    MAX_BATCH,
    MODES,
    PATTERN_PERIOD,
    SPIN_CHECK,
    STREAM_MAX,
    UDP4_MAX,
    UDP6_MAX,
    check_batch,
    check_connect_mode,
    check_dgram,
    check_listener,
    check_mode,
    check_mode_of,
    check_samples,
    check_stream,
    check_timeout,
    check_total,
    configure,
    pattern_buffer,
    pattern_error,
    peer_closed,
    timed_out,
)

# The contract's functions, in its order (an impl provides those it defines).
FUNCTIONS = LOOP_NAMES

__all__ = [
    "CONNECT_MODES",
    "CONTRACT_VERSION",
    "DEFAULT_TIMEOUT",
    "FUNCTIONS",
    "MAX_BATCH",
    "MODES",
    "PATTERN_PERIOD",
    "SPIN_CHECK",
    "STREAM_MAX",
    "UDP4_MAX",
    "UDP6_MAX",
    "check_batch",
    "check_connect_mode",
    "check_dgram",
    "check_listener",
    "check_mode",
    "check_mode_of",
    "check_samples",
    "check_stream",
    "check_timeout",
    "check_total",
    "configure",
    "pattern_buffer",
    "pattern_error",
    "peer_closed",
    "timed_out",
]
