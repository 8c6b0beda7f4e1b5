# C declarations of src_c/fs_server.h (the Server's event loop mechanics; no Python inside).
from libc.stdint cimport int64_t, uint64_t

from fastsock._c.includes.fs_frame cimport fs_framing


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    const int AF_UNIX


cdef extern from "fs_server.h" nogil:
    ctypedef struct fs_server:
        pass

    ctypedef struct fs_conn:
        pass

    ctypedef struct fs_server_config:
        fs_framing framing
        size_t read_size
        size_t max_buffer
        size_t high_water
        size_t low_water
        size_t write_limit
        size_t max_connections
        int64_t idle_timeout_ns
        int64_t frame_timeout_ns

    enum:
        FS_EV_ACCEPTED
        FS_EV_DATA
        FS_EV_CLOSED
        FS_EV_WAKEUP
        FS_EV_ACCEPT_ERROR
        FS_EV_WATCH

    enum:
        FS_CLOSE_EOF
        FS_CLOSE_LOCAL
        FS_CLOSE_ABORT
        FS_CLOSE_ERROR
        FS_CLOSE_IDLE
        FS_CLOSE_FRAME_TIMEOUT
        FS_CLOSE_TOO_LARGE
        FS_CLOSE_MALFORMED
        FS_CLOSE_STOP
        FS_CLOSE_STOP_TIMEOUT
        FS_CLOSE_SERVER
        FS_CLOSE_BUFFER_FULL
        FS_CLOSE_TOO_MANY_ARGS

    ctypedef struct fs_server_event:
        int type
        int reason
        int err
        int listener
        uint64_t size
        uint64_t need
        fs_conn *conn

    ctypedef struct fs_server_stats:
        uint64_t connections
        uint64_t accepted
        uint64_t closed
        uint64_t frames_in
        uint64_t frames_out
        uint64_t bytes_in
        uint64_t bytes_out
        uint64_t writes
        uint64_t paused
        uint64_t timeouts
        uint64_t errors

    int fs_server_new(fs_server **out, const fs_server_config *cfg)
    void fs_server_free(fs_server *s)
    int fs_server_add_listener(fs_server *s, int fd, int tcp)
    int fs_server_remove_listener(fs_server *s, int index)
    int fs_server_run_once(fs_server *s, int timeout_ms)
    const fs_server_event *fs_server_events(const fs_server *s)
    int fs_server_interrupted(const fs_server *s)
    void fs_server_flush(fs_server *s)
    int fs_server_watch_fd(fs_server *s, int slot, int fd)
    void fs_server_accept_backoff(fs_server *s, int64_t ns)
    void fs_server_stop(fs_server *s, int64_t grace_ns)
    int fs_server_stopped(const fs_server *s)
    void fs_server_restart(fs_server *s)
    void fs_server_abort_all(fs_server *s)
    fs_server_stats *fs_server_get_stats(fs_server *s)
    void fs_server_stats_get(const fs_server *s, fs_server_stats *out)
    void fs_server_stats_add(fs_server *s, int which, uint64_t n)
    enum:
        FS_STAT_FRAMES_IN
        FS_STAT_FRAMES_OUT
        FS_STAT_ERRORS
    fs_conn *fs_server_conn(fs_server *s, uint64_t id)

    uint64_t fs_conn_id(const fs_conn *c)
    void *fs_conn_user(const fs_conn *c)
    void fs_conn_set_user(fs_conn *c, void *user)
    int fs_conn_fd(const fs_conn *c)
    int fs_conn_closing(const fs_conn *c)
    size_t fs_conn_pending(const fs_conn *c)
    size_t fs_conn_held(const fs_conn *c, const char **data)
    const sockaddr *fs_conn_peer(const fs_conn *c, socklen_t *len)
    const sockaddr *fs_conn_sockname(const fs_conn *c, socklen_t *len)
    enum:
        FS_CONN_CLOSING
        FS_CONN_PAUSED
        FS_CONN_BACKPRESSURE
    int fs_conn_shared_fd(const fs_conn *c)
    int fs_conn_shared_state(const fs_conn *c)
    size_t fs_conn_shared_pending(const fs_conn *c)
    int fs_conn_next_frame(fs_server *s, fs_conn *c, const char **payload, size_t *len)
    int fs_conn_next_frame_deferred(fs_server *s, fs_conn *c, const char **payload, size_t *len)
    void fs_conn_refuse_pending(fs_server *s, fs_conn *c)
    void fs_conn_refuse_cancel(fs_conn *c)
    int fs_conn_raw_data(fs_server *s, fs_conn *c, const char **data, size_t *len)
    void fs_conn_raw_consume(fs_server *s, fs_conn *c, size_t n)
    char *fs_conn_raw_detach(fs_server *s, fs_conn *c)
    int fs_conn_write(fs_server *s, fs_conn *c, const void *data, size_t len)
    int fs_conn_send_frame(fs_server *s, fs_conn *c, const void *payload, size_t len)
    void fs_conn_close(fs_server *s, fs_conn *c)
    void fs_conn_abort(fs_server *s, fs_conn *c)
    void fs_conn_pause(fs_server *s, fs_conn *c, int paused)
    int fs_conn_paused(const fs_conn *c)
