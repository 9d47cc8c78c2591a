/* _arrow_buffers.h: what jitrace's two C readers share (analyzer/load/_otlp_native.c, OTLP JSON lines, and
 * analyzer/otlp/_protobuf_native.c, OTLP/protobuf trace requests): the growable byte buffers their Arrow columns
 * are written into (a failure to grow one is a refusal: a jump back to the reader's entry, which gives nothing),
 * the Block type that hands such a buffer to Python without a copy (pa.py_buffer wraps it and
 * frees it with its last user), a strict UTF-8 check, integers in decimal, and the test whether a text may hold a
 * credential. Each module includes it once and
 * calls block_type_ready() at import.
 */
#ifndef JITRACE_ARROW_BUFFERS_H
#define JITRACE_ARROW_BUFFERS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned char u8;

/* The columns of the spans table (analyzer/schema.py), in order: strings but the two times (int64). */
enum { C_TRACE, C_SPAN, C_PARENT, C_NAME, C_KIND, C_START, C_END, C_STATUS, C_MESSAGE, C_SERVICE, C_RESOURCE,
       C_ATTRS, C_EVENTS, C_LINKS, C_SCOPE, C_SOURCE, NCOLS };
#define IS_INT_COLUMN(c) ((c) == C_START || (c) == C_END)

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

/* A string column: its data, its int32 offsets, its validity bitmap (a byte per eight rows) and null count. */
typedef struct {
    Buf data, offsets, valid;
    Py_ssize_t nulls;
} Column;

/* Where a reader's refusal jumps back to (its entry's setjmp), and why: each reader's state holds one. */
typedef struct {
    jmp_buf jump;
    const char *why;
} Fail;

static void refuse_with(Fail *F, const char *why) __attribute__((noreturn));
static void refuse_with(Fail *F, const char *why) {
    F->why = why;
    longjmp(F->jump, 1);
}

static __attribute__((noinline)) void buf_grow(Fail *F, Buf *b, size_t more) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        refuse_with(F, "out of memory");
    b->p = p;
    b->cap = cap;
}

/* Room for `more` bytes after b->n: inline, as every value written asks for it; growing is buf_grow's. */
static inline void buf_reserve(Fail *F, Buf *b, size_t more) {
    if (__builtin_expect(b->n + more > b->cap, 0))
        buf_grow(F, b, more);
}

