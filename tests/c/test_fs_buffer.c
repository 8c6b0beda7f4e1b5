/* Unit tests of src_c/fs_buffer.c (plain C; built and run by tests/test_c_units.py). */
#include "fs_buffer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static void test_empty(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    CHECK(fs_buffer_len(&b) == 0);
    CHECK(fs_buffer_room(&b) == 0);
    fs_buffer_consume(&b, 10); /* clamped, harmless */
    fs_buffer_commit(&b, 10);  /* no room: clamped */
    CHECK(fs_buffer_len(&b) == 0);
    /* No memory yet: start/end are NULL itself, never NULL + 0 (undefined in C). */
    CHECK(fs_buffer_start(&b) == NULL && fs_buffer_end(&b) == NULL);
    CHECK(fs_buffer_append(&b, NULL, 0) == 0 && b.data == NULL);
    fs_buffer_free(&b);
    fs_buffer_free(&b); /* idempotent */
}

static void test_reserve_commit_consume(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    long room = fs_buffer_reserve(&b, 100, 1000);
    CHECK(room >= 100);
    memcpy(fs_buffer_end(&b), "hello world", 11);
    fs_buffer_commit(&b, 11);
    CHECK(fs_buffer_len(&b) == 11);
    fs_buffer_consume(&b, 6);
    CHECK(fs_buffer_len(&b) == 5);
    CHECK(memcmp(fs_buffer_start(&b), "world", 5) == 0);
    fs_buffer_consume(&b, 5);
    CHECK(b.head == 0 && b.tail == 0); /* emptied: back to the front */
    fs_buffer_free(&b);
}

static void test_compaction_keeps_bytes(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    CHECK(fs_buffer_reserve(&b, 16, 16) == 16);
    memcpy(fs_buffer_end(&b), "0123456789abcdef", 16);
    fs_buffer_commit(&b, 16);
    fs_buffer_consume(&b, 10);
    char *before = b.data;
    long room = fs_buffer_reserve(&b, 10, 16); /* fits after compaction: no growth */
    CHECK(room == 10);
    CHECK(b.data == before && b.cap == 16);
    CHECK(memcmp(fs_buffer_start(&b), "abcdef", 6) == 0);
    fs_buffer_free(&b);
}

static void test_limit(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    CHECK(fs_buffer_reserve(&b, 8, 8) == 8);
    fs_buffer_commit(&b, 8);
    CHECK(fs_buffer_reserve(&b, 100, 8) == 0); /* full at the limit */
    CHECK(b.cap == 8);
    CHECK(fs_buffer_reserve(&b, 100, 50) == 42); /* grows only to the limit */
    CHECK(b.cap == 50);
    /* append ignores the limit (pushed-back bytes are already in memory) */
    CHECK(fs_buffer_append(&b, "x", 1) == 0 || b.cap > 50);
    fs_buffer_free(&b);
}

static void test_append_and_growth(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    char chunk[97];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)i;
    for (int i = 0; i < 1000; i++)
        CHECK(fs_buffer_append(&b, chunk, sizeof chunk) == 0);
    CHECK(fs_buffer_len(&b) == 97000);
    for (int i = 0; i < 1000; i++) {
        CHECK(memcmp(fs_buffer_start(&b), chunk, sizeof chunk) == 0);
        fs_buffer_consume(&b, sizeof chunk);
    }
    CHECK(fs_buffer_len(&b) == 0);
    CHECK(fs_buffer_append(&b, chunk, 0) == 0);
    fs_buffer_shrink(&b, 1024);
    CHECK(b.cap == 0 && b.data == NULL);
    fs_buffer_free(&b);
}

static void test_huge_request_refused(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    CHECK(fs_buffer_append(&b, "ab", 2) == 0);
    CHECK(fs_buffer_reserve(&b, SIZE_MAX, SIZE_MAX) == -ENOMEM);
    CHECK(fs_buffer_len(&b) == 2 && memcmp(fs_buffer_start(&b), "ab", 2) == 0);
    fs_buffer_free(&b);
}

static void test_shrink_only_when_empty(void)
{
    fs_buffer b;
    fs_buffer_init(&b);
    CHECK(fs_buffer_append(&b, "abc", 3) == 0);
    fs_buffer_shrink(&b, 0);
    CHECK(fs_buffer_len(&b) == 3);
    fs_buffer_free(&b);
}

/* A buffer whose head has passed its tail (memory corruption, or a bug in a caller that
 * wrote the fields): with assertions on, fs_buffer_consume must refuse to work on it. */
static void consume_corrupted(void *unused)
{
    (void)unused;
    char mem[16];
    fs_buffer b = {mem, sizeof mem, 10, 5};
    fs_buffer_consume(&b, 1);
}

static void commit_past_capacity(void *unused)
{
    (void)unused;
    char mem[16];
    fs_buffer b = {mem, sizeof mem, 0, 20}; /* tail > cap */
    fs_buffer_commit(&b, 0);
}

static void room_without_memory(void *unused)
{
    (void)unused;
    fs_buffer b = {NULL, 64, 0, 0}; /* capacity claimed, no memory */
    (void)fs_buffer_room(&b);
}

/* The checks are live in a debug build (and absent in a release build). */
static void test_invariant_checks_fire(void)
{
    CHECK(check_aborts(consume_corrupted, NULL, "head <= (b)->tail"));
    CHECK(check_aborts(commit_past_capacity, NULL, "tail <= (b)->cap"));
    CHECK(check_aborts(room_without_memory, NULL, "(b)->data != "));
}

int main(void)
{
    test_empty();
    test_reserve_commit_consume();
    test_compaction_keeps_bytes();
    test_limit();
    test_append_and_growth();
    test_huge_request_refused();
    test_shrink_only_when_empty();
    test_invariant_checks_fire();
    return check_report("test_fs_buffer");
}
