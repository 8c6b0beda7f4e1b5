/* framing_check.c — the properties every framing of fs_frame.h must have, checked on one
 * fuzz input by fz_check_framing (see fuzz.h). For a stream d[0 .. n):
 *
 *  1. one pass: frames are scanned one after the other from a fresh state; every result
 *     equals the target's reference model (fastsock/framing.py's rules), lies inside its
 *     input (header + payload <= total <= len, and the scanner read nothing past len: each
 *     scan of a prefix gets a heap block of exactly that size), and makes progress;
 *  2. limits: a PARTIAL answer never asks for (total) or holds (len) more than
 *     max_size + header + trailer bytes, and a header announcing more than max_size is
 *     refused (TOO_LARGE) from the header bytes alone, before a caller reserves anything;
 *     more bytes never turn a complete frame or an error into something else;
 *  3. chunks: the same stream arriving in chunks (scans resumed with the PARTIAL scan's
 *     resume state) gives the same frames and the same final answer as one pass, and every
 *     resumed scan answers exactly as a fresh scan of the same bytes would;
 *  4. re-encoding: fs_frame_header + payload + fs_frame_trailer of every decoded frame gives
 *     the frame's bytes back; and an arbitrary payload is refused by fs_frame_header exactly
 *     when the framing cannot carry it, and otherwise reads back as one whole frame whose
 *     every strict prefix is incomplete.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CUTS 8
/* Prefixes of up to this many bytes are scanned at the first PREFIX_FRAMES frame starts
 * (every header fits: FS_FRAME_HEADER_MAX) — more would slow every execution. */
#define PREFIX_BYTES (FS_FRAME_HEADER_MAX + 2)
#define PREFIX_FRAMES 2

typedef struct {
    size_t pos, header, payload, total;
} frame_at;

static int scan(const fs_framing *f, const uint8_t *d, size_t len, uint64_t resume, fs_frame *fr)
{
    memset(fr, 0, sizeof *fr);
    fr->resume = resume;
    return fs_frame_scan(f, (const char *)d, len, fr);
}

/* A fresh scan of a copy of d[0 .. len) that ends where its heap block ends. */
static int scan_exact(const fs_framing *f, const uint8_t *d, size_t len, fs_frame *fr)
{
    return scan(f, (const uint8_t *)fz_tail(0, d, len), len, 0, fr);
}

static size_t trailer_len(const fs_framing *f)
{
    size_t tlen;
    fs_frame_trailer(f, &tlen);
    return tlen;
}

static size_t kept_delimiter(const fs_framing *f)
{
    return f->kind == FS_FRAMING_DELIMITER && f->keep ? f->delim_len : 0;
}

/* What every answer of fs_frame_scan on len bytes must satisfy, whatever the bytes. */
static void check_result(const fs_framing *f, size_t len, int rc, const fs_frame *fr)
{
    uint64_t bound = f->max_size + FS_FRAME_HEADER_MAX + trailer_len(f); /* max_size <= 2^60 */
    switch (rc) {
    case FS_FRAME_OK:
        FZ_CHECK(fr->header <= FS_FRAME_HEADER_MAX);
        FZ_CHECK(fr->header + fr->payload <= fr->total);
        FZ_CHECK(fr->total <= len);            /* the frame lies inside the input */
        FZ_CHECK(fr->total >= 1);              /* and consuming it makes progress */
        FZ_CHECK(fr->payload <= f->max_size + kept_delimiter(f));
        FZ_CHECK(fr->total - fr->header - fr->payload == trailer_len(f) - kept_delimiter(f) ||
                 f->kind == FS_FRAMING_RESP); /* RESP: the payload is the whole command */
        break;
    case FS_FRAME_PARTIAL:
        FZ_CHECK(fr->total == 0 || fr->total > len);
        FZ_CHECK(fr->total <= bound); /* what a caller would reserve for the frame */
        FZ_CHECK(len < bound);        /* what a caller holds while the frame is incomplete */
        break;
    case FS_FRAME_TOO_LARGE:
        FZ_CHECK(fr->over_args ? fr->size > f->max_args : fr->size > f->max_size);
        FZ_CHECK(!fr->over_args || f->kind == FS_FRAMING_RESP);
        break;
    case FS_FRAME_MALFORMED:
        break;
    default:
        FZ_CHECK(!"fs_frame_scan returned an unknown code");
    }
}