static inline void buf_put(Fail *F, Buf *b, const void *s, size_t n) {
    if (!n)
        return;
    buf_reserve(F, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static inline void buf_putc(Fail *F, Buf *b, char c) {
    buf_reserve(F, b, 1);
    b->p[b->n++] = c;
}

/* Row `row` of a string column: n bytes at s, or a null when !valid. */
static inline void column_put_row(Fail *F, Column *col, Py_ssize_t row, const void *s, size_t n, int valid) {
    if ((row & 7) == 0) {
        buf_reserve(F, &col->valid, 1);
        col->valid.p[col->valid.n++] = 0;
    }
    if (valid) {
        col->valid.p[row >> 3] |= (char)(1 << (row & 7));
        buf_put(F, &col->data, s, n);
    } else {
        col->nulls++;
    }
    if (col->data.n > INT32_MAX)
        refuse_with(F, "a column past 2 GB");
    int32_t end = (int32_t)col->data.n;
    buf_put(F, &col->offsets, &end, sizeof end);
}

/* The length of the UTF-8 sequence at s (s < e, *s >= 0x80), or 0 when it is not strict UTF-8 (an overlong form, a
 * surrogate, past U+10FFFF, cut short): what Python's decoder and protobuf accept. */
static inline size_t utf8_seq(const u8 *s, const u8 *e) {
    u8 c = s[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (e - s >= 2 && (s[1] & 0xC0) == 0x80)
            return 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        if (e - s >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && !(c == 0xE0 && s[1] < 0xA0) &&
            !(c == 0xED && s[1] >= 0xA0))
            return 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        if (e - s >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            !(c == 0xF0 && s[1] < 0x90) && !(c == 0xF4 && s[1] >= 0x90))
            return 4;
    }
    return 0;
}

/* v in decimal into t (24 bytes); returns the length. By hand: snprintf's format parsing showed in profiles. */
static inline size_t decimal(char *t, long long v) {
    char r[24];
    size_t n = 0, k = 0;
    unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
    do
        r[n++] = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        t[k++] = '-';
    while (n)
        t[k++] = r[--n];
    return k;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_SWAR 1  /* the first flagged byte is the lowest bit set */
#else
#define LITTLE_ENDIAN_SWAR 0
#endif
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
/* Non-zero when a byte of x is zero / less than n (n <= 128): the classic bit tricks, no branch per byte. */
static inline uint64_t has_zero(uint64_t x) { return (x - ONES) & ~x & HIGHS; }
static inline uint64_t has_less(uint64_t x, unsigned n) { return (x - ONES * n) & ~x & HIGHS; }

static inline u8 lower(u8 c) { return (c >= 'A' && c <= 'Z') ? (u8)(c | 0x20) : c; }

/* Whether `text` may hold a credential: analyzer/redact.py's hints ("eyj", "bearer", "basic") in any ASCII case, or
 * a letter an engine that applies them folds to one of theirs: U+0130 (DuckDB's ILIKE lowers it to 'i'), U+0131,
 * U+017F (RE2's case folding: 's') and U+212A. A superset: where it says maybe, the redaction itself decides. */
static int hinted(const char *text, size_t n) {
    const u8 *s = (const u8 *)text;
    for (size_t i = 0; i < n; i++) {
        /* eight bytes at a time while none is a 'y', a 'b' (any case) or a lead byte of those letters: the few found
         * are looked at closer */
        while (LITTLE_ENDIAN_SWAR && n - i >= 8) {
            uint64_t x, folded;
            memcpy(&x, s + i, 8);
            folded = x | (ONES * 0x20);
            uint64_t found = has_zero(folded ^ (ONES * 'y')) | has_zero(folded ^ (ONES * 'b')) |
                             has_zero(x ^ (ONES * 0xC4)) | has_zero(x ^ (ONES * 0xC5)) | has_zero(x ^ (ONES * 0xE2));
            if (found) {
                i += __builtin_ctzll(found) >> 3;
                break;
            }
            i += 8;
        }
        if (i >= n)
            break;
        u8 c = s[i] | 0x20;
        if ((s[i] == 0xC4 && i + 1 < n && (s[i + 1] == 0xB0 || s[i + 1] == 0xB1)) ||
            (s[i] == 0xC5 && i + 1 < n && s[i + 1] == 0xBF) ||
            (s[i] == 0xE2 && i + 2 < n && s[i + 1] == 0x84 && s[i + 2] == 0xAA))
            return 1;
        if (c == 'y' && i >= 1 && i + 1 < n && lower(s[i - 1]) == 'e' && lower(s[i + 1]) == 'j')
            return 1;
        if (c == 'b' && i + 4 < n) {
            if (i + 5 < n && lower(s[i + 1]) == 'e' && lower(s[i + 2]) == 'a' && lower(s[i + 3]) == 'r' &&
                lower(s[i + 4]) == 'e' && lower(s[i + 5]) == 'r')
                return 1;
            if (lower(s[i + 1]) == 'a' && lower(s[i + 2]) == 's' && lower(s[i + 3]) == 'i' && lower(s[i + 4]) == 'c')
                return 1;
        }
    }
    return 0;
}

/* A buffer handed over to Python without a copy: Arrow wraps it (pa.py_buffer) and frees it with the last user. */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t n;
} Block;

static void block_dealloc(Block *self) {
    free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int block_getbuffer(Block *self, Py_buffer *view, int flags) {
    static char nothing[1];
    return PyBuffer_FillInfo(view, (PyObject *)self, self->p ? self->p : nothing, self->n, 1, flags);
}

static PyBufferProcs block_as_buffer = {(getbufferproc)block_getbuffer, NULL};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "jitrace.Block",
    .tp_basicsize = sizeof(Block),
    .tp_dealloc = (destructor)block_dealloc,
    .tp_as_buffer = &block_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes of one Arrow buffer a C reader wrote (read-only buffer protocol).",
};

static inline int block_type_ready(void) {
    return PyType_Ready(&BlockType);
}

/* The buffer as a Block, which owns it from now on (b is left empty). */
static PyObject *block_of(Buf *b) {
    Block *o = PyObject_New(Block, &BlockType);
    if (!o)
        return NULL;
    o->p = b->p;
    o->n = (Py_ssize_t)b->n;
    b->p = NULL;
    b->n = b->cap = 0;
    return (PyObject *)o;
}

/* A validity bitmap as a Block, or None when the column has no null. */
static PyObject *bitmap_of(Buf *valid, Py_ssize_t nulls) {
    if (nulls)
        return block_of(valid);
    Py_RETURN_NONE;
}

#endif
