/* _protobuf_native: an OTLP/protobuf trace export request -> the columns of the spans table (analyzer/schema.py).
 *
 * The receiver's cost per span was the Python walk over the messages (analyzer/otlp/from_protobuf.py), which stays
 * the rule this must equal: it gives exactly the rows from_protobuf gives for a request, or raises Refused and gives
 * none, and the caller converts that request with from_protobuf. Refused is whatever it is not sure to read as
 * Python does: a bad or missing id (Python reports a bad record), invalid UTF-8 where protobuf checks it, a field of
 * a message given twice (protobuf merges), a duplicate attribute key, an unknown field of a message Python parses
 * whole, a group, nesting deeper than MAX_DEPTH, a truncated message. A request it reads is one protobuf parses
 * whole without an error (the protobuf file loader's test): every string field is checked, read or not.
 *
 * JSON text written here is what Python's json encoder writes with ensure_ascii=False and compact separators
 * (rows.to_json): '"' '\' and the control characters escaped (\n \r \t \b \f, else \u00XX), everything else as is;
 * a double is Python's repr (asked of Python: the GIL is held throughout), NaN and the infinities their str() as a
 * JSON string. It also says which text columns may hold a credential (a superset of analyzer/redact.py's hints,
 * RE2's case folding included): the caller redacts those.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>  /* first: it sets the features the system headers read */
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_arrow_buffers.h"

#define MAX_DEPTH 64  /* nesting of values (arrays, kvlists); deeper is refused */
#define MAX_KEYS 512  /* keys of one map: more are refused (the duplicate check is quadratic) */

typedef struct {
    const u8 *p, *end;
} Cur;

typedef struct {
    const u8 *s;
    size_t n;
} Key;

typedef struct {
    Fail f;  /* where a refusal jumps, and its reason */
    Column col[NCOLS];
    Py_ssize_t rows;
    Buf resource, attrs, events, links, keys;  /* scratch: a resource's JSON, a span's, the keys of open maps */
    Buf service_buf;                            /* the current resource's service.name, when `service` */
    int service;
    const u8 *scope;                            /* the current scope's name, or NULL */
    size_t scope_n;
} Dec;

static PyObject *Refused;

/* ------------------------------------------------------------------------------------------------ buffers */

static void refuse(Dec *D, const char *why) {
    refuse_with(&D->f, why);
}

static inline void reserve(Dec *D, Buf *b, size_t more) {
    buf_reserve(&D->f, b, more);
}

static inline void put(Dec *D, Buf *b, const void *s, size_t n) {
    buf_put(&D->f, b, s, n);
}

static inline void putc_(Dec *D, Buf *b, char c) {
    buf_putc(&D->f, b, c);
}

#define PUTS(D, b, s) put((D), (b), (s), sizeof(s) - 1)

static void put_int(Dec *D, Buf *b, long long v) {
    char t[24];
    put(D, b, t, decimal(t, v));
}

static void column_put(Dec *D, int c, const void *s, size_t n, int valid) {
    column_put_row(&D->f, &D->col[c], D->rows, s, n, valid);
}

static void column_int(Dec *D, int c, int64_t v) {
    put(D, &D->col[c].data, &v, sizeof v);
}

/* ------------------------------------------------------------------------------------------------ wire format */

static uint64_t varint(Dec *D, Cur *c) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end)
            refuse(D, "a truncated varint");
        u8 b = *c->p++;
        if (shift == 63 && b > 1)
            refuse(D, "a varint past 64 bits");
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            return v;
    }
    refuse(D, "a varint past 10 bytes");
    return 0;
}

static uint64_t fixed64(Dec *D, Cur *c) {
    if (c->end - c->p < 8)
        refuse(D, "a truncated fixed64");
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | c->p[i];
    c->p += 8;
    return v;
}

