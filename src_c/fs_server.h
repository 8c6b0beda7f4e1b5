/* fs_server.h — the mechanics of fastsock.Server's event loop (Linux epoll). No Python here.
 *
 * One fs_server owns an epoll set, a wake-up eventfd, a table of connections and their
 * buffers. Listening sockets stay the caller's (it registers and unregisters their fds).
 * The caller runs turns:
 *
 *   n = fs_server_run_once(s, timeout_ms)   flush what the last turn queued (one send per
 *                                           connection), wait (the only blocking part: no
 *                                           Python lock needed), read, accept, expire timers;
 *                                           returns n events in fs_server_events(s)
 *   for each event: ACCEPTED / DATA / CLOSED / WAKEUP / ACCEPT_ERROR
 *       DATA, framed:  while (fs_conn_next_frame(s, c, &p, &len)) handle(p, len) and queue
 *                      replies with fs_conn_send_frame / fs_conn_write
 *       DATA, raw:     fs_conn_raw_data(s, c, &p, &len); handle; fs_conn_raw_consume(s, c, k)
 *
 * so every reply produced from one read leaves in one send() at the start of the next
 * fs_server_run_once (more only when the kernel takes part of it; the rest goes when the
 * socket is writable: EPOLLOUT is asked for only while output is pending).
 *
 * Lifetimes. An fs_conn pointer stays valid (memory never moves or is freed) until
 * fs_server_free; the slot it names is reused only after its CLOSED event was returned AND
 * the next fs_server_run_once started, so every pointer in a batch stays meaningful while
 * the batch is handled. Ids (slot | generation << 32) tell a reused slot apart:
 * fs_server_conn(s, id) returns NULL for a stale id. Frame pointers from fs_conn_next_frame
 * and fs_conn_raw_data stay readable until the next fs_server_run_once (nothing but
 * fs_server_run_once/flush/free reads into, moves or frees a connection's input memory).
 *
 * Threads: every function is called from one thread (the loop's), except fs_server_wakeup,
 * fs_server_stats_get and the fs_conn_shared_* readers, which any thread may call at any time
 * while the server exists (the readers with a connection whose CLOSED event the loop's thread
 * has not handled yet: the caller orders that, e.g. with a lock both threads hold), and
 * fs_conn_peer / fs_conn_sockname, which read what accept filled in and nothing changes
 * until the slot is reused (the same condition). fs_server_run_once never calls back into
 * the caller.
 *
 * Error codes are negative errno values; nothing here prints or aborts (FS_ASSERT checks the
 * invariants in debug builds only, see fs_debug.h).
 */
#ifndef FS_SERVER_H
#define FS_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "fs_frame.h"

typedef struct fs_server fs_server;
typedef struct fs_conn fs_conn;

typedef struct {
    fs_framing framing;       /* kind 0: raw mode (no framing) */
    size_t read_size;         /* bytes asked of one recv (>= 1) */
    size_t max_buffer;        /* bound of one connection's read buffer (>= read_size) */
    size_t high_water;        /* queued output above this stops reading and delivering ... */
    size_t low_water;         /* ... until it drains to this or below (<= high_water) */
    size_t write_limit;       /* queueing past this fails with -ENOBUFS (>= high_water) */
    size_t max_connections;   /* open connections at most; 0 = unlimited */
    int64_t idle_timeout_ns;  /* no byte in or out for this long closes; 0 = off */
    int64_t frame_timeout_ns; /* a frame begun must complete within this; 0 = off */
} fs_server_config;

enum {
    FS_EV_ACCEPTED = 1,     /* conn: a new connection (open, reading) */
    FS_EV_DATA = 2,         /* conn: new bytes, or held frames deliverable again */
    FS_EV_CLOSED = 3,       /* conn: closed (fd closed); reason, err, size say why */
    FS_EV_WAKEUP = 4,       /* fs_server_wakeup was called */
    FS_EV_ACCEPT_ERROR = 5, /* err: accept() failed; size 1: transient (ECONNABORTED...: that
                             * connection only; 16 in a row end the turn's accepting: the
                             * caller may rest the listeners with fs_server_accept_backoff),
                             * else every listener rests 100 ms (EMFILE...;
                             * fs_server_accept_backoff changes how long). Failed accepts
                             * count in a turn's budget of accepts like successful ones. */
    FS_EV_WATCH = 6,        /* listener: the slot of a watched fd that is readable */
};

