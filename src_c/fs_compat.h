/* fs_compat.h — platform macros shared by every file in src_c/. No Python here. */
#ifndef FS_COMPAT_H
#define FS_COMPAT_H

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Sends never raise SIGPIPE: Linux has a per-call flag; BSD/macOS set SO_NOSIGPIPE instead. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#define FS_NEED_SO_NOSIGPIPE 1
#endif

#ifndef MSG_DONTWAIT
#define MSG_DONTWAIT 0 /* the fd's own O_NONBLOCK then decides; fs_io waits with poll() */
#endif

#ifndef MSG_WAITALL
#define MSG_WAITALL 0
#endif

/* The largest iovec count one sendmsg/writev accepts. */
#if defined(IOV_MAX)
#define FS_IOV_MAX IOV_MAX
#elif defined(UIO_MAXIOV)
#define FS_IOV_MAX UIO_MAXIOV
#else
#define FS_IOV_MAX 1024
#endif

#if defined(__linux__)
#define FS_HAVE_EPOLL 1
#endif

#if defined(SO_RCVLOWAT) && defined(__linux__)
/* Linux honours SO_RCVLOWAT in poll() readiness and wake-ups for TCP. */
#define FS_HAVE_RCVLOWAT_POLL 1
#endif

#define FS_IS_WOULDBLOCK(e) ((e) == EAGAIN || (e) == EWOULDBLOCK)

#endif /* FS_COMPAT_H */
