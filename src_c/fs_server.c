/* fs_server.c — the Server's event loop mechanics; see fs_server.h for the contract.
 *
 * Memory layout
 *   connections  fixed-size slots in chunks of 256 that never move (pointers stay valid),
 *                a LIFO free list of slots, a generation number per slot (ids tell reuse)
 *   buffers      each connection has an input and an output fs_buffer, both empty (no
 *                memory) while idle: a block is taken from a small server-wide pool when
 *                bytes arrive or a reply is queued, and given back once emptied, so idle
 *                connections cost their slot only
 *   lists        intrusive, through the slots: touched (flush visits these), ready (held
 *                frames deliverable without a read), closed (to report), and the two timer
 *                lists
 *   timers       idle and frame deadlines are now + T with one T each and a clock that only
 *                goes forward, so appending at the tail keeps each list sorted: O(1) arm,
 *                disarm and expiry, no scan of all connections
 *
 * States: OPEN (reading, delivering) -> CLOSING (output flushed, then closed) or HALF
 * (graceful stop: SHUT_WR sent, reading to discard until EOF) -> CLOSED (fd closed, reported
 * in the next batch) -> FREE (slot reusable, at the start of the turn after the report).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "fs_server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs_buffer.h"
#include "fs_compat.h"
#include "fs_debug.h"
#include "fs_io.h"

#if defined(__linux__)

#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define CHUNK_SHIFT 8
#define CHUNK_SLOTS (1u << CHUNK_SHIFT)
#define EPOLL_BATCH 256
#define ACCEPT_BUDGET 128               /* accepts per turn, all listeners together */
#define POOL_MAX 256                    /* spare buffer blocks kept (resident only as far as touched) */
#define MIN_BLOCK 4096
#define ACCEPT_BACKOFF_NS 100000000LL   /* listeners rest 100 ms after EMFILE and the like */
#define DISCARD_SIZE 16384
#define DISCARD_READS 4                 /* recv calls per turn on a half-closed connection */
#define SWEEP_READS 64                  /* a stop's read-until-would-block reads this much at most */
#define TRANSIENT_RUN 16                /* transient accept errors in a row end a turn's accepting */

#define TAG_SPECIAL (UINT64_C(1) << 63)
#define TAG_WAKE (TAG_SPECIAL | UINT64_C(0xffffffff))
#define TAG_WATCH (TAG_SPECIAL | UINT64_C(0xfffffff0)) /* | slot */
#define GEN_MASK 0x7fffffffu

enum { ST_FREE = 0, ST_OPEN, ST_CLOSING, ST_HALF, ST_CLOSED };

enum {
    F_PAUSED = 1u << 0,   /* the caller paused it */
    F_BP = 1u << 1,       /* paused by backpressure (counted in stats.paused) */
    F_EOF = 1u << 2,      /* the peer's EOF was read */
    F_TOUCHED = 1u << 3,  /* in the touched list */
    F_READY = 1u << 4,    /* in the ready list */
    F_SWEEP = 1u << 5,    /* graceful stop: read until would-block before half-closing */
    F_ABORT = 1u << 7,    /* close at the next flush without sending */
    F_TCP = 1u << 8,
    F_REFUSED = 1u << 9,  /* a refused frame's close is deferred (refused_*): fs_conn_refuse_pending */
};
#define F_KEEP_ON_CLOSE (F_TOUCHED | F_READY | F_TCP)

/* What other threads may read while the loop runs (fs_conn_shared_*, fs_server_stats_get):
 * written by the loop's thread only, with relaxed atomic stores (plain moves on x86), read
 * with relaxed atomic loads, so a reader never races a writer (as ThreadSanitizer checks). */
#define PUB_STORE(field, value) __atomic_store_n(&(field), (value), __ATOMIC_RELAXED)
#define PUB_LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
/* The counters have one writer (the loop's thread): a load and a store, not a locked add. */
#define STAT_ADD(s, field, n) PUB_STORE((s)->st.field, PUB_LOAD((s)->st.field) + (n))
#define STAT_SUB(s, field, n) PUB_STORE((s)->st.field, PUB_LOAD((s)->st.field) - (n))
#define STAT_SET(s, field, v) PUB_STORE((s)->st.field, (uint64_t)(v))

enum { T_IDLE = 0, T_FRAME = 1 };

typedef struct {
    fs_conn *prev, *next;
    int64_t at;
    int on;
} tnode;

typedef struct {
    fs_conn *head, *tail;
    int64_t timeout; /* 0: this timer is off */
} tlist;

struct fs_conn {
    int fd;
    uint32_t slot;
    uint32_t gen;
    uint32_t state;
    uint32_t flags;
    uint32_t mask;      /* epoll events registered now */
    uint32_t data_turn; /* turn of the last DATA event (one per connection per turn) */
    int reason, err;    /* why it closes / closed */
    uint64_t size;
    int refused_reason; /* F_REFUSED: the close fs_conn_refuse_pending begins, and its size */
    uint64_t refused_size;
    uint64_t need;      /* the partial frame's total size when its header told it, else 0 */
    uint32_t sweeps;    /* graceful stop: reads made by its read-until-would-block */
    size_t old_held;    /* input held at the end of the last turn ... */
    size_t consumed;    /* ... and consumed since: all of it gone means a frame began anew */
    fs_buffer in;
    fs_buffer out;
    uint64_t resume;    /* where a partial scan resumes (fs_frame.resume) */
    void *user;
    fs_conn *touched_next;
    fs_conn *ready_next;
    fs_conn *list_next; /* the closed list while CLOSED, the free list while FREE */
    tnode t[2];
    /* published for other threads (PUB_STORE): see publish() */
    int pub_fd;
    uint32_t pub_state; /* FS_CONN_CLOSING | FS_CONN_PAUSED | FS_CONN_BACKPRESSURE */
    size_t pub_pending;
    /* both filled at accept and unchanged until the slot is reused */
    socklen_t peer_len, sock_len;
    struct sockaddr_storage peer, sock;
};

typedef struct {
    int fd;
    uint8_t active;  /* watched */
    uint8_t tcp;
    uint8_t enabled; /* EPOLLIN registered */
    uint8_t fixed;   /* bound to one address: every accepted socket's local address is addr */
    socklen_t addr_len;
    struct sockaddr_storage addr;
} fs_listener;

struct fs_server {
    fs_server_config cfg;
    int epfd, wakefd;
    int watched[FS_SERVER_WATCH_SLOTS];
    int64_t now;
    int64_t (*clock)(void *);
    void *clock_arg;
    uint32_t turn;
    int interrupted;
    /* connections */
    fs_conn **chunks;
    size_t nchunks;
    fs_conn *free_list;
    size_t nconns; /* OPEN, CLOSING or HALF */
    /* lists */
    fs_conn *touched;
    fs_conn *ready;
    size_t nready;
    fs_conn *closed_head, *closed_tail;
    size_t nclosed;
    tlist timers[2];
    /* events */
    fs_server_event *events;
    size_t nevents, evcap;
    int woke; /* a WAKEUP event is in this batch */
    size_t accepts;  /* accept() calls this turn, failed ones included (<= ACCEPT_BUDGET) */
    size_t transient_run; /* transient accept errors in a row, this turn */
    fs_server_event spare; /* where an event goes that the events array cannot take (never) */
    struct epoll_event raw[EPOLL_BATCH];
    /* buffer blocks */
    size_t block;
    char *pool[POOL_MAX];
    size_t npool;
    char *discard;
    /* listeners */
    fs_listener *ls;
    size_t nls, lscap, nactive;
    int64_t backoff_until; /* 0: not backing off */
    /* stop */
    int stopping;
    int64_t stop_deadline;
    fs_server_stats st;
};

static int64_t default_clock(void *arg)
{
    (void)arg;
    return fs_now_ns();
}

