/* _otlp_native: OTLP JSON-lines span files -> the columns of the spans table (analyzer/schema.py), in C.
 *
 * analyzer/load/_otlp_json_native.py drives it; analyzer/otlp/from_json.py is the rule it must equal. It gives
 * exactly the rows the Python reader gives for a range of lines, or raises Refused and gives none: whatever it is
 * not sure to read as Python does (a null, NaN, a duplicate key, an escaped field name, a value object with two
 * fields, an unknown field of a value, an int spelled "007" or past 64 bits, a short or odd id, invalid UTF-8,
 * lone surrogates, logs, the old instrumentationLibrary names, nesting deeper than a few levels, ...) refuses the
 * range, and the Python reader reads the file and reports its bad records as always.
 *
 * Why C: Python's json module and a walk over the dicts cost ~10 us a span, DuckDB's JSON reader with SQL around it
 * ~15 CPU-us (RELIABILITY.md); a single pass here costs ~1 us. The GIL is released while a range is read, so the
 * module's caller reads ranges of one file on several threads.
 *
 * Output per range: the number of spans and, per column of schema.SPANS, Arrow buffers as bytes: a string column
 * (validity bitmap or None, null count, int32 offsets, UTF-8 data), an int64 column (None, 0, values). Asked for
 * them (queries/span_fact_inputs.sql's keys and types, from analyzer/steps/spans_view.py), it also gives the values
 * span_facts.sql reads, typed as DuckDB's from_json gives them, so the facts are computed without parsing the JSON
 * text again; a span whose values it might give otherwise (a double read as text, a string read as a number, ...),
 * whose text may hold a credential (redacted first) or whose events hold a token check is marked for span_facts.sql.
 *
 * JSON text written here is what Python's json encoder writes with ensure_ascii=False and compact separators
 * (_rows.to_json): '"' '\' and the control characters escaped (\n \r \t \b \f, else \u00XX in lower-case hex),
 * everything else as is; doubles are Python's own repr: a short plain decimal is its own repr, a longer one is
 * written as it came, proven to be its repr without Python where exact integer arithmetic can (repr_proven), else
 * checked against Python's repr once its range is read (the GIL taken once a range, not once a double: see
 * double_value), the range read again asking Python for each double where one differs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>  /* first: it sets the features the system headers read */
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_arrow_buffers.h"

#define MAX_DEPTH 64      /* nesting of values (arrays, kvlists) and of skipped fields; deeper is refused */
#define MAX_KEYS 512      /* attributes of one list: more are refused (the duplicate check is quadratic) */

typedef struct {
    const u8 *s;   /* the string's content, between the quotes, as written */
    size_t n;
    int escaped;   /* holds a backslash */
} Str;

/* The facts' inputs (spans_view.fact_inputs: the resource and attribute values span_facts.sql reads, typed as its
 * from_json gives them): a column each, per span, when parse() is given their keys. */
enum { F_TEXT, F_DOUBLE, F_INT, F_TEXTS };  /* VARCHAR, DOUBLE, BIGINT, VARCHAR[] */
enum { V_NONE, V_NULL, V_STR, V_INT, V_DBL, V_BOOL, V_ARR, V_OTHER };  /* what an attribute's value was */
#define MAX_FACTS 128
#define FACT_BUCKETS 256
#define FACT_SLOTS 4

typedef struct {
    int kind;
    Str s;
    long long i;
    double d;
    const u8 *at;  /* an arrayValue's object, read again for a VARCHAR[] */
} Val;

typedef struct {
    const char *key;  /* the key as the JSON text writes it, quotes included */
    size_t n;
    uint64_t print;   /* fingerprint(key, n) */
    int type;
} FactKey;

/* A key's fingerprint: two keys of different fingerprints differ (equal ones are compared whole). Its length and
 * its first and last eight bytes (the keys here are quoted: at least two bytes). */
static inline uint64_t fingerprint(const void *key, size_t n) {
    const unsigned char *k = key;
    uint64_t head = 0, tail = 0;
    if (n >= 8) {
        memcpy(&head, k, 8);
        memcpy(&tail, k + n - 8, 8);
    } else {
        memcpy(&head, k, n);
    }
    return (head * 0x9E3779B97F4A7C15ULL) ^ (tail * 0xC2B2AE3D27D4EB4FULL) ^ n;
}

typedef struct {
    Column c;
    Buf child_data, child_offsets;  /* a VARCHAR[]'s strings */
    int32_t children;
    int type;
} FactColumn;

typedef struct {
    const u8 *p, *end;        /* the cursor, within the current line */
    Fail f;                   /* where a refusal jumps, and its reason */
    long long line;           /* the current line's number */
    Py_ssize_t line_from, line_to;  /* the current line's bytes in the data, its newline included */
    PyThreadState *ts;        /* the thread state while the GIL is released */
    Column col[NCOLS];
    Py_ssize_t rows;
    Buf resource, service, scope, attrs, events, links, text, member_name;  /* scratch: see their users */
    int has_service, has_scope;
    const char *prefix;       /* "path:" of the source column */
    size_t prefix_len;
    /* the facts' inputs: resource keys [0, nres), then attribute keys [nres, nfacts) */
    FactKey fkeys[MAX_FACTS];
    int nres, nfacts;
    /* the fact keys by fingerprint: part 0 the resource keys, 1 the attribute keys; FACT_BUCKETS buckets of up to
     * FACT_SLOTS keys each (a part with a fuller bucket is searched whole: findex_full) */
    unsigned char findex[2][FACT_BUCKETS][FACT_SLOTS], findex_n[2][FACT_BUCKETS];
    int findex_full[2];
    Val vals[MAX_FACTS];          /* this resource's and this span's values of them */
    FactColumn fcol[MAX_FACTS];
    Buf child_ends;               /* scratch of fact_texts */
    Buf inexact;                  /* a bit per span: its facts are left to span_facts.sql (see fact_columns_row) */
    Py_ssize_t inexacts;
    int resource_hinted;          /* the resource's text may hold a credential */
    int eager;                    /* doubles' repr taken from Python as they are read (see double_value) */
    Buf pending;                  /* Pending doubles, checked against Python once the range is read */
} Parser;

/* A double whose text was written as it came and whose value was read by strtod, without the GIL: the range stands
 * only if Python reads that text to the same double and writes it back as the same text (parse() checks). */
typedef struct {
    const u8 *s;
    size_t n;
    double d;
} Pending;

static locale_t C_NUMERIC;  /* strtod_l's locale: a point is the decimal point, whatever the process's locale */

static PyObject *Refused;

/* ------------------------------------------------------------------------------------------------ basics */

static void refuse(Parser *P, const char *why) {
    refuse_with(&P->f, why);
}

static inline void reserve(Parser *P, Buf *b, size_t more) {
    buf_reserve(&P->f, b, more);
}

static inline void put(Parser *P, Buf *b, const void *s, size_t n) {
    buf_put(&P->f, b, s, n);
}

static inline void putc_(Parser *P, Buf *b, char c) {
    buf_putc(&P->f, b, c);
}

#define PUTS(P, b, s) put((P), (b), (s), sizeof(s) - 1)

static void put_int(Parser *P, Buf *b, long long v) {
    char tmp[24];
    put(P, b, tmp, decimal(tmp, v));
}

static inline void column_put(Parser *P, Column *col, const void *s, size_t n, int valid) {
    column_put_row(&P->f, col, P->rows, s, n, valid);
}

static void column_row(Parser *P, int c, const void *s, size_t n, int valid) {
    column_put(P, &P->col[c], s, n, valid);
}

static void column_int(Parser *P, int c, long long v) {
    int64_t x = v;
    put(P, &P->col[c].data, &x, sizeof x);
}

/* ------------------------------------------------------------------------------------------------ JSON lexing */

static inline void ws(Parser *P) {
    while (P->p < P->end && (*P->p == ' ' || *P->p == '\t' || *P->p == '\r' || *P->p == '\n'))
        P->p++;
}

static inline int peek(Parser *P) {
    ws(P);
    return P->p < P->end ? *P->p : -1;
}

static inline void expect(Parser *P, u8 c) {
    if (peek(P) != c)
        refuse(P, "unexpected JSON");
    P->p++;
}

