/* fuzz.h — what the fuzz targets in tests/fuzz/ share (plain C, no Python, no libFuzzer API
 * beyond LLVMFuzzerTestOneInput).
 *
 * Each target is one fuzz_<name>.c defining LLVMFuzzerTestOneInput. It is built from itself,
 * every other .c file here that is not a target (util.c, framing_check.c, replay_main.c)
 * and every src_c/ .c file, with -I src_c:
 *   clang -fsanitize=fuzzer,address,undefined ...   libFuzzer's main() (`make fuzz`)
 *   cc -fsanitize=address,undefined ...              replay_main.c's main(): runs the target
 *                                                    once on every file named (files or
 *                                                    directories: tests/test_fuzz_corpus.py)
 *
 * A target checks properties, not only "no crash": FZ_CHECK(cond) prints the property and
 * aborts, which both mains report as a failure (libFuzzer saves the input as crash-<sha1>).
 */
#ifndef FS_TESTS_FUZZ_H
#define FS_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "fs_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print "file:line: property failed: what" and abort(). */
void fz_fail(const char *file, int line, const char *what) __attribute__((noreturn));
#define FZ_CHECK(cond)                              \
    do {                                            \
        if (!(cond))                                \
            fz_fail(__FILE__, __LINE__, #cond);     \
    } while (0)

/* The fuzz input read as parameters: every read past the end gives 0. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;
uint8_t fz_u8(fz_in *in);
uint16_t fz_u16(fz_in *in);
uint64_t fz_u64(fz_in *in);
/* A count of n bytes taken from the input (fewer if it holds fewer); returns them. */
const uint8_t *fz_bytes(fz_in *in, size_t *n);
/* A value in [0, top], biased to the edges (0, 1, top - 1, top) and to small values. */
uint64_t fz_upto(fz_in *in, uint64_t top);

/* A heap copy of exactly n bytes (a scanner reading one byte past them is an ASan report),
 * free()d by the caller; n 0 gives a 1-byte block holding nothing the scan may read. */
char *fz_copy(const void *src, size_t n);

/* The same for short-lived copies, without a malloc per call (mallocs under ASan would be
 * most of an execution's time): the n bytes are placed at the very end of a heap block kept
 * for the process, one per slot (0 .. FZ_SLOTS - 1), so a read past them is still a heap
 * overflow. Valid until the next call for the same slot. */
#define FZ_SLOTS 4
const char *fz_tail(int slot, const void *src, size_t n);
/* A scratch block of at least n bytes, one per slot (separate from fz_tail's), valid until
 * the next call for the same slot. */
void *fz_scratch(int slot, size_t n);

/* -- framings (framing_check.c) -------------------------------------------------------- */

/* A fresh scan's expected result, from a target's reference model of its framing (written
 * from fastsock/framing.py, the pure twin, which both backends must agree with). */
typedef struct {
    int rc;           /* FS_FRAME_* */
    size_t header;    /* OK */
    size_t payload;   /* OK */
    size_t total;     /* OK; PARTIAL: needed if known, else 0 */
    uint64_t size;    /* TOO_LARGE */
    int over_args;    /* TOO_LARGE (RESP) */
    uint64_t resume;  /* PARTIAL */
} fz_expect;

typedef struct {
    /* The reference model: a fresh scan of d[0 .. len). */
    void (*model)(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *out);
    /* TOO_LARGE must be said by this many bytes at most (the longest header that can
     * announce a size: a hostile prefix is refused from the header alone); 0: no bound
     * from the header (delimiter, RESP: the checker's general bound applies). */
    size_t header_bound;
    /* 1: fs_frame_header/fs_frame_trailer encode frames that fs_frame_scan reads (every
     * framing but RESP, whose header encodes a reply): decoded frames are re-encoded. */
    int encodes;
    /* 1: re-encoding a decoded frame need not give its exact bytes (a varint header may
     * be longer than needed); the payload must still round-trip. */
    int lax_header;
    /* Called on every complete frame found (its bytes are d[0 .. len)), or NULL. */
    void (*on_frame)(const fs_framing *f, const uint8_t *d, size_t len);
} fz_target;

/* Every property of fs_frame_scan/fs_frame_header on the stream d[0 .. n): see framing_check.c.
 * `cuts` (0 .. 8 offsets, any order, clamped to n) say where the stream is split into
 * chunks for the resumed scan; `payload` is an arbitrary payload to encode and read back. */
void fz_check_framing(const fz_target *t, const fs_framing *f, const uint8_t *d, size_t n, const size_t *cuts,
                      size_t ncuts, const uint8_t *payload, size_t plen);

/* The common start of the frame targets: the parameter bytes after the framing's own, then
 * the rest of the input as the stream and its payload; runs fz_check_framing. */
void fz_run_framing(const fz_target *t, const fs_framing *f, fz_in *in);

#endif /* FS_TESTS_FUZZ_H */