/* a + b for a deadline (b >= 0): saturates at INT64_MAX ("never") instead of overflowing. */
static inline int64_t deadline_after(int64_t a, int64_t b)
{
    if (b <= 0)
        return a;
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static inline fs_conn *slot_conn(const fs_server *s, uint32_t slot)
{
    FS_ASSERT((slot >> CHUNK_SHIFT) < s->nchunks);
    return &s->chunks[slot >> CHUNK_SHIFT][slot & (CHUNK_SLOTS - 1)];
}

static inline uint64_t conn_tag(const fs_conn *c)
{
    return ((uint64_t)c->gen << 32) | c->slot;
}

static inline int is_live(const fs_conn *c)
{
    return c->state == ST_OPEN || c->state == ST_CLOSING || c->state == ST_HALF;
}

static inline int framed(const fs_server *s)
{
    return s->cfg.framing.kind != 0;
}

/* -- buffer blocks --------------------------------------------------------------------- */

static int buf_ensure(fs_server *s, fs_buffer *b)
{
    if (b->data != NULL)
        return 0;
    char *p = s->npool ? s->pool[--s->npool] : malloc(s->block);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = s->block;
    b->head = b->tail = 0;
    return 0;
}

/* Room for `n` more bytes in c's output queue (allocated first if needed). Below half the
 * high-water mark the queue's capacity doubles as usual; from there to twice the mark it
 * grows only to what is queued (at least high_water), rounded up to a step, so a
 * connection whose peer never reads holds at most high_water + its last replies, not twice
 * that; past twice the mark (one turn queued that much) it doubles again, so a turn that
 * queues up to write_limit in small pieces copies O(n) bytes, not O(n^2 / block). */
static int out_reserve(fs_server *s, fs_conn *c, size_t n)
{
    if (buf_ensure(s, &c->out) != 0)
        return -ENOMEM;
    if (fs_buffer_room(&c->out) >= n)
        return 0;
    size_t held = fs_buffer_len(&c->out);
    size_t limit = SIZE_MAX;
    if (n <= SIZE_MAX - held && held + n > s->cfg.high_water / 2 &&
        held + n <= s->cfg.high_water + s->cfg.high_water) { /* high_water <= write_limit: no overflow */
        size_t need = held + n > s->cfg.high_water ? held + n : s->cfg.high_water;
        /* rounded up to a step of max(block, high_water / 16): at most 24 regrowths here */
        size_t step = s->block > s->cfg.high_water / 16 ? s->block : s->cfg.high_water / 16;
        limit = need + (step - need % step) % step; /* write_limit << SIZE_MAX */
    }
    long room = fs_buffer_reserve(&c->out, n, limit);
    return (room < 0 || (size_t)room < n) ? -ENOMEM : 0;
}

static void buf_release(fs_server *s, fs_buffer *b)
{
    if (b->data == NULL)
        return;
    if (b->cap == s->block && s->npool < POOL_MAX)
        s->pool[s->npool++] = b->data;
    else
        free(b->data);
    fs_buffer_init(b);
}

/* -- lists ----------------------------------------------------------------------------- */

static void timer_off(fs_server *s, fs_conn *c, int k)
{
    tnode *n = &c->t[k];
    if (!n->on)
        return;
    tlist *l = &s->timers[k];
    if (n->prev)
        n->prev->t[k].next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->t[k].prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
    n->on = 0;
}

/* (Re)arm timer k at now + its timeout: to the tail, which keeps the list sorted. */
static void timer_arm(fs_server *s, fs_conn *c, int k)
{
    tlist *l = &s->timers[k];
    if (l->timeout == 0)
        return;
    timer_off(s, c, k);
    tnode *n = &c->t[k];
    n->at = deadline_after(s->now, l->timeout);
    FS_ASSERT(l->tail == NULL || l->tail->t[k].at <= n->at);
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail)
        l->tail->t[k].next = c;
    else
        l->head = c;
    l->tail = c;
    n->on = 1;
}

/* Publish what other threads may read of c (after any change of its state, flags, fd or
 * output queue; the loop's thread only). */
static void publish(fs_conn *c)
{
    uint32_t st = 0;
    if (c->state != ST_OPEN)
        st |= FS_CONN_CLOSING;
    if (c->flags & F_PAUSED)
        st |= FS_CONN_PAUSED;
    if (c->flags & F_BP)
        st |= FS_CONN_BACKPRESSURE;
    PUB_STORE(c->pub_state, st);
    PUB_STORE(c->pub_fd, c->fd);
    PUB_STORE(c->pub_pending, fs_buffer_len(&c->out));
}

static void touch(fs_server *s, fs_conn *c)
{
    if ((c->flags & F_TOUCHED) || !is_live(c))
        return;
    c->flags |= F_TOUCHED;
    c->touched_next = s->touched;
    s->touched = c;
}

static void ready_add(fs_server *s, fs_conn *c)
{
    if ((c->flags & F_READY) || c->state != ST_OPEN)
        return;
    c->flags |= F_READY;
    c->ready_next = s->ready;
    s->ready = c;
    s->nready++;
}

/* -- events ---------------------------------------------------------------------------- */

static int ev_reserve(fs_server *s, size_t need)
{
    if (s->evcap - s->nevents >= need)
        return 0;
    size_t cap = s->evcap ? s->evcap : 64;
    while (cap - s->nevents < need)
        cap *= 2;
    fs_server_event *e = realloc(s->events, cap * sizeof *e);
    if (e == NULL)
        return -ENOMEM;
    s->events = e;
    s->evcap = cap;
    return 0;
}

static inline size_t ev_room(const fs_server *s)
{
    return s->evcap - s->nevents;
}

static fs_server_event *emit(fs_server *s, int type, fs_conn *c)
{
    /* Every producer is bounded so that fs_server_run_once's reservation holds (each epoll
     * event emits one event at most, accept() calls are counted in ACCEPT_BUDGET, closes
     * are reported while there is room); should a bound ever fail, the array grows, and
     * without memory the event is lost rather than written past the array's end. */
    FS_ASSERT(s->nevents < s->evcap);
    if (s->nevents >= s->evcap && ev_reserve(s, 1) != 0)
        return memset(&s->spare, 0, sizeof s->spare);
    fs_server_event *e = &s->events[s->nevents++];
    memset(e, 0, sizeof *e);
    e->type = type;
    e->conn = c;
    e->listener = -1;
    return e;
}

static void emit_data(fs_server *s, fs_conn *c)
{
    if (c->data_turn == s->turn)
        return;
    c->data_turn = s->turn;
    emit(s, FS_EV_DATA, c);
}

/* -- listeners ------------------------------------------------------------------------- */

static void listeners_update(fs_server *s)
{
    int want = !s->stopping && s->backoff_until == 0 &&
               (s->cfg.max_connections == 0 || s->nconns < s->cfg.max_connections);
    for (size_t i = 0; i < s->nls; i++) {
        fs_listener *l = &s->ls[i];
        if (!l->active || l->enabled == want)
            continue;
        struct epoll_event ev = {.events = want ? EPOLLIN : 0, .data.u64 = TAG_SPECIAL | i};
        if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
            l->enabled = (uint8_t)want;
    }
}

/* -- closing --------------------------------------------------------------------------- */

/* A reason the caller reports as an exception (not None). */
static int reason_is_error(int reason, uint64_t size)
{
    switch (reason) {
    case FS_CLOSE_EOF:
        return size > 0;
    case FS_CLOSE_ERROR:
    case FS_CLOSE_IDLE:
    case FS_CLOSE_FRAME_TIMEOUT:
    case FS_CLOSE_TOO_LARGE:
    case FS_CLOSE_TOO_MANY_ARGS:
    case FS_CLOSE_BUFFER_FULL:
    case FS_CLOSE_MALFORMED:
        return 1;
    default:
        return 0;
    }
}