/* After a member or an element: 1 if another follows (the comma eaten), 0 at the closing bracket (eaten). */
static inline int more(Parser *P, u8 close) {
    int c = peek(P);
    if (c == ',') {
        P->p++;
        return 1;
    }
    if (c == close) {
        P->p++;
        return 0;
    }
    refuse(P, "unexpected JSON");
    return 0;
}

/* 1 if the container just opened is empty (its closing bracket eaten). */
static inline int empty(Parser *P, u8 close) {
    if (peek(P) == close) {
        P->p++;
        return 1;
    }
    return 0;
}

static signed char HEXVAL[256];  /* a hex digit's value, -1 for any other byte (filled at import) */

static inline int hexval(u8 c) { return HEXVAL[c]; }

static int hex4(Parser *P, const u8 *s) {
    if (P->end - s < 4)
        refuse(P, "a short \\u escape");
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            refuse(P, "a bad \\u escape");
        v = v * 16 + h;
    }
    return v;
}

/* The length of a valid UTF-8 sequence at s (not ASCII), else a refusal: what Python's strict decoder takes. */
static size_t utf8_len(Parser *P, const u8 *s) {
    size_t n = utf8_seq(s, P->end);
    if (!n)
        refuse(P, "invalid UTF-8");
    return n;
}

/* A JSON string at the cursor, checked whole (escapes, UTF-8, no raw control character; a lone surrogate escape
 * refused unless `any_escape`, for skipped values, where Python takes it). */
static Str string_(Parser *P, int any_escape) {
    if (peek(P) != '"')
        refuse(P, "expected a string");
    const u8 *s = ++P->p, *e = P->end, *q = s;
    int escaped = 0;
    while (q < e) {
        /* eight plain bytes at a time: none a quote, a backslash, a control character or past ASCII */
        while (LITTLE_ENDIAN_SWAR && e - q >= 8) {
            uint64_t x;
            memcpy(&x, q, 8);
            uint64_t special = has_zero(x ^ (ONES * '"')) | has_zero(x ^ (ONES * '\\')) | has_less(x, 0x20) | (x & HIGHS);
            if (special) {  /* the lowest flag is exact (a false one only follows a true one): the first such byte */
                q += __builtin_ctzll(special) >> 3;
                break;
            }
            q += 8;
        }
        if (q >= e)
            break;
        u8 c = *q;
        if (c == '"') {
            P->p = q + 1;
            return (Str){s, (size_t)(q - s), escaped};
        }
        if (c == '\\') {
            escaped = 1;
            if (e - q < 2)
                break;
            u8 x = q[1];
            if (x == 'u') {
                int v = hex4(P, q + 2);
                q += 6;
                if (v >= 0xD800 && v <= 0xDBFF && e - q >= 6 && q[0] == '\\' && q[1] == 'u') {
                    int w = hex4(P, q + 2);
                    if (w >= 0xDC00 && w <= 0xDFFF) {
                        q += 6;
                        continue;
                    }
                }
                if (v >= 0xD800 && v <= 0xDFFF && !any_escape)
                    refuse(P, "a lone surrogate");
                continue;
            }
            if (!strchr("\"\\/bfnrt", x) || x == 0)
                refuse(P, "a bad escape");
            q += 2;
        } else if (c < 0x20) {
            refuse(P, "a control character in a string");
        } else if (c < 0x80) {
            q++;
        } else {
            q += utf8_len(P, q);
        }
    }
    refuse(P, "an unterminated string");
    return (Str){0};
}

static void put_utf8(Parser *P, Buf *b, int cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | cp >> 6);
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | cp >> 12);
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | cp >> 18);
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    put(P, b, t, n);
}

/* The text a checked string stands for (escapes resolved; `string_` refused lone surrogates). */
static void put_text(Parser *P, Buf *b, Str s) {
    if (!s.escaped) {
        put(P, b, s.s, s.n);
        return;
    }
    const u8 *q = s.s, *e = s.s + s.n;
    while (q < e) {
        const u8 *r = q;
        while (r < e && *r != '\\')
            r++;
        put(P, b, q, (size_t)(r - q));
        if (r == e)
            break;
        u8 x = r[1];
        if (x == 'u') {
            int v = hex4(P, r + 2);
            r += 6;
            if (v >= 0xD800 && v <= 0xDBFF) {
                int w = hex4(P, r + 2);
                v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
                r += 6;
            }
            put_utf8(P, b, v);
        } else {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            putc_(P, b, to[strchr(from, x) - from]);
            r += 2;
        }
        q = r;
    }
}

/* A checked string as Python's encoder writes it (ensure_ascii=False). */
static void put_json_string(Parser *P, Buf *b, Str s) {
    if (!s.escaped) {  /* no escape and (checked) no control character: already the encoder's text */
        reserve(P, b, s.n + 2);
        b->p[b->n++] = '"';
        memcpy(b->p + b->n, s.s, s.n);
        b->n += s.n;
        b->p[b->n++] = '"';
        return;
    }
    size_t mark = P->text.n;
    put_text(P, &P->text, s);
    const u8 *q = (const u8 *)P->text.p + mark, *e = (const u8 *)P->text.p + P->text.n;
    putc_(P, b, '"');
    for (; q < e; q++) {
        u8 c = *q;
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            put(P, b, t, 2);
        } else if (c < 0x20) {
            char t[8];
            int n;
            switch (c) {
            case '\n': n = snprintf(t, sizeof t, "\\n"); break;
            case '\r': n = snprintf(t, sizeof t, "\\r"); break;
            case '\t': n = snprintf(t, sizeof t, "\\t"); break;
            case '\b': n = snprintf(t, sizeof t, "\\b"); break;
            case '\f': n = snprintf(t, sizeof t, "\\f"); break;
            default: n = snprintf(t, sizeof t, "\\u%04x", c);
            }
            put(P, b, t, (size_t)n);
        } else {
            putc_(P, b, (char)c);
        }
    }
    putc_(P, b, '"');
    P->text.n = mark;
}

typedef struct {
    const u8 *s;
    size_t n;
    int integer;  /* no fraction, no exponent */
} Num;

static Num number(Parser *P) {
    ws(P);
    const u8 *s = P->p, *q = s, *e = P->end;
    int integer = 1;
    if (q < e && *q == '-')
        q++;
    if (q < e && *q == '0') {
        q++;
    } else if (q < e && *q >= '1' && *q <= '9') {
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    } else {
        refuse(P, "expected a number");
    }
    if (q < e && *q == '.') {
        integer = 0;
        q++;
        if (!(q < e && *q >= '0' && *q <= '9'))
            refuse(P, "a bad number");
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        integer = 0;
        q++;
        if (q < e && (*q == '+' || *q == '-'))
            q++;
        if (!(q < e && *q >= '0' && *q <= '9'))
            refuse(P, "a bad number");
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    }
    P->p = q;
    return (Num){s, (size_t)(q - s), integer};
}

/* Decimal digits -> int64: only the canonical spelling within 64 bits (Python's int() takes more: refused). */
static long long int64_of(Parser *P, const u8 *s, size_t n) {
    const u8 *q = s, *e = s + n;
    int neg = 0;
    if (q < e && *q == '-') {
        neg = 1;
        q++;
    }
    if (q == e || (*q == '0' && (e - q > 1 || neg)))
        refuse(P, "an integer not spelled canonically");
    unsigned long long v = 0;
    for (; q < e; q++) {
        if (*q < '0' || *q > '9')
            refuse(P, "an integer not spelled canonically");
        if (v > (ULLONG_MAX - 9) / 10)
            refuse(P, "an integer past 64 bits");
        v = v * 10 + (unsigned)(*q - '0');
    }
    if (neg ? v > (unsigned long long)INT64_MAX + 1 : v > (unsigned long long)INT64_MAX)
        refuse(P, "an integer past 64 bits");
    return neg ? (long long)(0 - v) : (long long)v;
}

/* An OTLP 64-bit integer: a JSON integer or (the JSON mapping) a decimal string. */
static long long otlp_int(Parser *P) {
    if (peek(P) == '"') {
        Str s = string_(P, 0);
        if (s.escaped)
            refuse(P, "an escaped integer");
        return int64_of(P, s.s, s.n);
    }
    Num n = number(P);
    if (!n.integer)
        refuse(P, "an integer with a fraction or exponent");
    return int64_of(P, n.s, n.n);
}

static int literal(Parser *P, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(P->end - P->p) >= n && memcmp(P->p, word, n) == 0) {
        P->p += n;
        return 1;
    }
    return 0;
}

