/* TCP ping-pong of 64 B over loopback, in C: the reference for
 * docs/experiments/footprint.py.  Built as a program and as a shared library
 * (the same code then runs inside a Python process, through ctypes).
 *
 * Wait styles: 'b' blocking recv; 't' recv first, poll() on EAGAIN (the
 * suite's nonblocking mode); 'e' epoll_wait() first, then recv (sockperf's
 * --nonblocked -F e).  Every wait is bounded (5 s); a run by its seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIZE 64
#define WAIT_MS 5000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One receive of up to n bytes, waited for the mode's way. */
static ssize_t rx(int fd, int ep, char *b, size_t n, char mode) {
    ssize_t r;
    if (mode == 'b')
        return recv(fd, b, n, 0);
    for (;;) {
        if (mode == 'e') {
            struct epoll_event ev;
            if (epoll_wait(ep, &ev, 1, WAIT_MS) <= 0)
                return -1;
        }
        r = recv(fd, b, n, 0);
        if (r >= 0 || errno != EAGAIN)
            return r;
        if (mode == 't') {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, WAIT_MS) <= 0)
                return -1;
        }
    }
}

/* Set fd up for the mode; the epoll fd for 'e' (else -1). */
static int prepare(int fd, char mode) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, mode == 'b' ? flags & ~O_NONBLOCK : flags | O_NONBLOCK);
    if (mode != 'e')
        return -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return ep;
}

/* n round trips on a connected fd (an echo at the other end): 0, or -1. */
int pp_loop(int fd, long n, char mode) {
    char b[SIZE];
    int ep = prepare(fd, mode), rc = 0;
    memset(b, 1, SIZE);
    for (long i = 0; i < n && rc == 0; i++) {
        if (send(fd, b, SIZE, 0) != SIZE) {
            rc = -1;
            break;
        }
        for (size_t got = 0; got < SIZE;) {
            ssize_t r = rx(fd, ep, b + got, SIZE - got, mode);
            if (r <= 0) {
                rc = -1;
                break;
            }
            got += (size_t)r;
        }
    }
    if (ep >= 0)
        close(ep);
    return rc;
}

/* A whole run: connection, a forked echo, `mb` MiB of memory touched first
 * (before the fork: both processes hold it; in 4 KiB pages if `small`, else
 * as the kernel's transparent huge pages allow), round trips for `secs`.
 * The mean round trip in microseconds, or -1. */
/* A connected loopback TCP pair: 0, or -1 with nothing left open. */
static int connected(int *s, int *c) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    *s = *c = -1;
    if (ls >= 0 && !bind(ls, (void *)&a, sizeof a) && !listen(ls, 1) &&
        !getsockname(ls, (void *)&a, &len)) {
        *s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (*s >= 0 && !connect(*s, (void *)&a, sizeof a))
            *c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    }
    if (ls >= 0)
        close(ls);
    if (*c < 0 && *s >= 0)
        close(*s);
    return *c < 0 ? -1 : 0;
}

double pp_run(double secs, char mode, long mb, int small) {
    int s, c;
    if (connected(&s, &c))
        return -1;
    size_t bytes = (size_t)mb << 20;
    char *heap = NULL;
    if (mb > 0) {
        heap = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (heap == MAP_FAILED) {
            close(s);
            close(c);
            return -1;
        }
        if (small)
            madvise(heap, bytes, MADV_NOHUGEPAGE);
        memset(heap, 1, bytes);
    }
    pid_t pid = fork();
    if (pid == 0) { /* the echo, until EOF or a 5 s silence */
        char b[SIZE];
        int ep = prepare(c, mode);
        close(s);
        for (;;) {
            ssize_t r = rx(c, ep, b, SIZE, mode);
            if (r <= 0 || send(c, b, (size_t)r, 0) != r)
                _exit(0);
        }
    }
    close(c);
    if (pid < 0) {
        close(s);
        if (heap)
            munmap(heap, bytes);
        return -1;
    }
    long n = 0;
    int rc = pp_loop(s, 200, mode); /* warm-up */
    double t0 = now(), t1 = t0;
    while (rc == 0 && t1 - t0 < secs) {
        rc = pp_loop(s, 100, mode);
        n += 100;
        t1 = now();
    }
    close(s);
    waitpid(pid, NULL, 0);
    if (heap)
        munmap(heap, bytes);
    return rc == 0 && n > 0 ? (t1 - t0) / n * 1e6 : -1;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || !argv[2][0] || !strchr("bte", argv[2][0])) {
        fprintf(stderr, "usage: pingpong SECONDS b|t|e MEMORY_MIB [small]\n");
        return 2;
    }
    double rt = pp_run(atof(argv[1]), argv[2][0], atol(argv[3]), argc == 5);
    if (rt < 0) {
        perror("pingpong");
        return 1;
    }
    printf("%.2f\n", rt);
    return 0;
}
