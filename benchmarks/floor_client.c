/* The floor: what one HTTP/1.1 keep-alive request costs the client on this machine when the
 * client does nothing but the system calls.
 *
 * load_bench.py --tools floor compiles and runs it beside wrk and redline. It keeps N
 * keep-alive connections busy (closed model) for D seconds: epoll_wait, one read of the
 * answer, one write of the next request, nothing else (no latency clock, no statistics, no
 * Lua, a Content-Length parse just strict enough to count answers). Whatever CPU it spends per
 * request is the kernel's price for a loopback request on this machine, a floor no load
 * generator goes below; it tells what "N us per request" can mean on a given VM.
 *
 * Written here because no packaged tool measures only this: wrk, the leanest, still keeps a
 * latency histogram and runs its parser per answer.
 *
 * Usage: floor_client HOST PORT CONNECTIONS SECONDS
 * Prints: BENCH <answers> <duration_us> <errors>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 8192

typedef struct {
    int fd;
    size_t len;
    char buf[BUF];
} conn_t;

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Bytes of the first complete answer in c->buf, 0 if none is complete yet, -1 if malformed. */
static long answer_length(const conn_t *c) {
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) return c->len == BUF ? -1 : 0;
    long head = end + 4 - c->buf, body = -1;
    for (const char *p = c->buf; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (eol - p > 15 && strncasecmp(p, "Content-Length:", 15) == 0) body = atol(p + 15);
        p = eol + 2;
    }
    if (body < 0 || head + body > BUF) return -1;
    return (size_t)(head + body) <= c->len ? head + body : 0;
}

static int send_request(int fd) {
    return write(fd, REQUEST, sizeof REQUEST - 1) == (ssize_t)(sizeof REQUEST - 1) ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SECONDS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    int n = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || n < 1 || seconds <= 0) {
        fprintf(stderr, "floor_client: bad HOST (IPv4), CONNECTIONS or SECONDS\n");
        return 2;
    }
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)n, sizeof *conns);
    if (ep < 0 || conns == NULL) {
        perror("floor_client");
        return 1;
    }
    long answers = 0, errors = 0;
    double start = now(), deadline = start + seconds;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("floor_client: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 || send_request(fd) != 0) {
            perror("floor_client: first request");
            return 1;
        }
    }
    struct epoll_event events[256];
    while (now() < deadline) {
        int ready = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < ready; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->len, BUF - c->len);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {  /* closed or failed: stop using this connection */
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->len += (size_t)got;
            long size = answer_length(c);
            if (size == 0) continue;
            if (size < 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            /* Closed model: one request in flight per connection, so nothing follows it. */
            c->len = 0;
            answers++;
            if (send_request(c->fd) != 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    printf("BENCH %ld %.0f %ld\n", answers, (now() - start) * 1e6, errors);
    return 0;
}