/* The next field's number and wire type; 0 at the end of the message. */
static int next(Dec *D, Cur *c, int *wire) {
    if (c->p >= c->end)
        return 0;
    uint64_t tag = varint(D, c);
    *wire = (int)(tag & 7);
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF)
        refuse(D, "a field number out of range");
    return (int)(tag >> 3);
}

static Cur ldelim(Dec *D, Cur *c, int wire) {
    if (wire != 2)
        refuse(D, "a known field of another wire type");
    uint64_t n = varint(D, c);
    if (n > (uint64_t)(c->end - c->p))
        refuse(D, "a truncated field");
    Cur sub = {c->p, c->p + n};
    c->p += n;
    return sub;
}

static void skip(Dec *D, Cur *c, int wire) {
    switch (wire) {
    case 0: varint(D, c); return;
    case 1: if (c->end - c->p < 8) refuse(D, "a truncated field"); c->p += 8; return;
    case 2: ldelim(D, c, 2); return;
    case 5: if (c->end - c->p < 4) refuse(D, "a truncated field"); c->p += 4; return;
    default: refuse(D, "a group or an unknown wire type");
    }
}

/* A field given twice: protobuf keeps the last scalar and merges messages; refused rather than followed. */
static inline void once(Dec *D, unsigned *seen, int field) {
    unsigned bit = 1u << field;
    if (*seen & bit)
        refuse(D, "a field given twice");
    *seen |= bit;
}

static inline void expect(Dec *D, int wire, int want) {
    if (wire != want)
        refuse(D, "a known field of another wire type");
}

static uint64_t varint_field(Dec *D, Cur *c, int wire) {
    expect(D, wire, 0);
    return varint(D, c);
}

/* A dropped_*_count field: once at most, not kept. */
static void dropped_count(Dec *D, Cur *c, int wire, unsigned *seen, int field) {
    once(D, seen, field);
    varint_field(D, c, wire);
}

/* Strict UTF-8, as protobuf checks a string field. */
static void utf8(Dec *D, Cur s) {
    const u8 *q = s.p, *e = s.end;
    while (q < e) {
        if (*q < 0x80) {
            q++;
            continue;
        }
        size_t len = utf8_seq(q, e);
        if (!len)
            refuse(D, "invalid UTF-8");
        q += len;
    }
}

static Cur string_field(Dec *D, Cur *c, int wire) {
    Cur s = ldelim(D, c, wire);
    utf8(D, s);
    return s;
}

/* ------------------------------------------------------------------------------------------------ JSON text */

static void json_string(Dec *D, Buf *b, const u8 *s, size_t n) {
    reserve(D, b, n + 2);
    b->p[b->n++] = '"';
    const u8 *q = s, *e = s + n;
    while (q < e) {
        const u8 *r = q;
        while (r < e && *r >= 0x20 && *r != '"' && *r != '\\')
            r++;
        put(D, b, q, (size_t)(r - q));
        if (r == e)
            break;
        u8 c = *r;
        char t[8];
        size_t k = 2;
        t[0] = '\\';
        switch (c) {
        case '"': t[1] = '"'; break;
        case '\\': t[1] = '\\'; break;
        case '\n': t[1] = 'n'; break;
        case '\r': t[1] = 'r'; break;
        case '\t': t[1] = 't'; break;
        case '\b': t[1] = 'b'; break;
        case '\f': t[1] = 'f'; break;
        default:
            t[1] = 'u'; t[2] = '0'; t[3] = '0'; t[4] = "0123456789abcdef"[c >> 4]; t[5] = "0123456789abcdef"[c & 15];
            k = 6;
        }
        put(D, b, t, k);
        q = r + 1;
    }
    putc_(D, b, '"');
}