static void report(const char *what, int rc, const fs_frame *fr)
{
    fprintf(stderr, "  %s: rc %d header %zu payload %zu total %zu size %llu over_args %d resume %llu\n", what, rc,
            fr->header, fr->payload, fr->total, (unsigned long long)fr->size, fr->over_args,
            (unsigned long long)fr->resume);
}

/* Two answers are the same: the code and the fields that code defines. */
static int same(int rc1, const fs_frame *a, int rc2, const fs_frame *b)
{
    if (rc1 != rc2)
        return 0;
    switch (rc1) {
    case FS_FRAME_OK:
        return a->header == b->header && a->payload == b->payload && a->total == b->total;
    case FS_FRAME_PARTIAL:
        return a->total == b->total && a->resume == b->resume;
    case FS_FRAME_TOO_LARGE:
        return a->size == b->size && a->over_args == b->over_args;
    default:
        return 1;
    }
}

/* fs_frame_scan's fresh answer on d[0 .. len) is the model's. */
static void check_model(const fz_target *t, const fs_framing *f, const uint8_t *d, size_t len, int rc,
                        const fs_frame *fr)
{
    fz_expect e;
    memset(&e, 0, sizeof e);
    t->model(f, d, len, &e);
    fs_frame want;
    memset(&want, 0, sizeof want);
    want.header = e.header;
    want.payload = e.payload;
    want.total = e.total;
    want.size = e.size;
    want.over_args = e.over_args;
    want.resume = e.resume;
    if (!same(e.rc, &want, rc, fr)) {
        fprintf(stderr, "fs_frame_scan of %zu bytes differs from the model:\n", len);
        report("model", e.rc, &want);
        report("scan", rc, fr);
        FZ_CHECK(!"fs_frame_scan agrees with the reference model");
    }
}

/* The prefixes d[0 .. L) of a frame start, L = 0 .. PREFIX_BYTES: each as the model says;
 * a complete frame or an error, once said, stays said; TOO_LARGE by the header's bytes. */
static void check_prefixes(const fz_target *t, const fs_framing *f, const uint8_t *d, size_t avail)
{
    size_t top = avail < PREFIX_BYTES ? avail : PREFIX_BYTES;
    int settled = 0; /* an OK or an error was said at a shorter prefix */
    int first_rc = 0;
    fs_frame first;
    memset(&first, 0, sizeof first);
    for (size_t len = 0; len <= top; len++) {
        fs_frame fr;
        int rc = scan_exact(f, d, len, &fr);
        check_result(f, len, rc, &fr);
        check_model(t, f, d, len, rc, &fr);
        if (settled) {
            FZ_CHECK(rc == first_rc);
            /* the same frame; an error's size may grow with the bytes seen (delimiter) */
            FZ_CHECK(rc != FS_FRAME_OK || same(rc, &fr, first_rc, &first));
        } else if (rc != FS_FRAME_PARTIAL) {
            settled = 1;
            first_rc = rc;
            first = fr;
        }
    }
    if (t->header_bound == 0)
        return;
    fs_frame whole;
    if (scan(f, d, avail, 0, &whole) == FS_FRAME_TOO_LARGE) {
        fs_frame fr;
        size_t len = avail < t->header_bound ? avail : t->header_bound;
        FZ_CHECK(scan_exact(f, d, len, &fr) == FS_FRAME_TOO_LARGE); /* refused from its header */
    }
}

/* fs_frame_header's answer for an arbitrary payload, by the framing's rules. */
static int header_rc(const fs_framing *f, const uint8_t *p, size_t plen)
{
    if (f->kind == FS_FRAMING_FIXED)
        return plen == f->max_size ? 0 : FS_FRAME_MALFORMED;
    if (plen > f->max_size)
        return FS_FRAME_TOO_LARGE;
    if (f->kind != FS_FRAMING_DELIMITER)
        return 0;
    /* A delimiter frame is payload + delimiter, read up to the delimiter's first
     * occurrence: a payload is refused when that occurrence would start inside it (the
     * delimiter in it, or a tail of it that the delimiter completes). */
    const uint8_t *dl = (const uint8_t *)f->delim;
    size_t dlen = f->delim_len;
    for (size_t s = 0; s < plen; s++) {
        size_t i = 0;
        while (i < dlen && (s + i < plen ? p[s + i] : dl[s + i - plen]) == dl[i])
            i++;
        if (i == dlen)
            return FS_FRAME_MALFORMED;
    }
    return 0;
}