static void do_close(fs_server *s, fs_conn *c, int reason, int err, uint64_t size)
{
    FS_ASSERT(is_live(c));
    if (c->state == ST_CLOSING) {
        /* The first reason wins; only the end of a stop's grace overrides an orderly one. */
        if (reason != FS_CLOSE_STOP_TIMEOUT || reason_is_error(c->reason, c->size)) {
            reason = c->reason;
            err = c->err;
            size = c->size;
        }
    }
    if (reason == FS_CLOSE_LOCAL || reason == FS_CLOSE_TOO_LARGE || reason == FS_CLOSE_TOO_MANY_ARGS ||
        reason == FS_CLOSE_BUFFER_FULL || reason == FS_CLOSE_MALFORMED || reason == FS_CLOSE_FRAME_TIMEOUT) {
        /* Read what the peer sent and we never will use: closing a socket with unread input
         * makes the kernel reset the connection, and a reset can destroy replies the peer
         * has not read yet. */
        for (int i = 0; i < DISCARD_READS; i++)
            if (recv(c->fd, s->discard, DISCARD_SIZE, MSG_DONTWAIT) <= 0)
                break;
    }
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL); /* a dup of the fd elsewhere keeps it in the set */
    close(c->fd);
    c->fd = -1;
    c->mask = 0;
    timer_off(s, c, T_IDLE);
    timer_off(s, c, T_FRAME);
    if (!(reason == FS_CLOSE_EOF && size > 0))
        buf_release(s, &c->in); /* else the incomplete frame stays readable for the report */
    buf_release(s, &c->out);
    c->resume = 0;
    if (c->flags & F_BP)
        STAT_SUB(s, paused, 1);
    c->flags &= F_KEEP_ON_CLOSE;
    c->state = ST_CLOSED;
    c->reason = reason;
    c->err = err;
    c->size = size;
    publish(c);
    c->list_next = NULL;
    if (s->closed_tail)
        s->closed_tail->list_next = c;
    else
        s->closed_head = c;
    s->closed_tail = c;
    s->nclosed++;
    FS_ASSERT(s->nconns > 0);
    s->nconns--;
    STAT_SET(s, connections, s->nconns);
    STAT_ADD(s, closed, 1);
    if (s->cfg.max_connections && s->nconns + 1 == s->cfg.max_connections)
        listeners_update(s);
}

/* Close once the queued output is sent (the flush does it). */
static void begin_close(fs_server *s, fs_conn *c, int reason, int err, uint64_t size)
{
    if (c->state != ST_OPEN)
        return;
    c->state = ST_CLOSING;
    c->reason = reason;
    c->err = err;
    c->size = size;
    timer_off(s, c, T_FRAME);
    touch(s, c);
    publish(c);
}

static void begin_abort(fs_server *s, fs_conn *c, int reason, int err)
{
    if (!is_live(c) || (c->flags & F_ABORT))
        return;
    if (c->state != ST_CLOSING) { /* else the first reason stays */
        c->reason = reason;
        c->err = err;
        c->size = 0;
    }
    timer_off(s, c, T_FRAME);
    c->state = ST_CLOSING;
    c->flags |= F_ABORT;
    touch(s, c);
    publish(c);
}

/* A pending socket error (or a full hang-up) on a connection that is not reading. */
static void close_on_error(fs_server *s, fs_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0 && fs_buffer_len(&c->out) > 0 && !(c->flags & F_ABORT))
        err = EPIPE; /* hung up with our output unsent */
    if (err)
        do_close(s, c, FS_CLOSE_ERROR, err, 0);
    else if (c->flags & F_ABORT)
        do_close(s, c, c->reason, c->err, 0);
    else if (c->state == ST_CLOSING)
        do_close(s, c, c->reason, c->err, c->size);
    else
        do_close(s, c, c->state == ST_HALF ? FS_CLOSE_STOP : FS_CLOSE_EOF, 0, fs_buffer_len(&c->in));
}

/* -- reading --------------------------------------------------------------------------- */

static int has_frame(fs_server *s, fs_conn *c)
{
    size_t held = fs_buffer_len(&c->in);
    if (!framed(s) || held == 0)
        return 0;
    fs_frame fr;
    fr.resume = c->resume;
    int rc = fs_frame_scan(&s->cfg.framing, fs_buffer_start(&c->in), held, &fr);
    if (rc == FS_FRAME_PARTIAL) {
        c->resume = fr.resume;
        c->need = fr.total;
    }
    return rc == FS_FRAME_OK;
}

/* reason: FS_CLOSE_TOO_LARGE (above max_size), FS_CLOSE_TOO_MANY_ARGS (above a RESP
 * max_args) or FS_CLOSE_BUFFER_FULL (above max_buffer) */
static void frame_too_large(fs_server *s, fs_conn *c, int reason, uint64_t size)
{
    STAT_ADD(s, errors, 1);
    begin_close(s, c, reason, 0, size);
}

/* A frame the framing refuses: begin the close now, or (defer) remember it for
 * fs_conn_refuse_pending, so that a batch's replies are queued before the close begins. */
static void refuse(fs_server *s, fs_conn *c, int reason, uint64_t size, int defer)
{
    if (defer) {
        c->flags |= F_REFUSED;
        c->refused_reason = reason;
        c->refused_size = size;
        return;
    }
    if (reason == FS_CLOSE_MALFORMED) {
        STAT_ADD(s, errors, 1);
        begin_close(s, c, FS_CLOSE_MALFORMED, 0, 0);
    } else {
        frame_too_large(s, c, reason, size);
    }
}

/* One recv into an OPEN connection's buffer. sweep: a graceful stop's read-until-would-block,
 * which also reads while the caller paused the connection. */
static void conn_read(fs_server *s, fs_conn *c, int sweep)
{
    if (buf_ensure(s, &c->in) != 0) {
        do_close(s, c, FS_CLOSE_ERROR, ENOMEM, 0);
        return;
    }
    size_t held = fs_buffer_len(&c->in);
    size_t want = s->cfg.read_size;
    /* Held bytes (a partial frame) do not make the buffer grow while half a read still fits. */
    if (held && held + want > c->in.cap && held + (want + 1) / 2 <= c->in.cap) /* want stays >= 1 */
        want = c->in.cap - held;
    long room = fs_buffer_reserve(&c->in, want, s->cfg.max_buffer);
    if (room < 0) {
        do_close(s, c, FS_CLOSE_ERROR, ENOMEM, 0);
        return;
    }
    size_t bound = held < s->cfg.max_buffer ? s->cfg.max_buffer - held : 0; /* the block may be larger */
    if ((size_t)room > bound)
        room = (long)bound;
    if (room == 0) {
        if (has_frame(s, c)) { /* full of frames not delivered yet: deliver first */
            emit_data(s, c);
            touch(s, c);
        } else {
            frame_too_large(s, c, FS_CLOSE_BUFFER_FULL, held > c->need ? held : c->need);
        }
        return;
    }
    size_t ask = (size_t)room < s->cfg.read_size ? (size_t)room : s->cfg.read_size;
    ssize_t n;
    do
        n = recv(c->fd, fs_buffer_end(&c->in), ask, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        fs_buffer_commit(&c->in, (size_t)n);
        STAT_ADD(s, bytes_in, (uint64_t)n);
        timer_arm(s, c, T_IDLE);
        if (sweep && ++c->sweeps >= SWEEP_READS)
            c->flags &= ~F_SWEEP; /* a peer sending as fast as we read cannot hold the stop */
        emit_data(s, c);
        touch(s, c);
        return;
    }
    if (n == 0) {
        c->flags |= F_EOF;
        c->flags &= ~F_SWEEP;
        touch(s, c);
        return;
    }
    if (FS_IS_WOULDBLOCK(errno)) {
        if (sweep) {
            c->flags &= ~F_SWEEP;
            touch(s, c);
        }
        if (held == 0)
            buf_release(s, &c->in);
        return;
    }
    do_close(s, c, FS_CLOSE_ERROR, errno, 0);
}

/* Graceful stop, after the half-close: read and discard until EOF. */
static void conn_discard(fs_server *s, fs_conn *c)
{
    for (int i = 0; i < DISCARD_READS; i++) {
        ssize_t n = recv(c->fd, s->discard, DISCARD_SIZE, MSG_DONTWAIT);
        if (n > 0) {
            STAT_ADD(s, bytes_in, (uint64_t)n);
            timer_arm(s, c, T_IDLE);
            continue;
        }
        if (n == 0) {
            do_close(s, c, FS_CLOSE_STOP, 0, 0);
            return;
        }
        if (errno == EINTR)
            continue;
        if (!FS_IS_WOULDBLOCK(errno))
            do_close(s, c, FS_CLOSE_ERROR, errno, 0);
        return;
    }
}

/* -- flushing -------------------------------------------------------------------------- */

static void set_mask(fs_server *s, fs_conn *c)
{
    uint32_t want = 0;
    if (c->state == ST_OPEN && !(c->flags & (F_PAUSED | F_BP | F_EOF)) && !s->stopping)
        want |= EPOLLIN;
    else if (c->state == ST_HALF)
        want |= EPOLLIN;
    if (fs_buffer_len(&c->out) > 0)
        want |= EPOLLOUT;
    if (want == c->mask)
        return;
    struct epoll_event ev = {.events = want, .data.u64 = conn_tag(c)};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->mask = want;
    else
        do_close(s, c, FS_CLOSE_ERROR, errno, 0);
}

