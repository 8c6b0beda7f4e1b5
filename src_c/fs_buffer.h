/* fs_buffer.h — a growable byte buffer with head/tail indices. No Python here.
 *
 * Layout: data[0 .. head) consumed, data[head .. tail) held bytes, data[tail .. cap) free
 * space that recv() can fill in place. Consuming moves `head`; when the buffer empties,
 * head and tail go back to 0, so steady-state reads never move memory. Compaction
 * (memmove of the held bytes to the front) happens only when free space runs short.
 * Every index is kept within 0 <= head <= tail <= cap by construction.
 */
#ifndef FS_BUFFER_H
#define FS_BUFFER_H

#include <stddef.h>

#include "fs_debug.h"

typedef struct {
    char *data;
    size_t cap;
    size_t head;
    size_t tail;
} fs_buffer;

/* The layout invariant, asserted on entry to and exit from every function below in debug
 * builds (nothing in release builds: see fs_debug.h). */
#define FS_BUFFER_CHECK(b)                                                                 \
    do {                                                                                   \
        FS_ASSERT((b)->head <= (b)->tail);                                                 \
        FS_ASSERT((b)->tail <= (b)->cap);                                                  \
        FS_ASSERT((b)->data != NULL || (b)->cap == 0);                                     \
    } while (0)

/* An empty buffer that owns no memory yet. */
void fs_buffer_init(fs_buffer *b);

/* Release the memory; the buffer is empty and reusable afterwards. */
void fs_buffer_free(fs_buffer *b);

static inline size_t fs_buffer_len(const fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    return b->tail - b->head;
}

/* NULL (not NULL + 0, which C leaves undefined) while the buffer owns no memory. */
static inline char *fs_buffer_start(const fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    return b->data ? b->data + b->head : NULL;
}

static inline char *fs_buffer_end(const fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    return b->data ? b->data + b->tail : NULL;
}

static inline size_t fs_buffer_room(const fs_buffer *b)
{
    FS_BUFFER_CHECK(b);
    return b->cap - b->tail;
}

/* Drop the first n held bytes (clamped to what is held). */
void fs_buffer_consume(fs_buffer *b, size_t n);

/* Mark n bytes written into the free space as held (clamped to the free space). */
void fs_buffer_commit(fs_buffer *b, size_t n);

/* Move the held bytes to the front of the memory. */
void fs_buffer_compact(fs_buffer *b);

/* Make at least `want` bytes of free space after the held bytes, compacting first, then
 * growing (at least doubling) without letting the capacity pass `limit` (a capacity already
 * above `limit` is kept). Returns the free space now available, which is less than `want`
 * only when `limit` stopped the growth, or -ENOMEM. */
long fs_buffer_reserve(fs_buffer *b, size_t want, size_t limit);

/* Append n bytes (the capacity grows as needed, without limit). Returns 0 or -ENOMEM. */
int fs_buffer_append(fs_buffer *b, const void *src, size_t n);

/* When the buffer is empty and its capacity exceeds `keep`, give the memory back. */
/* Inline: the Stream calls it after every consume, where the test is nearly always false. */
static inline void fs_buffer_shrink(fs_buffer *b, size_t keep)
{
    FS_BUFFER_CHECK(b);
    if (b->head == b->tail && b->cap > keep)
        fs_buffer_free(b);
    FS_BUFFER_CHECK(b);
}

#endif /* FS_BUFFER_H */