/* Descriptors the caller owns that the loop watches for reading (fs_server_watch_fd). */
#define FS_SERVER_WATCH_SLOTS 2

/* Why a connection closed (FS_EV_CLOSED.reason). */
enum {
    FS_CLOSE_EOF = 1,           /* the peer closed; size = bytes of an incomplete frame left
                                 * (readable with fs_conn_held), need = its size if known */
    FS_CLOSE_LOCAL = 2,         /* fs_conn_close (after its output was flushed) */
    FS_CLOSE_ABORT = 3,         /* fs_conn_abort (output dropped) */
    FS_CLOSE_ERROR = 4,         /* a socket error: err is the errno */
    FS_CLOSE_IDLE = 5,          /* idle_timeout */
    FS_CLOSE_FRAME_TIMEOUT = 6, /* frame_timeout (after the queued output was sent) */
    FS_CLOSE_TOO_LARGE = 7,     /* a frame announced above max_size; size = its size */
    FS_CLOSE_MALFORMED = 8,     /* the bytes cannot start a frame of the framing */
    FS_CLOSE_STOP = 9,          /* graceful stop: after the half-close, the peer's EOF (or
                                 * the end of the grace: every reply was delivered) */
    FS_CLOSE_STOP_TIMEOUT = 10, /* graceful stop: the grace period ended before the half-close */
    FS_CLOSE_SERVER = 11,       /* fs_server_abort_all */
    FS_CLOSE_BUFFER_FULL = 12,  /* a frame that cannot fit max_buffer; size = its size */
    FS_CLOSE_TOO_MANY_ARGS = 13, /* a RESP command of more than max_args; size = its count */
};
/* A connection that was already closing keeps its first reason (IDLE, ERROR, ... found
 * afterwards are not reported), except that the end of a stop's grace replaces an orderly
 * one (LOCAL, EOF without partial frame) with FS_CLOSE_STOP_TIMEOUT. */

typedef struct {
    int type;       /* FS_EV_* */
    int reason;     /* CLOSED: FS_CLOSE_* */
    int err;        /* CLOSED (ERROR) and ACCEPT_ERROR: the errno */
    int listener;   /* ACCEPTED, ACCEPT_ERROR: the listener's index */
    uint64_t size;  /* CLOSED: see FS_CLOSE_EOF, _TOO_LARGE, _BUFFER_FULL; ACCEPT_ERROR */
    uint64_t need;  /* CLOSED (EOF): the incomplete frame's total size, 0 if unknown */
    fs_conn *conn;  /* ACCEPTED, DATA, CLOSED */
} fs_server_event;

typedef struct {
    uint64_t connections; /* open now */
    uint64_t accepted;
    uint64_t closed;
    uint64_t frames_in;   /* frames handed out by fs_conn_next_frame (raw: the caller counts) */
    uint64_t frames_out;  /* frames queued by fs_conn_send_frame, raw mode: fs_conn_write calls */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t writes;      /* send() system calls */
    uint64_t paused;      /* connections paused by backpressure now */
    uint64_t timeouts;    /* idle and frame timeouts */
    uint64_t errors;      /* frames too large or malformed (the caller adds its own) */
} fs_server_stats;

/* -- the server ---------------------------------------------------------------------- */

/* A new server (epoll set and eventfd opened). -EINVAL for an inconsistent config,
 * -ENOMEM, or the -errno of epoll_create1/eventfd. */
int fs_server_new(fs_server **out, const fs_server_config *cfg);

/* Close every connection and descriptor the server owns (not the listeners), free all. */
void fs_server_free(fs_server *s);

/* Watch a listening, non-blocking socket; tcp: set TCP_NODELAY on accepted sockets.
 * Returns the listener's index (>= 0) or -errno. */
int fs_server_add_listener(fs_server *s, int fd, int tcp);

/* Stop watching listener `index` (the caller closes its fd afterwards). -ENOENT if unknown. */
int fs_server_remove_listener(fs_server *s, int index);

/* Listeners watched now. */
size_t fs_server_listeners(const fs_server *s);

