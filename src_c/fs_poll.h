/* fs_poll.h — one small readiness interface over epoll (Linux) and poll (every POSIX).
 *
 * No Python API: functions return 0 / a count, or -errno. An fs_poller is not thread-safe:
 * callers serialize every call (the Cython layer holds the GIL) EXCEPT fs_poll_wait_run,
 * which touches only its own fs_poll_wait and may run while other calls are made. That is
 * what lets the wrapper release the GIL during the wait while another thread registers,
 * modifies or closes.
 *
 * Event masks use the FS_POLL_* bits below (equal to EPOLLIN/POLLIN etc. on Linux).
 * Requested events: READ, WRITE, HANGUP (HANGUP asks to be told when the peer shuts down
 * its writing side: EPOLLRDHUP / POLLRDHUP where the platform has it). ERROR and a full
 * hang-up are always reported.
 *
 * A wait has three steps:
 *   fs_poll_wait_prepare(p, w, max)   size w's buffers; poll method: snapshot the pollfd set
 *   fs_poll_wait_run(w, timeout_ms)   the syscall alone (GIL released); -EINTR is returned
 *   fs_poll_wait_collect(p, w, n)     turn the raw results into w->events[] (fd, FS mask),
 *                                     dropping fds unregistered meanwhile, disarming oneshots
 */
#ifndef FS_POLL_H
#define FS_POLL_H

#include <stddef.h>
#include <stdint.h>

#define FS_POLL_READ 0x001u
#define FS_POLL_WRITE 0x004u
#define FS_POLL_ERROR 0x008u
#define FS_POLL_HANGUP 0x010u
#define FS_POLL_ALL (FS_POLL_READ | FS_POLL_WRITE | FS_POLL_ERROR | FS_POLL_HANGUP)

/* Registration flags. */
#define FS_POLL_EDGE 1u    /* edge-triggered (epoll); the poll method reports level-triggered */
#define FS_POLL_ONESHOT 2u /* disarm after one event until fs_poll_mod re-arms */

/* Methods. */
#define FS_POLL_AUTO 0
#define FS_POLL_EPOLL 1
#define FS_POLL_POLL 2

typedef struct {
    int fd;
    uint32_t events; /* FS_POLL_* bits */
} fs_poll_event;

typedef struct {
    uint32_t events;  /* requested FS_POLL_* bits */
    uint8_t flags;    /* FS_POLL_EDGE | FS_POLL_ONESHOT */
    uint8_t registered;
    uint8_t armed;    /* poll method: 0 after a oneshot event, until fs_poll_mod */
    uint8_t pad_;
    int32_t pos;      /* poll method: index in pfds */
} fs_poll_slot;

typedef struct fs_poller {
    int method;         /* FS_POLL_EPOLL or FS_POLL_POLL once initialized */
    int epfd;           /* epoll descriptor, -1 if none or closed */
    int closed;
    fs_poll_slot *slots; /* indexed by fd, nslots entries */
    size_t nslots;
    size_t count;        /* registered descriptors */
    void *pfds;          /* poll method: struct pollfd[count] (void to keep poll.h out) */
    size_t pfds_cap;
    size_t rotate;       /* poll method: where the next capped scan starts (fairness) */
} fs_poller;

typedef struct fs_poll_wait {
    int method;
    int epfd;
    void *raw;           /* struct epoll_event[] or struct pollfd[] */
    size_t raw_cap;      /* entries */
    size_t nraw;         /* poll method: pollfds in the snapshot */
    size_t max_events;   /* this wait's cap */
    fs_poll_event *events;
    size_t events_cap;
} fs_poll_wait;

/* 1 if the method can be used on this platform (FS_POLL_AUTO always). */
int fs_poll_available(int method);

/* Open a poller. FS_POLL_AUTO picks epoll where available. -EINVAL for an unknown method,
 * -ENOSYS for one this platform lacks, or the -errno of epoll_create1. */
int fs_poll_init(fs_poller *p, int method);

/* Release everything; idempotent. Returns 0 or the -errno of close(epfd). */
int fs_poll_close(fs_poller *p);

/* Register fd. -EEXIST if registered, -EBADF for a closed/invalid fd, -EINVAL for bad bits
 * or a negative fd, -ENOMEM, or the kernel's -errno (e.g. -EPERM for a regular file on epoll). */
int fs_poll_add(fs_poller *p, int fd, uint32_t events, unsigned flags);

/* Change a registration (also re-arms a oneshot). -ENOENT if not registered. */
int fs_poll_mod(fs_poller *p, int fd, uint32_t events, unsigned flags);

/* Unregister. -ENOENT if not registered. A descriptor closed while registered is removed
 * from the table without error (the kernel already dropped it from the epoll set). */
int fs_poll_del(fs_poller *p, int fd);

/* 1 if fd is registered. */
int fs_poll_has(const fs_poller *p, int fd);

void fs_poll_wait_init(fs_poll_wait *w);
void fs_poll_wait_free(fs_poll_wait *w);

/* Prepare w for one wait returning at most max_events (0 = as many as are registered,
 * at least 1). -EBADF if the poller is closed, -ENOMEM. */
int fs_poll_wait_prepare(fs_poller *p, fs_poll_wait *w, size_t max_events);

/* The wait itself: timeout_ms < 0 blocks, 0 returns at once. Returns the raw ready count
 * or -errno (-EINTR when a signal interrupted it). Touches nothing but w. */
int fs_poll_wait_run(fs_poll_wait *w, int timeout_ms);

/* Convert n raw results (the value fs_poll_wait_run returned) into w->events and return
 * how many there are (<= w->max_events). */
int fs_poll_wait_collect(fs_poller *p, fs_poll_wait *w, int n);

/* Milliseconds until deadline_ns (CLOCK_MONOTONIC), rounded up and clamped to INT_MAX;
 * -1 for deadline_ns < 0 (block), 0 once passed. */
int fs_poll_remaining_ms(int64_t deadline_ns);

#endif /* FS_POLL_H */