/* An arbitrary payload: refused exactly when header_rc says, else it reads back whole. */
static void check_encode(const fz_target *t, const fs_framing *f, const uint8_t *p, size_t plen)
{
    char hdr[FS_FRAME_HEADER_MAX];
    size_t hlen = 0;
    int rc = fs_frame_header(f, (const char *)p, plen, hdr, &hlen);
    if (rc != header_rc(f, p, plen)) {
        fprintf(stderr, "fs_frame_header of %zu bytes: rc %d, expected %d\n", plen, rc, header_rc(f, p, plen));
        FZ_CHECK(!"fs_frame_header refuses exactly the payloads the framing cannot carry");
    }
    if (rc != 0)
        return;
    FZ_CHECK(hlen <= FS_FRAME_HEADER_MAX);
    size_t tlen;
    const char *trailer = fs_frame_trailer(f, &tlen);
    size_t total = hlen + plen + tlen;
    uint8_t *wire = fz_scratch(1, total + 1);
    memcpy(wire, hdr, hlen);
    if (plen)
        memcpy(wire + hlen, p, plen);
    memcpy(wire + hlen + plen, trailer, tlen);
    wire[total] = plen ? p[0] : 'Z'; /* the start of a next frame changes nothing */
    for (size_t extra = 0; extra <= 1; extra++) {
        fs_frame fr;
        int got = scan_exact(f, wire, total + extra, &fr);
        check_model(t, f, wire, total + extra, got, &fr);
        FZ_CHECK(got == FS_FRAME_OK);
        FZ_CHECK(fr.header == hlen && fr.total == total && fr.payload == plen + kept_delimiter(f));
        FZ_CHECK(plen == 0 || memcmp(wire + fr.header, p, plen) == 0);
    }
    size_t cuts[] = {0, hlen ? hlen - 1 : 0, hlen, hlen + plen / 2, hlen + plen, total - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i] >= total)
            continue;
        fs_frame fr;
        int got = scan_exact(f, wire, cuts[i], &fr);
        FZ_CHECK(got == FS_FRAME_PARTIAL); /* a strict prefix of a frame is incomplete */
        FZ_CHECK(fr.total == 0 || fr.total == total);
    }
}

/* A decoded frame (its bytes d[0 .. fr->total)) re-encodes to the same bytes; `deep`: and
 * its payload passes check_encode (costly: for the first frames only). */
