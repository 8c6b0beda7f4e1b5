# C declarations of src_c/fs_buffer.h (growable byte buffer with head/tail indices).

cdef extern from "fs_buffer.h" nogil:
    ctypedef struct fs_buffer:
        char *data
        size_t cap
        size_t head
        size_t tail

    void fs_buffer_init(fs_buffer *b)
    void fs_buffer_free(fs_buffer *b)
    size_t fs_buffer_len(const fs_buffer *b)
    char *fs_buffer_start(const fs_buffer *b)
    char *fs_buffer_end(const fs_buffer *b)
    void fs_buffer_consume(fs_buffer *b, size_t n)
    void fs_buffer_commit(fs_buffer *b, size_t n)
    long fs_buffer_reserve(fs_buffer *b, size_t want, size_t limit)
    int fs_buffer_append(fs_buffer *b, const void *src, size_t n)
    void fs_buffer_shrink(fs_buffer *b, size_t keep)