/* One turn: fs_server_flush, then wait up to timeout_ms (< 0: until something happens;
 * timers shorten the wait; it is 0 while events are already due), then read ready
 * connections (one recv each), accept, expire timers. Returns the number of events
 * (>= 0), or -ENOMEM (nothing changed; call again). A signal that interrupted the wait
 * sets fs_server_interrupted(s) until the next turn. */
int fs_server_run_once(fs_server *s, int timeout_ms);

/* The events of the last fs_server_run_once (valid until the next one). */
const fs_server_event *fs_server_events(const fs_server *s);

/* 1 if the last fs_server_run_once's wait was interrupted by a signal (EINTR): the caller
 * should run its signal handlers. */
int fs_server_interrupted(const fs_server *s);

/* Send what connections queued (one send each), close those whose close is due, and
 * update what epoll watches. fs_server_run_once starts with this. */
void fs_server_flush(fs_server *s);

/* Wake a waiting fs_server_run_once (FS_EV_WAKEUP). Any thread. Returns 0 or -errno. */
int fs_server_wakeup(fs_server *s);

/* Watch the caller's descriptor fd for reading in slot 0 or 1 (replacing what the slot
 * watched; fd -1 stops watching): FS_EV_WATCH while it is readable, which the caller drains
 * (a call queue's eventfd, a signal wake-up socket). The fd must stay open while watched. */
int fs_server_watch_fd(fs_server *s, int slot, int fd);

/* Stop accepting on every listener for ns nanoseconds from now (after an accept error). */
void fs_server_accept_backoff(fs_server *s, int64_t ns);

/* Start a graceful stop: stop accepting; read what the kernel holds for each connection
 * (until would-block) and deliver it; once a connection's output is flushed and nothing
 * deliverable is held, half-close it (SHUT_WR) and close it on the peer's EOF (bytes after
 * the half-close are read and discarded). After grace_ns every remaining connection is
 * aborted (FS_CLOSE_STOP_TIMEOUT). Idempotent (a second call can only shorten the grace). */
void fs_server_stop(fs_server *s, int64_t grace_ns);

/* 1 while a stop is under way. */
int fs_server_stopping(const fs_server *s);

/* 1 once a stop is under way and every connection is closed and reported. */
int fs_server_stopped(const fs_server *s);

/* Forget a finished stop (the next turns accept again, with listeners added anew). */
void fs_server_restart(fs_server *s);

/* Close every connection now (FS_CLOSE_SERVER, output dropped); the next
 * fs_server_run_once reports them. */
void fs_server_abort_all(fs_server *s);

/* The counters (the loop's thread only; use fs_server_stats_add to add to them). */
fs_server_stats *fs_server_get_stats(fs_server *s);

/* A copy of the counters, from any thread. */
void fs_server_stats_get(const fs_server *s, fs_server_stats *out);

/* Add n to a counter the caller keeps too (the loop's thread). */
enum { FS_STAT_FRAMES_IN = 1, FS_STAT_FRAMES_OUT = 2, FS_STAT_ERRORS = 3 };
void fs_server_stats_add(fs_server *s, int which, uint64_t n);

/* Replace the clock (CLOCK_MONOTONIC ns by default), for tests. */
void fs_server_set_clock(fs_server *s, int64_t (*clock)(void *arg), void *arg);

/* -- connections --------------------------------------------------------------------- */

/* The connection an id names, or NULL if it is stale (closed and reported, slot reused). */
fs_conn *fs_server_conn(fs_server *s, uint64_t id);

uint64_t fs_conn_id(const fs_conn *c);

/* The caller's pointer for the connection (NULL at first). */
void *fs_conn_user(const fs_conn *c);
void fs_conn_set_user(fs_conn *c, void *user);

/* The descriptor, or -1 once closed. */
int fs_conn_fd(const fs_conn *c);

/* 1 once closed or closing (fs_conn_close/abort, an error, a timeout, EOF being handled,
 * a half-close of a graceful stop): no more output is accepted. */
int fs_conn_closing(const fs_conn *c);

/* Bytes queued and not yet sent. */
size_t fs_conn_pending(const fs_conn *c);

/* Bytes held in the read buffer. */
size_t fs_conn_buffered(const fs_conn *c);

