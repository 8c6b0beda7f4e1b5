/* fs_poll.c — epoll and poll behind the interface of fs_poll.h. No Python here. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* POLLRDHUP */
#endif

#include "fs_poll.h"
#include "fs_compat.h"
#include "fs_debug.h"
#include "fs_io.h" /* fs_now_ns: one monotonic clock for every deadline */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef FS_HAVE_EPOLL
#include <sys/epoll.h>
#endif

#ifndef POLLRDHUP
#define POLLRDHUP 0
#endif

/* ---- helpers ---------------------------------------------------------------------- */

int fs_poll_remaining_ms(int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return -1;
    int64_t left = deadline_ns - fs_now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000; /* round up: wait at least the time asked */
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int fs_poll_available(int method)
{
    switch (method) {
    case FS_POLL_AUTO:
    case FS_POLL_POLL:
        return 1;
    case FS_POLL_EPOLL:
#ifdef FS_HAVE_EPOLL
        return 1;
#else
        return 0;
#endif
    default:
        return 0;
    }
}

static int valid_request(int fd, uint32_t events, unsigned flags)
{
    return fd >= 0 && (events & ~FS_POLL_ALL) == 0 && (flags & ~(FS_POLL_EDGE | FS_POLL_ONESHOT)) == 0;
}

static fs_poll_slot *slot_of(const fs_poller *p, int fd)
{
    if (fd < 0 || (size_t)fd >= p->nslots || !p->slots[fd].registered)
        return NULL;
    return &p->slots[fd];
}

/* Grow the fd-indexed slot table so that slots[fd] exists. */
static int ensure_slot(fs_poller *p, int fd)
{
    size_t need = (size_t)fd + 1;
    if (need <= p->nslots)
        return 0;
    size_t n = p->nslots ? p->nslots : 64;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    if (n > SIZE_MAX / sizeof(fs_poll_slot))
        return -ENOMEM;
    fs_poll_slot *s = realloc(p->slots, n * sizeof(fs_poll_slot));
    if (s == NULL)
        return -ENOMEM;
    memset(s + p->nslots, 0, (n - p->nslots) * sizeof(fs_poll_slot));
    p->slots = s;
    p->nslots = n;
    return 0;
}

static short to_poll_bits(uint32_t events)
{
    short e = 0;
    if (events & FS_POLL_READ)
        e |= POLLIN;
    if (events & FS_POLL_WRITE)
        e |= POLLOUT;
    if (events & FS_POLL_HANGUP)
        e |= POLLRDHUP;
    return e;
}

static uint32_t from_poll_bits(short r)
{
    uint32_t e = 0;
    if (r & POLLIN)
        e |= FS_POLL_READ;
    if (r & POLLOUT)
        e |= FS_POLL_WRITE;
    if (r & (POLLERR | POLLNVAL)) /* POLLNVAL: the fd was closed while registered */
        e |= FS_POLL_ERROR;
    if (r & (POLLHUP | POLLRDHUP))
        e |= FS_POLL_HANGUP;
    return e;
}

#ifdef FS_HAVE_EPOLL
static uint32_t to_epoll_bits(uint32_t events, unsigned flags)
{
    uint32_t e = 0;
    if (events & FS_POLL_READ)
        e |= EPOLLIN;
    if (events & FS_POLL_WRITE)
        e |= EPOLLOUT;
    if (events & FS_POLL_HANGUP)
        e |= EPOLLRDHUP;
    if (flags & FS_POLL_EDGE)
        e |= EPOLLET;
    if (flags & FS_POLL_ONESHOT)
        e |= EPOLLONESHOT;
    return e;
}

static uint32_t from_epoll_bits(uint32_t r)
{
    uint32_t e = 0;
    if (r & EPOLLIN)
        e |= FS_POLL_READ;
    if (r & EPOLLOUT)
        e |= FS_POLL_WRITE;
    if (r & EPOLLERR)
        e |= FS_POLL_ERROR;
    if (r & (EPOLLHUP | EPOLLRDHUP))
        e |= FS_POLL_HANGUP;
    return e;
}
#endif

/* ---- debug checks (nothing of this is compiled with NDEBUG: see fs_debug.h) --------- */

#ifdef NDEBUG
#define POLLER_CHECK(p) ((void)0)
#define WAIT_CHECK(w) ((void)0)
#else
#define POLLER_CHECK(p) poller_check(p)
#define WAIT_CHECK(w) wait_check(w)

/* Everything the poller's fields promise each other. O(nslots): the slot table, `count`
 * and (poll method) the pollfd array describe the same set of registered descriptors. */
static void poller_check(const fs_poller *p)
{
    if (p->closed) { /* never opened, failed to open, or closed: owns nothing */
        FS_ASSERT(p->epfd == -1);
        FS_ASSERT(p->slots == NULL && p->nslots == 0 && p->count == 0);
        FS_ASSERT(p->pfds == NULL && p->pfds_cap == 0);
        return;
    }
    FS_ASSERT(p->method == FS_POLL_EPOLL || p->method == FS_POLL_POLL);
    FS_ASSERT(p->method == FS_POLL_EPOLL ? p->epfd >= 0 : p->epfd == -1);
    FS_ASSERT(p->slots != NULL || p->nslots == 0);
    FS_ASSERT(p->count <= p->nslots);
    if (p->method == FS_POLL_POLL)
        FS_ASSERT(p->count <= p->pfds_cap && (p->pfds != NULL || p->pfds_cap == 0));
    else
        FS_ASSERT(p->pfds == NULL && p->pfds_cap == 0);
    const struct pollfd *pfds = p->pfds;
    size_t registered = 0;
    for (size_t fd = 0; fd < p->nslots; fd++) {
        const fs_poll_slot *s = &p->slots[fd];
        if (!s->registered) { /* del and ensure_slot leave unused slots all zero */
            FS_ASSERT(s->events == 0 && s->flags == 0 && s->armed == 0 && s->pos == 0);
            continue;
        }
        registered++;
        FS_ASSERT(s->registered == 1 && s->armed <= 1);
        FS_ASSERT((s->events & ~FS_POLL_ALL) == 0 && (s->flags & ~(FS_POLL_EDGE | FS_POLL_ONESHOT)) == 0);
        if (p->method == FS_POLL_EPOLL) {
            FS_ASSERT(s->pos == -1 && s->armed == 1); /* the kernel disarms epoll oneshots */
            continue;
        }
        /* poll: the slot names its pollfd, which names the slot's fd (-fd - 1 if disarmed) */
        FS_ASSERT(s->pos >= 0 && (size_t)s->pos < p->count);
        const struct pollfd *pf = &pfds[s->pos];
        FS_ASSERT(pf->fd == (s->armed ? (int)fd : -(int)fd - 1));
        FS_ASSERT(pf->events == to_poll_bits(s->events));
        FS_ASSERT(s->armed || (s->flags & FS_POLL_ONESHOT));
    }
    FS_ASSERT(registered == p->count); /* so the pollfds [0, count) are each one slot's */
}

/* A wait's arrays can hold what fs_poll_wait_run will ask the kernel for (once prepared). */
static void wait_check(const fs_poll_wait *w)
{
    FS_ASSERT(w->events != NULL || w->events_cap == 0);
    FS_ASSERT(w->raw != NULL || w->raw_cap == 0);
    if (w->method == 0) /* initialized, never prepared */
        return;
    FS_ASSERT(w->method == FS_POLL_EPOLL || w->method == FS_POLL_POLL);
    FS_ASSERT(w->max_events >= 1 && w->max_events <= INT_MAX && w->max_events <= w->events_cap);
    if (w->method == FS_POLL_EPOLL)
        FS_ASSERT(w->epfd >= 0 && w->max_events <= w->raw_cap);
    else
        FS_ASSERT(w->nraw <= w->raw_cap);
}
#endif

/* ---- lifecycle -------------------------------------------------------------------- */

int fs_poll_init(fs_poller *p, int method)
{
    memset(p, 0, sizeof(*p));
    p->epfd = -1;
    p->closed = 1;
    if (method != FS_POLL_AUTO && method != FS_POLL_EPOLL && method != FS_POLL_POLL)
        return -EINVAL;
    if (!fs_poll_available(method))
        return -ENOSYS;
#ifdef FS_HAVE_EPOLL
    if (method == FS_POLL_AUTO)
        method = FS_POLL_EPOLL;
    if (method == FS_POLL_EPOLL) {
        int fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0)
            return -errno;
        p->epfd = fd;
    }
#else
    if (method == FS_POLL_AUTO)
        method = FS_POLL_POLL;
#endif
    p->method = method;
    p->closed = 0;
    POLLER_CHECK(p);
    return 0;
}

