/* fuzz_buffer.c — fs_buffer (src_c/fs_buffer.c): random sequences of reserve, commit,
 * consume, compact, shrink, append and free, checked after every step against a model (the
 * held bytes as a plain array) and the contract of fs_buffer.h:
 *   - the held bytes are exactly the model's, in order, whatever moved them (all compared
 *     after every step that can move memory, their ends after the others);
 *   - 0 <= head <= tail <= cap; start/end are NULL exactly while no memory is owned;
 *   - reserve returns the free space (>= want unless the capacity reached the limit), never
 *     grows past the limit (a capacity already above it is kept), grows at least to double,
 *     and moves nothing when the free space already sufficed; the free space is writable;
 *   - -ENOMEM (a size beyond what a long can say) changes no held byte;
 *   - consume and commit clamp; emptying the buffer puts head and tail back at 0;
 *   - shrink gives the memory back exactly when empty and above `keep`.
 * Sizes stay small (held bytes at most HELD_MAX, capacities about 1 MiB) except the
 * requests meant to be refused. */
#include "fuzz.h"
#include "fs_buffer.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define HELD_MAX (64 * 1024)
#define LIMIT_MAX (1 << 20)
#define MAX_OPS 4096
#define LONG_SAFE ((size_t)(LONG_MAX / 2)) /* fs_buffer.c's LONG_MAX_SAFE */

static uint8_t model[HELD_MAX];
static size_t model_len;

/* The layout and the held bytes; `moved`: all of them (after whatever can move memory),
 * else their first and last EDGE bytes (a full compare after every step would be most of
 * the time of an input of thousands of steps). */
#define EDGE 16
static void check_state(const fs_buffer *b, int moved)
{
    FZ_CHECK(b->head <= b->tail && b->tail <= b->cap);
    FZ_CHECK((b->data == NULL) == (b->cap == 0));
    FZ_CHECK(fs_buffer_len(b) == model_len);
    FZ_CHECK(fs_buffer_room(b) == b->cap - b->tail);
    char *start = fs_buffer_start(b), *end = fs_buffer_end(b);
    FZ_CHECK((start == NULL) == (b->data == NULL) && (end == NULL) == (b->data == NULL));
    if (start != NULL)
        FZ_CHECK(end == start + model_len && start == b->data + b->head);
    if (moved || model_len <= 2 * EDGE) {
        FZ_CHECK(model_len == 0 || memcmp(start, model, model_len) == 0);
    } else {
        FZ_CHECK(memcmp(start, model, EDGE) == 0);
        FZ_CHECK(memcmp(start + model_len - EDGE, model + model_len - EDGE, EDGE) == 0);
    }
}

/* Write into the free space (ASan: it is really memory of the block). */
static void touch_room(fs_buffer *b, uint8_t fill)
{
    size_t room = fs_buffer_room(b);
    if (room == 0)
        return;
    char *end = fs_buffer_end(b);
    memset(end, fill, room < 4096 ? room : 4096);
    end[room - 1] = (char)fill;
}

static void op_reserve(fs_buffer *b, fz_in *in)
{
    uint8_t how = fz_u8(in);
    size_t limit = (how & 1) ? SIZE_MAX : (size_t)fz_upto(in, LIMIT_MAX);
    size_t want;
    if (how & 2) /* refused by size when nothing smaller stops it: never allocated */
        want = LONG_SAFE + 1 + (size_t)fz_upto(in, SIZE_MAX - LONG_SAFE - 1);
    else
        want = (size_t)fz_upto(in, 2 * (size_t)LIMIT_MAX);
    size_t cap = b->cap, held = model_len;
    char *data = b->data, *start = fs_buffer_start(b);
    int sufficed = b->cap - b->tail >= want;
    long r = fs_buffer_reserve(b, want, limit);
    check_state(b, b->data != data || fs_buffer_start(b) != start);
    if (sufficed) { /* nothing moves when the free space already sufficed */
        FZ_CHECK(r >= 0 && b->data == data && fs_buffer_start(b) == start && b->cap == cap);
    }
    if (r < 0) {
        FZ_CHECK(r == -ENOMEM);
        /* only a size no long can hold is refused, and then nothing was allocated */
        FZ_CHECK(held + (want < SIZE_MAX - held ? want : SIZE_MAX - held) > LONG_SAFE);
        FZ_CHECK(b->cap == cap && b->data == data);
        return;
    }
    size_t room = b->cap - b->tail;
    FZ_CHECK((size_t)r == (room > LONG_SAFE ? LONG_SAFE : room));
    FZ_CHECK(room >= want || b->cap >= limit); /* only the limit stops the growth */
    if (b->cap != cap) {
        FZ_CHECK(b->cap > cap && b->cap <= limit); /* it grew, and not past the limit */
        size_t twice = cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap;
        FZ_CHECK(b->cap >= (twice < limit ? twice : limit)); /* growth at least doubles */
        FZ_CHECK(b->head == 0);                                 /* regrowing compacts */
    }
    touch_room(b, how);
}