/* Any JSON value, checked and passed over (a field Python ignores). null is fine here; NaN and Infinity are not. */
static void skip(Parser *P, int depth) {
    if (depth > MAX_DEPTH)
        refuse(P, "nesting too deep");
    int c = peek(P);
    if (c == '"') {
        string_(P, 1);
    } else if (c == '{') {
        P->p++;
        if (empty(P, '}'))
            return;
        do {
            string_(P, 1);
            expect(P, ':');
            skip(P, depth + 1);
        } while (more(P, '}'));
    } else if (c == '[') {
        P->p++;
        if (empty(P, ']'))
            return;
        do
            skip(P, depth + 1);
        while (more(P, ']'));
    } else if (c == 't' || c == 'f' || c == 'n') {
        if (!literal(P, "true") && !literal(P, "false") && !literal(P, "null"))
            refuse(P, "unexpected JSON");
    } else {
        number(P);
    }
}

/* Passes over the value at the cursor (checked) and returns where it starts: a value read later, once what it
 * needs is known (fields come in any order); the reader then sets the cursor there and back. */
static const u8 *pass_over(Parser *P, int depth) {
    const u8 *at = P->p;
    skip(P, depth);
    return at;
}

/* A member's name, for structure: one without escapes (an escaped name would equal a field here only once
 * decoded: refused by the caller when it matters, see `field`). */
typedef struct {
    const u8 *s;
    size_t n;
    int escaped;
} Name;

static Name member(Parser *P) {
    Str s = string_(P, 1);
    expect(P, ':');
    if (!s.escaped)
        return (Name){s.s, s.n, 0};
    /* "string\u0056alue" is stringValue to Python: the name decoded (a lone surrogate is no field's name) */
    P->member_name.n = 0;
    for (size_t i = 0; i + 1 < s.n; i++)
        if (s.s[i] == '\\' && s.s[i + 1] == 'u' && i + 5 < s.n && (s.s[i + 2] == 'd' || s.s[i + 2] == 'D'))
            return (Name){s.s, s.n, 1};
    put_text(P, &P->member_name, s);
    return (Name){(const u8 *)P->member_name.p, P->member_name.n, 0};
}

static inline int is(Name k, const char *word) {
    size_t n = strlen(word);
    return !k.escaped && k.n == n && memcmp(k.s, word, n) == 0;
}

/* Walks the members of the object at the cursor: `m` names each in turn, the body reads its value. */
#define EACH_MEMBER(P, m)                                                                \
    for (int more_ = (expect((P), '{'), !empty((P), '}')); more_; more_ = more((P), '}')) \
        for (Name m = member(P), *once_ = &m; once_; once_ = NULL)

/* Called for a member no field matched: an escaped name may decode to a field's name, so it is refused. */
static inline void unknown(Parser *P, Name k) {
    if (k.escaped)
        refuse(P, "an escaped field name");
    skip(P, 0);
}

/* A field seen twice: Python keeps the last, this reader would have used the first. */
static inline void once(Parser *P, unsigned *seen, unsigned bit) {
    if (*seen & bit)
        refuse(P, "a duplicate field");
    *seen |= bit;
}

/* ------------------------------------------------------------------------------------------------ OTLP values */

/* A JSON number whose text is already Python's repr of the double it stands for, read without the GIL: a plain
 * decimal ("-12.5", "0.002", "3600.0"; or an integer "5", whose repr is "5.0") of at most 15 significant digits,
 * no trailing zero after the point but a lone ".0", at most three zeros after "0." (repr writes smaller numbers
 * with an exponent). At most 15 digits: no other decimal as short stands for the same double, so the text is the
 * shortest, which repr writes; and the digits as an integer and the power of ten are exact doubles, so one
 * division gives the correctly rounded value, as float() does. 1 with the double in *d and the repr in `out`; 0
 * for any other text (Python's own functions then read it). */
static int short_double(Parser *P, Num n, Buf *out, double *d) {
    const u8 *q = n.s, *e = n.s + n.n;
    int negative = q < e && *q == '-';
    q += negative;
    const u8 *point = memchr(q, '.', (size_t)(e - q));
    if (!n.integer && !point)
        return 0;  /* an exponent */
    uint64_t digits = 0;
    int significant = 0, after = 0, leading_fraction_zeros = 0;
    for (const u8 *c = q; c < e; c++) {
        if (*c == '.')
            continue;
        if (*c < '0' || *c > '9')
            return 0;
        if (significant || *c != '0')
            significant++;
        else if (point && c > point)
            leading_fraction_zeros++;
        if (significant > 15)
            return 0;
        digits = digits * 10 + (uint64_t)(*c - '0');
        after += point && c > point;
    }
    if (point) {
        if (e[-1] == '0' && !(e - point == 2))  /* a trailing zero, but for a lone ".0" */
            return 0;
        if (point - q == 1 && *q == '0' && digits && leading_fraction_zeros > 3)
            return 0;  /* below 1e-4: repr writes an exponent */
    }
    static const double TENS[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19};
    if (after >= (int)(sizeof TENS / sizeof *TENS))
        return 0;
    *d = (double)digits / TENS[after];
    if (negative && !(n.integer && digits == 0))  /* an integer literal is an int to json: -0 is 0.0 */
        *d = -*d;
    if (n.integer) {
        if (n.n == 2 && negative && digits == 0) {
            PUTS(P, out, "0.0");
        } else {
            put(P, out, n.s, n.n);
            PUTS(P, out, ".0");
        }
    } else {
        put(P, out, n.s, n.n);
    }
    return 1;
}

/* Whether the plain decimal text s[0:n] (no exponent), read as the double d (strtod_l of that text), is proven to be
 * Python's repr of d, without the GIL: repr writes the shortest digits that read back as d, the nearest to d of
 * those, in plain notation where the point falls within 16 digits and after at most three zeros. 1 when proven; 0
 * when not (whether or not repr differs: the caller then asks Python). Proven with exact integer arithmetic on
 * d = m * 2^e and the text = D * 10^-k, everything scaled by 2^(1-e) * 10^k: d's rounding interval is
 * [X - U, X + U], the text's last digit unit is 2H, and the decimals of one digit fewer are the multiples of G.
 * Both bounds are strict (a tie is left to Python). A decimal a digit shorter but of a lower power of ten lies on
 * the finer grid: a text within ten units above a power of ten is left to Python, and beyond that such a decimal
 * is more than 19H from d, past the interval while U < 19H. Only where it all fits 128 bits. */
static int repr_proven(const u8 *s, size_t n, double d) {
    const u8 *q = s, *e = s + n;
    if (q < e && *q == '-')
        q++;
    if (e - q < 3 || e[-1] == '0' || !isfinite(d) || d == 0)
        return 0;
    const u8 *point = memchr(q, '.', (size_t)(e - q));
    if (!point || point == q || point + 1 >= e)
        return 0;
    size_t whole = (size_t)(point - q);
    int zeros = 0;  /* zeros after "0." */
    if (q[0] == '0') {
        if (whole != 1)
            return 0;
        for (const u8 *c = point + 1; c < e && *c == '0'; c++)
            zeros++;
        if (zeros > 3)
            return 0;  /* repr writes an exponent below 1e-4 */
    } else if (whole > 16) {
        return 0;  /* ... and from 1e16 */
    }
    uint64_t D = 0;
    int digits = 0;
    for (const u8 *c = q; c < e; c++) {
        if (c == point)
            continue;
        if (*c < '0' || *c > '9')
            return 0;
        if (!digits && *c == '0')
            continue;
        if (++digits > 17)
            return 0;
        D = D * 10 + (uint64_t)(*c - '0');
    }
    int k = (int)(e - point - 1);  /* digits after the point */
    if (digits < 2 || k > 22)
        return 0;
    uint64_t low = 1;  /* 10^(digits - 1) */
    for (int i = 1; i < digits; i++)
        low *= 10;
    if (D < low + 10 || D > low * 10 - 10)
        return 0;
    int exp2;
    double frac = frexp(fabs(d), &exp2);  /* |d| = frac * 2^exp2, frac in [0.5, 1) */
    uint64_t m = (uint64_t)ldexp(frac, 53);
    int be = exp2 - 53;  /* |d| = m * 2^be */
    if (m == (1ULL << 52) || be > 0 || be < -70)
        return 0;  /* the interval is lopsided at a power of two; or past what is scaled here */
    typedef unsigned __int128 u128;
    u128 ten_k = 1;
    for (int i = 0; i < k; i++)
        ten_k *= 10;
    u128 X = (u128)m * 2 * ten_k;         /* d */
    u128 T = (u128)D << (1 - be);         /* the text */
    u128 H = (u128)1 << (-be);            /* half the text's last digit unit */
    u128 U = ten_k;                        /* half d's unit in the last place */
    u128 G = (u128)10 << (1 - be);        /* a digit fewer */
    if (U >= 19 * H || (T > X ? T - X : X - T) >= H)
        return 0;  /* not the nearest decimal of its length (or a tie) */
    u128 below = X / G * G, above = below + G;
    return below + U < X && above > X + U;  /* no decimal a digit shorter reads back as d */
}

