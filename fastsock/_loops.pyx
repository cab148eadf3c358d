"""The compiled loops: the same send/recv loops as ``fastsock._pyloops``, in C.

Design note
-----------
The comparison with the pure-Python twin is only honest if the two do the
same work per message, so this module keeps to the contract documented in
``fastsock._common`` and calls that module's helpers for everything outside
the per-message loop (argument checks, socket set-up, pattern, errors).

Per message it makes the syscalls CPython makes for the twin:
``send(fd, buf, len, 0)``, continued on partial sends, and
``recv(fd, buf, len, 0)`` (what ``recv_into`` does).  Every one goes through
``_io``, which owns the waiting of the four modes:

* ``blocking``: the kernel waits, bounded by SO_RCVTIMEO/SO_SNDTIMEO, so
  EAGAIN there means the bound passed;
* ``timeout``: CPython's ``sock_call_ex`` for a socket with ``settimeout``:
  one deadline per call, ``poll`` before every try, poll again on EAGAIN;
* ``nonblocking``: try first, on EAGAIN ``poll`` for the timeout, retry;
* ``spin``: retry at once, with the GIL released for up to ``SPIN_CHECK``
  tries, then signals and the clock are checked with it held.

``_io`` returns a byte count or ``EXPIRED`` and leaves the meaning of an
expired wait to its caller: an error for streams, the end of the loop for
``dgram_recv``/``dgram_echo``, a lost round for ``dgram_pingpong``.

The GIL is released around each syscall only, and errno is read before it
is taken back.  Signals run on EINTR (PEP 475) and after every message,
which is what the twin's eval loop does between bytecodes: Ctrl-C stops a
loop that never blocks, too.

``connect_accept`` makes, per connection, the calls CPython's socket module
makes for the twin's ``socket()``, ``connect``, ``accept()`` and
``close()`` in each mode (listed in ``fastsock._common``), including those
that only CPython needs: the ``getsockname`` with which ``socket(fileno=)``
checks an accepted fd, and in ``timeout`` mode the ``ioctl`` that makes the
accepted socket blocking again.  The GIL is released around the calls that
can wait or take the kernel's time (``socket``, ``connect``, ``accept4``,
``poll``, ``close``), not around ``setsockopt``/``ioctl``/``getsockname``.
The two fds of a connection live in one array that every exit path
closes, so an error or a KeyboardInterrupt leaks nothing.

Batching (``dgram_send``/``dgram_recv`` with ``batch > 1``, Linux):
``sendmmsg``/``recvmmsg`` go through the same ``_io`` as ``send``/``recv``
(ops ``MSEND``/``MRECV``: the count is datagrams, not bytes), so each call
waits the mode's way and signals are handled as for one datagram:
``PyErr_CheckSignals`` after every call, EINTR retried.  ``recvmmsg`` gets
``MSG_WAITFORONE`` (wait for the first datagram, take what else is queued)
and no timeout of its own: that argument is only checked between
datagrams, so it cannot bound a wait.  ``batch=1`` keeps the one-datagram
path and its ``send``/``recv`` syscalls untouched.

Limits: in ``blocking`` mode the only bound is SO_RCVTIMEO per call, so a
``dgram_pingpong`` round that drops a stale reply can wait up to one more
timeout; the other modes bound the round itself.
"""

from libc.stdint cimport int64_t
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Calloc, PyMem_Free

from fastsock.includes.system cimport (
    CLOCK_MONOTONIC, EAGAIN, EINTR, EWOULDBLOCK, FASTSOCK_HAVE_MMSG,
    MSG_WAITFORONE, POLLIN, POLLOUT, clock_gettime, errno, iovec, mmsghdr,
    poll, pollfd, recv, recvmmsg, send, sendmmsg, strerror, timespec,
)
from fastsock.includes.system cimport (
    ECONNRESET, EINPROGRESS, FIONBIO, POLLERR, SO_ERROR, SO_SNDTIMEO, SOCK_CLOEXEC,
    SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET, accept4, close, connect, getsockname,
    getsockopt, ioctl, setsockopt, sockaddr, sockaddr_storage, socket, socklen_t,
)

