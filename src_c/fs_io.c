/* fs_io.c — send/recv loops on raw fds with deadlines; see fs_io.h for the contract. */
#include "fs_io.h"
#include "fs_debug.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int64_t fs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fs_deadline_from_timeout(double timeout_s)
{
    if (timeout_s < 0)
        return FS_BLOCK;
    if (timeout_s == 0)
        return FS_NONBLOCK;
    if (timeout_s > 9.0e9) /* beyond ~285 years: treat as blocking rather than overflow */
        return FS_BLOCK;
    int64_t deadline = fs_now_ns() + (int64_t)(timeout_s * 1e9);
    return deadline > 0 ? deadline : 1;
}

int fs_wait_fd(int fd, short events, int64_t deadline_ns)
{
    if (deadline_ns == FS_NONBLOCK)
        return -EAGAIN;
    for (;;) {
        int timeout_ms = -1;
        if (deadline_ns != FS_BLOCK) {
            int64_t left = deadline_ns - fs_now_ns();
            if (left <= 0)
                return FS_ERR_TIMEOUT;
            /* Round up: never wake a fraction of a millisecond early and spin. */
            int64_t ms = (left + 999999) / 1000000;
            timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int r = poll(&pfd, 1, timeout_ms);
        if (r > 0) {
            if (pfd.revents & POLLNVAL)
                return -EBADF;
            return 0; /* ready, or POLLERR/POLLHUP: the next syscall reports which */
        }
        if (r < 0)
            return -errno; /* -EINTR included: the caller runs signal handlers */
        /* r == 0: the wait ran out; loop to re-check the deadline precisely. */
    }
}

int fs_send_all(int fd, const char *buf, size_t len, int flags, int64_t deadline_ns, size_t *sent)
{
    flags |= MSG_NOSIGNAL;
    FS_ASSERT(*sent <= len); /* the progress of an earlier call on the same buffer */
    while (*sent < len) {
        ssize_t n = send(fd, buf + *sent, len - *sent, flags);
        if (n >= 0) {
            *sent += (size_t)n;
            FS_ASSERT(*sent <= len);
            /* A blocking send only stops short when a signal arrived: let the caller run
             * the handlers before blocking again. */
            if (deadline_ns == FS_BLOCK && *sent < len)
                return -EINTR;
            continue;
        }
        int err = errno;
        if (!FS_IS_WOULDBLOCK(err))
            return -err;
        int r = fs_wait_fd(fd, POLLOUT, deadline_ns);
        if (r != 0)
            return r;
    }
    return 0;
}

/* Bytes in iov[idx..idx+cnt) less the `skip` already sent from the first entry. */
static size_t total_from(const struct iovec *iov, size_t idx, size_t cnt, size_t skip)
{
    size_t total = 0;
    for (size_t i = idx; i < idx + cnt; i++)
        total += iov[i].iov_len;
    return total - skip;
}

int fs_sendv_all(int fd, struct iovec *iov, size_t iovcnt, int flags, int64_t deadline_ns, size_t *sent)
{
    flags |= MSG_NOSIGNAL;
    /* Find where *sent leaves us: entry idx, `skip` bytes into it. */
    size_t idx = 0, skip = *sent;
    while (idx < iovcnt && skip >= iov[idx].iov_len) {
        skip -= iov[idx].iov_len;
        idx++;
    }
    FS_ASSERT(idx < iovcnt || skip == 0); /* *sent is within the iovecs' bytes */
    while (idx < iovcnt) {
        size_t cnt = iovcnt - idx;
        if (cnt > FS_IOV_MAX)
            cnt = FS_IOV_MAX;
        struct iovec saved = iov[idx];
        iov[idx].iov_base = (char *)saved.iov_base + skip;
        iov[idx].iov_len = saved.iov_len - skip;
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov + idx;
        msg.msg_iovlen = cnt;
        ssize_t n = sendmsg(fd, &msg, flags);
        int err = errno;
        iov[idx] = saved;
        if (n < 0) {
            if (!FS_IS_WOULDBLOCK(err))
                return -err;
            int r = fs_wait_fd(fd, POLLOUT, deadline_ns);
            if (r != 0)
                return r;
            continue;
        }
        *sent += (size_t)n;
        if (deadline_ns == FS_BLOCK && (size_t)n < total_from(iov, idx, cnt, skip))
            return -EINTR; /* a blocking sendmsg stops short only for a signal */
        /* Advance idx/skip past the n bytes just sent. */
        size_t left = (size_t)n + skip;
        while (idx < iovcnt && left >= iov[idx].iov_len) {
            left -= iov[idx].iov_len;
            idx++;
        }
        skip = left;
        FS_ASSERT(idx < iovcnt || skip == 0); /* the kernel sent no more than was given */
    }
    return 0;
}

/* SO_RCVLOWAT bookkeeping for one fs_recv_exact call. */
typedef struct {
    int active;   /* we changed the option and must restore it */
    int original; /* value found before the call */
    int current;  /* value in force now */
} fs_lowat;

static void lowat_set(int fd, fs_lowat *lw, size_t want)
{
#ifdef FS_HAVE_RCVLOWAT_POLL
    int value = want > INT_MAX ? INT_MAX : (int)want;
    if (!lw->active) {
        socklen_t optlen = sizeof lw->original;
        if (getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lw->original, &optlen) != 0)
            return; /* not a socket that has it: plain waits still work */
        lw->current = lw->original;
        lw->active = 1;
    }
    if (value != lw->current && setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &value, sizeof value) == 0)
        lw->current = value;