/* An OPEN connection after its send: input memory, frame timer, EOF, graceful stop. */
static void settle_open(fs_server *s, fs_conn *c, size_t pending)
{
    size_t held = fs_buffer_len(&c->in);
    int paused = (c->flags & (F_PAUSED | F_BP)) != 0;
    int frame = 0; /* a complete frame is held */
    if (held == 0) {
        timer_off(s, c, T_FRAME);
        buf_release(s, &c->in);
        c->resume = 0;
    } else {
        frame = has_frame(s, c);
        if (!framed(s) && held >= s->cfg.max_buffer && !paused) {
            frame_too_large(s, c, FS_CLOSE_BUFFER_FULL, held); /* the handler cannot consume a full buffer */
            return;
        }
        if (paused || frame) {
            timer_off(s, c, T_FRAME); /* runs only while the connection is read */
        } else if (!c->t[T_FRAME].on || c->consumed >= c->old_held) {
            timer_arm(s, c, T_FRAME); /* what is held began in this turn's bytes */
        }
        if (frame && !paused)
            ready_add(s, c); /* held frames not delivered (a handler stopped early) */
    }
    c->old_held = held;
    c->consumed = 0;
    if ((c->flags & F_SWEEP) && !paused)
        ready_add(s, c);
    if (c->flags & F_EOF) {
        if (frame)
            return; /* deliver (or hold, while paused) first */
        if (held && framed(s))
            has_frame(s, c); /* sets need: the incomplete frame's size, when known */
        else
            c->need = 0;
        begin_close(s, c, FS_CLOSE_EOF, 0, held);
        if (pending == 0)
            do_close(s, c, FS_CLOSE_EOF, 0, held);
        return;
    }
    if (s->stopping && !(c->flags & F_SWEEP) && !frame && pending == 0) {
        /* everything received was answered and flushed: half-close, then wait for EOF */
        shutdown(c->fd, SHUT_WR);
        c->state = ST_HALF;
        timer_off(s, c, T_FRAME);
        buf_release(s, &c->in);
        c->resume = 0;
    }
}

static void flush_conn(fs_server *s, fs_conn *c)
{
    if (!is_live(c))
        return;
    if (c->flags & F_ABORT) {
        do_close(s, c, c->reason, c->err, 0);
        return;
    }
    size_t pending = fs_buffer_len(&c->out);
    if (pending) {
        ssize_t n;
        do {
            n = send(c->fd, fs_buffer_start(&c->out), pending, MSG_NOSIGNAL | MSG_DONTWAIT);
            STAT_ADD(s, writes, 1);
        } while (n < 0 && errno == EINTR);
        if (n > 0) {
            FS_ASSERT((size_t)n <= pending);
            fs_buffer_consume(&c->out, (size_t)n);
            STAT_ADD(s, bytes_out, (uint64_t)n);
            pending -= (size_t)n;
            timer_arm(s, c, T_IDLE);
        } else if (n < 0 && !FS_IS_WOULDBLOCK(errno)) {
            do_close(s, c, FS_CLOSE_ERROR, errno, 0);
            return;
        }
    }
    if (pending == 0)
        buf_release(s, &c->out);
    if ((c->flags & F_BP) && pending <= s->cfg.low_water) {
        c->flags &= ~F_BP;
        STAT_SUB(s, paused, 1);
        if (c->state == ST_OPEN && !(c->flags & F_PAUSED) && fs_buffer_len(&c->in))
            ready_add(s, c);
    }
    if (c->state == ST_CLOSING) {
        if (pending == 0) {
            do_close(s, c, c->reason, c->err, c->size);
            return;
        }
    } else if (c->state == ST_OPEN) {
        settle_open(s, c, pending);
        if (!is_live(c))
            return;
        if (c->state == ST_CLOSING && pending == 0) {
            do_close(s, c, c->reason, c->err, c->size);
            return;
        }
    }
    set_mask(s, c);
}

void fs_server_flush(fs_server *s)
{
    while (s->touched) {
        fs_conn *c = s->touched;
        s->touched = c->touched_next;
        c->touched_next = NULL;
        c->flags &= ~F_TOUCHED;
        flush_conn(s, c);
        if (c->state != ST_CLOSED) /* do_close published the closed state */
            publish(c);
    }
}

/* -- slots ----------------------------------------------------------------------------- */

static fs_conn *slot_alloc(fs_server *s)
{
    if (s->free_list == NULL) {
        if ((s->nchunks + 1) > (UINT32_MAX >> CHUNK_SHIFT))
            return NULL;
        fs_conn **chunks = realloc(s->chunks, (s->nchunks + 1) * sizeof *chunks);
        if (chunks == NULL)
            return NULL;
        s->chunks = chunks;
        fs_conn *chunk = calloc(CHUNK_SLOTS, sizeof *chunk);
        if (chunk == NULL)
            return NULL;
        s->chunks[s->nchunks] = chunk;
        for (uint32_t i = CHUNK_SLOTS; i-- > 0;) { /* lowest slot first out */
            fs_conn *c = &chunk[i];
            c->fd = -1;
            c->slot = (uint32_t)(s->nchunks << CHUNK_SHIFT) + i;
            c->gen = 1;
            c->state = ST_FREE;
            fs_buffer_init(&c->in);
            fs_buffer_init(&c->out);
            c->list_next = s->free_list;
            s->free_list = c;
        }
        s->nchunks++;
    }
    fs_conn *c = s->free_list;
    s->free_list = c->list_next;
    c->list_next = NULL;
    return c;
}

static void slot_unalloc(fs_server *s, fs_conn *c)
{
    c->list_next = s->free_list;
    s->free_list = c;
}

static void slot_free(fs_server *s, fs_conn *c)
{
    FS_ASSERT(c->state == ST_CLOSED);
    FS_ASSERT(!(c->flags & (F_TOUCHED | F_READY)));
    buf_release(s, &c->in); /* an incomplete frame kept for the CLOSED report */
    c->state = ST_FREE;
    c->user = NULL;
    c->flags = 0;
    c->gen = (c->gen + 1) & GEN_MASK;
    if (c->gen == 0)
        c->gen = 1;
    slot_unalloc(s, c);
}

/* -- accepting ------------------------------------------------------------------------- */

static int conn_open(fs_server *s, fs_conn *c, int fd, socklen_t peer_len, int index)
{
    fs_listener *l = &s->ls[index];
    c->fd = fd;
    c->peer_len = peer_len;
    /* The local address now, on the loop's thread: other threads read both addresses while
     * the loop runs, so nothing fills them in later. */
    if (l->fixed) {
        memcpy(&c->sock, &l->addr, l->addr_len);
        c->sock_len = l->addr_len;
    } else {
        socklen_t len = sizeof c->sock;
        c->sock_len = getsockname(fd, (struct sockaddr *)&c->sock, &len) == 0 ? len : 0;
    }
    c->flags = l->tcp ? F_TCP : 0;
    c->state = ST_OPEN;
    c->reason = c->err = 0;
    c->size = c->need = 0;
    c->sweeps = 0;
    c->old_held = c->consumed = 0;
    c->resume = 0;
    c->user = NULL;
    c->data_turn = 0;
    c->touched_next = c->ready_next = c->list_next = NULL;
    memset(c->t, 0, sizeof c->t);
    if (l->tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = conn_tag(c)};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    c->mask = EPOLLIN;
    publish(c);
    s->nconns++;
    STAT_SET(s, connections, s->nconns);
    STAT_ADD(s, accepted, 1);
    timer_arm(s, c, T_IDLE);
    fs_server_event *e = emit(s, FS_EV_ACCEPTED, c);
    e->listener = index;
    return 0;
}

static int transient_accept_error(int e)
{
    /* Linux's accept passes pending network errors of the new connection on: retry. */
    return e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM || e == ENETDOWN ||
           e == ENOPROTOOPT || e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH ||
           e == EOPNOTSUPP || e == ENETUNREACH || e == ETIMEDOUT;
}