from fastsock._common import (
    DEFAULT_TIMEOUT,
    MODES,
    PATTERN_PERIOD,
    SPIN_CHECK,
    _timeval,
    check_batch,
    check_connect_mode,
    check_dgram,
    check_listener,
    check_mode,
    check_samples,
    check_stream,
    check_timeout,
    check_total,
    configure,
    not_accepted,
    pattern_buffer,
    pattern_error,
    peer_closed,
    timed_out,
)

IMPLEMENTATION = "cython"
# The contract version this module keeps (fastsock._common.CONTRACT_VERSION).
FASTSOCK_CONTRACT = 1
# sendmmsg/recvmmsg are there (Linux): dgram_send/dgram_recv take batch > 1.
HAVE_MMSG = bool(FASTSOCK_HAVE_MMSG)

# check_mode returns an index into MODES; these are those indices.
cdef enum:
    BLOCKING = 0
    TIMEOUT = 1
    NONBLOCKING = 2
    SPIN = 3

if MODES != ("blocking", "timeout", "nonblocking", "spin"):
    # not ImportError: fastsock would then fall back to the twin, unnoticed
    raise RuntimeError(f"fastsock._loops was built for other modes than {MODES}")

ctypedef enum Op:
    RECV
    SEND
    MRECV  # recvmmsg: buf is an mmsghdr array, n its length, the result datagrams
    MSEND  # sendmmsg: likewise

cdef enum:
    # _io's result when the wait's bound passed (a byte count is >= 0).
    EXPIRED = -1

cdef enum:
    NS_PER_S = 1000000000   # ns in a second
    NS_PER_MS = 1000000     # ns in a millisecond

# From _common, as C ints for the loops (count, bytes).
cdef unsigned int _spin_check = SPIN_CHECK
cdef int _period = PATTERN_PERIOD


# ------------------------------------------------------------ helpers


cdef object _os_error(int err):
    # OSError(errno, strerror) returns the subclass (ConnectionResetError...)
    return OSError(err, strerror(err).decode("utf-8", "replace"))


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS_PER_S + ts.tv_nsec


