/* fs_buffer.c — growable byte buffer; see fs_buffer.h for the contract.
 * Every function checks the layout invariant (FS_BUFFER_CHECK) on entry and on exit, and
 * what it promises about the result (FS_ASSERT); both vanish in release builds. */
#include "fs_buffer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>

/* Sizes stay below this so they convert to long (and Py_ssize_t) without loss. */
#define LONG_MAX_SAFE (LONG_MAX / 2)

void fs_buffer_init(fs_buffer *b)
{
    b->data = NULL;
    b->cap = b->head = b->tail = 0;
    FS_BUFFER_CHECK(b);
}

void fs_buffer_free(fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    free(b->data);
    fs_buffer_init(b);
}

void fs_buffer_consume(fs_buffer *b, size_t n)
{
    FS_BUFFER_CHECK(b);
    size_t held = b->tail - b->head;
    if (n >= held)
        b->head = b->tail = 0; /* empty: the next fill starts at the front, no memmove */
    else
        b->head += n;
    FS_BUFFER_CHECK(b);
}

void fs_buffer_commit(fs_buffer *b, size_t n)
{
    FS_BUFFER_CHECK(b);
    size_t room = b->cap - b->tail;
    b->tail += n < room ? n : room;
    FS_BUFFER_CHECK(b);
}

void fs_buffer_compact(fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    if (b->head == 0)
        return;
    size_t held = b->tail - b->head;
    if (held)
        memmove(b->data, b->data + b->head, held);
    b->head = 0;
    b->tail = held;
    FS_BUFFER_CHECK(b);
}

/* Reallocate to exactly newcap bytes (newcap >= held), compacting on the way. */
static int regrow(fs_buffer *b, size_t newcap)
{
    FS_ASSERT(newcap >= b->tail - b->head);
    fs_buffer_compact(b);
    char *p = realloc(b->data, newcap ? newcap : 1);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = newcap;
    FS_BUFFER_CHECK(b);
    return 0;
}

long fs_buffer_reserve(fs_buffer *b, size_t want, size_t limit)
{
    FS_BUFFER_CHECK(b);
    if (b->cap - b->tail >= want)
        return (long)(b->cap - b->tail);
    if (b->head > 0)
        fs_buffer_compact(b);
    size_t held = b->tail;
    if (b->cap - held < want && b->cap < limit) {
        size_t need = (want > SIZE_MAX - held) ? SIZE_MAX : held + want;
        size_t newcap = b->cap > SIZE_MAX / 2 ? SIZE_MAX : b->cap * 2;
        if (newcap < need)
            newcap = need;
        if (newcap > limit)
            newcap = limit;
        if (newcap > (size_t)LONG_MAX_SAFE)
            return -ENOMEM;
        int r = regrow(b, newcap);
        if (r != 0)
            return r;
    }
    FS_BUFFER_CHECK(b);
    FS_ASSERT(b->cap - b->tail >= want || b->cap >= limit); /* only the limit stops growth */
    size_t room = b->cap - b->tail;
    return room > (size_t)LONG_MAX_SAFE ? (long)LONG_MAX_SAFE : (long)room;
}

int fs_buffer_append(fs_buffer *b, const void *src, size_t n)
{
    FS_BUFFER_CHECK(b);
    if (n == 0)
        return 0;
    if (b->cap - b->tail < n) {
        if (n > (size_t)LONG_MAX_SAFE - (b->tail - b->head))
            return -ENOMEM;
        long r = fs_buffer_reserve(b, n, SIZE_MAX);
        if (r < 0)
            return (int)r;
    }
    FS_ASSERT(b->cap - b->tail >= n);
    memcpy(b->data + b->tail, src, n);
    b->tail += n;
    FS_BUFFER_CHECK(b);
    return 0;
}
