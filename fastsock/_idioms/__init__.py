"""The standard library's socket idioms, each an impl of its own.

Design note
-----------
The twins answer "what does the interpreter cost?"; these answer "which
part of Python's socket API should my code use?".  Each module keeps the
loop contract (``fastsock._common``, ``FASTSOCK_CONTRACT = 1``) for the
functions of the measured side it applies to, and is the Python twin
(``fastsock._pyloops``) with one idiom swapped in, so that a case's
difference from ``python`` is that idiom and nothing else: the same
preallocated buffers, the same waits, the same checks and errors.

================  ========================================  ====================  =============
impl              the idiom                                 functions             modes
================  ========================================  ====================  =============
socket-sendall    ``sock.sendall(msg)`` per message         stream_send,          blocking,
                  (the twin: ``send``, continued itself)    stream_pingpong       timeout
socket-recv       ``sock.recv(n)``: a new bytes object      stream_pingpong,      all
                  per call (the twin: ``recv_into``)        dgram_pingpong
socket-makefile   ``sock.makefile('rwb')``: ``write`` and   stream_send,          blocking,
                  ``flush`` per message, ``readinto``       stream_pingpong       timeout
socket-sendmsg    ``sock.sendmsg([msg])`` and               dgram_send,           all
                  ``recvmsg_into([buf])`` (datagrams)       dgram_pingpong
================  ========================================  ====================  =============

Where an idiom has no meaning the module leaves it out and says so
(``MODES``; the functions it does not define): ``sendall`` on a
non-blocking socket raises ``BlockingIOError`` midway, having sent an
unknown part of the message; a ``makefile()`` file needs a blocking
socket (it may have a timeout); ``recv`` is measured where the measured
side receives, the round trips (the stream scenario's measured side only
sends); ``sendmsg``/``recvmsg_into`` are the datagram calls (over a
stream they are ``send`` with extra steps).  The matrix leaves the rest
out with a note.

Limits: no idiom is the peer (the compiled loop always is), so receive-only
loops (``stream_recv``, the echoes) are not written here.
"""

from __future__ import annotations

# impl name -> module, in the order they are shown.
IDIOMS = {
    "socket-sendall": "fastsock._idioms.sendall",
    "socket-recv": "fastsock._idioms.recv",
    "socket-makefile": "fastsock._idioms.makefile",
    "socket-sendmsg": "fastsock._idioms.sendmsg",
}
