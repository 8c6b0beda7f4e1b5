# C declarations of src_c/fs_io.h (send/recv loops with deadlines; no Python inside).
from libc.stdint cimport int64_t


cdef extern from "sys/uio.h" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "fs_io.h" nogil:
    const int64_t FS_BLOCK
    const int64_t FS_NONBLOCK
    const int FS_ERR_TIMEOUT
    const int FS_ERR_EOF

    int64_t fs_now_ns()
    int64_t fs_deadline_from_timeout(double timeout_s)
    int fs_send_all(int fd, const char *buf, size_t len, int flags, int64_t deadline_ns, size_t *sent)
    int fs_sendv_all(int fd, iovec *iov, size_t iovcnt, int flags, int64_t deadline_ns, size_t *sent)
    int fs_recv_exact(int fd, char *buf, size_t len, int flags, int64_t deadline_ns, int use_lowat, size_t *got)
    long fs_recv_some(int fd, char *buf, size_t len, int flags, int64_t deadline_ns)