static double double_value(Parser *P, Buf *out) {
    Num n = number(P);
    double quick;
    if (short_double(P, n, out, &quick))
        return quick;
    char tmp[40], repr[40];
    if (n.n >= sizeof tmp)
        refuse(P, "a long number");
    memcpy(tmp, n.s, n.n);
    tmp[n.n] = 0;
    if (!P->eager && !n.integer && C_NUMERIC) {
        /* most writers write a double's shortest text, which is Python's repr too: the text is written as it came
         * and the value read here; what repr_proven cannot prove, parse() asks Python about once the range is read
         * (one taking of the GIL for the range, not one per double), and reads the range again eagerly if any
         * differs */
        char *end = NULL;
        double d = strtod_l(tmp, &end, C_NUMERIC);
        if (end == tmp + n.n && isfinite(d)) {
            if (!repr_proven(n.s, n.n, d)) {
                Pending pending = {n.s, n.n, d};
                put(P, &P->pending, &pending, sizeof pending);
            }
            put(P, out, n.s, n.n);
            return d;
        }
    }
    /* float() and repr() are Python's own: the text is the Python reader's to the last digit */
    PyEval_RestoreThread(P->ts);
    char *end = NULL, *text = NULL;
    double d = PyOS_string_to_double(tmp, &end, NULL);
    if (n.integer && d == 0)
        d = 0.0;  /* an integer literal is an int to json, then float(int): -0 is 0.0 */
    if (PyErr_Occurred())
        PyErr_Clear();
    else if (end == tmp + n.n && isfinite(d))
        text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    size_t len = 0;
    if (text) {
        len = strlen(text);
        if (len < sizeof repr)
            memcpy(repr, text, len);
        PyMem_Free(text);
    }
    P->ts = PyEval_SaveThread();
    if (!text || len >= sizeof repr)
        refuse(P, "a double Python reads otherwise");
    put(P, out, repr, len);
    return d;
}

/* A JSON list at the cursor -> a JSON array in `out`, `each` reading one element (at nesting `depth`) and writing
 * it. */
static void json_list(Parser *P, Buf *out, int depth, void (*each)(Parser *, Buf *, int)) {
    expect(P, '[');
    putc_(P, out, '[');
    if (!empty(P, ']')) {
        int first = 1;
        do {
            if (!first)
                putc_(P, out, ',');
            first = 0;
            each(P, out, depth);
        } while (more(P, ']'));
    }
    putc_(P, out, ']');
}

static void any_value(Parser *P, Buf *out, int depth, Str *str, Val *v);

static void array_element(Parser *P, Buf *out, int depth) {
    any_value(P, out, depth, NULL, NULL);
}

static void key_values(Parser *P, Buf *out, int depth, int find_service, int facts_from, int facts_to);

/* An AnyValue object -> its JSON text (_otlp_json.any_value): exactly one known field, or none (null). Sets
 * `*str` when the value is a stringValue (the resource's service.name), and `*v` (when given) to what it was. */
static void any_value(Parser *P, Buf *out, int depth, Str *str, Val *v) {
    Val scratch;
    if (!v)
        v = &scratch;
    v->kind = V_OTHER;
    if (depth > MAX_DEPTH)
        refuse(P, "nesting too deep");
    expect(P, '{');
    if (empty(P, '}')) {
        PUTS(P, out, "null");
        v->kind = V_NULL;
        return;
    }
    Name k = member(P);
    if (is(k, "stringValue")) {
        Str s = string_(P, 0);
        put_json_string(P, out, s);
        if (str)
            *str = s;
        v->kind = V_STR;
        v->s = s;
    } else if (is(k, "intValue")) {
        v->kind = V_INT;
        v->i = otlp_int(P);
        put_int(P, out, v->i);
    } else if (is(k, "doubleValue")) {
        v->kind = V_DBL;
        v->d = double_value(P, out);
    } else if (is(k, "boolValue")) {
        ws(P);
        v->kind = V_BOOL;
        if (literal(P, "true")) {
            PUTS(P, out, "true");
            v->i = 1;
        } else if (literal(P, "false")) {
            PUTS(P, out, "false");
            v->i = 0;
        } else {
            refuse(P, "boolValue: not a boolean");
        }
    } else if (is(k, "bytesValue")) {
        put_json_string(P, out, string_(P, 0));  /* the base64 text, as the JSON mapping has it */
    } else if (is(k, "arrayValue") || is(k, "kvlistValue")) {
        int array = is(k, "arrayValue");
        ws(P);
        if (array) {
            v->kind = V_ARR;
            v->at = P->p;
        }
        expect(P, '{');
        if (empty(P, '}')) {
            put(P, out, array ? "[]" : "{}", 2);
        } else {
            Name v = member(P);
            if (!is(v, "values"))
                refuse(P, "a field of an array or kvlist value");
            if (array) {
                json_list(P, out, depth + 1, array_element);
            } else {
                key_values(P, out, depth + 1, 0, 0, 0);
            }
            expect(P, '}');
        }
    } else {
        refuse(P, "an unknown or escaped field of a value");
    }
    if (peek(P) != '}')
        refuse(P, "a value with two fields");
    P->p++;
}

typedef struct {
    size_t at, n;  /* the encoded key, in the output */
    uint64_t print;
} Key;

static inline int fact_key_is(const Parser *P, int f, uint64_t print, const char *key, size_t n) {
    return P->fkeys[f].print == print && P->fkeys[f].n == n && memcmp(P->fkeys[f].key, key, n) == 0;
}

/* The fact key of [from, to) that the encoded key `key` is (its fingerprint `print`), or -1: looked up in the
 * index of its part (fact_index), or searched whole. */
static inline int fact_of(const Parser *P, int from, int to, uint64_t print, const char *key, size_t n) {
    if (from >= to)
        return -1;
    int part = from == P->nres && to == P->nfacts ? 1 : from == 0 && to == P->nres ? 0 : -1;
    if (part >= 0 && !P->findex_full[part]) {
        unsigned bucket = (unsigned)(print >> 56);
        for (int i = 0; i < P->findex_n[part][bucket]; i++) {
            int f = P->findex[part][bucket][i];
            if (fact_key_is(P, f, print, key, n))
                return f;
        }
        return -1;
    }
    for (int f = from; f < to; f++)
        if (fact_key_is(P, f, print, key, n))
            return f;
    return -1;
}

/* A KeyValue list -> its JSON object (_otlp_json.key_values). Keys must be distinct: Python makes a dict (a
 * repeated key keeps its place, the last value wins). With `find_service`, the string value of service.name is
 * kept in P->service. The values of the fact keys [facts_from, facts_to) are kept in P->vals. */