int fs_poll_close(fs_poller *p)
{
    POLLER_CHECK(p);
    int rc = 0;
    if (p->epfd >= 0 && close(p->epfd) < 0 && errno != EINTR)
        rc = -errno;
    p->epfd = -1;
    free(p->slots);
    free(p->pfds);
    p->slots = NULL;
    p->pfds = NULL;
    p->nslots = p->count = p->pfds_cap = 0;
    p->closed = 1;
    POLLER_CHECK(p);
    return rc;
}

/* ---- registration ----------------------------------------------------------------- */

int fs_poll_add(fs_poller *p, int fd, uint32_t events, unsigned flags)
{
    POLLER_CHECK(p);
    if (p->closed)
        return -EBADF;
    if (!valid_request(fd, events, flags))
        return -EINVAL;
    if (slot_of(p, fd) != NULL)
        return -EEXIST;
#ifdef FS_HAVE_EPOLL
    if (p->method == FS_POLL_EPOLL) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = to_epoll_bits(events, flags);
        ev.data.fd = fd;
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            return -errno;
        int rc = ensure_slot(p, fd);
        if (rc < 0) {
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);
            return rc;
        }
        p->slots[fd].pos = -1;
    }
#endif
    if (p->method == FS_POLL_POLL) {
        /* poll() would only report POLLNVAL later: refuse a closed fd now, like epoll. */
        if (fcntl(fd, F_GETFD) < 0)
            return -errno;
        int rc = ensure_slot(p, fd);
        if (rc < 0)
            return rc;
        if (p->count == p->pfds_cap) {
            size_t n = p->pfds_cap ? p->pfds_cap * 2 : 64;
            if (n > SIZE_MAX / sizeof(struct pollfd))
                return -ENOMEM;
            void *np = realloc(p->pfds, n * sizeof(struct pollfd));
            if (np == NULL)
                return -ENOMEM;
            p->pfds = np;
            p->pfds_cap = n;
        }
        struct pollfd *pf = (struct pollfd *)p->pfds + p->count;
        pf->fd = fd;
        pf->events = to_poll_bits(events);
        pf->revents = 0;
        p->slots[fd].pos = (int32_t)p->count;
    }
    fs_poll_slot *s = &p->slots[fd];
    s->events = events;
    s->flags = (uint8_t)flags;
    s->registered = 1;
    s->armed = 1;
    p->count++;
    POLLER_CHECK(p);
    return 0;
}