static void accept_from(fs_server *s, int index)
{
    fs_listener *l = &s->ls[index];
    if (!l->active || !l->enabled)
        return;
    while (s->accepts < ACCEPT_BUDGET && ev_room(s) >= 2) {
        if (s->cfg.max_connections && s->nconns >= s->cfg.max_connections)
            break;
        fs_conn *c = slot_alloc(s);
        int fd = -1, e = ENOMEM;
        socklen_t len = sizeof c->peer;
        if (c != NULL) {
            fd = accept4(l->fd, (struct sockaddr *)&c->peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            e = errno;
        }
        if (fd < 0) {
            if (c != NULL)
                slot_unalloc(s, c);
            if (c != NULL && FS_IS_WOULDBLOCK(e))
                break;
            s->accepts++; /* a failed accept() counts: its event takes room like a success */
            fs_server_event *ev = emit(s, FS_EV_ACCEPT_ERROR, NULL);
            ev->err = e;
            ev->listener = index;
            if (c != NULL && transient_accept_error(e)) {
                ev->size = 1; /* transient: this connection only, accepting goes on ... */
                if (++s->transient_run >= TRANSIENT_RUN)
                    break; /* ... but not this turn after so many in a row (the caller may rest) */
                continue;
            }
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or a broken listener: rest, never spin */
            fs_server_accept_backoff(s, ACCEPT_BACKOFF_NS);
            return;
        }
        s->accepts++;
        s->transient_run = 0;
        int rc = conn_open(s, c, fd, len, index);
        if (rc != 0) {
            close(fd);
            c->state = ST_FREE;
            slot_unalloc(s, c);
        }
    }
    listeners_update(s);
}

/* -- the turn -------------------------------------------------------------------------- */

static int wait_ms(fs_server *s, int timeout_ms)
{
    if (s->nready || s->nclosed || s->nevents)
        return 0;
    int64_t next = INT64_MAX;
    for (int k = 0; k < 2; k++)
        if (s->timers[k].head && s->timers[k].head->t[k].at < next)
            next = s->timers[k].head->t[k].at;
    if (s->backoff_until && s->backoff_until < next)
        next = s->backoff_until;
    if (s->stopping && s->stop_deadline < next)
        next = s->stop_deadline;
    if (next == INT64_MAX)
        return timeout_ms;
    int64_t left = next - s->now;
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000; /* round up: never wake early and spin */
    if (ms > INT_MAX)
        ms = INT_MAX;
    if (timeout_ms >= 0 && timeout_ms < ms)
        return timeout_ms;
    return (int)ms;
}

static void on_conn_event(fs_server *s, fs_conn *c, uint32_t e)
{
    switch (c->state) {
    case ST_OPEN:
        if ((c->mask & EPOLLIN) && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
            conn_read(s, c, 0);
        else if (e & (EPOLLERR | EPOLLHUP))
            close_on_error(s, c);
        break;
    case ST_HALF:
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_discard(s, c);
        break;
    case ST_CLOSING:
        if (e & (EPOLLERR | EPOLLHUP))
            close_on_error(s, c);
        break;
    default:
        return;
    }
    if (is_live(c) && (e & EPOLLOUT))
        touch(s, c); /* the flush sends the rest */
}

static void on_event(fs_server *s, const struct epoll_event *ev)
{
    uint64_t tag = ev->data.u64;
    if (tag & TAG_SPECIAL) {
        if (tag == TAG_WAKE) {
            uint64_t v;
            while (read(s->wakefd, &v, sizeof v) < 0 && errno == EINTR) {
            }
            if (!s->woke) {
                s->woke = 1;
                emit(s, FS_EV_WAKEUP, NULL);
            }
            return;
        }
        if ((tag & ~(uint64_t)(FS_SERVER_WATCH_SLOTS - 1)) == TAG_WATCH) {
            fs_server_event *e = emit(s, FS_EV_WATCH, NULL);
            e->listener = (int)(tag & (FS_SERVER_WATCH_SLOTS - 1));
            return;
        }
        size_t index = (size_t)(tag & 0xffffffffu);
        if (index < s->nls)
            accept_from(s, (int)index);
        return;
    }
    uint32_t slot = (uint32_t)(tag & 0xffffffffu);
    if ((slot >> CHUNK_SHIFT) >= s->nchunks)
        return;
    fs_conn *c = slot_conn(s, slot);
    if (c->gen != (uint32_t)(tag >> 32))
        return;
    on_conn_event(s, c, ev->events);
}

static void run_ready(fs_server *s)
{
    while (s->ready) {
        fs_conn *c = s->ready;
        s->ready = c->ready_next;
        c->ready_next = NULL;
        c->flags &= ~F_READY;
        s->nready--;
        if (c->state != ST_OPEN || (c->flags & (F_PAUSED | F_BP)))
            continue;
        if (c->flags & F_SWEEP) {
            conn_read(s, c, 1);
            if (c->state == ST_OPEN && fs_buffer_len(&c->in)) {
                emit_data(s, c); /* held bytes are delivered even if this read found none */
                touch(s, c);
            }
        } else if (fs_buffer_len(&c->in)) {
            emit_data(s, c);
            touch(s, c);
        }
    }
    FS_ASSERT(s->nready == 0);
}

static void expire(fs_server *s)
{
    tlist *idle = &s->timers[T_IDLE], *frame = &s->timers[T_FRAME];
    while (idle->head && idle->head->t[T_IDLE].at <= s->now) {
        STAT_ADD(s, timeouts, 1);
        do_close(s, idle->head, FS_CLOSE_IDLE, 0, 0); /* queued output is dropped */
    }
    while (frame->head && frame->head->t[T_FRAME].at <= s->now) {
        fs_conn *c = frame->head;
        timer_off(s, c, T_FRAME);
        if (c->state != ST_OPEN)
            continue;
        STAT_ADD(s, timeouts, 1);
        begin_close(s, c, FS_CLOSE_FRAME_TIMEOUT, 0, fs_buffer_len(&c->in)); /* replies flushed first */
    }
    if (s->backoff_until && s->now >= s->backoff_until) {
        s->backoff_until = 0;
        listeners_update(s);
    }
    if (s->stopping && s->now >= s->stop_deadline && s->nconns) {
        for (size_t i = 0; i < s->nchunks; i++)
            for (uint32_t j = 0; j < CHUNK_SLOTS; j++) {
                fs_conn *c = &s->chunks[i][j];
                if (is_live(c)) /* a half-closed one had every reply delivered: orderly */
                    do_close(s, c, c->state == ST_HALF ? FS_CLOSE_STOP : FS_CLOSE_STOP_TIMEOUT, 0, 0);
            }
    }
}

static void report_closed(fs_server *s)
{
    while (s->closed_head && ev_room(s) > 0) {
        fs_conn *c = s->closed_head;
        s->closed_head = c->list_next;
        if (s->closed_head == NULL)
            s->closed_tail = NULL;
        c->list_next = NULL;
        s->nclosed--;
        fs_server_event *e = emit(s, FS_EV_CLOSED, c);
        e->reason = c->reason;
        e->err = c->err;
        e->size = c->size;
        e->need = c->reason == FS_CLOSE_EOF ? c->need : 0;
    }
}

int fs_server_run_once(fs_server *s, int timeout_ms)
{
    /* The clock moved while the caller handled the last batch (a slow handler): what the
     * flush sends is sent now, and the idle timers it re-arms start now, not at the read. */
    s->now = s->clock(s->clock_arg);
    fs_server_flush(s);
    /* Slots reported closed in the last batch are free now: the caller is done with them.
     * (The flush above emptied the touched list; the last turn emptied the ready list, and
     * a closed connection never joins either again.) */
    for (size_t i = 0; i < s->nevents; i++)
        if (s->events[i].type == FS_EV_CLOSED)
            slot_free(s, s->events[i].conn);
    s->nevents = 0;
    s->interrupted = 0;
    s->woke = 0;
    s->accepts = 0;
    s->transient_run = 0;
    if (++s->turn == 0)
        s->turn = 1;
    if (ev_reserve(s, s->nready + s->nclosed + EPOLL_BATCH + ACCEPT_BUDGET + 2) != 0)
        return -ENOMEM;
    s->now = s->clock(s->clock_arg);
    int n = epoll_wait(s->epfd, s->raw, EPOLL_BATCH, wait_ms(s, timeout_ms));
    if (n < 0) {
        if (errno == EINTR)
            s->interrupted = 1;
        n = 0;
    }
    s->now = s->clock(s->clock_arg);
    for (int i = 0; i < n; i++)
        on_event(s, &s->raw[i]);
    run_ready(s);
    expire(s);
    report_closed(s);
    return (int)s->nevents;
}

/* -- the server ------------------------------------------------------------------------ */

static int config_ok(const fs_server_config *c)
{
    if (c->read_size < 1 || c->max_buffer < c->read_size || c->low_water > c->high_water ||
        c->high_water > c->write_limit || c->idle_timeout_ns < 0 || c->frame_timeout_ns < 0)
        return 0;
    if (c->framing.kind != 0 && fs_framing_check(&c->framing) != 0)
        return 0;
    return 1;
}

int fs_server_new(fs_server **out, const fs_server_config *cfg)
{
    *out = NULL;
    if (!config_ok(cfg))
        return -EINVAL;
    fs_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->cfg = *cfg;
    s->epfd = s->wakefd = -1;
    for (int i = 0; i < FS_SERVER_WATCH_SLOTS; i++)
        s->watched[i] = -1;
    s->clock = default_clock;
    s->block = cfg->read_size > MIN_BLOCK ? cfg->read_size : MIN_BLOCK;
    s->timers[T_IDLE].timeout = cfg->idle_timeout_ns;
    s->timers[T_FRAME].timeout = cfg->frame_timeout_ns;
    int rc = -ENOMEM;
    s->discard = malloc(DISCARD_SIZE);
    if (s->discard == NULL || ev_reserve(s, EPOLL_BATCH + ACCEPT_BUDGET + 2) != 0)
        goto fail;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        rc = -errno;
        goto fail;
    }
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wakefd < 0) {
        rc = -errno;
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) != 0) {
        rc = -errno;
        goto fail;
    }
    s->now = s->clock(s->clock_arg);
    *out = s;
    return 0;