static void key_values(Parser *P, Buf *out, int depth, int find_service, int facts_from, int facts_to) {
    Key keys[MAX_KEYS];
    int nkeys = 0;
    expect(P, '[');
    putc_(P, out, '{');
    if (empty(P, ']')) {
        putc_(P, out, '}');
        return;
    }
    do {
        if (nkeys == MAX_KEYS)
            refuse(P, "too many attributes");
        /* "key" then "value", as every producer writes them: the value is read into place; a value before its key
         * is passed over (checked) and read once the key is written */
        const u8 *value_at = NULL;
        Str str = {0};
        size_t at = 0, n = 0;
        unsigned seen = 0;
        int wrote_value = 0;
        Val *slot = NULL;
        EACH_MEMBER(P, m) {
            if (is(m, "key")) {
                once(P, &seen, 1);
                Str key = string_(P, 0);
                if (nkeys)
                    putc_(P, out, ',');
                at = out->n;
                put_json_string(P, out, key);
                n = out->n - at;
                uint64_t print = fingerprint(out->p + at, n);
                for (int i = 0; i < nkeys; i++)
                    if (keys[i].print == print && keys[i].n == n && memcmp(out->p + keys[i].at, out->p + at, n) == 0)
                        refuse(P, "a repeated attribute key");
                keys[nkeys++] = (Key){at, n, print};
                int f = fact_of(P, facts_from, facts_to, print, out->p + at, n);
                if (f >= 0)
                    slot = &P->vals[f];
                putc_(P, out, ':');
                if (value_at) {
                    const u8 *resume = P->p;
                    P->p = value_at;
                    any_value(P, out, depth + 1, &str, slot);
                    P->p = resume;
                    wrote_value = 1;
                }
            } else if (is(m, "value")) {
                once(P, &seen, 2);
                if (seen & 1) {
                    any_value(P, out, depth + 1, &str, slot);
                    wrote_value = 1;
                } else {
                    value_at = pass_over(P, depth + 1);
                }
            } else {
                unknown(P, m);
            }
        }
        if (!(seen & 1))
            refuse(P, "an attribute without a key");
        if (!wrote_value) {
            PUTS(P, out, "null");  /* kv.get("value", {}): no value is null */
            if (slot)
                slot->kind = V_NULL;
        }
        if (find_service && str.s && n == sizeof("\"service.name\"") - 1 &&
            memcmp(out->p + at, "\"service.name\"", n) == 0) {
            P->service.n = 0;
            put_text(P, &P->service, str);
            P->has_service = 1;
        }
    } while (more(P, ']'));
    putc_(P, out, '}');
}

/* ------------------------------------------------------------------------------------------------ ids, enums */

static const char HEX[] = "0123456789abcdef";

static int b64val(u8 c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* An id of `size` bytes -> 2*size lower-case hex digits in `out` (_rows.hex_id): hex of up to 2*size digits (any
 * case, left-padded), or padded base64 of exactly `size` bytes. Returns 0 for "" or all zeros ("none"). */
static int id(Parser *P, int size, char *out) {
    Str s = string_(P, 0);
    if (s.escaped)
        refuse(P, "an escaped id");
    if (s.n == 0)
        return 0;
    size_t width = 2 * (size_t)size, i;
    int nonzero = 0;
    for (i = 0; i < s.n && hexval(s.s[i]) >= 0; i++)
        ;
    if (i == s.n && s.n <= width) {
        memset(out, '0', width - s.n);
        for (i = 0; i < s.n; i++) {
            char c = HEX[hexval(s.s[i])];
            out[width - s.n + i] = c;
            nonzero |= c != '0';
        }
        return nonzero;
    }
    /* base64: 16 bytes are 22 characters and "==", 8 bytes 11 and "=" (bits past the bytes are ignored) */
    size_t chars = size == 16 ? 22 : 11, pads = size == 16 ? 2 : 1;
    if (s.n != chars + pads)
        refuse(P, "an id neither hex nor base64 of its size");
    for (i = chars; i < s.n; i++)
        if (s.s[i] != '=')
            refuse(P, "an id neither hex nor base64 of its size");
    unsigned acc = 0;
    int bits = 0, o = 0;
    for (i = 0; i < chars; i++) {
        int v = b64val(s.s[i]);
        if (v < 0)
            refuse(P, "an id neither hex nor base64 of its size");
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            u8 byte = (u8)(acc >> bits);
            out[o++] = HEX[byte >> 4];
            out[o++] = HEX[byte & 15];
            nonzero |= byte != 0;
        }
    }
    return nonzero;
}

/* A span's or a link's own ids: none ("" or all zeros) is a bad record to Python. */
static void required_id(Parser *P, int size, char *out) {
    if (!id(P, size, out))
        refuse(P, "an id missing or zero");
}

/* A span's or a link's traceId or spanId member (bits 1 and 2 of `seen`): read into `trace` / `span`; 0 for any
 * other member. */
static int own_ids(Parser *P, Name m, unsigned *seen, char *trace, char *span) {
    if (is(m, "traceId")) {
        once(P, seen, 1);
        required_id(P, 16, trace);
        return 1;
    }
    if (is(m, "spanId")) {
        once(P, seen, 2);
        required_id(P, 8, span);
        return 1;
    }
    return 0;
}

/* An OTLP enum: its number or its proto name ("SPAN_KIND_SERVER") -> the index in `names`. */
static int enum_(Parser *P, const char *prefix, const char *const *names, int count) {
    if (peek(P) == '"') {
        Str s = string_(P, 0);
        size_t pl = strlen(prefix);
        if (!s.escaped && s.n > pl && memcmp(s.s, prefix, pl) == 0)
            for (int i = 0; i < count; i++)
                if (strlen(names[i]) == s.n - pl && memcmp(s.s + pl, names[i], s.n - pl) == 0)
                    return i;
        refuse(P, "an unknown enum name");
    }
    Num n = number(P);
    if (!n.integer || n.n != 1 || n.s[0] < '0' || n.s[0] >= '0' + count)
        refuse(P, "an unknown enum value");
    return n.s[0] - '0';
}

static const char *const KINDS[] = {"UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};
static const char *const CODES[] = {"UNSET", "OK", "ERROR"};

/* ------------------------------------------------------------------------------------------------ spans */

/* Reads the value passed over at `at` (earlier on this line) with `read`, and puts the cursor back. Fields come in
 * any order; where a value's rows need a field written after it, the value is read once that field is known. */
static void read_at(Parser *P, const u8 *at, void (*read)(Parser *, Buf *), Buf *out) {
    const u8 *resume = P->p;
    P->p = at;
    read(P, out);
    P->p = resume;
}

static void attributes_list(Parser *P, Buf *out) {
    key_values(P, out, 1, 0, 0, 0);
}

/* An event's or a link's attributes, passed over at `at` (NULL: none): the object, written last. */
static void put_attributes_at(Parser *P, Buf *out, const u8 *at) {
    PUTS(P, out, ",\"attributes\":");
    if (at)
        read_at(P, at, attributes_list, out);
    else
        PUTS(P, out, "{}");
    putc_(P, out, '}');
}

/* A span event -> {"name", "time_ns", "attributes"}, in that order whatever the order of its fields. */
static void span_event(Parser *P, Buf *out, int depth) {
    Str name = {(const u8 *)"", 0, 0};
    long long time = 0;
    const u8 *attrs_at = NULL;
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (is(m, "name")) {
            once(P, &seen, 1);
            name = string_(P, 0);
        } else if (is(m, "timeUnixNano")) {
            once(P, &seen, 2);
            time = otlp_int(P);
        } else if (is(m, "attributes")) {
            once(P, &seen, 4);
            attrs_at = pass_over(P, 1);
        } else {
            unknown(P, m);
        }
    }
    PUTS(P, out, "{\"name\":");
    put_json_string(P, out, name);
    PUTS(P, out, ",\"time_ns\":");
    put_int(P, out, time);
    put_attributes_at(P, out, attrs_at);
}

/* A span link -> {"trace_id", "span_id", "attributes"}. */
static void span_link(Parser *P, Buf *out, int depth) {
    char trace[32], span[16];
    const u8 *attrs_at = NULL;
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (own_ids(P, m, &seen, trace, span)) {
            /* read */
        } else if (is(m, "attributes")) {
            once(P, &seen, 4);
            attrs_at = pass_over(P, 1);
        } else {
            unknown(P, m);
        }
    }
    if ((seen & 3) != 3)
        refuse(P, "a link without its ids");
    PUTS(P, out, "{\"trace_id\":\"");
    put(P, out, trace, 32);
    PUTS(P, out, "\",\"span_id\":\"");
    put(P, out, span, 16);
    putc_(P, out, '"');
    put_attributes_at(P, out, attrs_at);
}

/* ------------------------------------------------------------------------------------------------ facts' inputs */

static void fact_bit(Parser *P, Buf *bits, int on) {
    Py_ssize_t row = P->rows;
    if ((row & 7) == 0) {
        reserve(P, bits, 1);
        bits->p[bits->n++] = 0;
    }
    if (on)
        bits->p[row >> 3] |= (char)(1 << (row & 7));
}