int fs_poll_mod(fs_poller *p, int fd, uint32_t events, unsigned flags)
{
    POLLER_CHECK(p);
    if (p->closed)
        return -EBADF;
    if (!valid_request(fd, events, flags))
        return -EINVAL;
    fs_poll_slot *s = slot_of(p, fd);
    if (s == NULL)
        return -ENOENT;
#ifdef FS_HAVE_EPOLL
    if (p->method == FS_POLL_EPOLL) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = to_epoll_bits(events, flags);
        ev.data.fd = fd;
        if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -errno;
    }
#endif
    if (p->method == FS_POLL_POLL) {
        if (fcntl(fd, F_GETFD) < 0) /* closed since registered: fail like epoll_ctl */
            return -errno;
        struct pollfd *pf = (struct pollfd *)p->pfds + s->pos;
        pf->fd = fd; /* re-arms a disarmed oneshot */
        pf->events = to_poll_bits(events);
    }
    s->events = events;
    s->flags = (uint8_t)flags;
    s->armed = 1;
    POLLER_CHECK(p);
    return 0;
}

int fs_poll_del(fs_poller *p, int fd)
{
    POLLER_CHECK(p);
    if (p->closed)
        return -EBADF;
    fs_poll_slot *s = slot_of(p, fd);
    if (s == NULL)
        return -ENOENT;
#ifdef FS_HAVE_EPOLL
    if (p->method == FS_POLL_EPOLL) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        /* EBADF/ENOENT: the fd was closed (and maybe reused) since: nothing to remove. */
        (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);
    }
#endif
    if (p->method == FS_POLL_POLL) {
        struct pollfd *pfds = p->pfds;
        size_t last = p->count - 1;
        size_t pos = (size_t)s->pos;
        if (pos != last) { /* move the last entry into the hole */
            pfds[pos] = pfds[last];
            int moved = pfds[pos].fd >= 0 ? pfds[pos].fd : -pfds[pos].fd - 1;
            p->slots[moved].pos = (int32_t)pos;
        }
    }
    memset(s, 0, sizeof(*s));
    p->count--;
    if (p->rotate >= p->count)
        p->rotate = 0;
    POLLER_CHECK(p);
    return 0;
}

int fs_poll_has(const fs_poller *p, int fd)
{
    POLLER_CHECK(p);
    return slot_of(p, fd) != NULL;
}

/* ---- waiting ---------------------------------------------------------------------- */

void fs_poll_wait_init(fs_poll_wait *w)
{
    memset(w, 0, sizeof(*w));
    w->epfd = -1;
    WAIT_CHECK(w);
}

void fs_poll_wait_free(fs_poll_wait *w)
{
    free(w->raw);
    free(w->events);
    fs_poll_wait_init(w);
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    if (n > SIZE_MAX / elem)
        return -ENOMEM;
    /* the contents need not survive: free + malloc avoids realloc's copy */
    void *nb = malloc(n * elem);
    if (nb == NULL)
        return -ENOMEM;
    free(*buf);
    *buf = nb;
    *cap = n;
    return 0;
}