static void check_decoded(const fz_target *t, const fs_framing *f, const uint8_t *d, const fs_frame *fr, int deep)
{
    if (t->on_frame != NULL)
        t->on_frame(f, d, fr->total);
    if (!t->encodes)
        return;
    size_t kept = kept_delimiter(f);
    FZ_CHECK(fr->payload >= kept);
    size_t plen = fr->payload - kept;
    const uint8_t *p = d + fr->header;
    if (kept)
        FZ_CHECK(memcmp(p + plen, f->delim, kept) == 0); /* the frame read keeps its delimiter */
    char hdr[FS_FRAME_HEADER_MAX];
    size_t hlen = 0;
    FZ_CHECK(fs_frame_header(f, (const char *)p, plen, hdr, &hlen) == 0); /* what was read can be written */
    size_t tlen;
    const char *trailer = fs_frame_trailer(f, &tlen);
    FZ_CHECK(memcmp(d + fr->header + plen, trailer, tlen) == 0);
    if (t->lax_header && hlen != fr->header)
        FZ_CHECK(hlen < fr->header); /* the encoder's header is the shortest */
    else
        FZ_CHECK(hlen == fr->header && memcmp(hdr, d, hlen) == 0);
    if (deep)
        check_encode(t, f, p, plen); /* and that header reads back as this payload */
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

void fz_check_framing(const fz_target *t, const fs_framing *f, const uint8_t *d, size_t n, const size_t *cuts,
                      size_t ncuts, const uint8_t *payload, size_t plen)
{
    FZ_CHECK(fs_framing_check(f) == 0);
    /* 1, 2, 4: one pass (bounded: each frame consumes >= 1 byte, checked) */
    frame_at *frames = fz_scratch(0, (n + 1) * sizeof *frames);
    size_t nf = 0, pos = 0;
    int last;
    for (;;) {
        fs_frame fr;
        int rc = scan(f, d + pos, n - pos, 0, &fr);
        check_result(f, n - pos, rc, &fr);
        check_model(t, f, d + pos, n - pos, rc, &fr);
        if (nf < PREFIX_FRAMES)
            check_prefixes(t, f, d + pos, n - pos);
        if (rc != FS_FRAME_OK) {
            last = rc;
            break;
        }
        FZ_CHECK(nf < n + 1);
        frames[nf].pos = pos;
        frames[nf].header = fr.header;
        frames[nf].payload = fr.payload;
        frames[nf].total = fr.total;
        nf++;
        check_decoded(t, f, d + pos, &fr, nf <= PREFIX_FRAMES);
        pos += fr.total;
    }
    size_t last_pos = pos;

    /* 3: the same stream in chunks, each scan resumed from the last PARTIAL one */
    size_t stages[MAX_CUTS + 1];
    size_t ns = 0;
    for (size_t i = 0; i < ncuts && i < MAX_CUTS; i++)
        stages[ns++] = cuts[i] % (n + 1);
    qsort(stages, ns, sizeof stages[0], cmp_size);
    stages[ns++] = n;
    size_t idx = 0;
    uint64_t resume = 0;
    int stopped = 0;
    pos = 0;
    for (size_t s = 0; s < ns && !stopped; s++) {
        size_t have = stages[s];
        /* exactly what has arrived */
        const uint8_t *buf = have == n ? d : (const uint8_t *)fz_tail(1, d, have);
        for (;;) { /* bounded: an OK consumes >= 1 byte, anything else ends the stage */
            fs_frame fr, fresh;
            int rc = scan(f, buf + pos, have - pos, resume, &fr);
            check_result(f, have - pos, rc, &fr);
            int rc_fresh = scan(f, buf + pos, have - pos, 0, &fresh);
            if (!same(rc, &fr, rc_fresh, &fresh)) {
                fprintf(stderr, "a resumed scan (resume %llu) of %zu bytes differs from a fresh one:\n",
                        (unsigned long long)resume, have - pos);
                report("resumed", rc, &fr);
                report("fresh", rc_fresh, &fresh);
                FZ_CHECK(!"the resume state changes nothing but the work done");
            }
            if (rc == FS_FRAME_OK) {
                FZ_CHECK(idx < nf && frames[idx].pos == pos);
                FZ_CHECK(frames[idx].header == fr.header && frames[idx].payload == fr.payload &&
                         frames[idx].total == fr.total);
                idx++;
                pos += fr.total;
                resume = 0;
                continue;
            }
            if (rc == FS_FRAME_PARTIAL) {
                resume = fr.resume;
                break;
            }
            FZ_CHECK(idx == nf && pos == last_pos && rc == last); /* the same error, same place */
            stopped = 1;
            break;
        }
    }
    if (!stopped)
        FZ_CHECK(idx == nf && pos == last_pos && last == FS_FRAME_PARTIAL);

    /* 4: an arbitrary payload */
    if (t->encodes)
        check_encode(t, f, payload, plen);
}

void fz_run_framing(const fz_target *t, const fs_framing *f, fz_in *in)
{
    size_t cuts[MAX_CUTS];
    size_t ncuts = fz_u8(in) % (MAX_CUTS + 1);
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = fz_u16(in);
    size_t pstart = fz_u16(in);
    size_t plen = fz_u16(in);
    uint8_t psel = fz_u8(in);
    const uint8_t *d = in->p; /* the rest is the stream; the payload a slice of it */
    size_t n = in->n;
    pstart %= n + 1;
    size_t room = n - pstart;
    if ((psel & 1) && f->max_size <= room)
        plen = (size_t)f->max_size; /* what FixedLength takes */
    else if (psel & 2)
        plen = room;
    else
        plen %= room + 1;
    fz_check_framing(t, f, d, n, cuts, ncuts, d + pstart, plen);
}