/* The peer's address and the local one, both as they were at accept (still known after the
 * close, until the slot is reused); *len 0 if unknown. Any thread: see Threads above. */
const struct sockaddr *fs_conn_peer(const fs_conn *c, socklen_t *len);
const struct sockaddr *fs_conn_sockname(const fs_conn *c, socklen_t *len);

/* What other threads may read while the loop runs (see Threads above), as the loop's
 * thread last published it (at once after each change it makes): the descriptor (-1 once
 * closed), FS_CONN_* state bits, and the bytes queued and not sent. */
enum { FS_CONN_CLOSING = 1, FS_CONN_PAUSED = 2, FS_CONN_BACKPRESSURE = 4 };
int fs_conn_shared_fd(const fs_conn *c);
int fs_conn_shared_state(const fs_conn *c);
size_t fs_conn_shared_pending(const fs_conn *c);

/* Framed mode: the next deliverable frame's payload, consumed from the buffer. Returns 1
 * (*payload, *len set; readable until the next fs_server_run_once) or 0: nothing
 * deliverable now (no complete frame, the connection is paused by the caller or by
 * backpressure, or closing). A frame too large or malformed starts closing the connection
 * (FS_CLOSE_TOO_LARGE / MALFORMED, after its queued output) and returns 0. */
int fs_conn_next_frame(fs_server *s, fs_conn *c, const char **payload, size_t *len);
/* As fs_conn_next_frame, except that a frame the framing refuses (above max_size or
 * max_buffer, or malformed) does not begin the close: the call returns 0, the connection
 * delivers no more frames, and fs_conn_refuse_pending(s, c) begins that close (batch mode:
 * after the batch's replies are queued, as they are per frame). The caller must call it
 * before the next fs_server_run_once. */
int fs_conn_next_frame_deferred(fs_server *s, fs_conn *c, const char **payload, size_t *len);
void fs_conn_refuse_pending(fs_server *s, fs_conn *c);
/* Forget a deferred refusal (the batch ended by an interrupt: the connection is aborted). */
void fs_conn_refuse_cancel(fs_conn *c);

/* Every byte held in the read buffer, whatever the state (for a FS_CLOSE_EOF report:
 * until the next fs_server_run_once). Returns the count. */
size_t fs_conn_held(const fs_conn *c, const char **data);

/* Raw mode: every byte held, if the connection is deliverable now. Returns 1 or 0. */
int fs_conn_raw_data(fs_server *s, fs_conn *c, const char **data, size_t *len);

/* Raw mode: the first n held bytes were used (n <= fs_conn_buffered). */
void fs_conn_raw_consume(fs_server *s, fs_conn *c, size_t n);

/* Raw mode: hand the input memory block over to the caller (who free()s it), because
 * something still points into it; the held bytes are copied to a new block (on ENOMEM the
 * connection is aborted instead: FS_CLOSE_ERROR, ENOMEM). Returns the block (NULL if the
 * connection held none). */
char *fs_conn_raw_detach(fs_server *s, fs_conn *c);

/* Queue raw bytes. 0, -EPIPE (closing/closed), -ENOBUFS (past write_limit: nothing queued),
 * -ENOMEM. */
int fs_conn_write(fs_server *s, fs_conn *c, const void *data, size_t len);

/* Queue one frame: header, payload, trailer of the framing. As fs_conn_write, plus
 * -EMSGSIZE (payload above max_size) and -EINVAL (a FixedLength payload of the wrong size,
 * or one containing the delimiter); -ENOTSUP in raw mode. */
int fs_conn_send_frame(fs_server *s, fs_conn *c, const void *payload, size_t len);

/* Close once the queued output is sent (FS_CLOSE_LOCAL). Idempotent. */
void fs_conn_close(fs_server *s, fs_conn *c);

/* Close at the next flush, dropping queued output (FS_CLOSE_ABORT). */
void fs_conn_abort(fs_server *s, fs_conn *c);

/* Caller's pause: stop reading and delivering (held frames stay); resume delivers held
 * frames at the next turn even if no byte arrives. */
void fs_conn_pause(fs_server *s, fs_conn *c, int paused);

/* 1 while paused by the caller; 2 if by backpressure; 3 both. */
int fs_conn_paused(const fs_conn *c);

#endif /* FS_SERVER_H */