int fs_poll_wait_prepare(fs_poller *p, fs_poll_wait *w, size_t max_events)
{
    POLLER_CHECK(p); /* (w need not be consistent: a failed prepare may have left it half-set) */
    if (p->closed)
        return -EBADF;
    size_t cap = p->count ? p->count : 1;
    if (max_events == 0 || max_events > cap)
        max_events = cap;
    if (max_events > INT_MAX)
        max_events = INT_MAX;
    w->method = p->method;
    w->epfd = p->epfd;
    w->max_events = max_events;
    int rc = grow((void **)&w->events, &w->events_cap, max_events, sizeof(fs_poll_event));
    if (rc < 0)
        return rc;
#ifdef FS_HAVE_EPOLL
    if (p->method == FS_POLL_EPOLL) {
        rc = grow(&w->raw, &w->raw_cap, max_events, sizeof(struct epoll_event));
        if (rc == 0)
            WAIT_CHECK(w);
        return rc;
    }
#endif
    /* poll method: the wait runs on a private copy, so registrations may change meanwhile */
    rc = grow(&w->raw, &w->raw_cap, p->count ? p->count : 1, sizeof(struct pollfd));
    if (rc < 0)
        return rc;
    if (p->count)
        memcpy(w->raw, p->pfds, p->count * sizeof(struct pollfd));
    w->nraw = p->count;
    WAIT_CHECK(w);
    return 0;
}

int fs_poll_wait_run(fs_poll_wait *w, int timeout_ms)
{
    WAIT_CHECK(w); /* only w: the poller may change meanwhile */
    int n;
    if (timeout_ms < 0)
        timeout_ms = -1;
#ifdef FS_HAVE_EPOLL
    if (w->method == FS_POLL_EPOLL) {
        n = epoll_wait(w->epfd, (struct epoll_event *)w->raw, (int)w->max_events, timeout_ms);
        FS_ASSERT(n < 0 || (size_t)n <= w->max_events);
        return n < 0 ? -errno : n;
    }
#endif
    n = poll((struct pollfd *)w->raw, (nfds_t)w->nraw, timeout_ms);
    FS_ASSERT(n < 0 || (size_t)n <= w->nraw);
    return n < 0 ? -errno : n;
}

int fs_poll_wait_collect(fs_poller *p, fs_poll_wait *w, int n)
{
    POLLER_CHECK(p);
    WAIT_CHECK(w);
    size_t out = 0;
    if (n <= 0 || p->closed)
        return 0;
    /* n is what fs_poll_wait_run returned for this wait, which was prepared on this poller */
    FS_ASSERT(w->method == p->method);
    FS_ASSERT(w->method == FS_POLL_EPOLL ? (size_t)n <= w->max_events : (size_t)n <= w->nraw);
#ifdef FS_HAVE_EPOLL
    if (w->method == FS_POLL_EPOLL) {
        const struct epoll_event *ev = w->raw;
        for (int i = 0; i < n && out < w->max_events; i++) {
            int fd = ev[i].data.fd;
            if (slot_of(p, fd) == NULL) /* unregistered by another thread during the wait */
                continue;
            w->events[out].fd = fd;
            w->events[out].events = from_epoll_bits(ev[i].events);
            out++;
        }
        FS_ASSERT(out <= w->max_events);
        return (int)out;
    }
#endif
    /* poll method: scan the snapshot, starting where the last capped scan stopped */
    struct pollfd *pfds = w->raw;
    size_t total = w->nraw;
    size_t start = p->rotate < total ? p->rotate : 0;
    size_t seen = 0;
    for (size_t k = 0; k < total && seen < (size_t)n; k++) {
        size_t i = start + k < total ? start + k : start + k - total;
        if (pfds[i].revents == 0)
            continue;
        seen++;
        if (out == w->max_events) {
            p->rotate = i; /* more were ready: the next wait starts with this one */
            break;
        }
        int fd = pfds[i].fd;
        fs_poll_slot *s = slot_of(p, fd);
        if (s == NULL || !s->armed)
            continue;
        uint32_t e = from_poll_bits(pfds[i].revents);
        /* a modify during the wait: report only what is still asked for */
        e &= s->events | FS_POLL_ERROR | FS_POLL_HANGUP;
        if (e == 0)
            continue;
        if (s->flags & FS_POLL_ONESHOT) {
            s->armed = 0;
            ((struct pollfd *)p->pfds)[s->pos].fd = -fd - 1; /* poll() skips negative fds */
        }
        w->events[out].fd = fd;
        w->events[out].events = e;
        out++;
    }
    POLLER_CHECK(p); /* disarming a oneshot kept the slot and its pollfd in agreement */
    FS_ASSERT(out <= w->max_events);
    return (int)out;
}
