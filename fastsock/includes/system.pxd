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


# connect_accept: creating, connecting, accepting and closing sockets.

cdef extern from "<errno.h>" nogil:

    int EINPROGRESS
    int ECONNRESET


cdef extern from "<poll.h>" nogil:

    short POLLERR


cdef extern from "<sys/time.h>" nogil:

    ctypedef long suseconds_t

    struct timeval:
        time_t tv_sec
        suseconds_t tv_usec


cdef extern from "<sys/socket.h>" nogil:

    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    int SOL_SOCKET
    int SO_SNDTIMEO
    int SO_ERROR
    int SOCK_STREAM
    int SOCK_CLOEXEC
    int SOCK_NONBLOCK

    int socket(int domain, int type, int protocol)
    int connect(int sockfd, const sockaddr* addr, socklen_t addrlen)
    int accept4(int sockfd, sockaddr* addr, socklen_t* addrlen, int flags)
    int getsockname(int sockfd, sockaddr* addr, socklen_t* addrlen)
    int getsockopt(int sockfd, int level, int optname, void* optval, socklen_t* optlen)
    int setsockopt(int sockfd, int level, int optname, const void* optval, socklen_t optlen)


cdef extern from "<sys/ioctl.h>" nogil:

    unsigned long FIONBIO

    int ioctl(int fd, unsigned long request, ...)


cdef extern from "<unistd.h>" nogil:

    int close(int fd)
