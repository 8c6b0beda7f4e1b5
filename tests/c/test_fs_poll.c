/* Plain-C unit test of src_c/fs_poll.c, for both methods. Built and run by
 * tests/test_c_units.py (with and without NDEBUG; -Wall -Wextra -Werror, ASan, UBSan).
 * Prints one line per failed check and exits non-zero if any failed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "fs_io.h"
#include "fs_poll.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

/* One wait with timeout_ms; returns the collected count. */
static int wait_once(fs_poller *p, fs_poll_wait *w, size_t max, int timeout_ms)
{
    if (fs_poll_wait_prepare(p, w, max) < 0)
        return -1;
    int n = fs_poll_wait_run(w, timeout_ms);
    if (n < 0)
        return n;
    return fs_poll_wait_collect(p, w, n);
}

static uint32_t mask_of(const fs_poll_wait *w, int n, int fd)
{
    for (int i = 0; i < n; i++)
        if (w->events[i].fd == fd)
            return w->events[i].events;
    return 0;
}

static const char *method_name(int method)
{
    return method == FS_POLL_POLL ? "method poll" : method == FS_POLL_EPOLL ? "method epoll" : "method auto";
}

static void test_method(int method)
{
    fs_poller p;
    fs_poll_wait w;
    int sv[2], sv2[2];
    char buf[16];
    check_context = method_name(method);

    CHECK(fs_poll_init(&p, method) == 0);
    fs_poll_wait_init(&w);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2) == 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);

    /* bad input */
    CHECK(fs_poll_add(&p, -1, FS_POLL_READ, 0) == -EINVAL);
    CHECK(fs_poll_add(&p, sv[0], 0x100, 0) == -EINVAL);
    CHECK(fs_poll_add(&p, sv[0], FS_POLL_READ, 8) == -EINVAL);
    int closed = dup(sv[0]);
    close(closed);
    CHECK(fs_poll_add(&p, closed, FS_POLL_READ, 0) == -EBADF);
    CHECK(fs_poll_del(&p, 99999) == -ENOENT);
    CHECK(fs_poll_mod(&p, 99999, FS_POLL_READ, 0) == -ENOENT);
    CHECK(!fs_poll_has(&p, 99999));

    /* empty set, timeout 0 */
    CHECK(wait_once(&p, &w, 0, 0) == 0);

    /* level-triggered READ */
    CHECK(fs_poll_add(&p, sv[0], FS_POLL_READ, 0) == 0);
    CHECK(fs_poll_add(&p, sv[0], FS_POLL_READ, 0) == -EEXIST);
    CHECK(fs_poll_has(&p, sv[0]));
    CHECK(p.count == 1);
    CHECK(wait_once(&p, &w, 0, 0) == 0);
    CHECK(write(sv[1], "abc", 3) == 3);
    int n = wait_once(&p, &w, 0, 1000);
    CHECK(n == 1 && w.events[0].fd == sv[0] && w.events[0].events == FS_POLL_READ);
    CHECK(wait_once(&p, &w, 0, 0) == 1); /* still readable: reported again */
    CHECK(read(sv[0], buf, sizeof buf) == 3);
    CHECK(wait_once(&p, &w, 0, 0) == 0);

    /* oneshot: one report, then nothing until mod re-arms */
    CHECK(fs_poll_mod(&p, sv[0], FS_POLL_READ, FS_POLL_ONESHOT) == 0);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(wait_once(&p, &w, 0, 1000) == 1);
    CHECK(wait_once(&p, &w, 0, 0) == 0);
    CHECK(fs_poll_mod(&p, sv[0], FS_POLL_READ, FS_POLL_ONESHOT) == 0);
    CHECK(wait_once(&p, &w, 0, 0) == 1);
    CHECK(read(sv[0], buf, sizeof buf) == 1);

    /* edge-triggered (epoll): reported once per arrival, even if not drained */
    if (p.method == FS_POLL_EPOLL) {
        CHECK(fs_poll_mod(&p, sv[0], FS_POLL_READ, FS_POLL_EDGE) == 0);
        CHECK(write(sv[1], "y", 1) == 1);
        CHECK(wait_once(&p, &w, 0, 1000) == 1);
        CHECK(wait_once(&p, &w, 0, 0) == 0);
        CHECK(write(sv[1], "z", 1) == 1);
        CHECK(wait_once(&p, &w, 0, 1000) == 1);
        CHECK(read(sv[0], buf, sizeof buf) == 2);
    }

    /* WRITE, several fds, and a capped wait that rotates (poll) so nobody starves */
    CHECK(fs_poll_mod(&p, sv[0], FS_POLL_READ | FS_POLL_WRITE, 0) == 0);
    CHECK(fs_poll_add(&p, sv2[0], FS_POLL_WRITE, 0) == 0);
    CHECK(fs_poll_add(&p, sv2[1], FS_POLL_WRITE, 0) == 0);
    n = wait_once(&p, &w, 0, 0);
    CHECK(n == 3);
    CHECK(mask_of(&w, n, sv[0]) == FS_POLL_WRITE);
    int seen[3] = {0, 0, 0};
    for (int round = 0; round < 3; round++) {
        n = wait_once(&p, &w, 1, 0);
        CHECK(n == 1);
        for (int k = 0; k < 3; k++)
            if (w.events[0].fd == (k == 0 ? sv[0] : k == 1 ? sv2[0] : sv2[1]))
                seen[k] = 1;
    }
    CHECK(seen[0] && seen[1] && seen[2]);

    /* unregister from the middle (poll: the last entry moves into the hole) */
    CHECK(fs_poll_mod(&p, sv2[1], FS_POLL_WRITE, FS_POLL_ONESHOT) == 0);
    CHECK(wait_once(&p, &w, 0, 0) == 3); /* sv2[1] disarms itself */
    CHECK(fs_poll_del(&p, sv[0]) == 0);
    CHECK(fs_poll_del(&p, sv[0]) == -ENOENT);
    CHECK(p.count == 2);
    n = wait_once(&p, &w, 0, 0);
    CHECK(n == 1 && w.events[0].fd == sv2[0]);
    CHECK(fs_poll_mod(&p, sv2[1], FS_POLL_WRITE, 0) == 0); /* re-arm after the move */
    CHECK(wait_once(&p, &w, 0, 0) == 2);
    CHECK(fs_poll_del(&p, sv2[1]) == 0);
    CHECK(fs_poll_del(&p, sv2[0]) == 0);

    /* HANGUP: peer shutdown with HANGUP requested (RDHUP), then full hang-up */
    CHECK(fs_poll_add(&p, sv[0], FS_POLL_READ | FS_POLL_HANGUP, 0) == 0);
    CHECK(shutdown(sv[1], SHUT_WR) == 0);
    n = wait_once(&p, &w, 0, 1000);
    CHECK(n == 1 && (w.events[0].events & FS_POLL_READ));
    CHECK(w.events[0].events & FS_POLL_HANGUP);
    close(sv[1]);
    CHECK(shutdown(sv[0], SHUT_WR) == 0);
    n = wait_once(&p, &w, 0, 1000);
    CHECK(n == 1 && (w.events[0].events & FS_POLL_HANGUP));

    /* a descriptor closed while registered: no crash; del still works */
    close(sv[0]);
    n = wait_once(&p, &w, 0, 0);
    if (p.method == FS_POLL_POLL)
        CHECK(n == 1 && (w.events[0].events & FS_POLL_ERROR)); /* POLLNVAL */
    else
        CHECK(n == 0); /* the kernel dropped it from the epoll set */
    CHECK(fs_poll_del(&p, sv[0]) == 0);
    CHECK(p.count == 0);

    /* closed poller refuses everything */
    CHECK(fs_poll_close(&p) == 0);
    CHECK(fs_poll_close(&p) == 0);
    CHECK(fs_poll_add(&p, sv2[0], FS_POLL_READ, 0) == -EBADF);
    CHECK(fs_poll_wait_prepare(&p, &w, 0) == -EBADF);
    fs_poll_wait_free(&w);
    close(sv2[0]);
    close(sv2[1]);
    check_context = NULL;
}

