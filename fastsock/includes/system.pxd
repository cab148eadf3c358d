# C declarations for fastsock._loops, grouped by header: only what is called.

cdef extern from "<errno.h>" nogil:

    int errno
    int EINTR
    int EAGAIN
    int EWOULDBLOCK


cdef extern from "<string.h>" nogil:

    char* strerror(int errnum)


cdef extern from "<time.h>" nogil:

    ctypedef int clockid_t
    ctypedef long time_t

    struct timespec:
        time_t tv_sec
        long tv_nsec

    clockid_t CLOCK_MONOTONIC

    int clock_gettime(clockid_t clk_id, timespec* tp)


cdef extern from "<sys/uio.h>" nogil:

    struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:

    ssize_t send(int sockfd, const void* buf, size_t len, int flags)
    ssize_t recv(int sockfd, void* buf, size_t len, int flags)

    # Only the fields the loops set; the C compiler knows the real layout.
    struct msghdr:
        void* msg_name
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags

    # sendmmsg/recvmmsg: Linux (glibc >= 2.14, musl), declared with
    # _GNU_SOURCE, which Python.h defines; elsewhere the shim below.
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    int MSG_WAITFORONE

    int sendmmsg(int sockfd, mmsghdr* msgvec, unsigned int vlen, int flags)
    int recvmmsg(int sockfd, mmsghdr* msgvec, unsigned int vlen, int flags,
                 timespec* timeout)


cdef extern from *:
    """
    /* fastsock: sendmmsg/recvmmsg exist on Linux only.  Elsewhere the
       extension still builds: stubs that fail with ENOSYS, never called
       because FASTSOCK_HAVE_MMSG (fastsock.HAVE_MMSG) is 0 there and the
       loops refuse batch > 1 before any I/O. */
    #if defined(__linux__)
    #define FASTSOCK_HAVE_MMSG 1
    #else
    #define FASTSOCK_HAVE_MMSG 0
    #include <errno.h>
    #include <time.h>
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    #ifndef MSG_WAITFORONE
    #define MSG_WAITFORONE 0
    #endif
    static int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
    { (void)fd; (void)v; (void)n; (void)flags; errno = ENOSYS; return -1; }
    static int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags,
                        struct timespec *t)
    { (void)fd; (void)v; (void)n; (void)flags; (void)t; errno = ENOSYS; return -1; }
    #endif
    """
    int FASTSOCK_HAVE_MMSG


cdef extern from "<poll.h>" nogil:

    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    short POLLIN
    short POLLOUT

    int poll(pollfd* fds, nfds_t nfds, int timeout)


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
