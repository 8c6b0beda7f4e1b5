/* fs_frame.h — message framings: find a complete frame at the start of a byte range, and
 * encode a frame's header. No Python, no allocation: scanners read only data[0 .. len).
 *
 * A frame is header + payload + trailer bytes. Hostile sizes are refused from the header
 * alone (FS_FRAME_TOO_LARGE) before a caller allocates anything for the payload.
 */
#ifndef FS_FRAME_H
#define FS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    FS_FRAMING_LENGTH = 1,    /* binary length prefix of `width` 1/2/4/8 bytes, big or little endian */
    FS_FRAMING_VARINT = 2,    /* protobuf base-128 varint length prefix */
    FS_FRAMING_DELIMITER = 3, /* payload, then `delim` */
    FS_FRAMING_FIXED = 4,     /* exactly `max_size` bytes, no header */
    FS_FRAMING_ASCII = 5,     /* length as `width` ASCII digits, zero-padded */
    FS_FRAMING_NETSTRING = 6, /* "<decimal length>:<payload>," */
    FS_FRAMING_RESP = 7,      /* one Redis protocol command (fs_resp.h); the payload is all of it */
};

enum {
    FS_FRAME_PARTIAL = 0,    /* more bytes are needed */
    FS_FRAME_OK = 1,         /* a complete frame starts the range */
    FS_FRAME_TOO_LARGE = -1, /* the frame exceeds max_size */
    FS_FRAME_MALFORMED = -2, /* the bytes cannot start a frame of this framing */
};

/* Largest header any framing writes (20 digits + ':' for a netstring). */
#define FS_FRAME_HEADER_MAX 24
/* Largest max_size accepted: 10 * limit + 9 and every sum of sizes stay below 2^64. */
#define FS_FRAME_SIZE_LIMIT ((uint64_t)1 << 60)

typedef struct {
    int kind;
    unsigned width;      /* LENGTH: 1, 2, 4 or 8; ASCII: 1..20 digits */
    int little;          /* LENGTH: little endian */
    int keep;            /* DELIMITER: the returned payload includes the delimiter */
    uint64_t max_size;   /* largest payload (without delimiter); FIXED: the frame length */
    const char *delim;   /* DELIMITER: the delimiter bytes (delim_len >= 1) */
    size_t delim_len;
    uint64_t max_args;   /* RESP: most arguments in one command */
} fs_framing;

typedef struct {
    size_t header;  /* OK: bytes before the payload */
    size_t payload; /* OK: payload bytes to return (with the delimiter when `keep`) */
    size_t total;   /* OK: whole frame length; PARTIAL: total needed if known, else 0 */
    uint64_t size;  /* TOO_LARGE: announced payload size, or bytes scanned without delimiter */
    uint64_t resume; /* in/out: a delimiter search resumes here; set to 0 for a new frame
                     * (RESP: an opaque resume point, see fs_resp.h) */
    int over_args;  /* TOO_LARGE, RESP: `size` is an argument count above max_args */
} fs_frame;

/* 0 when the framing's fields are consistent, else -EINVAL. */
int fs_framing_check(const fs_framing *f);

/* Look for a frame at data[0 .. len). Returns one of the FS_FRAME_* codes and fills *fr.
 * fr->resume must be 0 for a fresh scan, or what the previous PARTIAL scan of the same
 * (grown) range left there. */
int fs_frame_scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr);

/* Encode the header for `payload` into out[FS_FRAME_HEADER_MAX]; *hlen gets its length
 * (RESP: a bulk string reply's "$<length>\r\n", and the trailer is "\r\n").
 * Returns 0, FS_FRAME_TOO_LARGE (above max_size) or FS_FRAME_MALFORMED (a fixed-length
 * payload of the wrong size, or a payload containing the delimiter, or ending with a part
 * of it that the delimiter written after it completes: b"ab" for b"aba"). */
int fs_frame_header(const fs_framing *f, const char *payload, size_t plen, char *out, size_t *hlen);

/* The bytes that follow every payload (the delimiter, the netstring comma, or none). */
const char *fs_frame_trailer(const fs_framing *f, size_t *tlen);

/* Earliest occurrence of any of the n delimiters in data[start .. len). Returns its offset
 * and sets *which, or -1 when none occurs. Empty delimiters never match. */
long fs_find_any(const char *data, size_t len, size_t start, const char *const *delims,
                 const size_t *lens, size_t n, size_t *which);

#endif /* FS_FRAME_H */
