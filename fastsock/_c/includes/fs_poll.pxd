# C declarations of src_c/fs_poll.h (epoll / poll behind one interface; no Python inside).
from libc.stdint cimport uint32_t, int64_t


cdef extern from "fs_poll.h" nogil:
    const uint32_t FS_POLL_READ
    const uint32_t FS_POLL_WRITE
    const uint32_t FS_POLL_ERROR
    const uint32_t FS_POLL_HANGUP
    const uint32_t FS_POLL_ALL
    const unsigned FS_POLL_EDGE
    const unsigned FS_POLL_ONESHOT
    const int FS_POLL_AUTO
    const int FS_POLL_EPOLL
    const int FS_POLL_POLL

    ctypedef struct fs_poll_event:
        int fd
        uint32_t events

    ctypedef struct fs_poller:
        int method
        int epfd
        int closed
        size_t count

    ctypedef struct fs_poll_wait:
        fs_poll_event *events
        size_t max_events

    int fs_poll_available(int method)
    int fs_poll_init(fs_poller *p, int method)
    int fs_poll_close(fs_poller *p)
    int fs_poll_add(fs_poller *p, int fd, uint32_t events, unsigned flags)
    int fs_poll_mod(fs_poller *p, int fd, uint32_t events, unsigned flags)
    int fs_poll_del(fs_poller *p, int fd)
    int fs_poll_has(const fs_poller *p, int fd)
    void fs_poll_wait_init(fs_poll_wait *w)
    void fs_poll_wait_free(fs_poll_wait *w)
    int fs_poll_wait_prepare(fs_poller *p, fs_poll_wait *w, size_t max_events)
    int fs_poll_wait_run(fs_poll_wait *w, int timeout_ms)
    int fs_poll_wait_collect(fs_poller *p, fs_poll_wait *w, int n)
    int fs_poll_remaining_ms(int64_t deadline_ns)
