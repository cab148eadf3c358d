"""A case's two ends: the measured socket and its peer, set up before any clock starts.

Design note
-----------
Every timed unit (:mod:`bench.run.scenarios`) needs the same things ready
before its first call: the measured side's socket, the peer at the other
end taking orders, the loops object that drives the socket, and the facts
of the set-up that go into the report (``peer_impl``, ``sndbuf``,
``rcvbuf``, ``tcp_nodelay``, ``peer_batch``; ``event_loop`` is added by
:mod:`bench.run.eventloop`).  :class:`Ends` holds them and owns them: its
``close()`` ends all it holds.

Who makes the socket and the peer is one function, an :data:`Opener`;
:func:`open_ends` adds the metadata, the same whoever opened:

* :func:`open_local`, the default: a connected pair here
  (:func:`bench.run.transports.make_pair`), the measured side pinned to
  its CPU, and the peer started on another one by a :data:`PeerStarter`,
  :func:`fork_peer` unless told (a plain fork: milliseconds, outside the
  timed region, and no address to agree on);
* ``run --remote``: ``bench.remote.client.open_case``, which ``cli``
  injects, so that ``run`` never imports ``remote``: no local pair, no
  fork, no CPU placement (the server places its own peer).

The connect scenario has no peer: :func:`listen` makes a listener, whose
socket is the measured one (``connect_accept`` plays both ends).

A case's socket options are set here, before its peer starts: its socket
buffers (``sockbuf``, by :func:`bench.run.transports.make_pair`, granted
sizes of both ends recorded) and TCP_NODELAY (:func:`set_nodelay`).
N connections in N threads are N ``Ends``, opened alike, their peers one
process (:mod:`bench.run.threads`).

A counting run under valgrind (``run --measure instructions``) wants its
peer out of valgrind: :func:`exec_peer`, the :data:`PeerStarter` that
forks and execs (:class:`bench.run.peer.ExecPeer`).  ``loops`` is
whatever module keeps the loop contract of :mod:`fastsock._common`
(:mod:`bench.run.impls`).

Limits: one connection per ``Ends``; the datagram ping-pong's way of ending
its peer (an empty datagram first) is the unit's, not this module's.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from bench.analysis.report import DGRAM_TRANSPORTS, CaseKey
from bench.run.peer import ExecPeer, Peer, PeerError, PeerLike, choose_cpus, placement_for
from bench.run.transports import Listener, buffer_facts, make_pair

if TYPE_CHECKING:  # asyncio only where an event loop runs (bench.run.eventloop)
    from fastsock._asyncloops import AsyncConn

TCP_TRANSPORTS = ("tcp4", "tcp6")

# Makes a case's measured socket and its (started) peer: open_local, or a
# peer elsewhere (``run --remote``).
Opener = Callable[[CaseKey], "tuple[socket.socket, PeerLike]"]
# Starts the peer on its end of a local pair: (peer's end, measured end,
# case, the peer's CPU or None) -> the peer, taking orders.
PeerStarter = Callable[[socket.socket, socket.socket, CaseKey, "int | None"], PeerLike]


class CaseFailed(RuntimeError):
    """A case cannot run here (its loops are missing, say): one line."""


@dataclass
class Ends:
    """What a timed unit works with; ``None`` fields are closed or absent."""

    sock: socket.socket | None  # the measured end (connect: the listener's socket)
    peer: PeerLike | None
    # The loops: a module with the contract's functions, or an event
    # loop's AsyncConn (which has the stream ones).
    loops: Any
    listener: Listener | None = None  # connect only
    conn: AsyncConn | None = None  # an event-loop impl's connection: it owns ``sock``
    # Set-up facts for every run's metadata (equal in all runs of the case).
    meta: dict[str, Any] = field(default_factory=dict)
    # A peer failure seen while an event loop ran, kept to be raised
    # outside it (see bench.run.eventloop.hand_over).
    peer_error: PeerError | None = None

    def close(self) -> None:
        """Close what is still open, in this order; safe twice."""
        if self.listener is not None:
            self.listener.close()  # and its Unix path
            self.listener = self.sock = None
        if self.conn is not None:  # closes the socket too: the peer's EOF
            self.conn.close()
            self.conn = None
        if self.sock is not None:
            self.sock.close()  # stream: an EOF, which ends the peer's echo
            self.sock = None
        if self.peer is not None:
            self.peer.close()
            self.peer = None


def fork_peer(theirs: socket.socket, mine: socket.socket, key: CaseKey, cpu: int | None,
              own: tuple[socket.socket, ...] = ()) -> PeerLike:
    """The default :data:`PeerStarter`: :class:`bench.run.peer.Peer`, forked.
    ``own``: the worker's other sockets, closed in the child (a lockstep
    worker's turn socket)."""
    return Peer(theirs, key.scenario, key.transport in DGRAM_TRANSPORTS, key.mode, key.size,
                cpu, measured=mine, workers_own=own)