/* A VARCHAR[] from an arrayValue of stringValues (from_json's list); 0 when it holds anything else. */
static int fact_texts(Parser *P, FactColumn *f, const u8 *at) {
    const u8 *resume = P->p;
    int ok = 1;
    size_t mark = P->text.n;
    int32_t count = 0;
    P->p = at;
    expect(P, '{');
    if (!empty(P, '}')) {
        member(P);  /* "values" (checked when first read) */
        expect(P, '[');
        if (!empty(P, ']')) {
            do {
                expect(P, '{');
                if (empty(P, '}') || !is(member(P), "stringValue")) {
                    ok = 0;
                    break;
                }
                size_t from = P->text.n;
                Str each = string_(P, 0);
                put_text(P, &P->text, each);
                if (each.escaped && memchr(P->text.p + from, 0, P->text.n - from)) {  /* only an escape is a NUL */
                    ok = 0;
                    break;
                }
                int32_t end = (int32_t)(P->text.n - mark);
                put(P, &P->child_ends, &end, sizeof end);
                count++;
                expect(P, '}');
            } while (more(P, ']'));
        }
    }
    P->p = resume;
    if (ok) {
        const int32_t *ends = (const int32_t *)P->child_ends.p;
        for (int32_t i = 0; i < count; i++) {
            int32_t start = i ? ends[i - 1] : 0;
            put(P, &f->child_data, P->text.p + mark + start, (size_t)(ends[i] - start));
            if (f->child_data.n > INT32_MAX)
                refuse(P, "a column past 2 GB");
            int32_t end = (int32_t)f->child_data.n;
            put(P, &f->child_offsets, &end, sizeof end);
        }
        f->children += count;
    }
    P->child_ends.n = 0;
    P->text.n = mark;
    return ok;
}

/* This span's row of every fact column. A value from_json would read otherwise than this code (a double as text, a
 * string as a number, an array of anything but strings, a NUL in a string, ...) leaves the span's facts to
 * span_facts.sql: the row is marked inexact, and its fact columns hold NULL. */
static int fact_columns_row(Parser *P) {
    int exact = 1;
    for (int i = 0; i < P->nfacts; i++) {
        FactColumn *f = &P->fcol[i];
        Val *v = &P->vals[i];
        int valid = 0;
        if (f->type == F_TEXT) {
            size_t mark = P->text.n;
            char number[24];
            const char *t = NULL;
            size_t n = 0;
            if (v->kind == V_STR) {
                put_text(P, &P->text, v->s);
                t = P->text.p + mark;
                n = P->text.n - mark;
                valid = !v->s.escaped || !memchr(t, 0, n);  /* a NUL comes only from an escape (string_) */
            } else if (v->kind == V_INT) {
                n = decimal(number, v->i);
                t = number;
                valid = 1;
            } else if (v->kind == V_BOOL) {
                t = v->i ? "true" : "false";
                n = strlen(t);
                valid = 1;
            }
            exact &= valid || v->kind == V_NONE || v->kind == V_NULL;
            column_put(P, &f->c, t, valid ? n : 0, valid);
            P->text.n = mark;
        } else if (f->type == F_TEXTS) {
            valid = v->kind == V_ARR && fact_texts(P, f, v->at);
            exact &= valid || v->kind == V_NONE || v->kind == V_NULL;
            fact_bit(P, &f->c.valid, valid);
            f->c.nulls += !valid;
            int32_t end = f->children;
            put(P, &f->c.offsets, &end, sizeof end);
        } else {
            double d = 0;
            long long x = 0;
            if (f->type == F_DOUBLE && (v->kind == V_DBL || v->kind == V_INT)) {
                d = v->kind == V_DBL ? v->d : (double)v->i;
                valid = 1;
            } else if (f->type == F_INT && v->kind == V_INT) {
                x = v->i;
                valid = 1;
            }
            exact &= valid || v->kind == V_NONE || v->kind == V_NULL;
            fact_bit(P, &f->c.valid, valid);
            f->c.nulls += !valid;
            if (f->type == F_DOUBLE)
                put(P, &f->c.data, &d, sizeof d);
            else
                put(P, &f->c.data, &x, sizeof x);
        }
    }
    return exact;
}

/* One span -> one row of every column. */
static void span(Parser *P) {
    char trace[32], span_id[16], parent[16];
    int has_parent = 0, kind = 0, code = 0;
    long long start = 0, end = 0;
    Str name = {(const u8 *)"", 0, 0}, message = {0};
    unsigned seen = 0;
    P->attrs.n = P->events.n = P->links.n = 0;
    for (int f = P->nres; f < P->nfacts; f++)
        P->vals[f].kind = V_NONE;
    EACH_MEMBER(P, m) {
        if (own_ids(P, m, &seen, trace, span_id)) {
            /* read */
        } else if (is(m, "parentSpanId")) {
            once(P, &seen, 4);
            has_parent = id(P, 8, parent);
        } else if (is(m, "name")) {
            once(P, &seen, 8);
            name = string_(P, 0);
        } else if (is(m, "kind")) {
            once(P, &seen, 16);
            kind = enum_(P, "SPAN_KIND_", KINDS, 6);
        } else if (is(m, "startTimeUnixNano")) {
            once(P, &seen, 32);
            start = otlp_int(P);
        } else if (is(m, "endTimeUnixNano")) {
            once(P, &seen, 64);
            end = otlp_int(P);
        } else if (is(m, "status")) {
            once(P, &seen, 128);
            unsigned st = 0;
            EACH_MEMBER(P, f) {
                if (is(f, "code")) {
                    once(P, &st, 1);
                    code = enum_(P, "STATUS_CODE_", CODES, 3);
                } else if (is(f, "message")) {
                    once(P, &st, 2);
                    message = string_(P, 0);
                } else {
                    unknown(P, f);
                }
            }
        } else if (is(m, "attributes")) {
            once(P, &seen, 256);
            key_values(P, &P->attrs, 0, 0, P->nres, P->nfacts);
        } else if (is(m, "events")) {
            once(P, &seen, 512);
            json_list(P, &P->events, 0, span_event);
        } else if (is(m, "links")) {
            once(P, &seen, 1024);
            json_list(P, &P->links, 0, span_link);
        } else {
            unknown(P, m);
        }
    }
    if ((seen & 3) != 3)
        refuse(P, "a span without its ids");
    column_row(P, C_TRACE, trace, 32, 1);
    column_row(P, C_SPAN, span_id, 16, 1);
    column_row(P, C_PARENT, parent, 16, has_parent);
    size_t mark = P->text.n;
    put_text(P, &P->text, name);
    column_row(P, C_NAME, P->text.p + mark, P->text.n - mark, 1);
    P->text.n = mark;
    column_row(P, C_KIND, KINDS[kind], strlen(KINDS[kind]), 1);
    column_int(P, C_START, start);
    column_int(P, C_END, end);
    column_row(P, C_STATUS, CODES[code], strlen(CODES[code]), 1);
    put_text(P, &P->text, message);  /* an empty message is NULL */
    column_row(P, C_MESSAGE, P->text.p + mark, P->text.n - mark, P->text.n > mark);
    P->text.n = mark;
    column_row(P, C_SERVICE, P->service.p, P->service.n, P->has_service);
    column_row(P, C_RESOURCE, P->resource.p, P->resource.n, 1);
    column_row(P, C_ATTRS, (seen & 256) ? P->attrs.p : "{}", (seen & 256) ? P->attrs.n : 2, 1);
    column_row(P, C_EVENTS, (seen & 512) ? P->events.p : "[]", (seen & 512) ? P->events.n : 2, 1);
    column_row(P, C_LINKS, (seen & 1024) ? P->links.p : "[]", (seen & 1024) ? P->links.n : 2, 1);
    column_row(P, C_SCOPE, P->scope.p, P->scope.n, P->has_scope);
    char number[24];
    size_t digits = decimal(number, P->line);
    reserve(P, &P->text, P->prefix_len + (size_t)digits);
    memcpy(P->text.p + mark, P->prefix, P->prefix_len);
    memcpy(P->text.p + mark + P->prefix_len, number, (size_t)digits);
    column_row(P, C_SOURCE, P->text.p + mark, P->prefix_len + (size_t)digits, 1);
    if (P->nfacts) {
        /* a span that may hold a credential, or a token check among its events (the stream checks), gets its
         * facts from span_facts.sql (after the redaction, and with the checks) */
        int exact = fact_columns_row(P) && !P->resource_hinted;
        size_t name_n = 0;
        exact = exact && !((seen & 256) && hinted(P->attrs.p, P->attrs.n)) &&
                !((seen & 512) && (hinted(P->events.p, P->events.n) ||
                                   memmem(P->events.p, P->events.n, "jit.token.check", 15))) &&
                !((seen & 1024) && hinted(P->links.p, P->links.n));
        if (exact) {
            put_text(P, &P->text, name);
            put_text(P, &P->text, message);
            name_n = P->text.n - mark;
            exact = !hinted(P->text.p + mark, name_n);
            P->text.n = mark;
        }
        fact_bit(P, &P->inexact, !exact);
        P->inexacts += !exact;
    }
    P->rows++;
}