cdef inline int _poll_ms(int64_t ns) noexcept nogil:
    # Rounded up, as CPython does, so that a sub-ms rest still waits.
    return <int>((ns + NS_PER_MS - 1) // NS_PER_MS)


cdef inline bint _again(int err) noexcept nogil:
    return err == EAGAIN or err == EWOULDBLOCK


cdef inline ssize_t _sys(int fd, Op op, char* buf, size_t n) noexcept nogil:
    if op == SEND:
        return send(fd, buf, n, 0)
    if op == RECV:
        return recv(fd, buf, n, 0)
    if op == MSEND:
        return sendmmsg(fd, <mmsghdr*>buf, <unsigned int>n, 0)
    # the first datagram waits the mode's way, the rest are what is queued
    return recvmmsg(fd, <mmsghdr*>buf, <unsigned int>n, MSG_WAITFORONE, NULL)


cdef ssize_t _call(int fd, Op op, char* buf, size_t n, int* err) except -2:
    """One try: the count, or -1 with errno in err; EINTR is retried (PEP 475)."""
    cdef ssize_t r
    while True:
        with nogil:
            r = _sys(fd, op, buf, n)
            if r < 0:
                err[0] = errno
        if r >= 0 or err[0] != EINTR:
            return r
        PyErr_CheckSignals()


cdef int _wait(int fd, short events, int64_t deadline, int64_t rest) except -1:
    """poll() until fd is ready (1) or the deadline passes (0)."""
    cdef pollfd p
    cdef int r
    cdef int err = 0
    p.fd = fd
    p.events = events
    p.revents = 0
    while True:
        with nogil:
            r = poll(&p, 1, _poll_ms(rest))
            if r < 0:
                err = errno
        if r >= 0:
            return r
        if err != EINTR:
            raise _os_error(err)
        # as CPython's poll: run the handlers, then wait for what is left
        PyErr_CheckSignals()
        rest = deadline - _now_ns()
        if rest < 0:
            return 0


cdef Py_ssize_t _io(int fd, Op op, char* buf, size_t n, int mode,
                    int64_t timeout_ns) except -2:
    """One send or recv done the mode's way: the byte count (datagrams for
    MSEND/MRECV), or EXPIRED."""
    cdef ssize_t r = 0
    cdef int err = 0
    cdef short events = POLLOUT if op == SEND or op == MSEND else POLLIN
    cdef int64_t deadline = 0
    cdef int64_t rest
    cdef unsigned long long tries = 0  # never wraps: no deadline reset

    if mode == BLOCKING:
        r = _call(fd, op, buf, n, &err)
        if r >= 0:
            return r
        if _again(err):  # SO_RCVTIMEO / SO_SNDTIMEO passed
            return EXPIRED
        raise _os_error(err)

    if mode == TIMEOUT:
        deadline = _now_ns() + timeout_ns
        rest = timeout_ns
        while True:
            if not _wait(fd, events, deadline, rest):
                return EXPIRED
            r = _call(fd, op, buf, n, &err)
            if r >= 0:
                return r
            if not _again(err):
                raise _os_error(err)
            # Ready was a false positive (a datagram dropped on its
            # checksum, say): poll again within the same deadline.
            rest = deadline - _now_ns()
            if rest < 0:
                return EXPIRED

    if mode == NONBLOCKING:
        while True:
            r = _call(fd, op, buf, n, &err)
            if r >= 0:
                return r
            if not _again(err):
                raise _os_error(err)
            if not _wait(fd, events, _now_ns() + timeout_ns, timeout_ns):
                return EXPIRED

    # SPIN: the GIL is taken back only every _spin_check failed tries, so
    # other threads run and a spinning loop costs no GIL traffic.
    while True:
        with nogil:
            while True:
                r = _sys(fd, op, buf, n)
                if r >= 0:
                    break
                err = errno
                if not _again(err):
                    break
                if tries == 0:
                    deadline = _now_ns() + timeout_ns
                tries += 1
                if tries % _spin_check == 0:
                    break
        if r >= 0:
            return r
        if err == EINTR:
            PyErr_CheckSignals()
            continue
        if not _again(err):
            raise _os_error(err)
        PyErr_CheckSignals()
        if _now_ns() >= deadline:
            return EXPIRED


cdef int _send_all(int fd, char* p, Py_ssize_t n, int mode,
                   int64_t timeout_ns) except -1:
    """Send n bytes, continuing partial sends (what sendall does)."""
    cdef Py_ssize_t r
    while n > 0:
        r = _io(fd, SEND, p, n, mode, timeout_ns)
        if r == EXPIRED:
            raise timed_out()
        p += r
        n -= r
        if n > 0:
            # A signal that cut a blocking send short returns the partial
            # count, not EINTR: run its handler now, as the twin's eval
            # loop does between two sends (Ctrl-C must not wait for the
            # send timeout).
            PyErr_CheckSignals()
    return 0


cdef inline Py_ssize_t _mismatch(const unsigned char* p, Py_ssize_t n,
                                 int first) noexcept nogil:
    """The first j where p[j] != (first + j) % period, or -1."""
    cdef Py_ssize_t j
    cdef int want = first % _period
    for j in range(n):
        if p[j] != want:
            return j
        want += 1
        if want == _period:
            want = 0
    return -1


cdef inline Py_ssize_t _diff(const unsigned char* a, const unsigned char* b,
                             Py_ssize_t n) noexcept nogil:
    """The first j where a[j] != b[j], or -1."""
    cdef Py_ssize_t j
    for j in range(n):
        if a[j] != b[j]:
            return j
    return -1


cdef int _check_datagram(const unsigned char* p, Py_ssize_t n) except -1:
    # A datagram's pattern starts at its own first byte: (first + j) % period.
    cdef int first = p[0]
    cdef Py_ssize_t j
    if first >= _period:
        raise pattern_error(0, first, 0)
    j = _mismatch(p, n, first)
    if j >= 0:
        raise pattern_error(j, p[j], (first + j) % _period)
    return 0


cdef inline int64_t _ns(double seconds) noexcept:
    return <int64_t>(seconds * NS_PER_S)


cdef class _MsgVec:
    """``n`` mmsghdr for sendmmsg/recvmmsg, each with one iovec of ``length``
    bytes whose base the caller sets; freed with the object."""

    cdef mmsghdr* msgs
    cdef iovec* iov

    def __cinit__(self, unsigned int n, Py_ssize_t length):
        cdef unsigned int j
        self.msgs = <mmsghdr*>PyMem_Calloc(n, sizeof(mmsghdr))
        self.iov = <iovec*>PyMem_Calloc(n, sizeof(iovec))
        if self.msgs == NULL or self.iov == NULL:
            raise MemoryError()
        for j in range(n):  # no address, no control data: a connected socket
            self.iov[j].iov_len = length
            self.msgs[j].msg_hdr.msg_iov = &self.iov[j]
            self.msgs[j].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        PyMem_Free(self.msgs)
        PyMem_Free(self.iov)


cdef int _send_batches(int fd, long long n_msgs, char* base, Py_ssize_t sz,
                       bint pat, unsigned int nb, int mode,
                       int64_t timeout_ns) except -1:
    """dgram_send's batched loop: sendmmsg calls of up to nb datagrams."""
    cdef _MsgVec vec = _MsgVec(nb, sz)
    cdef long long done = 0
    cdef unsigned int k, j, sent
    cdef Py_ssize_t r
    cdef int first = 0  # datagram i starts the pattern at i % period
    for j in range(nb):
        vec.iov[j].iov_base = base
    while done < n_msgs:
        k = nb if n_msgs - done >= nb else <unsigned int>(n_msgs - done)
        if pat:
            for j in range(k):
                vec.iov[j].iov_base = base + first
                first += 1
                if first == _period:
                    first = 0
        sent = 0
        while sent < k:  # a call that sent part of its datagrams: the rest
            r = _io(fd, MSEND, <char*>&vec.msgs[sent], k - sent, mode, timeout_ns)
            if r == EXPIRED:
                raise timed_out()
            sent += <unsigned int>r
            PyErr_CheckSignals()
        done += k
    return 0


cdef long long _recv_batches(int fd, long long n_msgs, unsigned char* p,
                             Py_ssize_t sz, bint ver, unsigned int nb, int mode,
                             int64_t timeout_ns) except -1:
    """dgram_recv's batched loop: recvmmsg calls of up to nb datagrams, each
    into its own sz-byte slot of p; returns datagrams received."""
    cdef _MsgVec vec = _MsgVec(nb, sz)
    cdef long long got = 0
    cdef unsigned int k, j, n
    cdef Py_ssize_t r
    for j in range(nb):
        vec.iov[j].iov_base = p + <Py_ssize_t>j * sz
    while got < n_msgs:
        # never take more than count: what follows belongs to someone else
        k = nb if n_msgs - got >= nb else <unsigned int>(n_msgs - got)
        r = _io(fd, MRECV, <char*>vec.msgs, k, mode, timeout_ns)
        if r == EXPIRED:  # idle for timeout (UDP loses)
            break
        for j in range(<unsigned int>r):
            n = vec.msgs[j].msg_len
            if n == 0:  # "end": what came before it counts
                return got
            if ver:
                _check_datagram(p + <Py_ssize_t>j * sz, n)
            got += 1
        PyErr_CheckSignals()
    return got


# ------------------------------------------------------------ stream


def stream_send(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, pattern=False):
    """Send count messages of size bytes, each completely; returns bytes sent."""
    cdef int fd = check_stream(sock, size, count)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint pat = pattern
    cdef long long n_msgs = count
    cdef Py_ssize_t sz = size
    buf = pattern_buffer(sz) if pat else bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef char* base = <char*>&view[0]
    cdef Py_ssize_t off = 0  # stream offset mod the pattern's period
    cdef long long i
    for i in range(n_msgs):
        _send_all(fd, base + off, sz, m, tns)
        if pat:
            off = (off + sz) % _period
        PyErr_CheckSignals()
    return count * size


def stream_recv(sock, total, size, mode, timeout=DEFAULT_TIMEOUT, verify=False):
    """recv_into a size-byte buffer until total bytes (None: EOF) or EOF."""
    cdef int fd = check_stream(sock, size)
    cdef long long limit = check_total(total)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint ver = verify
    cdef Py_ssize_t sz = size
    buf = bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef unsigned char* p = &view[0]
    cdef long long got = 0
    cdef Py_ssize_t want, r, j
    while limit < 0 or got < limit:
        # never read past total: bytes after it belong to someone else
        want = sz if limit < 0 or limit - got >= sz else <Py_ssize_t>(limit - got)
        r = _io(fd, RECV, <char*>p, want, m, tns)
        if r == EXPIRED:
            raise timed_out()
        if r == 0:
            break
        if ver:
            j = _mismatch(p, r, <int>(got % _period))
            if j >= 0:
                raise pattern_error(got + j, p[j], (got + j) % _period)
        got += r
        PyErr_CheckSignals()
    return got


def stream_echo(sock, size, mode, timeout=DEFAULT_TIMEOUT):
    """Receive up to size bytes and send them back, until EOF; returns bytes echoed."""
    cdef int fd = check_stream(sock, size)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef Py_ssize_t sz = size
    buf = bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef char* p = <char*>&view[0]
    cdef long long echoed = 0
    cdef Py_ssize_t r
    while True:
        r = _io(fd, RECV, p, sz, m, tns)
        if r == EXPIRED:
            raise timed_out()
        if r == 0:
            return echoed
        _send_all(fd, p, r, m, tns)
        echoed += r
        PyErr_CheckSignals()


def stream_pingpong(sock, count, size, mode, timeout=DEFAULT_TIMEOUT,
                    samples=None, pattern=False):
    """count round trips of size bytes; RTTs in ns to samples[i]; returns count."""
    cdef int fd = check_stream(sock, size, count)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    out = check_samples(samples, count)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint pat = pattern
    cdef bint sampling = out is not None
    cdef long long[::1] rtt
    if sampling:
        rtt = out
    cdef long long n_rounds = count
    cdef Py_ssize_t sz = size
    sbuf = pattern_buffer(sz) if pat else bytearray(sz)
    rbuf = bytearray(sz)
    cdef unsigned char[::1] sview = sbuf
    cdef unsigned char[::1] rview = rbuf
    cdef unsigned char* sbase = &sview[0]
    cdef unsigned char* rp = &rview[0]
    cdef unsigned char* sp
    cdef Py_ssize_t off = 0  # stream offset mod the pattern's period
    cdef Py_ssize_t got, r, j
    cdef int64_t t0 = 0
    cdef long long i
    for i in range(n_rounds):
        sp = sbase + off
        if sampling:
            t0 = _now_ns()
        _send_all(fd, <char*>sp, sz, m, tns)
        got = 0
        while got < sz:
            r = _io(fd, RECV, <char*>rp + got, sz - got, m, tns)
            if r == EXPIRED:
                raise timed_out()
            if r == 0:
                raise peer_closed()
            got += r
        if sampling:
            rtt[i] = _now_ns() - t0
        if pat:
            j = _diff(rp, sp, sz)
            if j >= 0:
                raise pattern_error(i * sz + j, rp[j], sp[j])
            off = (off + sz) % _period
        PyErr_CheckSignals()
    return count


# ------------------------------------------------------------ datagram


def dgram_send(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, pattern=False,
               batch=1):
    """Send count datagrams of size bytes, batch per call; returns datagrams sent."""
    cdef int fd = check_dgram(sock, size, count)
    cdef unsigned int nb = check_batch(batch, HAVE_MMSG, IMPLEMENTATION)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint pat = pattern
    cdef long long n_msgs = count
    cdef Py_ssize_t sz = size
    buf = pattern_buffer(sz) if pat else bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef char* base = <char*>&view[0]
    cdef int first = 0  # datagram i starts the pattern at i % period
    cdef long long i
    if nb > 1:  # a vector no longer than count
        _send_batches(fd, n_msgs, base, sz, pat,
                      nb if nb < n_msgs else <unsigned int>n_msgs, m, tns)
        return count
    for i in range(n_msgs):
        if _io(fd, SEND, base + first, sz, m, tns) == EXPIRED:
            raise timed_out()
        if pat:
            first += 1
            if first == _period:
                first = 0
        PyErr_CheckSignals()
    return count


def dgram_recv(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, verify=False,
               batch=1):
    """Receive up to count datagrams, batch per call; stops on an empty one or timeout idle."""
    cdef int fd = check_dgram(sock, size, count)
    cdef unsigned int nb = check_batch(batch, HAVE_MMSG, IMPLEMENTATION)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint ver = verify
    cdef long long n_msgs = count
    cdef Py_ssize_t sz = size
    # batched: one size-byte slot per datagram of a call, no more than count
    cdef unsigned int vlen = nb if nb < n_msgs else <unsigned int>n_msgs
    buf = bytearray(sz * vlen) if nb > 1 else bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef unsigned char* p = &view[0]
    cdef long long got = 0
    cdef Py_ssize_t r
    if nb > 1:
        return _recv_batches(fd, n_msgs, p, sz, ver, vlen, m, tns)
    while got < n_msgs:
        r = _io(fd, RECV, <char*>p, sz, m, tns)
        if r == EXPIRED or r == 0:  # idle for timeout (UDP loses), or "end"
            break
        if ver:
            _check_datagram(p, r)
        got += 1
        PyErr_CheckSignals()
    return got


def dgram_echo(sock, size, mode, timeout=DEFAULT_TIMEOUT):
    """Echo datagrams until an empty one (echoed too) or timeout idle."""
    cdef int fd = check_dgram(sock, size)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef Py_ssize_t sz = size
    buf = bytearray(sz)
    cdef unsigned char[::1] view = buf
    cdef char* p = <char*>&view[0]
    cdef long long echoed = 0
    cdef Py_ssize_t r
    while True:
        r = _io(fd, RECV, p, sz, m, tns)
        if r == EXPIRED:
            return echoed
        if _io(fd, SEND, p, r, m, tns) == EXPIRED:
            raise timed_out()
        if r == 0:
            return echoed
        echoed += 1
        PyErr_CheckSignals()


def dgram_pingpong(sock, count, size, mode, timeout=DEFAULT_TIMEOUT,
                   samples=None, pattern=False):
    """count rounds, byte 0 = round mod 256; returns (completed, lost)."""
    cdef int fd = check_dgram(sock, size, count)
    cdef int m = check_mode(mode)
    cdef double t = check_timeout(timeout)
    out = check_samples(samples, count)
    configure(sock, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint pat = pattern
    cdef bint sampling = out is not None
    cdef long long[::1] rtt
    if sampling:
        rtt = out
    cdef long long n_rounds = count
    cdef Py_ssize_t sz = size
    sbuf = pattern_buffer(sz)[:sz] if pat else bytearray(sz)
    rbuf = bytearray(sz)
    cdef unsigned char[::1] sview = sbuf
    cdef unsigned char[::1] rview = rbuf
    cdef unsigned char* sp = &sview[0]
    cdef unsigned char* rp = &rview[0]
    cdef long long completed = 0
    cdef long long lost = 0
    cdef unsigned char seq
    cdef Py_ssize_t r, j
    cdef int64_t t0, rest
    cdef long long i
    for i in range(n_rounds):
        seq = <unsigned char>(i & 0xFF)
        sp[0] = seq
        # the round's start bounds its wait, sampling or not
        t0 = _now_ns()
        if _io(fd, SEND, <char*>sp, sz, m, tns) == EXPIRED:
            raise timed_out()
        rest = tns
        while True:
            r = _io(fd, RECV, <char*>rp, sz, m, rest)
            if r == EXPIRED:
                lost += 1
                break
            if r > 0 and rp[0] == seq:
                if sampling:
                    rtt[completed] = _now_ns() - t0
                completed += 1
                if pat and (r != sz or _diff(rp, sp, sz) >= 0):
                    j = _diff(rp, sp, r)
                    if j >= 0:
                        raise pattern_error(i * sz + j, rp[j], sp[j])
                    raise pattern_error(i * sz + r, -1, sp[r])  # short reply
                break
            # a stale reply (or an empty datagram): drop it, wait the rest
            rest = t0 + tns - _now_ns()
            if rest <= 0:
                lost += 1
                break
        PyErr_CheckSignals()
    return completed, lost


# ------------------------------------------------------------ connections


cdef int _close_pair(int* fds, bint check) except -1:
    """Close the accepted socket (fds[1]), then the client (fds[0]): the
    order the design note of fastsock._common explains.  With check, an
    error other than ECONNRESET (which CPython ignores too) is raised."""
    cdef int e_acc = 0
    cdef int e_cli = 0
    with nogil:
        if fds[1] >= 0 and close(fds[1]) < 0:
            e_acc = errno
        if fds[0] >= 0 and close(fds[0]) < 0:
            e_cli = errno
    fds[0] = -1
    fds[1] = -1
    if check:
        # EINTR: Linux has closed the fd anyway
        if e_acc != 0 and e_acc != ECONNRESET and e_acc != EINTR:
            raise _os_error(e_acc)
        if e_cli != 0 and e_cli != ECONNRESET and e_cli != EINTR:
            raise _os_error(e_cli)
    return 0


cdef int _connect_one(int lfd, int family, int kind, int m, const sockaddr* addr,
                      socklen_t alen, const char* tv, socklen_t tvlen, int64_t tns,
                      bint verify, long long i, int* fds) except -1:
    """One connection: fds[0] = the client, fds[1] = the accepted socket;
    the caller closes both, whatever happens here."""
    cdef int fd, r
    cdef int err = 0
    cdef int soerr = 0
    cdef int on = 1
    cdef int off = 0
    cdef socklen_t optlen
    cdef sockaddr_storage name
    cdef socklen_t namelen
    cdef int64_t deadline, rest
    cdef unsigned char want, got
    cdef Py_ssize_t n

    with nogil:
        fd = socket(family, kind, 0)
        if fd < 0:
            err = errno
    if fd < 0:
        raise _os_error(err)
    fds[0] = fd
    if m == BLOCKING:
        if setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, tvlen) < 0:  # bounds connect
            raise _os_error(errno)
    elif m == TIMEOUT:
        if ioctl(fd, FIONBIO, &on) < 0:  # what settimeout() does
            raise _os_error(errno)

    with nogil:
        r = connect(fd, addr, alen)
        if r < 0:
            err = errno
    if r < 0:
        if m == BLOCKING and (err == EINPROGRESS or _again(err)):
            raise timed_out()  # SO_SNDTIMEO passed (TCP: EINPROGRESS, Unix: EAGAIN)
        if err == EINTR:
            # CPython: the connection goes on; wait for it as below
            PyErr_CheckSignals()
        elif err != EINPROGRESS:
            raise _os_error(err)  # Unix, full backlog, not blocking: EAGAIN
        # the twin's own poll asks POLLOUT; CPython's (timeout mode, or
        # after EINTR) adds POLLERR
        if not _wait(fd, POLLOUT if m == NONBLOCKING else POLLOUT | POLLERR,
                     _now_ns() + tns, tns):
            raise timed_out()
        optlen = sizeof(soerr)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &optlen) < 0:
            raise _os_error(errno)
        if soerr != 0:
            raise _os_error(soerr)

    deadline = _now_ns() + tns
    while True:
        if m == TIMEOUT:  # CPython polls before every try
            rest = deadline - _now_ns()
            if rest < 0 or not _wait(lfd, POLLIN, deadline, rest):
                raise timed_out()
        namelen = sizeof(name)
        with nogil:
            r = accept4(lfd, <sockaddr*>&name, &namelen, SOCK_CLOEXEC)
            if r < 0:
                err = errno
        if r >= 0:
            break
        if err == EINTR:
            PyErr_CheckSignals()
            continue
        if not _again(err):
            raise _os_error(err)
        if m == BLOCKING:
            raise timed_out()  # SO_RCVTIMEO passed
        if m == NONBLOCKING and not _wait(lfd, POLLIN, _now_ns() + tns, tns):
            raise timed_out()
        # TIMEOUT: ready was a false positive; poll again within the deadline
    fds[1] = r
    # socket.accept() wraps the fd with socket(fileno=fd), which checks it
    namelen = sizeof(name)
    if getsockname(r, <sockaddr*>&name, &namelen) < 0:
        raise _os_error(errno)
    if m == TIMEOUT:
        # socket.accept(): a listener with a timeout gives a blocking socket
        if ioctl(r, FIONBIO, &off) < 0:
            raise _os_error(errno)

    if verify:
        want = <unsigned char>(i & 0xFF)
        if _call(fds[0], SEND, <char*>&want, 1, &err) < 0:
            raise _os_error(err)
        if not _wait(fds[1], POLLIN, _now_ns() + tns, tns):
            raise timed_out()
        n = _call(fds[1], RECV, <char*>&got, 1, &err)
        if n < 0:
            raise _os_error(err)
        if n == 0:
            raise not_accepted(i, -1, want)
        if got != want:
            raise not_accepted(i, got, want)
    return 0