/* A registration count that no longer matches the slot table (memory corruption, or a
 * change that updated one and not the other): with assertions on, the next call on the
 * poller refuses it. */
static void has_with_a_miscounted_table(void *arg)
{
    int method = *(const int *)arg;
    fs_poller p;
    int sv[2];
    if (fs_poll_init(&p, method) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        _exit(3);
    if (fs_poll_add(&p, sv[0], FS_POLL_READ, 0) != 0)
        _exit(4);
    p.count = 2; /* one descriptor is registered */
    (void)fs_poll_has(&p, sv[0]);
    p.count = 1;
    fs_poll_close(&p);
}

/* poll method: a pollfd that names another descriptor than the slot pointing at it. */
static void prepare_with_a_crossed_pollfd(void *unused)
{
    (void)unused;
    fs_poller p;
    fs_poll_wait w;
    int sv[2];
    if (fs_poll_init(&p, FS_POLL_POLL) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        _exit(3);
    if (fs_poll_add(&p, sv[0], FS_POLL_READ, 0) != 0 || fs_poll_add(&p, sv[1], FS_POLL_READ, 0) != 0)
        _exit(4);
    p.slots[sv[0]].pos = 1; /* both slots now claim pollfd 1 */
    fs_poll_wait_init(&w);
    (void)fs_poll_wait_prepare(&p, &w, 0);
    fs_poll_wait_free(&w);
    fs_poll_close(&p);
}

static void test_invariant_checks_fire(void)
{
    int methods[] = {FS_POLL_POLL, FS_POLL_EPOLL};
    for (int i = 0; i < 2; i++) {
        if (!fs_poll_available(methods[i]))
            continue;
        check_context = method_name(methods[i]);
        CHECK(check_aborts(has_with_a_miscounted_table, &methods[i], "registered == p->count"));
    }
    check_context = NULL;
    CHECK(check_aborts(prepare_with_a_crossed_pollfd, NULL, "pf->fd == (s->armed ?"));
}

int main(void)
{
    CHECK(fs_poll_remaining_ms(-1) == -1);
    CHECK(fs_poll_remaining_ms(0) == 0);
    int r = fs_poll_remaining_ms(fs_now_ns() + 1500000); /* 1.5 ms rounds up */
    CHECK(r == 2 || r == 1);                                 /* (1 if >0.5 ms passed) */
    CHECK(fs_poll_remaining_ms(fs_now_ns() + ((int64_t)1 << 62)) > 0);

    fs_poller bad;
    CHECK(fs_poll_init(&bad, 7) == -EINVAL);
    CHECK(fs_poll_close(&bad) == 0);

    test_method(FS_POLL_POLL);
    if (fs_poll_available(FS_POLL_EPOLL))
        test_method(FS_POLL_EPOLL);
    test_method(FS_POLL_AUTO);
    test_invariant_checks_fire();
    return check_report("test_fs_poll");
}