static void op_commit(fs_buffer *b, fz_in *in)
{
    size_t n = (size_t)fz_upto(in, SIZE_MAX);
    size_t room = fs_buffer_room(b);
    if (model_len + (n < room ? n : room) > HELD_MAX)
        n = HELD_MAX - model_len; /* the model's bound (the clamp is still exercised below it) */
    size_t take = n < room ? n : room;
    char *end = fs_buffer_end(b);
    for (size_t i = 0; i < take; i++) { /* what a recv would have written */
        uint8_t v = (uint8_t)(model_len + i * 7);
        end[i] = (char)v;
        model[model_len + i] = v;
    }
    char *data = b->data;
    fs_buffer_commit(b, n); /* clamped to the free space */
    model_len += take;
    FZ_CHECK(b->data == data);
    check_state(b, 0);
}

static void op_consume(fs_buffer *b, fz_in *in)
{
    size_t n = (size_t)fz_upto(in, model_len + 2 > 255 ? model_len + 2 : 255);
    if (fz_u8(in) == 0xff)
        n = SIZE_MAX;
    size_t head = b->head, cap = b->cap;
    char *data = b->data;
    fs_buffer_consume(b, n);
    size_t drop = n < model_len ? n : model_len;
    memmove(model, model + drop, model_len - drop);
    model_len -= drop;
    FZ_CHECK(b->data == data && b->cap == cap); /* consuming never moves or frees memory */
    if (model_len == 0)
        FZ_CHECK(b->head == 0 && b->tail == 0); /* empty: the next fill starts at the front */
    else
        FZ_CHECK(b->head == head + drop);
    check_state(b, 0);
}

static void op_compact(fs_buffer *b)
{
    size_t cap = b->cap;
    char *data = b->data;
    fs_buffer_compact(b);
    FZ_CHECK(b->head == 0 && b->cap == cap && b->data == data);
    check_state(b, 1);
}

static void op_shrink(fs_buffer *b, fz_in *in)
{
    size_t keep = (size_t)fz_upto(in, LIMIT_MAX);
    size_t cap = b->cap;
    char *data = b->data;
    fs_buffer_shrink(b, keep);
    if (model_len == 0 && cap > keep)
        FZ_CHECK(b->data == NULL && b->cap == 0); /* the memory went back */
    else
        FZ_CHECK(b->data == data && b->cap == cap);
    check_state(b, 0);
}

static void op_append(fs_buffer *b, fz_in *in)
{
    size_t n = fz_u16(in) % 2048;
    const uint8_t *src = fz_bytes(in, &n);
    if (model_len + n > HELD_MAX)
        n = HELD_MAX - model_len;
    int fits = fs_buffer_room(b) >= n;
    char *start = fs_buffer_start(b);
    FZ_CHECK(fs_buffer_append(b, src, n) == 0);
    if (n)
        memcpy(model + model_len, src, n);
    model_len += n;
    if (fits && n)
        FZ_CHECK(fs_buffer_start(b) == start); /* enough room: nothing moved */
    check_state(b, fs_buffer_start(b) != start);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_buffer b;
    fs_buffer_init(&b);
    model_len = 0;
    check_state(&b, 1);
    for (int i = 0; i < MAX_OPS && in.n > 0; i++) { /* each step reads >= 1 input byte */
        switch (fz_u8(&in) % 8) {
        case 0:
        case 1:
            op_reserve(&b, &in);
            break;
        case 2:
            op_commit(&b, &in);
            break;
        case 3:
            op_consume(&b, &in);
            break;
        case 4:
            op_compact(&b);
            break;
        case 5:
            op_shrink(&b, &in);
            break;
        case 6:
            op_append(&b, &in);
            break;
        default:
            fs_buffer_free(&b);
            model_len = 0;
            FZ_CHECK(b.data == NULL && b.cap == 0 && b.head == 0 && b.tail == 0);
            check_state(&b, 1);
            break;
        }
    }
    check_state(&b, 1);
    fs_buffer_free(&b);
    return 0;
}