fail:
    fs_server_free(s);
    return rc;
}

void fs_server_free(fs_server *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nchunks; i++) {
        for (uint32_t j = 0; j < CHUNK_SLOTS; j++) {
            fs_conn *c = &s->chunks[i][j];
            if (c->fd >= 0)
                close(c->fd);
            fs_buffer_free(&c->in);
            fs_buffer_free(&c->out);
        }
        free(s->chunks[i]);
    }
    free(s->chunks);
    for (size_t i = 0; i < s->npool; i++)
        free(s->pool[i]);
    free(s->events);
    free(s->ls);
    free(s->discard);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    free(s);
}

/* Read l's address; 1 if every socket it accepts has that local address (AF_UNIX; IPv4 or
 * IPv6 bound to one address, not transparent), so that accepting needs no getsockname. */
static int listener_address(fs_listener *l)
{
    socklen_t len = sizeof l->addr;
    if (getsockname(l->fd, (struct sockaddr *)&l->addr, &len) != 0 || len > sizeof l->addr)
        return 0;
    l->addr_len = len;
    int on = 0;
    socklen_t olen = sizeof on;
    switch (l->addr.ss_family) {
    case AF_UNIX:
        return 1;
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&l->addr;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            return 0;
        return getsockopt(l->fd, IPPROTO_IP, IP_TRANSPARENT, &on, &olen) == 0 && !on;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&l->addr;
        if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) || IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
            return 0;
        return getsockopt(l->fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &on, &olen) == 0 && !on;
    }
    default:
        return 0;
    }
}

int fs_server_add_listener(fs_server *s, int fd, int tcp)
{
    if (fd < 0)
        return -EBADF;
    size_t i;
    for (i = 0; i < s->nls && s->ls[i].active; i++) {
    }
    if (i == s->nls) {
        if (s->nls == s->lscap) {
            size_t cap = s->lscap ? s->lscap * 2 : 4;
            fs_listener *ls = realloc(s->ls, cap * sizeof *ls);
            if (ls == NULL)
                return -ENOMEM;
            s->ls = ls;
            s->lscap = cap;
        }
        s->nls++;
    }
    fs_listener *l = &s->ls[i];
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_SPECIAL | i};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int rc = -errno;
        if (i == s->nls - 1)
            s->nls--;
        return rc;
    }
    l->fd = fd;
    l->active = 1;
    l->tcp = tcp ? 1 : 0;
    l->enabled = 1;
    l->fixed = listener_address(l);
    s->nactive++;
    listeners_update(s);
    return (int)i;
}

int fs_server_remove_listener(fs_server *s, int index)
{
    if (index < 0 || (size_t)index >= s->nls || !s->ls[index].active)
        return -ENOENT;
    fs_listener *l = &s->ls[index];
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    l->active = 0;
    l->enabled = 0;
    l->fd = -1;
    s->nactive--;
    return 0;
}

size_t fs_server_listeners(const fs_server *s)
{
    return s->nactive;
}

const fs_server_event *fs_server_events(const fs_server *s)
{
    return s->events;
}

int fs_server_interrupted(const fs_server *s)
{
    return s->interrupted;
}

int fs_server_wakeup(fs_server *s)
{
    uint64_t one = 1;
    for (;;) {
        if (write(s->wakefd, &one, sizeof one) == (ssize_t)sizeof one)
            return 0;
        if (errno == EINTR)
            continue;
        return FS_IS_WOULDBLOCK(errno) ? 0 : -errno; /* the counter is full: a wake-up is due anyway */
    }
}

int fs_server_watch_fd(fs_server *s, int slot, int fd)
{
    if (slot < 0 || slot >= FS_SERVER_WATCH_SLOTS)
        return -EINVAL;
    if (s->watched[slot] >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->watched[slot], NULL);
        s->watched[slot] = -1;
    }
    if (fd < 0)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WATCH | (uint64_t)slot};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    s->watched[slot] = fd;
    return 0;
}

void fs_server_accept_backoff(fs_server *s, int64_t ns)
{
    s->now = s->clock(s->clock_arg);
    s->backoff_until = deadline_after(s->now, ns > 0 ? ns : 1);
    if (s->backoff_until == 0)
        s->backoff_until = 1;
    listeners_update(s);
}

static void for_each_live(fs_server *s, void (*fn)(fs_server *, fs_conn *))
{
    for (size_t i = 0; i < s->nchunks; i++)
        for (uint32_t j = 0; j < CHUNK_SLOTS; j++)
            if (is_live(&s->chunks[i][j]))
                fn(s, &s->chunks[i][j]);
}

static void start_sweep(fs_server *s, fs_conn *c)
{
    if (c->state != ST_OPEN)
        return;
    if (!(c->flags & F_EOF))
        c->flags |= F_SWEEP;
    ready_add(s, c);
    touch(s, c);
}

void fs_server_stop(fs_server *s, int64_t grace_ns)
{
    s->now = s->clock(s->clock_arg);
    int64_t deadline = deadline_after(s->now, grace_ns);
    if (s->stopping) {
        if (deadline < s->stop_deadline)
            s->stop_deadline = deadline;
        return;
    }
    s->stopping = 1;
    s->stop_deadline = deadline;
    for_each_live(s, start_sweep);
    listeners_update(s);
}

int fs_server_stopping(const fs_server *s)
{
    return s->stopping;
}

int fs_server_stopped(const fs_server *s)
{
    return s->stopping && s->nconns == 0 && s->nclosed == 0;
}

void fs_server_restart(fs_server *s)
{
    s->stopping = 0;
    listeners_update(s);
}

static void abort_one(fs_server *s, fs_conn *c)
{
    do_close(s, c, FS_CLOSE_SERVER, 0, 0);
}

void fs_server_abort_all(fs_server *s)
{
    for_each_live(s, abort_one);
}

fs_server_stats *fs_server_get_stats(fs_server *s)
{
    return &s->st;
}

void fs_server_stats_get(const fs_server *s, fs_server_stats *out)
{
    out->connections = PUB_LOAD(s->st.connections);
    out->accepted = PUB_LOAD(s->st.accepted);
    out->closed = PUB_LOAD(s->st.closed);
    out->frames_in = PUB_LOAD(s->st.frames_in);
    out->frames_out = PUB_LOAD(s->st.frames_out);
    out->bytes_in = PUB_LOAD(s->st.bytes_in);
    out->bytes_out = PUB_LOAD(s->st.bytes_out);
    out->writes = PUB_LOAD(s->st.writes);
    out->paused = PUB_LOAD(s->st.paused);
    out->timeouts = PUB_LOAD(s->st.timeouts);
    out->errors = PUB_LOAD(s->st.errors);
}