static void array_of(Parser *P, void (*each)(Parser *)) {
    expect(P, '[');
    if (empty(P, ']'))
        return;
    do
        each(P);
    while (more(P, ']'));
}

/* An entry holding a head (a resource, a scope) and the list of what it heads (scopes, spans), whose rows need the
 * head: the list is read when met if the head was read before it, else passed over and read after the entry (fields
 * come in any order). The list's old name (`old`, from before OTLP 1.0) is refused. */
static void headed_list(Parser *P, const char *head, void (*read_head)(Parser *), const char *list,
                        void (*each)(Parser *), const char *old) {
    const u8 *list_at = NULL;
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (is(m, head)) {
            once(P, &seen, 1);
            read_head(P);
        } else if (is(m, list)) {
            once(P, &seen, 2);
            if (seen & 1) {
                array_of(P, each);
            } else {
                list_at = pass_over(P, 0);
            }
        } else if (is(m, old)) {
            refuse(P, old);
        } else {
            unknown(P, m);
        }
    }
    if (list_at) {
        const u8 *resume = P->p;
        P->p = list_at;
        array_of(P, each);
        P->p = resume;
    }
}

/* A scope: its name (other fields are not read). */
static void scope(Parser *P) {
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (is(m, "name")) {
            once(P, &seen, 1);
            put_text(P, &P->scope, string_(P, 0));
            P->has_scope = 1;
        } else {
            unknown(P, m);
        }
    }
}

/* A resource: its attributes, and service.name among them. */
static void resource(Parser *P) {
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (is(m, "attributes")) {
            once(P, &seen, 1);
            P->resource.n = 0;
            key_values(P, &P->resource, 0, 1, 0, P->nres);
            P->resource_hinted = hinted(P->resource.p, P->resource.n);
        } else {
            unknown(P, m);
        }
    }
}

static void scope_spans(Parser *P) {
    P->has_scope = 0;
    P->scope.n = 0;
    headed_list(P, "scope", scope, "spans", span, "instrumentationLibrary");
}

static void resource_spans(Parser *P) {
    P->resource.n = 0;
    PUTS(P, &P->resource, "{}");
    P->has_service = 0;
    P->service.n = 0;
    P->resource_hinted = 0;
    for (int f = 0; f < P->nres; f++)
        P->vals[f].kind = V_NONE;
    headed_list(P, "resource", resource, "scopeSpans", scope_spans, "instrumentationLibrarySpans");
}

/* One line: an export request of spans and nothing the Python reader reads besides (logs, other signals). */
static void request(Parser *P) {
    unsigned seen = 0;
    EACH_MEMBER(P, m) {
        if (is(m, "resourceSpans")) {
            once(P, &seen, 1);
            array_of(P, resource_spans);
        } else if (m.n >= 8 && memcmp(m.s, "resource", 8) == 0) {
            refuse(P, "another signal beside the spans");
        } else {
            unknown(P, m);
        }
    }
    if (!seen)
        refuse(P, "a line without resourceSpans");
    ws(P);
    if (P->p != P->end)
        refuse(P, "content after the object");
}

/* ------------------------------------------------------------------------------------------------ module */

static void parser_free(Parser *P) {
    for (int c = 0; c < NCOLS; c++) {
        free(P->col[c].data.p);
        free(P->col[c].offsets.p);
        free(P->col[c].valid.p);
    }
    for (int f = 0; f < P->nfacts; f++) {
        FactColumn *c = &P->fcol[f];
        Buf *own[] = {&c->c.data, &c->c.offsets, &c->c.valid, &c->child_data, &c->child_offsets};
        for (size_t i = 0; i < sizeof own / sizeof *own; i++)
            free(own[i]->p);
    }
    Buf *bufs[] = {&P->resource, &P->service, &P->scope, &P->attrs, &P->events, &P->links, &P->text, &P->member_name,
                   &P->child_ends, &P->inexact, &P->pending};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]->p);
}

/* Reads lines [start, end) of `data`; returns the number of records (non-blank lines), or -1 (P->f.why says why). */
static long long read_lines(Parser *P, const u8 *data, Py_ssize_t start, Py_ssize_t end, long long first_line) {
    volatile long long records = 0;
    if (setjmp(P->f.jump))
        return -1;
    int32_t zero = 0;
    for (int c = 0; c < NCOLS; c++)
        if (!IS_INT_COLUMN(c))
            put(P, &P->col[c].offsets, &zero, sizeof zero);
    for (int f = 0; f < P->nfacts; f++) {
        if (P->fcol[f].type == F_TEXT || P->fcol[f].type == F_TEXTS)
            put(P, &P->fcol[f].c.offsets, &zero, sizeof zero);
        if (P->fcol[f].type == F_TEXTS)
            put(P, &P->fcol[f].child_offsets, &zero, sizeof zero);
    }
    const u8 *q = data + start, *e = data + end;
    P->line = first_line;
    while (q < e) {
        const u8 *nl = memchr(q, '\n', (size_t)(e - q));
        const u8 *line_end = nl ? nl : e;
        P->line_from = q - data;
        P->line_to = (nl ? nl + 1 : e) - data;
        P->p = q;
        P->end = line_end;
        ws(P);
        if (P->p < P->end) {  /* a blank line is skipped, as Python's str.strip() skips it */
            request(P);
            records++;
        }
        q = nl ? nl + 1 : e;
        P->line++;
    }
    return records;
}


PyDoc_STRVAR(parse_doc,
"parse(data, start, end, first_line, prefix, facts=None) -> (records, spans, columns, fact_columns, inexact)\n\n"
"The spans of lines [start, end) of `data` (a buffer: bytes or mmap), the first numbered `first_line`; a span's\n"
"source is `prefix` (bytes: 'path:') and its line number. `columns` holds, per column of schema.SPANS, Arrow\n"
"buffers: (validity bitmap or None, null count, int32 offsets, data) for text, (None, 0, None, int64 values) for\n"
"times; each buffer a Block (the buffer protocol, no copy).\n"
"`facts`, (resource keys, attribute keys), each a sequence of (key as JSON text, type: 0 VARCHAR, 1 DOUBLE,\n"
"2 BIGINT, 3 VARCHAR[]), asks for a column per key as from_json types it: (validity, nulls, offsets, data) for\n"
"VARCHAR, (validity, nulls, None, data) for numbers, (validity, nulls, offsets, (string offsets, string data)) for\n"
"VARCHAR[]; `inexact` is (bitmap, count) of the spans whose facts these columns do not give (None without facts).\n"
"Raises Refused when the Python reader might read any of the lines otherwise: its args are (why, the line's number,\n"
"the line's start and end in `data`, its newline included); the lines before it were read without a refusal.");

/* The index fact_of looks keys up in: each part's keys by the top byte of their fingerprint. */
static void fact_index(Parser *P) {
    for (int part = 0; part < 2; part++) {
        int from = part ? P->nres : 0, to = part ? P->nfacts : P->nres;
        for (int f = from; f < to && !P->findex_full[part]; f++) {
            unsigned bucket = (unsigned)(P->fkeys[f].print >> 56);
            if (P->findex_n[part][bucket] == FACT_SLOTS)
                P->findex_full[part] = 1;
            else
                P->findex[part][bucket][P->findex_n[part][bucket]++] = (unsigned char)f;
        }
    }
}

/* The fact keys of `facts` (see parse_doc) into P; 0 with an exception set when they are not as described. The key
 * texts stay owned by `facts`, which the caller holds for the call. */
