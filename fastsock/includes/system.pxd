# C declarations for fastsock._loops, grouped by header: only what is called.

cdef extern from "<errno.h>" nogil:

    int errno
    int EINTR
    int EAGAIN
    int EWOULDBLOCK


cdef extern from "<string.h>" nogil:

    char* strerror(int errnum)


cdef extern from "<sys/socket.h>" nogil:

    ssize_t send(int sockfd, const void* buf, size_t len, int flags)
    ssize_t recv(int sockfd, void* buf, size_t len, int flags)


cdef extern from "<poll.h>" nogil:

    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    short POLLIN
    short POLLOUT

    int poll(pollfd* fds, nfds_t nfds, int timeout)


cdef extern from "<time.h>" nogil:

    ctypedef int clockid_t
    ctypedef long time_t

    struct timespec:
        time_t tv_sec
        long tv_nsec

    clockid_t CLOCK_MONOTONIC

    int clock_gettime(clockid_t clk_id, timespec* tp)