void fs_server_stats_add(fs_server *s, int which, uint64_t n)
{
    switch (which) {
    case FS_STAT_FRAMES_IN:
        STAT_ADD(s, frames_in, n);
        break;
    case FS_STAT_FRAMES_OUT:
        STAT_ADD(s, frames_out, n);
        break;
    case FS_STAT_ERRORS:
        STAT_ADD(s, errors, n);
        break;
    default:
        break;
    }
}

void fs_server_set_clock(fs_server *s, int64_t (*clock)(void *arg), void *arg)
{
    s->clock = clock ? clock : default_clock;
    s->clock_arg = arg;
    s->now = s->clock(s->clock_arg);
}

/* -- connections ----------------------------------------------------------------------- */

fs_conn *fs_server_conn(fs_server *s, uint64_t id)
{
    uint32_t slot = (uint32_t)(id & 0xffffffffu);
    if ((slot >> CHUNK_SHIFT) >= s->nchunks)
        return NULL;
    fs_conn *c = slot_conn(s, slot);
    if (c->state == ST_FREE || c->gen != (uint32_t)(id >> 32))
        return NULL;
    return c;
}

uint64_t fs_conn_id(const fs_conn *c)
{
    return conn_tag(c);
}

void *fs_conn_user(const fs_conn *c)
{
    return c->user;
}

void fs_conn_set_user(fs_conn *c, void *user)
{
    c->user = user;
}

int fs_conn_fd(const fs_conn *c)
{
    return c->fd;
}

int fs_conn_closing(const fs_conn *c)
{
    return c->state != ST_OPEN;
}

size_t fs_conn_pending(const fs_conn *c)
{
    return fs_buffer_len(&c->out);
}

size_t fs_conn_buffered(const fs_conn *c)
{
    return fs_buffer_len(&c->in);
}

const struct sockaddr *fs_conn_peer(const fs_conn *c, socklen_t *len)
{
    *len = c->peer_len;
    return (const struct sockaddr *)&c->peer;
}

const struct sockaddr *fs_conn_sockname(const fs_conn *c, socklen_t *len)
{
    *len = c->sock_len;
    return (const struct sockaddr *)&c->sock;
}

int fs_conn_shared_fd(const fs_conn *c)
{
    return PUB_LOAD(c->pub_fd);
}

int fs_conn_shared_state(const fs_conn *c)
{
    return (int)PUB_LOAD(c->pub_state);
}

size_t fs_conn_shared_pending(const fs_conn *c)
{
    return PUB_LOAD(c->pub_pending);
}

/* A binary length prefix's value (the common framing, decoded here without a call). */
static inline uint64_t prefix_value(const fs_framing *f, const unsigned char *u)
{
    uint64_t v = 0;
    if (f->little) {
        for (unsigned i = f->width; i-- > 0;)
            v = (v << 8) | u[i];
    } else {
        for (unsigned i = 0; i < f->width; i++)
            v = (v << 8) | u[i];
    }
    return v;
}

static int next_frame(fs_server *s, fs_conn *c, const char **payload, size_t *len, int defer)
{
    if (c->state != ST_OPEN || (c->flags & (F_PAUSED | F_BP | F_REFUSED)))
        return 0;
    size_t held = fs_buffer_len(&c->in);
    if (held == 0)
        return 0;
    const char *p = fs_buffer_start(&c->in);
    const fs_framing *f = &s->cfg.framing;
    if (f->kind == FS_FRAMING_LENGTH && held >= f->width) { /* the fast path of a whole frame */
        uint64_t v = prefix_value(f, (const unsigned char *)p);
        if (v <= f->max_size && v <= held - f->width) {
            *payload = p + f->width;
            *len = (size_t)v;
            fs_buffer_consume(&c->in, f->width + (size_t)v); /* p stays readable: see below */
            c->need = 0;
            c->consumed += f->width + (size_t)v;
            STAT_ADD(s, frames_in, 1);
            return 1;
        }
    }
    fs_frame fr;
    fr.resume = c->resume;
    int rc = fs_frame_scan(f, p, held, &fr);
    if (rc == FS_FRAME_OK) {
        FS_ASSERT(fr.total <= held && fr.header + fr.payload <= fr.total);
        *payload = p + fr.header;
        *len = fr.payload;
        /* Consuming moves the head only (or resets it when emptied): p stays readable until
         * the next recv, which only the next fs_server_run_once makes. */
        fs_buffer_consume(&c->in, fr.total);
        c->resume = 0;
        c->need = 0;
        c->consumed += fr.total;
        STAT_ADD(s, frames_in, 1);
        return 1;
    }
    if (rc == FS_FRAME_PARTIAL) {
        c->resume = fr.resume;
        c->need = fr.total;
        if (fr.total > s->cfg.max_buffer) /* can never fit: refused before its memory exists */
            refuse(s, c, FS_CLOSE_BUFFER_FULL, fr.total, defer);
        else if (held >= s->cfg.max_buffer)
            refuse(s, c, FS_CLOSE_BUFFER_FULL, held, defer);
        return 0;
    }
    int reason = rc != FS_FRAME_TOO_LARGE ? FS_CLOSE_MALFORMED
                 : fr.over_args         ? FS_CLOSE_TOO_MANY_ARGS
                                        : FS_CLOSE_TOO_LARGE;
    refuse(s, c, reason, fr.size, defer);
    return 0;
}

int fs_conn_next_frame(fs_server *s, fs_conn *c, const char **payload, size_t *len)
{
    return next_frame(s, c, payload, len, 0);
}

int fs_conn_next_frame_deferred(fs_server *s, fs_conn *c, const char **payload, size_t *len)
{
    return next_frame(s, c, payload, len, 1);
}

void fs_conn_refuse_cancel(fs_conn *c)
{
    c->flags &= ~F_REFUSED;
}

void fs_conn_refuse_pending(fs_server *s, fs_conn *c)
{
    if (!(c->flags & F_REFUSED))
        return;
    c->flags &= ~F_REFUSED;
    if (c->state == ST_OPEN) /* else it closes already: the first reason wins */
        refuse(s, c, c->refused_reason, c->refused_size, 0);
}

size_t fs_conn_held(const fs_conn *c, const char **data)
{
    *data = fs_buffer_start(&c->in);
    return fs_buffer_len(&c->in);
}

int fs_conn_raw_data(fs_server *s, fs_conn *c, const char **data, size_t *len)
{
    (void)s;
    if (c->state != ST_OPEN || (c->flags & (F_PAUSED | F_BP)))
        return 0;
    size_t held = fs_buffer_len(&c->in);
    if (held == 0)
        return 0;
    *data = fs_buffer_start(&c->in);
    *len = held;
    return 1;
}

void fs_conn_raw_consume(fs_server *s, fs_conn *c, size_t n)
{
    size_t held = fs_buffer_len(&c->in);
    FS_ASSERT(n <= held);
    if (n > held)
        n = held;
    if (n) {
        fs_buffer_consume(&c->in, n);
        c->consumed += n;
    }
    touch(s, c);
}

char *fs_conn_raw_detach(fs_server *s, fs_conn *c)
{
    char *block = c->in.data;
    if (block == NULL)
        return NULL;
    fs_buffer fresh;
    fs_buffer_init(&fresh);
    size_t held = fs_buffer_len(&c->in);
    int rc = held ? fs_buffer_append(&fresh, fs_buffer_start(&c->in), held) : 0;
    c->in = fresh; /* the old block is the caller's now */
    if (rc != 0)
        begin_abort(s, c, FS_CLOSE_ERROR, ENOMEM);
    return block;
}

/* Output was queued: backpressure, and a place in the flush. */
static inline void queued(fs_server *s, fs_conn *c)
{
    if (!(c->flags & F_BP) && fs_buffer_len(&c->out) > s->cfg.high_water) {
        c->flags |= F_BP;
        STAT_ADD(s, paused, 1);
    }
    touch(s, c);
    publish(c);
}