static int fact_keys(Parser *P, PyObject *facts) {
    if (facts == Py_None)
        return 1;
    if (!PyTuple_Check(facts) || PyTuple_GET_SIZE(facts) != 2) {
        PyErr_SetString(PyExc_TypeError, "parse: facts is (resource keys, attribute keys)");
        return 0;
    }
    for (int part = 0; part < 2; part++) {
        PyObject *keys = PyTuple_GET_ITEM(facts, part);
        if (!PyTuple_Check(keys)) {
            PyErr_SetString(PyExc_TypeError, "parse: fact keys must be a tuple");
            return 0;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(keys); i++) {
            PyObject *key;
            int type;
            char *text;
            Py_ssize_t n;
            if (P->nfacts == MAX_FACTS) {
                PyErr_SetString(PyExc_ValueError, "parse: too many fact keys");
                return 0;
            }
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(keys, i), "Si", &key, &type) ||
                PyBytes_AsStringAndSize(key, &text, &n) < 0)
                return 0;
            if (type < F_TEXT || type > F_TEXTS) {
                PyErr_SetString(PyExc_ValueError, "parse: unknown fact type");
                return 0;
            }
            if (n < 2) {
                PyErr_SetString(PyExc_ValueError, "parse: a fact key is a quoted JSON string");
                return 0;
            }
            P->fkeys[P->nfacts] = (FactKey){text, (size_t)n, fingerprint(text, (size_t)n), type};
            P->fcol[P->nfacts].type = type;
            P->nfacts++;
        }
        if (part == 0)
            P->nres = P->nfacts;
    }
    fact_index(P);
    return 1;
}

static PyObject *fact_column_of(FactColumn *f) {
    Column *c = &f->c;
    if (f->type == F_TEXT)
        return Py_BuildValue("(NnNN)", bitmap_of(&c->valid, c->nulls), c->nulls, block_of(&c->offsets),
                             block_of(&c->data));
    if (f->type == F_TEXTS)
        return Py_BuildValue("(NnN(NN))", bitmap_of(&c->valid, c->nulls), c->nulls, block_of(&c->offsets),
                             block_of(&f->child_offsets), block_of(&f->child_data));
    return Py_BuildValue("(NnON)", bitmap_of(&c->valid, c->nulls), c->nulls, Py_None, block_of(&c->data));
}

/* Whether Python writes every pending double back as the text it was read from (called with the GIL). Python's
 * repr reads back as the double it writes: the same text is then also Python's float() of it, the double read
 * here. */
static int pending_hold(Parser *P) {
    const Pending *each = (const Pending *)P->pending.p;
    size_t count = P->pending.n / sizeof(Pending);
    for (size_t i = 0; i < count; i++) {
        char *text = PyOS_double_to_string(each[i].d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (!text) {
            PyErr_Clear();
            return 0;
        }
        int same = strlen(text) == each[i].n && memcmp(text, each[i].s, each[i].n) == 0;
        PyMem_Free(text);
        if (!same)
            return 0;
    }
    return 1;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer view, prefix;
    Py_ssize_t start, end;
    long long first_line;
    PyObject *facts = Py_None;
    if (!PyArg_ParseTuple(args, "y*nnLy*|O", &view, &start, &end, &first_line, &prefix, &facts))
        return NULL;
    if (start < 0 || end > view.len || start > end) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&prefix);
        PyErr_SetString(PyExc_ValueError, "parse: range outside the data");
        return NULL;
    }
    Parser *P = calloc(1, sizeof *P);
    if (!P) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&prefix);
        return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    if (!fact_keys(P, facts))
        goto done;
    P->prefix = prefix.buf;
    P->prefix_len = (size_t)prefix.len;
    P->ts = PyEval_SaveThread();
    long long records = read_lines(P, view.buf, start, end, first_line);
    PyEval_RestoreThread(P->ts);
    if (records >= 0 && !pending_hold(P)) {
        /* a double written otherwise than Python writes it: the range is read again, asking Python as it goes */
        parser_free(P);
        memset(P, 0, sizeof *P);
        if (!fact_keys(P, facts))
            goto done;
        P->prefix = prefix.buf;
        P->prefix_len = (size_t)prefix.len;
        P->eager = 1;
        P->ts = PyEval_SaveThread();
        records = read_lines(P, view.buf, start, end, first_line);
        PyEval_RestoreThread(P->ts);
    }
    if (records < 0) {
        PyObject *why = PyUnicode_FromFormat("line %lld: %s", P->line, P->f.why);
        if (why) {
            PyObject *args = Py_BuildValue("(NLnn)", why, P->line, P->line_from, P->line_to);
            if (args) {
                PyErr_SetObject(Refused, args);
                Py_DECREF(args);
            }
        }
        goto done;
    }
    PyObject *columns = PyList_New(NCOLS + P->nfacts);
    for (int c = 0; columns && c < NCOLS + P->nfacts; c++) {
        PyObject *item;
        if (c >= NCOLS) {
            item = fact_column_of(&P->fcol[c - NCOLS]);
        } else if (IS_INT_COLUMN(c)) {
            item = Py_BuildValue("(OnON)", Py_None, (Py_ssize_t)0, Py_None, block_of(&P->col[c].data));
        } else {
            Column *col = &P->col[c];
            item = Py_BuildValue("(NnNN)", bitmap_of(&col->valid, col->nulls), col->nulls, block_of(&col->offsets),
                                 block_of(&col->data));
        }
        if (!item) {
            Py_CLEAR(columns);
            break;
        }
        PyList_SET_ITEM(columns, c, item);
    }
    if (columns) {
        PyObject *facts_out = PyList_GetSlice(columns, NCOLS, NCOLS + P->nfacts);
        PyObject *span_columns = PyList_GetSlice(columns, 0, NCOLS);
        Py_DECREF(columns);
        if (facts_out && span_columns) {
            if (facts == Py_None)
                out = Py_BuildValue("(LnNOO)", records, P->rows, span_columns, Py_None, Py_None);
            else
                out = Py_BuildValue("(LnNN(Nn))", records, P->rows, span_columns, facts_out,
                                    bitmap_of(&P->inexact, P->inexacts), P->inexacts);
            span_columns = NULL;
            if (facts == Py_None)
                Py_DECREF(facts_out);
            facts_out = NULL;
        }
        Py_XDECREF(facts_out);
        Py_XDECREF(span_columns);
    }
done:
    parser_free(P);
    free(P);
    PyBuffer_Release(&view);
    PyBuffer_Release(&prefix);
    return out;
}

PyDoc_STRVAR(newlines_doc, "newlines(data, start, end) -> the number of b'\\n' in data[start:end].");

static PyObject *newlines(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end, count = 0;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &end))
        return NULL;
    if (start < 0 || end > view.len || start > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "newlines: range outside the data");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const char *q = (const char *)view.buf + start, *e = (const char *)view.buf + end;
    while ((q = memchr(q, '\n', (size_t)(e - q))) != NULL) {
        count++;
        q++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(repr_proven_doc,
"repr_proven(text) -> bool\n\n"
"Whether the reader proves, without Python, that the plain decimal `text` (bytes) is repr(float(text)); False\n"
"when it leaves that to Python (for the tests).");

static PyObject *repr_proven_py(PyObject *self, PyObject *args) {
    Py_buffer text;
    if (!PyArg_ParseTuple(args, "y*", &text))
        return NULL;
    char tmp[64];
    int proven = 0;
    if (text.len > 0 && (size_t)text.len < sizeof tmp && C_NUMERIC) {
        memcpy(tmp, text.buf, (size_t)text.len);
        tmp[text.len] = 0;
        char *end = NULL;
        double d = strtod_l(tmp, &end, C_NUMERIC);
        proven = end == tmp + text.len && repr_proven((const u8 *)tmp, (size_t)text.len, d);
    }
    PyBuffer_Release(&text);
    return PyBool_FromLong(proven);
}

static PyMethodDef methods[] = {
    {"repr_proven", repr_proven_py, METH_VARARGS, repr_proven_doc},
    {"parse", parse, METH_VARARGS, parse_doc},
    {"newlines", newlines, METH_VARARGS, newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp_native",
                                    "OTLP JSON-lines span files -> Arrow buffers of the spans table (see the C file).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlp_native(void) {
    if (block_type_ready() < 0)
        return NULL;
    for (int c = 0; c < 256; c++)
        HEXVAL[c] = (signed char)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1);
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    C_NUMERIC = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);  /* none: every double is read eagerly */
    Refused = PyErr_NewExceptionWithDoc("_otlp_native.Refused",
                                        "The lines hold something the Python reader might read otherwise.",
                                        PyExc_ValueError, NULL);
    if (!Refused || PyModule_AddObject(m, "Refused", Refused) < 0) {
        Py_XDECREF(Refused);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Refused);
    return m;
}
