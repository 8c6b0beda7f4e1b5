/* fs_io.h — blocking-safe send/recv loops on raw file descriptors, with deadlines.
 *
 * No Python API: every function returns 0 on success or a negative code, and reports
 * progress through an in/out counter so a caller can resume after FS_ERR_EINTR (run
 * signal handlers, then call again with the same counter and deadline).
 *
 * Deadlines are CLOCK_MONOTONIC nanoseconds, or one of:
 *   FS_BLOCK     wait as long as it takes (a socket with timeout None)
 *   FS_NONBLOCK  never wait (a socket with timeout 0): would-block returns -EAGAIN
 *
 * -EINTR means "run signal handlers, then call again": it is also returned when a blocking
 * call stops short after moving some bytes (which only a signal, EOF or an error does), so
 * a handler never waits behind a call that blocks again.
 */
#ifndef FS_IO_H
#define FS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "fs_compat.h"

#define FS_BLOCK ((int64_t)-1)
#define FS_NONBLOCK ((int64_t)0)

/* Codes besides -errno. FS_ERR_TIMEOUT is outside every errno range, so a kernel
 * ETIMEDOUT (e.g. a keepalive failure) stays distinguishable from our deadline. */
#define FS_ERR_TIMEOUT (-100001)
#define FS_ERR_EOF (-100002)

/* Current CLOCK_MONOTONIC time in nanoseconds. */
int64_t fs_now_ns(void);

/* Deadline for a timeout in seconds: <0 → FS_BLOCK, 0 → FS_NONBLOCK, else now + timeout
 * (at least 1 ns in the future, so a tiny timeout never reads as FS_NONBLOCK). */
int64_t fs_deadline_from_timeout(double timeout_s);

/* Wait until fd is ready for `events` (POLLIN/POLLOUT) or the deadline passes.
 * Returns 0 (ready, or error/hang-up pending: the next syscall reports it),
 * FS_ERR_TIMEOUT, -EAGAIN for FS_NONBLOCK, -EINTR, or -errno. */
int fs_wait_fd(int fd, short events, int64_t deadline_ns);

/* Send buf[*sent:len] until all is sent. MSG_NOSIGNAL is always added.
 * Returns 0 when *sent == len, else -EAGAIN / FS_ERR_TIMEOUT / -EINTR / -errno. */
int fs_send_all(int fd, const char *buf, size_t len, int flags, int64_t deadline_ns, size_t *sent);

/* Gather-send every byte of iov[0..iovcnt) from offset *sent, FS_IOV_MAX entries per
 * sendmsg. iov entries are modified during a call and restored before it returns.
 * Returns as fs_send_all. */
int fs_sendv_all(int fd, struct iovec *iov, size_t iovcnt, int flags, int64_t deadline_ns, size_t *sent);

/* Receive into buf[*got:len] until full. Blocking sockets (FS_BLOCK) use one MSG_WAITALL
 * recv. With a deadline, use_lowat (TCP) waits with SO_RCVLOWAT set to the bytes still
 * missing, so poll() wakes the reader once rather than per segment (restored before
 * returning).
 * Returns 0 when *got == len, FS_ERR_EOF if the peer closed first, else as fs_send_all. */
int fs_recv_exact(int fd, char *buf, size_t len, int flags, int64_t deadline_ns, int use_lowat, size_t *got);

/* One recv of at most len bytes into buf, waiting per the deadline. Returns the byte
 * count (0 = EOF), or a negative code as above. */
long fs_recv_some(int fd, char *buf, size_t len, int flags, int64_t deadline_ns);

#endif /* FS_IO_H */