#else
    (void)fd;
    (void)lw;
    (void)want;
#endif
}

static int lowat_restore(int fd, fs_lowat *lw, int rc)
{
#ifdef FS_HAVE_RCVLOWAT_POLL
    if (lw->active && lw->current != lw->original)
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lw->original, sizeof lw->original);
#else
    (void)fd;
    (void)lw;
#endif
    return rc;
}

int fs_recv_exact(int fd, char *buf, size_t len, int flags, int64_t deadline_ns, int use_lowat, size_t *got)
{
    fs_lowat lw = {0, 1, 1};
    /* A blocking socket lets the kernel gather everything in one MSG_WAITALL call; raising
     * and restoring SO_RCVLOWAT around it measured no faster (bench: W1), so lowat only
     * serves the poll()-based waits of sockets with a timeout. */
    if (deadline_ns == FS_BLOCK || deadline_ns == FS_NONBLOCK)
        use_lowat = 0; /* nothing to wait for with lowat: blocking reads use MSG_WAITALL */
    int first_flags = (deadline_ns == FS_BLOCK && !use_lowat) ? (flags | MSG_WAITALL) : (flags | MSG_DONTWAIT);
    FS_ASSERT(*got <= len); /* the progress of an earlier call on the same buffer */
    while (*got < len) {
        size_t want = len - *got;
        ssize_t n = recv(fd, buf + *got, want, first_flags);
        if (n > 0) {
            *got += (size_t)n;
            FS_ASSERT(*got <= len);
            /* MSG_WAITALL only stops short for a signal, EOF or an error: let the caller
             * run signal handlers; the next call reports EOF or the error. */
            if ((first_flags & MSG_WAITALL) && *got < len)
                return lowat_restore(fd, &lw, -EINTR);
            continue;
        }
        if (n == 0)
            return lowat_restore(fd, &lw, FS_ERR_EOF);
        int err = errno;
        if (!FS_IS_WOULDBLOCK(err))
            return lowat_restore(fd, &lw, -err);
        if (use_lowat)
            lowat_set(fd, &lw, want);
        int r = fs_wait_fd(fd, POLLIN, deadline_ns);
        if (r != 0)
            return lowat_restore(fd, &lw, r);
    }
    return lowat_restore(fd, &lw, 0);
}

long fs_recv_some(int fd, char *buf, size_t len, int flags, int64_t deadline_ns)
{
    int rflags = deadline_ns == FS_BLOCK ? flags : (flags | MSG_DONTWAIT);
    for (;;) {
        ssize_t n = recv(fd, buf, len, rflags);
        FS_ASSERT(n < 0 || (size_t)n <= len);
        if (n >= 0)
            return (long)n;
        int err = errno;
        if (!FS_IS_WOULDBLOCK(err))
            return -err;
        int r = fs_wait_fd(fd, POLLIN, deadline_ns);
        if (r != 0)
            return r;
    }
}