static void json_double(Dec *D, Buf *b, double d) {
    if (isnan(d)) {
        PUTS(D, b, "\"nan\"");
        return;
    }
    if (isinf(d)) {
        if (d > 0)
            PUTS(D, b, "\"inf\"");
        else
            PUTS(D, b, "\"-inf\"");
        return;
    }
    char *text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);  /* float.__repr__ */
    if (!text) {
        PyErr_Clear();
        refuse(D, "a double Python could not write");
    }
    put(D, b, text, strlen(text));
    PyMem_Free(text);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void json_base64(Dec *D, Buf *b, Cur s) {
    size_t n = (size_t)(s.end - s.p);
    reserve(D, b, 4 * ((n + 2) / 3) + 2);
    char *o = b->p + b->n;
    *o++ = '"';
    const u8 *q = s.p;
    for (; n >= 3; n -= 3, q += 3) {
        *o++ = B64[q[0] >> 2];
        *o++ = B64[((q[0] & 3) << 4) | (q[1] >> 4)];
        *o++ = B64[((q[1] & 15) << 2) | (q[2] >> 6)];
        *o++ = B64[q[2] & 63];
    }
    if (n) {
        *o++ = B64[q[0] >> 2];
        *o++ = B64[((q[0] & 3) << 4) | (n == 2 ? q[1] >> 4 : 0)];
        *o++ = n == 2 ? B64[(q[1] & 15) << 2] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
}

/* ------------------------------------------------------------------------------------------------ values */

static void kvlist(Dec *D, Buf *out, Cur list, int depth);

/* An AnyValue message as JSON (rows.to_json of from_protobuf.any_value). */
static void any_value(Dec *D, Buf *out, Cur m, int depth) {
    if (depth > MAX_DEPTH)
        refuse(D, "values nested too deep");
    int wire, f, set = 0;
    size_t mark = out->n;
    PUTS(D, out, "null");  /* no value set */
    while ((f = next(D, &m, &wire))) {
        if (f > 7)
            refuse(D, "an unknown field of a value");
        if (set++)
            refuse(D, "a value with two fields");
        out->n = mark;
        switch (f) {
        case 1: {
            Cur s = string_field(D, &m, wire);
            json_string(D, out, s.p, (size_t)(s.end - s.p));
            break;
        }
        case 2:
            if (varint_field(D, &m, wire))
                PUTS(D, out, "true");
            else
                PUTS(D, out, "false");
            break;
        case 3:
            put_int(D, out, (long long)(int64_t)varint_field(D, &m, wire));
            break;
        case 4: {
            expect(D, wire, 1);
            uint64_t bits = fixed64(D, &m);
            double d;
            memcpy(&d, &bits, sizeof d);
            json_double(D, out, d);
            break;
        }
        case 5: {  /* ArrayValue: repeated AnyValue values = 1 */
            Cur a = ldelim(D, &m, wire);
            int g, w, n = 0;
            putc_(D, out, '[');
            while ((g = next(D, &a, &w))) {
                if (g != 1)
                    refuse(D, "an unknown field of an array");
                if (n++)
                    putc_(D, out, ',');
                any_value(D, out, ldelim(D, &a, w), depth + 1);
            }
            putc_(D, out, ']');
            break;
        }
        case 6:  /* KeyValueList: repeated KeyValue values = 1 */
            kvlist(D, out, ldelim(D, &m, wire), depth + 1);
            break;
        case 7:
            json_base64(D, out, ldelim(D, &m, wire));
            break;
        }
    }
}


/* A JSON object written one KeyValue at a time; a duplicate key is refused (Python keeps the first place and the
 * last value). Open maps nest (kvlists in values): each remembers where its keys start in D->keys. */
typedef struct {
    Buf *out;
    size_t keys_from;
    int n;
} Map;

typedef struct {
    Key key;
    int field;        /* the value's field in AnyValue (1 string, 7 bytes, ...), 0 for none */
    Cur str;          /* a string value's raw UTF-8 */
    size_t value_at;  /* where the value's JSON starts in the map's buffer */
} Item;

static void map_open(Dec *D, Map *M, Buf *out) {
    M->out = out;
    M->keys_from = D->keys.n;
    M->n = 0;
    putc_(D, out, '{');
}

static Item map_item(Dec *D, Map *M, Cur kv, int depth) {
    int wire, f;
    unsigned seen = 0;
    Cur key = {NULL, NULL}, value = {NULL, NULL};
    while ((f = next(D, &kv, &wire))) {
        if (f == 1) {
            once(D, &seen, 1);
            key = string_field(D, &kv, wire);
        } else if (f == 2) {
            once(D, &seen, 2);
            value = ldelim(D, &kv, wire);
        } else {
            refuse(D, "an unknown field of a key-value");
        }
    }
    Item it = {{key.p, (size_t)(key.end - key.p)}, 0, {NULL, NULL}, 0};
    size_t count = (D->keys.n - M->keys_from) / sizeof(Key);
    if (count >= MAX_KEYS)
        refuse(D, "too many keys in one map");
    const Key *held = (const Key *)(D->keys.p + M->keys_from);
    for (size_t i = 0; i < count; i++)
        if (held[i].n == it.key.n && (it.key.n == 0 || memcmp(held[i].s, it.key.s, it.key.n) == 0))
            refuse(D, "a duplicate key");
    put(D, &D->keys, &it.key, sizeof it.key);
    if (M->n++)
        putc_(D, M->out, ',');
    json_string(D, M->out, it.key.s, it.key.n);
    putc_(D, M->out, ':');
    it.value_at = M->out->n;
    if (value.p) {
        any_value(D, M->out, value, depth);
        Cur v = value;  /* its one field (any_value checked the message) */
        int w;
        it.field = next(D, &v, &w);
        if (it.field == 1)
            it.str = ldelim(D, &v, w);
    } else {
        PUTS(D, M->out, "null");
    }
    return it;
}

static void map_close(Dec *D, Map *M) {
    putc_(D, M->out, '}');
    D->keys.n = M->keys_from;
}

static void kvlist(Dec *D, Buf *out, Cur list, int depth) {
    Map M;
    int wire, f;
    map_open(D, &M, out);
    while ((f = next(D, &list, &wire))) {
        if (f != 1)
            refuse(D, "an unknown field of a key-value list");
        map_item(D, &M, ldelim(D, &list, wire), depth);
    }
    map_close(D, &M);
}

/* ------------------------------------------------------------------------------------------------ messages */

static const char *const KINDS[] = {"UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};
static const char *const CODES[] = {"UNSET", "OK", "ERROR"};
static const char HEX[] = "0123456789abcdef";

/* An id of `size` bytes as hex into out; 0 when all zeros. Another length is refused (a bad record to Python). */
static int hex_id(Dec *D, Cur s, size_t size, char *out) {
    if ((size_t)(s.end - s.p) != size)
        refuse(D, "an id of another length");
    int nonzero = 0;
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = HEX[s.p[i] >> 4];
        out[2 * i + 1] = HEX[s.p[i] & 15];
        nonzero |= s.p[i] != 0;
    }
    return nonzero;
}

/* Resource: attributes = 1, dropped_attributes_count = 2. Its JSON into D->resource, its service.name
 * (when a str to Python: a string, or bytes as base64) into D->service_buf. */
static void resource(Dec *D, Cur m) {
    int wire, f;
    unsigned seen = 0;
    Map M;
    D->resource.n = 0;
    D->service = 0;
    map_open(D, &M, &D->resource);
    while ((f = next(D, &m, &wire))) {
        if (f == 1) {
            Item it = map_item(D, &M, ldelim(D, &m, wire), 1);
            if (it.key.n == 12 && memcmp(it.key.s, "service.name", 12) == 0 && (it.field == 1 || it.field == 7)) {
                /* a string as it came; bytes as their base64 text (their JSON text, without the quotes) */
                D->service_buf.n = 0;
                if (it.field == 1)
                    put(D, &D->service_buf, it.str.p, (size_t)(it.str.end - it.str.p));
                else
                    put(D, &D->service_buf, M.out->p + it.value_at + 1, M.out->n - it.value_at - 2);
                D->service = 1;
            }
        } else if (f == 2) {
            dropped_count(D, &m, wire, &seen, 2);
        } else {
            refuse(D, "an unknown field of a resource");
        }
    }
    map_close(D, &M);
}

/* InstrumentationScope: name = 1, version = 2, attributes = 3, dropped_attributes_count = 4 (parsed whole by
 * protobuf: the attributes are checked, not kept). */
static void scope(Dec *D, Cur m) {
    int wire, f;
    unsigned seen = 0;
    D->scope = NULL;
    D->scope_n = 0;
    while ((f = next(D, &m, &wire))) {
        if (f == 1 || f == 2) {
            once(D, &seen, f);
            Cur s = string_field(D, &m, wire);
            if (f == 1) {
                D->scope = s.p;
                D->scope_n = (size_t)(s.end - s.p);
            }
        } else if (f == 3) {
            Map M;  /* checked one at a time, not kept: duplicates are no matter */
            D->events.n = 0;  /* scratch */
            map_open(D, &M, &D->events);
            map_item(D, &M, ldelim(D, &m, wire), 1);
            map_close(D, &M);
        } else if (f == 4) {
            dropped_count(D, &m, wire, &seen, 4);
        } else {
            refuse(D, "an unknown field of a scope");
        }
    }
}

/* Span.Event: time_unix_nano = 1, name = 2, attributes = 3, dropped_attributes_count = 4 -> {"name", "time_ns",
 * "attributes"}. */
static void event(Dec *D, Buf *out, Cur m) {
    int wire, f;
    unsigned seen = 0;
    Cur name = {NULL, NULL};
    uint64_t time = 0;
    Buf *attrs = &D->attrs;  /* the span's attributes are written: reused as scratch */
    size_t mark = attrs->n;
    Map M;
    map_open(D, &M, attrs);
    while ((f = next(D, &m, &wire))) {
        if (f == 1) {
            once(D, &seen, 1);
            expect(D, wire, 1);
            time = fixed64(D, &m);
        } else if (f == 2) {
            once(D, &seen, 2);
            name = string_field(D, &m, wire);
        } else if (f == 3) {
            map_item(D, &M, ldelim(D, &m, wire), 1);
        } else if (f == 4) {
            dropped_count(D, &m, wire, &seen, 4);
        } else {
            refuse(D, "an unknown field of an event");
        }
    }
    map_close(D, &M);
    PUTS(D, out, "{\"name\":");
    json_string(D, out, name.p, (size_t)(name.end - name.p));
    PUTS(D, out, ",\"time_ns\":");
    put_int(D, out, (long long)(int64_t)time);
    PUTS(D, out, ",\"attributes\":");
    put(D, out, attrs->p + mark, attrs->n - mark);
    putc_(D, out, '}');
    attrs->n = mark;
}

/* Span.Link: trace_id = 1, span_id = 2, trace_state = 3, attributes = 4, dropped_attributes_count = 5, flags = 6
 * -> {"trace_id", "span_id", "attributes"}. */
static void span_link(Dec *D, Buf *out, Cur m) {
    int wire, f;
    unsigned seen = 0;
    char trace[32], span[16];
    int has_trace = 0, has_span = 0;
    Buf *attrs = &D->attrs;
    size_t mark = attrs->n;
    Map M;
    map_open(D, &M, attrs);
    while ((f = next(D, &m, &wire))) {
        if (f == 1 || f == 2) {
            once(D, &seen, f);
            Cur id = ldelim(D, &m, wire);
            if (!hex_id(D, id, f == 1 ? 16 : 8, f == 1 ? trace : span))
                refuse(D, "a link's id is all zeros");
            if (f == 1)
                has_trace = 1;
            else
                has_span = 1;
        } else if (f == 3) {
            once(D, &seen, 3);
            string_field(D, &m, wire);
        } else if (f == 4) {
            map_item(D, &M, ldelim(D, &m, wire), 1);
        } else if (f == 5) {
            dropped_count(D, &m, wire, &seen, 5);
        } else if (f == 6) {
            once(D, &seen, 6);
            expect(D, wire, 5);
            skip(D, &m, 5);
        } else {
            refuse(D, "an unknown field of a link");
        }
    }
    if (!has_trace || !has_span)
        refuse(D, "a link without its ids");
    map_close(D, &M);
    PUTS(D, out, "{\"trace_id\":\"");
    put(D, out, trace, 32);
    PUTS(D, out, "\",\"span_id\":\"");
    put(D, out, span, 16);
    PUTS(D, out, "\",\"attributes\":");
    put(D, out, attrs->p + mark, attrs->n - mark);
    putc_(D, out, '}');
    attrs->n = mark;
}

/* Status: deprecated_code = 1, message = 2, code = 3. */
static void status(Dec *D, Cur m, Cur *message, int32_t *code) {
    int wire, f;
    unsigned seen = 0;
    while ((f = next(D, &m, &wire))) {
        once(D, &seen, f > 3 ? 0 : f);
        if (f == 1) {
            varint_field(D, &m, wire);
        } else if (f == 2) {
            *message = string_field(D, &m, wire);
        } else if (f == 3) {
            *code = (int32_t)(uint32_t)varint_field(D, &m, wire);
        } else {
            refuse(D, "an unknown field of a status");
        }
    }
}

/* A Span: what from_protobuf.add_traces reads of it. Its other fields are skipped, but its strings are checked as a
 * parse of the whole message checks them (the protobuf file loader parses requests whole). */
static void span(Dec *D, Cur m) {
    int wire, f;
    unsigned seen = 0;
    Cur tid = {NULL, NULL}, sid = {NULL, NULL}, pid = {NULL, NULL}, name = {NULL, NULL}, message = {NULL, NULL};
    int32_t kind = 0, code = 0;
    uint64_t start = 0, end = 0;
    int events = 0, links = 0;
    Map M;
    D->attrs.n = D->events.n = D->links.n = 0;
    map_open(D, &M, &D->attrs);
    size_t attrs_end = 0;
    putc_(D, &D->events, '[');
    putc_(D, &D->links, '[');
    while ((f = next(D, &m, &wire))) {
        switch (f) {
        case 1: once(D, &seen, 1); tid = ldelim(D, &m, wire); break;
        case 2: once(D, &seen, 2); sid = ldelim(D, &m, wire); break;
        case 4: once(D, &seen, 4); pid = ldelim(D, &m, wire); break;
        case 5: once(D, &seen, 5); name = string_field(D, &m, wire); break;
        case 6: once(D, &seen, 6); kind = (int32_t)(uint32_t)varint_field(D, &m, wire); break;
        case 7: once(D, &seen, 7); expect(D, wire, 1); start = fixed64(D, &m); break;
        case 8: once(D, &seen, 8); expect(D, wire, 1); end = fixed64(D, &m); break;
        case 9:
            if (attrs_end)
                refuse(D, "attributes after events or links");  /* they share D->attrs as scratch */
            map_item(D, &M, ldelim(D, &m, wire), 1);
            break;
        case 11:
        case 13: {
            Cur sub = ldelim(D, &m, wire);
            if (!attrs_end) {  /* the span's attributes are done: closed, events and links use the scratch after */
                map_close(D, &M);
                attrs_end = D->attrs.n;
            }
            Buf *out = f == 11 ? &D->events : &D->links;
            if ((f == 11 ? events++ : links++))
                putc_(D, out, ',');
            if (f == 11)
                event(D, out, sub);
            else
                span_link(D, out, sub);
            break;
        }
        case 15: once(D, &seen, 15); status(D, ldelim(D, &m, wire), &message, &code); break;
        case 3: string_field(D, &m, wire); break;  /* trace_state: unread, but a string protobuf checks */
        default: skip(D, &m, wire);
        }
    }
    if (!attrs_end) {
        map_close(D, &M);
        attrs_end = D->attrs.n;
    }
    putc_(D, &D->events, ']');
    putc_(D, &D->links, ']');

    char trace[32], own[16], parent[16];
    if (!tid.p || !sid.p)
        refuse(D, "a span without its ids");
    if (!hex_id(D, tid, 16, trace) || !hex_id(D, sid, 8, own))
        refuse(D, "a span id all zeros");
    int has_parent = pid.p && pid.end > pid.p && hex_id(D, pid, 8, parent);
    const char *kind_text = kind >= 0 && kind < 6 ? KINDS[kind] : "UNSPECIFIED";
    const char *code_text = code >= 0 && code < 3 ? CODES[code] : "UNSET";

    column_put(D, C_TRACE, trace, 32, 1);
    column_put(D, C_SPAN, own, 16, 1);
    column_put(D, C_PARENT, parent, 16, has_parent);
    column_put(D, C_NAME, name.p, (size_t)(name.end - name.p), 1);
    column_put(D, C_KIND, kind_text, strlen(kind_text), 1);
    column_int(D, C_START, (int64_t)start);
    column_int(D, C_END, (int64_t)end);
    column_put(D, C_STATUS, code_text, strlen(code_text), 1);
    column_put(D, C_MESSAGE, message.p, (size_t)(message.end - message.p), message.end > message.p);
    column_put(D, C_SERVICE, D->service_buf.p, D->service_buf.n, D->service);
    column_put(D, C_RESOURCE, D->resource.p, D->resource.n, 1);
    column_put(D, C_ATTRS, D->attrs.p, attrs_end, 1);
    column_put(D, C_EVENTS, D->events.p, D->events.n, 1);
    column_put(D, C_LINKS, D->links.p, D->links.n, 1);
    column_put(D, C_SCOPE, D->scope, D->scope_n, D->scope_n > 0);
    D->rows++;
}

/* ResourceSpans (resource = 1, scope_spans = 2) and ScopeSpans (scope = 1, spans = 2): field 1 read first, once (it
 * may come after the list), then the items of field 2; schema_url = 3 is a checked string; others are skipped, as
 * protobuf keeps them unread. */
static void headed(Dec *D, Cur m, void (*head)(Dec *, Cur), void (*item)(Dec *, Cur)) {
    int wire, f;
    unsigned seen = 0;
    Cur scan = m;
    while ((f = next(D, &scan, &wire))) {
        if (f == 1) {
            once(D, &seen, 1);
            head(D, ldelim(D, &scan, wire));
        } else {
            skip(D, &scan, wire);
        }
    }
    while ((f = next(D, &m, &wire))) {
        if (f == 2)
            item(D, ldelim(D, &m, wire));
        else if (f == 3)
            string_field(D, &m, wire);
        else
            skip(D, &m, wire);
    }
}

static void scope_spans(Dec *D, Cur m) {
    D->scope = NULL;  /* none given */
    D->scope_n = 0;
    headed(D, m, scope, span);
}

static void resource_spans(Dec *D, Cur m) {
    D->resource.n = 0;  /* none given */
    PUTS(D, &D->resource, "{}");
    D->service = 0;
    headed(D, m, resource, scope_spans);
}

static void request(Dec *D, Cur m) {
    int wire, f;
    while ((f = next(D, &m, &wire))) {
        if (f == 1)
            resource_spans(D, ldelim(D, &m, wire));
        else
            skip(D, &m, wire);
    }
}

/* ------------------------------------------------------------------------------------------------ module */


static void dec_free(Dec *D) {
    for (int c = 0; c < NCOLS; c++) {
        free(D->col[c].data.p);
        free(D->col[c].offsets.p);
        free(D->col[c].valid.p);
    }
    Buf *bufs[] = {&D->resource, &D->attrs, &D->events, &D->links, &D->keys, &D->service_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]->p);
}