int fs_conn_write(fs_server *s, fs_conn *c, const void *data, size_t len)
{
    if (c->state != ST_OPEN)
        return -EPIPE;
    size_t pending = fs_buffer_len(&c->out);
    if (len > s->cfg.write_limit - pending)
        return -ENOBUFS;
    if (len == 0)
        return 0;
    if (out_reserve(s, c, len) != 0 || fs_buffer_append(&c->out, data, len) != 0)
        return -ENOMEM;
    if (!framed(s))
        STAT_ADD(s, frames_out, 1); /* raw mode counts each write as a frame out */
    queued(s, c);
    return 0;
}

int fs_conn_send_frame(fs_server *s, fs_conn *c, const void *payload, size_t len)
{
    const fs_framing *f = &s->cfg.framing;
    if (f->kind == 0)
        return -ENOTSUP;
    if (c->state != ST_OPEN)
        return -EPIPE;
    char hdr[FS_FRAME_HEADER_MAX];
    size_t hlen = 0, tlen = 0;
    const char *trailer = "";
    if (f->kind == FS_FRAMING_LENGTH) { /* the common framing, encoded here without a call */
        if (len > f->max_size)
            return -EMSGSIZE;
        hlen = f->width;
        uint64_t v = len;
        for (unsigned i = 0; i < f->width; i++, v >>= 8)
            hdr[f->little ? i : f->width - 1 - i] = (char)(v & 0xff);
    } else {
        int rc = fs_frame_header(f, payload, len, hdr, &hlen);
        if (rc == FS_FRAME_TOO_LARGE)
            return -EMSGSIZE;
        if (rc != 0)
            return -EINVAL;
        trailer = fs_frame_trailer(f, &tlen);
    }
    size_t total = hlen + len + tlen; /* len <= max_size <= 2^60: no overflow */
    size_t pending = fs_buffer_len(&c->out);
    if (total > s->cfg.write_limit - pending)
        return -ENOBUFS;
    if (out_reserve(s, c, total) != 0)
        return -ENOMEM;
    char *end = fs_buffer_end(&c->out);
    memcpy(end, hdr, hlen);
    if (len)
        memcpy(end + hlen, payload, len);
    if (tlen)
        memcpy(end + hlen + len, trailer, tlen);
    fs_buffer_commit(&c->out, total);
    STAT_ADD(s, frames_out, 1);
    queued(s, c);
    return 0;
}

void fs_conn_close(fs_server *s, fs_conn *c)
{
    begin_close(s, c, FS_CLOSE_LOCAL, 0, 0);
}

void fs_conn_abort(fs_server *s, fs_conn *c)
{
    begin_abort(s, c, FS_CLOSE_ABORT, 0);
}

void fs_conn_pause(fs_server *s, fs_conn *c, int paused)
{
    if (c->state != ST_OPEN)
        return;
    if (paused) {
        if (!(c->flags & F_PAUSED)) {
            c->flags |= F_PAUSED;
            touch(s, c);
        }
    } else if (c->flags & F_PAUSED) {
        c->flags &= ~F_PAUSED;
        touch(s, c);
        if (fs_buffer_len(&c->in))
            ready_add(s, c);
    }
    publish(c);
}

int fs_conn_paused(const fs_conn *c)
{
    return ((c->flags & F_PAUSED) ? 1 : 0) | ((c->flags & F_BP) ? 2 : 0);
}

#else /* not Linux: no epoll. The Cython layer uses the pure twin's Server instead. */

int fs_server_new(fs_server **out, const fs_server_config *cfg)
{
    (void)cfg;
    *out = NULL;
    return -ENOSYS;
}
/* The rest is never called without a server; the definitions keep the module linkable. */
void fs_server_free(fs_server *s) { (void)s; }
int fs_server_add_listener(fs_server *s, int fd, int tcp) { (void)s; (void)fd; (void)tcp; return -ENOSYS; }
int fs_server_remove_listener(fs_server *s, int index) { (void)s; (void)index; return -ENOSYS; }
size_t fs_server_listeners(const fs_server *s) { (void)s; return 0; }
int fs_server_run_once(fs_server *s, int timeout_ms) { (void)s; (void)timeout_ms; return -ENOSYS; }
const fs_server_event *fs_server_events(const fs_server *s) { (void)s; return NULL; }
int fs_server_interrupted(const fs_server *s) { (void)s; return 0; }
void fs_server_flush(fs_server *s) { (void)s; }
int fs_server_wakeup(fs_server *s) { (void)s; return -ENOSYS; }
int fs_server_watch_fd(fs_server *s, int slot, int fd) { (void)s; (void)slot; (void)fd; return -ENOSYS; }
void fs_server_accept_backoff(fs_server *s, int64_t ns) { (void)s; (void)ns; }
size_t fs_conn_held(const fs_conn *c, const char **data) { (void)c; *data = NULL; return 0; }
void fs_server_stop(fs_server *s, int64_t grace_ns) { (void)s; (void)grace_ns; }
int fs_server_stopping(const fs_server *s) { (void)s; return 0; }
int fs_server_stopped(const fs_server *s) { (void)s; return 1; }
void fs_server_restart(fs_server *s) { (void)s; }
void fs_server_abort_all(fs_server *s) { (void)s; }
fs_server_stats *fs_server_get_stats(fs_server *s) { (void)s; return NULL; }
void fs_server_set_clock(fs_server *s, int64_t (*clock)(void *arg), void *arg) { (void)s; (void)clock; (void)arg; }
fs_conn *fs_server_conn(fs_server *s, uint64_t id) { (void)s; (void)id; return NULL; }
uint64_t fs_conn_id(const fs_conn *c) { (void)c; return 0; }
void *fs_conn_user(const fs_conn *c) { (void)c; return NULL; }
void fs_conn_set_user(fs_conn *c, void *user) { (void)c; (void)user; }
int fs_conn_fd(const fs_conn *c) { (void)c; return -1; }
int fs_conn_closing(const fs_conn *c) { (void)c; return 1; }
size_t fs_conn_pending(const fs_conn *c) { (void)c; return 0; }
size_t fs_conn_buffered(const fs_conn *c) { (void)c; return 0; }
const struct sockaddr *fs_conn_peer(const fs_conn *c, socklen_t *len) { (void)c; *len = 0; return NULL; }
const struct sockaddr *fs_conn_sockname(const fs_conn *c, socklen_t *len) { (void)c; *len = 0; return NULL; }
int fs_conn_shared_fd(const fs_conn *c) { (void)c; return -1; }
int fs_conn_shared_state(const fs_conn *c) { (void)c; return 1; }
size_t fs_conn_shared_pending(const fs_conn *c) { (void)c; return 0; }
void fs_server_stats_get(const fs_server *s, fs_server_stats *out) { (void)s; memset(out, 0, sizeof *out); }
void fs_server_stats_add(fs_server *s, int which, uint64_t n) { (void)s; (void)which; (void)n; }
int fs_conn_next_frame(fs_server *s, fs_conn *c, const char **p, size_t *n) { (void)s; (void)c; (void)p; (void)n; return 0; }
int fs_conn_next_frame_deferred(fs_server *s, fs_conn *c, const char **p, size_t *n) { (void)s; (void)c; (void)p; (void)n; return 0; }
void fs_conn_refuse_pending(fs_server *s, fs_conn *c) { (void)s; (void)c; }
void fs_conn_refuse_cancel(fs_conn *c) { (void)c; }
int fs_conn_raw_data(fs_server *s, fs_conn *c, const char **p, size_t *n) { (void)s; (void)c; (void)p; (void)n; return 0; }
void fs_conn_raw_consume(fs_server *s, fs_conn *c, size_t n) { (void)s; (void)c; (void)n; }
char *fs_conn_raw_detach(fs_server *s, fs_conn *c) { (void)s; (void)c; return NULL; }
int fs_conn_write(fs_server *s, fs_conn *c, const void *d, size_t n) { (void)s; (void)c; (void)d; (void)n; return -ENOSYS; }
int fs_conn_send_frame(fs_server *s, fs_conn *c, const void *d, size_t n) { (void)s; (void)c; (void)d; (void)n; return -ENOSYS; }
void fs_conn_close(fs_server *s, fs_conn *c) { (void)s; (void)c; }
void fs_conn_abort(fs_server *s, fs_conn *c) { (void)s; (void)c; }
void fs_conn_pause(fs_server *s, fs_conn *c, int paused) { (void)s; (void)c; (void)paused; }
int fs_conn_paused(const fs_conn *c) { (void)c; return 0; }

#endif