def connect_accept(listener, count, mode, timeout=DEFAULT_TIMEOUT, verify=False):
    """count times: connect to the listener, accept, close both; returns count."""
    cdef int lfd = check_listener(listener, count)
    cdef int m = check_connect_mode(mode)
    cdef double t = check_timeout(timeout)
    configure(listener, mode, t)
    cdef int64_t tns = _ns(t)
    cdef bint ver = verify
    cdef int family = listener.family
    cdef int kind = SOCK_STREAM | SOCK_CLOEXEC
    if m == NONBLOCKING:
        kind |= SOCK_NONBLOCK
    tv = _timeval(t)  # the twin's SO_SNDTIMEO bytes
    cdef const char* tvp = tv
    cdef socklen_t tvlen = len(tv)
    cdef sockaddr_storage addr
    cdef socklen_t alen = sizeof(addr)
    if getsockname(lfd, <sockaddr*>&addr, &alen) < 0:
        raise _os_error(errno)
    cdef long long n = count
    cdef long long i
    cdef int fds[2]
    fds[0] = -1
    fds[1] = -1
    for i in range(n):
        try:
            _connect_one(lfd, family, kind, m, <sockaddr*>&addr, alen, tvp, tvlen, tns,
                         ver, i, fds)
        except BaseException:
            _close_pair(fds, False)
            raise
        _close_pair(fds, True)
        PyErr_CheckSignals()
    return count