PyDoc_STRVAR(traces_doc,
"traces(request, source) -> (spans, columns, hinted)\n\n"
"The spans of an OTLP ExportTraceServiceRequest's bytes, `source` (str or None) the source column of each.\n"
"`columns` holds, per column of schema.SPANS, Arrow buffers: (validity bitmap or None, null count, int32 offsets,\n"
"data) for text, (None, 0, None, int64 values) for times; each buffer a Block (the buffer protocol, no copy).\n"
"`hinted`: the indexes of the text columns that may hold a credential. Raises Refused (its argument says why)\n"
"when from_protobuf might read the request otherwise.");

static PyObject *traces(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *source;
    if (!PyArg_ParseTuple(args, "y*O", &view, &source))
        return NULL;
    const char *src = NULL;
    Py_ssize_t src_n = 0;
    if (source != Py_None && !(src = PyUnicode_AsUTF8AndSize(source, &src_n))) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Dec *D = calloc(1, sizeof *D);
    if (!D) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    if (setjmp(D->f.jump)) {
        PyErr_SetString(Refused, D->f.why);
        goto done;
    }
    int32_t zero = 0;
    for (int c = 0; c < NCOLS; c++)
        if (!IS_INT_COLUMN(c))
            put(D, &D->col[c].offsets, &zero, sizeof zero);
    Cur m = {view.buf, (const u8 *)view.buf + view.len};
    request(D, m);
    for (Py_ssize_t r = 0; r < D->rows; r++) {  /* the source column: the same for every span */
        Py_ssize_t rows = D->rows;
        D->rows = r;
        column_put(D, C_SOURCE, src, (size_t)src_n, src != NULL);
        D->rows = rows;
    }
    PyObject *columns = PyList_New(NCOLS);
    PyObject *hints = PyList_New(0);
    for (int c = 0; columns && hints && c < NCOLS; c++) {
        Column *col = &D->col[c];
        PyObject *item;
        if (IS_INT_COLUMN(c)) {
            item = Py_BuildValue("(OnON)", Py_None, (Py_ssize_t)0, Py_None, block_of(&col->data));
        } else {
            if (c != C_TRACE && c != C_SPAN && c != C_PARENT && c != C_SOURCE &&
                hinted(col->data.p, col->data.n)) {
                PyObject *index = PyLong_FromLong(c);
                if (!index || PyList_Append(hints, index) < 0) {
                    Py_XDECREF(index);
                    Py_CLEAR(columns);
                    break;
                }
                Py_DECREF(index);
            }
            item = Py_BuildValue("(NnNN)", bitmap_of(&col->valid, col->nulls), col->nulls, block_of(&col->offsets),
                                 block_of(&col->data));
        }
        if (!item) {
            Py_CLEAR(columns);
            break;
        }
        PyList_SET_ITEM(columns, c, item);
    }
    if (columns && hints)
        out = Py_BuildValue("(nNN)", D->rows, columns, hints);
    else {
        Py_XDECREF(columns);
        Py_XDECREF(hints);
    }
done:
    dec_free(D);
    free(D);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"traces", traces, METH_VARARGS, traces_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_protobuf_native",
                                    "OTLP/protobuf trace requests -> Arrow buffers of the spans table (see the C file).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__protobuf_native(void) {
    if (block_type_ready() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Refused = PyErr_NewExceptionWithDoc("_protobuf_native.Refused",
                                        "The request holds something from_protobuf might read otherwise.",
                                        PyExc_ValueError, NULL);
    if (!Refused || PyModule_AddObject(m, "Refused", Refused) < 0) {
        Py_XDECREF(Refused);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Refused);
    return m;
}
