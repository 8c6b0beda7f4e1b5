/* util.c — the failure report and the input readers of fuzz.h. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: property failed: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

uint8_t fz_u8(fz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

uint16_t fz_u16(fz_in *in)
{
    uint16_t hi = fz_u8(in);
    return (uint16_t)(hi << 8 | fz_u8(in));
}

uint64_t fz_u64(fz_in *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fz_u8(in);
    return v;
}

const uint8_t *fz_bytes(fz_in *in, size_t *n)
{
    if (*n > in->n)
        *n = in->n;
    const uint8_t *p = in->p;
    in->p += *n;
    in->n -= *n;
    return p;
}

uint64_t fz_upto(fz_in *in, uint64_t top)
{
    uint8_t how = fz_u8(in);
    switch (how & 7) {
    case 0:
        return 0;
    case 1:
        return top;
    case 2:
        return top > 0 ? top - 1 : 0;
    case 3:
        return top < 1 ? top : 1;
    case 4: { /* up to 255: most sizes a small input can hold */
        uint64_t small = fz_u8(in);
        return top < 255 ? small % (top + 1) : small;
    }
    case 5:
        return top == UINT64_MAX ? fz_u16(in) : fz_u16(in) % (top + 1);
    default: /* anything in range */
        return top == UINT64_MAX ? fz_u64(in) : fz_u64(in) % (top + 1);
    }
}

char *fz_copy(const void *src, size_t n)
{
    char *p = malloc(n ? n : 1);
    FZ_CHECK(p != NULL);
    if (n)
        memcpy(p, src, n);
    return p;
}

typedef struct {
    char *block; /* reachable until exit: not a leak */
    size_t cap;
} slot_t;

static char *grow(slot_t *s, size_t n)
{
    if (s->block == NULL || n > s->cap) {
        free(s->block);
        s->cap = n > 8192 ? n : 8192;
        s->block = malloc(s->cap);
        FZ_CHECK(s->block != NULL);
    }
    return s->block;
}

const char *fz_tail(int slot, const void *src, size_t n)
{
    static slot_t slots[FZ_SLOTS];
    FZ_CHECK(slot >= 0 && slot < FZ_SLOTS);
    char *at = grow(&slots[slot], n) + (slots[slot].cap - n);
    if (n)
        memcpy(at, src, n);
    return at;
}

void *fz_scratch(int slot, size_t n)
{
    static slot_t slots[FZ_SLOTS];
    FZ_CHECK(slot >= 0 && slot < FZ_SLOTS);
    return grow(&slots[slot], n);
}