def exec_peer(theirs: socket.socket, mine: socket.socket, key: CaseKey,
              cpu: int | None) -> PeerLike:
    """A :data:`PeerStarter` for a worker under valgrind (``run --measure
    instructions``): :class:`bench.run.peer.ExecPeer`, a new interpreter
    that runs natively, outside the instrumentation."""
    return ExecPeer(theirs, key.scenario, key.transport in DGRAM_TRANSPORTS, key.mode,
                    key.size, cpu)


def open_local(key: CaseKey, start_peer: PeerStarter = fork_peer, placement: str = "auto"
               ) -> tuple[socket.socket, PeerLike]:
    """The default :data:`Opener`: a pair on this host, the peer started on
    its end by ``start_peer`` where ``placement`` (:data:`bench.run.peer.PLACEMENTS`)
    puts it; the peer's end is closed here either way."""
    mine, theirs = make_pair(key.transport, key.sockbuf)
    try:
        set_nodelay(key, mine, theirs)
        facts: dict[str, Any] = buffer_facts(mine, theirs, key.sockbuf)
        where = placement_for(placement, key.mode)
        worker_cpus, peer_cpu = choose_cpus(where)
        if worker_cpus:
            os.sched_setaffinity(0, worker_cpus)
        peer = start_peer(theirs, mine, key, peer_cpu)
        facts.update(placement_facts(where, peer_cpu))
        peer.facts.update(facts)
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return mine, peer


def placement_facts(where: str, peer_cpu: int | None) -> dict[str, str]:
    """Where a case's processes ran, for the report: ``placement`` (apart
    or os), this process's CPUs, the peer's CPU ('any': not pinned)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return {"placement": where, "measured_cpus": ",".join(map(str, sorted(cpus))),
            "peer_cpu": "any" if peer_cpu is None else str(peer_cpu)}


def set_nodelay(key: CaseKey, mine: socket.socket, theirs: socket.socket) -> None:
    """TCP_NODELAY where the case has it: both ends of a TCP ping-pong;
    the sender of a TCP stream with ``nodelay`` (``--nodelay on``)."""
    if key.transport not in TCP_TRANSPORTS:
        return
    if key.scenario == "pingpong":
        for s in (mine, theirs):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    elif key.nodelay:
        mine.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_ends(key: CaseKey, opener: Opener, loops: Any) -> Ends:
    """The ends ``opener`` makes, with their set-up facts."""
    mine, peer = opener(key)
    return Ends(mine, peer, loops, meta=ends_meta(key, mine, peer))


def ends_meta(key: CaseKey, mine: socket.socket, peer: PeerLike) -> dict[str, Any]:
    """A case's set-up facts for the report: the peer's, the measured
    end's socket options, what the peer's end was granted."""
    meta: dict[str, Any] = {
        "peer_impl": peer.impl,
        "sndbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        "rcvbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }
    if key.transport in TCP_TRANSPORTS:
        meta["tcp_nodelay"] = mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    if key.transport in DGRAM_TRANSPORTS and key.scenario == "stream":
        # its peer receives this many datagrams per call (no event loop
        # runs datagrams: this key never meets ``event_loop``)
        meta["peer_batch"] = getattr(peer, "batch", 1)
    meta.update(getattr(peer, "facts", {}))
    return meta


def listen(key: CaseKey, loops: Any, placement: str = "auto") -> Ends:
    """A listener only: the loop is both ends, there is no peer (the report
    has no peer_impl for these cases)."""
    where = placement_for(placement, key.mode)
    worker_cpus, _ = choose_cpus(where)
    if worker_cpus:  # where the other scenarios' measured side runs
        os.sched_setaffinity(0, worker_cpus)
    listener = Listener(key.transport)
    meta = placement_facts(where, None)
    del meta["peer_cpu"]  # no peer
    return Ends(listener.sock, None, loops, listener=listener, meta=meta)
