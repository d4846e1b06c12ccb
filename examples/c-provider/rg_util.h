/*
 * rg_util.h: the plain-C11, libc-only helpers that both C example providers share
 * (hello_c.c and pair_c.c in this folder each `#include "rg_util.h"`):
 *
 *   - sb_*: a growable output buffer that records allocation failure instead of crashing, the
 *     JSON string writer, and the error / `ok: null` answers built with it;
 *   - skip_ws, scan_*, json_*: a strict JSON validator (RFC 8259, strict UTF-8, no lone
 *     surrogates, depth limit) and bounds-checked readers over the validated document;
 *   - base64 (encode and decode), read_urandom;
 *   - the request checks: bad_setting, check_field, check_base64, check_credentials,
 *     get_state, malformed, read_request (a JSON object with a string `op`) and
 *     unsupported_op (the answer to an op it does not know);
 *   - same: a constant-time comparison.
 *
 * It is a single header of `static` functions, not a library: each provider compiles its own
 * copy, so nothing here is exported from the .so (only rolegate_provider_v1 is). Include it
 * after defining _POSIX_C_SOURCE (read_urandom uses open/read/close and O_CLOEXEC). Quoted
 * includes resolve relative to the including file, so no extra -I flag is needed; to start a
 * provider of your own, copy this file along with the example.
 */

#ifndef RG_UTIL_H
#define RG_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rolegate_provider.h"

/*
 * Deepest nesting of arrays/objects accepted. serde_json (the host's and the Rust SDK's
 * decoder) stops at 128 as well; the limit keeps the recursive validator's stack bounded.
 */
#define JSON_MAX_DEPTH 128

/* How many bytes of a caller-supplied name (a key, an op) are echoed in an error message. */
#define ECHO_MAX 64

/* ------------------------------------------------------------------------------------------ */
/* Output: a growable byte buffer that records allocation failure instead of crashing.        */
/* ------------------------------------------------------------------------------------------ */

typedef struct sb {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool oom;
} sb;

static void sb_put(sb *b, const void *data, size_t n) {
    if (b->oom || n == 0) {
        return;
    }
    /* Keep one spare byte for the terminating NUL added by sb_finish. */
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return;
    }
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                cap = need;
                break;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sb *b, uint64_t v) {
    char tmp[21]; /* 20 digits for UINT64_MAX, plus the NUL */
    size_t i = sizeof tmp;
    tmp[--i] = '\0';
    do {
        tmp[--i] = (char)('0' + (v % 10));
        v /= 10;
    } while (v != 0);
    sb_puts(b, tmp + i);
}

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), or 0 when it is not well formed
 * (overlong forms, surrogates, code points above U+10FFFF and truncation are all refused).
 */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    if (n == 0) {
        return 0;
    }
    uint8_t c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) {
            lo = 0xA0; /* no overlong 3-byte forms */
        } else if (c == 0xED) {
            hi = 0x9F; /* no UTF-16 surrogates */
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) {
            lo = 0x90; /* no overlong 4-byte forms */
        } else if (c == 0xF4) {
            hi = 0x8F; /* nothing above U+10FFFF */
        }
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t k = 2; k < len; k++) {
        if (s[k] < 0x80 || s[k] > 0xBF) {
            return 0;
        }
    }
    return len;
}

/*
 * Appends s[0..n) as a JSON string literal, quotes included. Control characters, quotes and
 * backslashes are escaped; bytes that are not well-formed UTF-8 become U+FFFD so the output
 * is always valid JSON whatever the input.
 */
static void sb_json_str(sb *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(b, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            size_t k = 2;
            switch (c) { /* the short escapes JSON has, else \u00XX */
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            default: k = 6; break;
            }
            sb_put(b, esc, k);
            i++;
        } else if (c < 0x80) {
            sb_put(b, &s[i], 1);
            i++;
        } else {
            size_t k = utf8_seq(s + i, n - i);
            if (k == 0) {
                sb_puts(b, "\xEF\xBF\xBD"); /* U+FFFD REPLACEMENT CHARACTER */
                i++;
            } else {
                sb_put(b, s + i, k);
                i += k;
            }
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_json_cstr(sb *b, const char *s) { sb_json_str(b, (const uint8_t *)s, strlen(s)); }

/* Hands the bytes over as an rg_buffer (NUL-terminated for C callers' convenience). */
static rg_buffer sb_finish(sb *b) {
    rg_buffer out = {NULL, 0};
    if (b->oom || b->p == NULL) {
        /* Nothing sensible can be said without memory; the host reports an invalid answer. */
        free(b->p);
        return out;
    }
    b->p[b->len] = '\0'; /* sb_put always reserved this byte */
    out.ptr = b->p;
    out.len = b->len;
    return out;
}

/* {"error":{"kind":KIND,"message":MSG}} */
static rg_buffer error_answer(const char *kind, const char *message) {
    sb b = {0};
    sb_puts(&b, "{\"error\":{\"kind\":");
    sb_json_cstr(&b, kind);
    sb_puts(&b, ",\"message\":");
    sb_json_cstr(&b, message);
    sb_puts(&b, "}}");
    return sb_finish(&b);
}

/*
 * Like error_answer, with a caller-supplied name inserted between `before` and `after`. The
 * name is cut to ECHO_MAX bytes on a UTF-8 boundary and escaped, so garbage stays harmless.
 */
static rg_buffer error_answer_named(const char *kind, const char *before, const uint8_t *name,
                                    size_t name_len, const char *after) {
    size_t n = name_len;
    if (n > ECHO_MAX) {
        n = ECHO_MAX;
        /* Back up over continuation bytes so a multi-byte character is not split. */
        while (n > 0 && (name[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    sb msg = {0};
    sb_puts(&msg, before);
    sb_put(&msg, name, n);
    if (n < name_len) {
        sb_puts(&msg, "...");
    }
    sb_puts(&msg, after);
    if (msg.oom) {
        free(msg.p);
        return error_answer(kind, before);
    }
    sb b = {0};
    sb_puts(&b, "{\"error\":{\"kind\":");
    sb_json_cstr(&b, kind);
    sb_puts(&b, ",\"message\":");
    /* msg.p may be NULL only when nothing was written, which cannot happen here. */
    sb_json_str(&b, msg.p ? msg.p : (const uint8_t *)"", msg.len);
    sb_puts(&b, "}}");
    free(msg.p);
    return sb_finish(&b);
}

static rg_buffer ok_null(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":null}");
    return sb_finish(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* JSON reading                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* A slice of the input holding one complete JSON value (a string's span includes quotes). */
typedef struct span {
    const uint8_t *p;
    size_t n;
} span;

static bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static size_t skip_ws(const uint8_t *s, size_t n, size_t i) {
    while (i < n && is_ws(s[i])) {
        i++;
    }
    return i;
}

static int hex_val(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Reads the 4 hex digits of a \u escape at s[i..i+4); false when absent or not hex. */
static bool read_hex4(const uint8_t *s, size_t n, size_t i, unsigned *out) {
    if (i > n || n - i < 4) {
        return false;
    }
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_val(s[i + k]);
        if (h < 0) {
            return false;
        }
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return true;
}

/*
 * Decodes one escape sequence starting at the backslash s[*i]. On success advances *i past it
 * and stores the code point (surrogate pairs combined). Lone surrogates are refused, as
 * serde_json does.
 */
static bool read_escape(const uint8_t *s, size_t n, size_t *i, uint32_t *cp) {
    size_t j = *i + 1; /* after the backslash */
    if (j >= n) {
        return false;
    }
    switch (s[j]) {
    case '"': *cp = '"'; break;
    case '\\': *cp = '\\'; break;
    case '/': *cp = '/'; break;
    case 'b': *cp = '\b'; break;
    case 'f': *cp = '\f'; break;
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 't': *cp = '\t'; break;
    case 'u': {
        unsigned u;
        if (!read_hex4(s, n, j + 1, &u)) {
            return false;
        }
        j += 5; /* 'u' and four digits */
        if (u >= 0xDC00 && u <= 0xDFFF) {
            return false; /* a low surrogate with no high one */
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            unsigned lo;
            if (j > n || n - j < 2 || s[j] != '\\' || s[j + 1] != 'u' ||
                !read_hex4(s, n, j + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                return false; /* a high surrogate must be followed by a low one */
            }
            j += 6;
            *cp = 0x10000u + (((uint32_t)u - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
        } else {
            *cp = u;
        }
        *i = j;
        return true;
    }
    default:
        return false;
    }
    *i = j + 1;
    return true;
}

/* Validates a string starting at the quote s[*i]; advances *i past the closing quote. */
static bool scan_string(const uint8_t *s, size_t n, size_t *i) {
    size_t j = *i;
    if (j >= n || s[j] != '"') {
        return false;
    }
    j++;
    while (j < n) {
        uint8_t c = s[j];
        if (c == '"') {
            *i = j + 1;
            return true;
        }
        if (c == '\\') {
            uint32_t cp;
            if (!read_escape(s, n, &j, &cp)) {
                return false;
            }
        } else if (c < 0x20) {
            return false; /* raw control characters are not allowed in JSON strings */
        } else if (c < 0x80) {
            j++;
        } else {
            size_t k = utf8_seq(s + j, n - j);
            if (k == 0) {
                return false;
            }
            j += k;
        }
    }
    return false; /* unterminated */
}

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Validates a number (RFC 8259 grammar) at s[*i]; advances *i past it. */
static bool scan_number(const uint8_t *s, size_t n, size_t *i) {
    size_t j = *i;
    if (j < n && s[j] == '-') {
        j++;
    }
    if (j >= n) {
        return false;
    }
    if (s[j] == '0') {
        j++;
    } else if (s[j] >= '1' && s[j] <= '9') {
        while (j < n && is_digit(s[j])) {
            j++;
        }
    } else {
        return false;
    }
    if (j < n && s[j] == '.') {
        j++;
        if (j >= n || !is_digit(s[j])) {
            return false;
        }
        while (j < n && is_digit(s[j])) {
            j++;
        }
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < n && (s[j] == '+' || s[j] == '-')) {
            j++;
        }
        if (j >= n || !is_digit(s[j])) {
            return false;
        }
        while (j < n && is_digit(s[j])) {
            j++;
        }
    }
    *i = j;
    return true;
}

static bool scan_literal(const uint8_t *s, size_t n, size_t *i, const char *lit) {
    size_t k = strlen(lit);
    if (*i > n || n - *i < k || memcmp(s + *i, lit, k) != 0) {
        return false;
    }
    *i += k;
    return true;
}

/*
 * Validates one JSON value starting exactly at s[*i] (no leading whitespace) and advances *i
 * past it. Recursion is bounded by JSON_MAX_DEPTH. On failure *i is left where the error was
 * found, for the error message.
 */
static bool scan_value(const uint8_t *s, size_t n, size_t *i, unsigned depth) {
    size_t j = *i;
    if (j >= n) {
        return false;
    }
    bool ok;
    switch (s[j]) {
    case '{':
    case '[': {
        bool object = s[j] == '{';
        uint8_t close = object ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH) {
            return false;
        }
        j = skip_ws(s, n, j + 1);
        if (j < n && s[j] == close) {
            *i = j + 1;
            return true;
        }
        for (;;) {
            if (object) {
                *i = j;
                if (!scan_string(s, n, i)) {
                    return false;
                }
                j = skip_ws(s, n, *i);
                if (j >= n || s[j] != ':') {
                    *i = j;
                    return false;
                }
                j = skip_ws(s, n, j + 1);
            }
            *i = j;
            if (!scan_value(s, n, i, depth + 1)) {
                return false;
            }
            j = skip_ws(s, n, *i);
            if (j < n && s[j] == ',') {
                j = skip_ws(s, n, j + 1);
                continue;
            }
            if (j < n && s[j] == close) {
                *i = j + 1;
                return true;
            }
            *i = j;
            return false;
        }
    }
    case '"':
        ok = scan_string(s, n, &j);
        break;
    case 't':
        ok = scan_literal(s, n, &j, "true");
        break;
    case 'f':
        ok = scan_literal(s, n, &j, "false");
        break;
    case 'n':
        ok = scan_literal(s, n, &j, "null");
        break;
    default:
        ok = scan_number(s, n, &j);
        break;
    }
    if (ok) {
        *i = j;
    }
    return ok;
}

/*
 * Validates a whole document: one value with optional surrounding whitespace and nothing else.
 * On success *doc is the value's span; on failure *err_at is the byte offset of the problem.
 */
static bool json_parse_doc(const uint8_t *s, size_t n, span *doc, size_t *err_at) {
    if (s == NULL) {
        n = 0;
        s = (const uint8_t *)"";
    }
    size_t start = skip_ws(s, n, 0);
    size_t i = start;
    if (!scan_value(s, n, &i, 0)) {
        *err_at = i;
        return false;
    }
    size_t end = i;
    i = skip_ws(s, n, i);
    if (i != n) {
        *err_at = i; /* trailing characters */
        return false;
    }
    doc->p = s + start;
    doc->n = end - start;
    return true;
}

typedef enum jtype { J_BAD, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_BOOL, J_NULL } jtype;

static jtype jtype_of(span v) {
    if (v.n == 0) {
        return J_BAD;
    }
    switch (v.p[0]) {
    case '{': return J_OBJECT;
    case '[': return J_ARRAY;
    case '"': return J_STRING;
    case 't':
    case 'f': return J_BOOL;
    case 'n': return J_NULL;
    default: return (v.p[0] == '-' || is_digit(v.p[0])) ? J_NUMBER : J_BAD;
    }
}

static const char *jtype_name(jtype t) {
    switch (t) {
    case J_OBJECT: return "an object";
    case J_ARRAY: return "an array";
    case J_STRING: return "a string";
    case J_NUMBER: return "a number";
    case J_BOOL: return "a boolean";
    case J_NULL: return "null";
    default: return "invalid";
    }
}

/*
 * Decodes a validated string span (quotes included) into out[0..cap). Returns false when the
 * span is not a well-formed string or the decoded text does not fit. The decoded text is never
 * longer than the span (every escape shrinks), so cap = span.n always suffices.
 */
static bool json_str_decode(span v, uint8_t *out, size_t cap, size_t *out_len) {
    if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"') {
        return false;
    }
    const uint8_t *s = v.p;
    size_t n = v.n - 1; /* stop before the closing quote */
    size_t i = 1, o = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == '\\') {
            uint32_t cp;
            if (!read_escape(s, n, &i, &cp)) {
                return false;
            }
            uint8_t enc[4];
            size_t k;
            if (cp < 0x80) {
                enc[0] = (uint8_t)cp;
                k = 1;
            } else if (cp < 0x800) {
                enc[0] = (uint8_t)(0xC0 | (cp >> 6));
                enc[1] = (uint8_t)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                enc[0] = (uint8_t)(0xE0 | (cp >> 12));
                enc[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                enc[2] = (uint8_t)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                enc[0] = (uint8_t)(0xF0 | (cp >> 18));
                enc[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                enc[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                enc[3] = (uint8_t)(0x80 | (cp & 0x3F));
                k = 4;
            }
            if (cap - o < k) {
                return false;
            }
            memcpy(out + o, enc, k);
            o += k;
        } else {
            if (o >= cap) {
                return false;
            }
            out[o++] = c;
            i++;
        }
    }
    *out_len = o;
    return true;
}

/* A decoded string in its own heap allocation (may contain NUL bytes: use len). */
typedef struct dstr {
    uint8_t *p;
    size_t len;
} dstr;

/* Decodes a string span into a fresh allocation; false on a bad span or out of memory. */
static bool json_str_dup(span v, dstr *out) {
    out->p = malloc(v.n ? v.n : 1);
    if (out->p == NULL) {
        return false;
    }
    if (!json_str_decode(v, out->p, v.n, &out->len)) {
        free(out->p);
        out->p = NULL;
        return false;
    }
    return true;
}

/* Whether a string span decodes to exactly the NUL-terminated `lit` (short keys only). */
static bool json_str_eq(span v, const char *lit) {
    uint8_t buf[64];
    size_t len;
    size_t k = strlen(lit);
    if (k > sizeof buf) {
        return false;
    }
    /* A decoded text longer than buf cannot equal a short literal: decode fails, not equal. */
    if (!json_str_decode(v, buf, sizeof buf, &len)) {
        return false;
    }
    return len == k && memcmp(buf, lit, k) == 0;
}

/* Iterates an object's members: call with *pos = 0 first; false at the end or on error. */
static bool json_obj_next(span obj, size_t *pos, span *key, span *val) {
    const uint8_t *s = obj.p;
    size_t n = obj.n;
    size_t i = *pos;
    if (n < 2 || s[0] != '{') {
        return false;
    }
    if (i == 0) {
        i = skip_ws(s, n, 1);
    } else {
        i = skip_ws(s, n, i);
        if (i >= n || s[i] != ',') {
            return false; /* the closing brace, or garbage */
        }
        i = skip_ws(s, n, i + 1);
    }
    if (i >= n || s[i] != '"') {
        return false;
    }
    size_t k0 = i;
    if (!scan_string(s, n, &i)) {
        return false;
    }
    key->p = s + k0;
    key->n = i - k0;
    i = skip_ws(s, n, i);
    if (i >= n || s[i] != ':') {
        return false;
    }
    i = skip_ws(s, n, i + 1);
    size_t v0 = i;
    if (!scan_value(s, n, &i, 1)) {
        return false;
    }
    val->p = s + v0;
    val->n = i - v0;
    *pos = i;
    return true;
}

typedef enum get_result { GET_MISSING, GET_FOUND, GET_DUPLICATE } get_result;

/*
 * Looks up `key` in an object. A key given twice is reported (serde_json refuses duplicate
 * fields too: taking either copy silently would let two readers disagree on the message).
 */
static get_result json_obj_get(span obj, const char *key, span *val) {
    size_t pos = 0;
    span k, v;
    bool found = false;
    while (json_obj_next(obj, &pos, &k, &v)) {
        if (json_str_eq(k, key)) {
            if (found) {
                return GET_DUPLICATE;
            }
            found = true;
            *val = v;
        }
    }
    return found ? GET_FOUND : GET_MISSING;
}

/* Parses a number span that must be a non-negative integer fitting in uint64_t. */
static bool json_u64(span v, uint64_t *out) {
    if (v.n == 0 || v.n > 20) {
        return false; /* UINT64_MAX has 20 digits */
    }
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        uint8_t c = v.p[i];
        if (!is_digit(c)) {
            return false; /* a sign, a fraction or an exponent */
        }
        if (i == 0 && c == '0' && v.n > 1) {
            return false;
        }
        unsigned d = (unsigned)(c - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return false;
        }
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Base64 (standard alphabet, with padding; decoding is strict, as the Rust SDK's)            */
/* ------------------------------------------------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void sb_base64(sb *b, const uint8_t *s, size_t n) {
    size_t i = 0;
    char q[4];
    while (n - i >= 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        q[0] = B64[(v >> 18) & 63];
        q[1] = B64[(v >> 12) & 63];
        q[2] = B64[(v >> 6) & 63];
        q[3] = B64[v & 63];
        sb_put(b, q, 4);
        i += 3;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        q[0] = B64[(v >> 18) & 63];
        q[1] = B64[(v >> 12) & 63];
        q[2] = '=';
        q[3] = '=';
        sb_put(b, q, 4);
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        q[0] = B64[(v >> 18) & 63];
        q[1] = B64[(v >> 12) & 63];
        q[2] = B64[(v >> 6) & 63];
        q[3] = '=';
        sb_put(b, q, 4);
    }
}

static int b64_val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

/*
 * Decodes base64 text into a fresh allocation. Refuses a length that is not a multiple of 4,
 * padding anywhere but at the end, characters outside the alphabet and non-zero trailing bits.
 */
static bool base64_decode(const uint8_t *s, size_t n, dstr *out) {
    out->p = NULL;
    out->len = 0;
    if (n % 4 != 0) {
        return false;
    }
    size_t pad = 0;
    if (n >= 4 && s[n - 1] == '=') {
        pad = (s[n - 2] == '=') ? 2 : 1;
    }
    size_t out_len = n / 4 * 3 - pad;
    out->p = malloc(out_len ? out_len : 1);
    if (out->p == NULL) {
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = (i + 4 == n);
        size_t data = (last ? 4 - pad : 4); /* characters of this quad that carry bits */
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int d = 0;
            if (k < data) {
                d = b64_val(s[i + k]);
                if (d < 0) {
                    goto bad;
                }
            } else if (s[i + k] != '=') {
                goto bad;
            }
            v = (v << 6) | (uint32_t)d;
        }
        if (data == 2 && (v & 0xFFFF) != 0) {
            goto bad; /* non-canonical: bits set that the padding drops */
        }
        if (data == 3 && (v & 0xFF) != 0) {
            goto bad;
        }
        uint8_t bytes[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        size_t take = data - 1; /* 4 chars -> 3 bytes, 3 -> 2, 2 -> 1 */
        if (out_len - o < take) {
            goto bad;
        }
        memcpy(out->p + o, bytes, take);
        o += take;
    }
    out->len = o;
    return true;
bad:
    free(out->p);
    out->p = NULL;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Randomness                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Fills buf with n bytes from /dev/urandom, opened per call (no shared descriptor). */
static bool read_urandom(uint8_t *buf, size_t n) {
    int fd;
    do {
        fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return false;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            close(fd);
            return false;
        }
        got += (size_t)r;
    }
    close(fd);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Request checks                                                                             */
/* ------------------------------------------------------------------------------------------ */

/*
 * Why a setting's value was refused, worded like the Rust example: an integer out of range is
 * quoted; another number is quoted when short (a validated number is plain ASCII, so it can be
 * printed as is); anything else is named by its type.
 */
static rg_buffer bad_setting(const char *key, span v, uint64_t lo, uint64_t hi,
                             const char *unit) {
    char msg[200];
    uint64_t x;
    jtype t = jtype_of(v);
    unsigned long long l = lo, h = hi;
    if (t == J_NUMBER && json_u64(v, &x)) {
        snprintf(msg, sizeof msg, "setting `%s` must be between %llu and %llu%s, not %llu", key, l,
                 h, unit, (unsigned long long)x);
    } else if (t == J_NUMBER && v.n <= 32) {
        snprintf(msg, sizeof msg,
                 "setting `%s` must be an integer between %llu and %llu%s, not %.*s", key, l, h,
                 unit, (int)v.n, (const char *)v.p);
    } else {
        snprintf(msg, sizeof msg, "setting `%s` must be an integer between %llu and %llu%s, not %s",
                 key, l, h, unit, jtype_name(t));
    }
    return error_answer("config", msg);
}

typedef enum field_rule { REQUIRED, OPTIONAL, NULLABLE } field_rule;

/* Checks one field's presence and type; false (with a message) when it is wrong. */
static bool check_field(span obj, const char *path, const char *key, jtype want, field_rule rule,
                        span *out, bool *present, char *err, size_t errcap) {
    span v = {NULL, 0};
    *present = false;
    switch (json_obj_get(obj, key, &v)) {
    case GET_DUPLICATE:
        snprintf(err, errcap, "`%s%s` is given twice", path, key);
        return false;
    case GET_MISSING:
        if (rule == REQUIRED) {
            snprintf(err, errcap, "missing field `%s%s`", path, key);
            return false;
        }
        return true;
    case GET_FOUND:
        break;
    }
    jtype t = jtype_of(v);
    if (t == J_NULL && rule == NULLABLE) {
        return true;
    }
    if (t != want) {
        snprintf(err, errcap, "`%s%s` must be %s, not %s", path, key, jtype_name(want),
                 jtype_name(t));
        return false;
    }
    *present = true;
    if (out != NULL) {
        *out = v;
    }
    return true;
}

/* A base64 field must decode; the decoded bytes are discarded. */
static bool check_base64(span v, const char *path, char *err, size_t errcap) {
    dstr text, bytes;
    if (!json_str_dup(v, &text)) {
        snprintf(err, errcap, "`%s` could not be read", path);
        return false;
    }
    bool ok = base64_decode(text.p, text.len, &bytes);
    free(text.p);
    free(bytes.p);
    if (!ok) {
        snprintf(err, errcap, "`%s` is not valid base64", path);
    }
    return ok;
}

/*
 * Checks a validated `ctx.credentials` array: every element must be a Credential
 * {id, label?, data: base64}; false (with a message) when one is not.
 */
static bool check_credentials(span creds, char *err, size_t errcap) {
    bool present;
    /* Walk the array: every element must be a Credential {id, label?, data}. */
    size_t i = skip_ws(creds.p, creds.n, 1);
    if (i < creds.n && creds.p[i] != ']') {
        for (;;) {
            size_t e0 = i;
            if (!scan_value(creds.p, creds.n, &i, 1)) {
                snprintf(err, errcap, "`ctx.credentials` could not be read");
                return false;
            }
            span cred = {creds.p + e0, i - e0};
            span data = {NULL, 0};
            if (jtype_of(cred) != J_OBJECT) {
                snprintf(err, errcap, "`ctx.credentials[]` must be an object, not %s",
                         jtype_name(jtype_of(cred)));
                return false;
            }
            if (!check_field(cred, "ctx.credentials[].", "id", J_STRING, REQUIRED, NULL,
                             &present, err, errcap) ||
                !check_field(cred, "ctx.credentials[].", "label", J_STRING, OPTIONAL, NULL,
                             &present, err, errcap) ||
                !check_field(cred, "ctx.credentials[].", "data", J_STRING, REQUIRED, &data,
                             &present, err, errcap) ||
                !check_base64(data, "ctx.credentials[].data", err, errcap)) {
                return false;
            }
            i = skip_ws(creds.p, creds.n, i);
            if (i < creds.n && creds.p[i] == ',') {
                i = skip_ws(creds.p, creds.n, i + 1);
                continue;
            }
            break; /* the closing bracket (the document was validated) */
        }
    }
    return true;
}

/* Gets the `state` string of a request, decoded from base64. */
static bool get_state(span req, dstr *state, char *err, size_t errcap) {
    span v = {NULL, 0};
    bool present;
    state->p = NULL;
    state->len = 0;
    if (!check_field(req, "", "state", J_STRING, REQUIRED, &v, &present, err, errcap)) {
        return false;
    }
    dstr text;
    if (!json_str_dup(v, &text)) {
        snprintf(err, errcap, "`state` could not be read");
        return false;
    }
    bool ok = base64_decode(text.p, text.len, state);
    free(text.p);
    if (!ok) {
        snprintf(err, errcap, "`state` is not valid base64");
    }
    return ok;
}

/* bad_input: "malformed `OP` request: DETAIL". */
static rg_buffer malformed(const char *op, const char *detail) {
    char msg[400];
    snprintf(msg, sizeof msg, "malformed `%s` request: %s", op, detail);
    return error_answer("bad_input", msg);
}

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/*
 * Reads a call's request: a valid JSON object with a string `op`. False with the bad_input
 * answer in *refusal otherwise (never a crash: `op` may be missing, a number, an object...).
 */
static bool read_request(const uint8_t *request, size_t len, span *req_out, span *op_out,
                         rg_buffer *refusal) {
    span req;
    size_t err_at = 0;
    if (!json_parse_doc(request, len, &req, &err_at)) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "malformed request: not a JSON object with an `op` field (invalid JSON at "
                 "byte %zu)", err_at);
        *refusal = error_answer("bad_input", msg);
        return false;
    }
    span op;
    if (jtype_of(req) != J_OBJECT) {
        *refusal =
            error_answer("bad_input", "malformed request: not a JSON object with an `op` field");
        return false;
    }
    switch (json_obj_get(req, "op", &op)) {
    case GET_MISSING:
        *refusal =
            error_answer("bad_input", "malformed request: not a JSON object with an `op` field");
        return false;
    case GET_DUPLICATE:
        *refusal = error_answer("bad_input", "malformed request: the `op` field is given twice");
        return false;
    case GET_FOUND:
        break;
    }
    if (jtype_of(op) != J_STRING) {
        *refusal = error_answer("bad_input", "malformed request: the `op` field must be a string");
        return false;
    }
    *req_out = req;
    *op_out = op;
    return true;
}

/*
 * The answer to an op this provider does not know (one from a newer host): unsupported, never
 * bad_input (compatibility rule). `whole` when the op cannot be read, else "operation `OP"
 * followed by `after`, the op echoed escaped and cut to ECHO_MAX bytes.
 */
static rg_buffer unsupported_op(span op, const char *whole, const char *after) {
    dstr name;
    if (!json_str_dup(op, &name)) {
        return error_answer("unsupported", whole);
    }
    rg_buffer out = error_answer_named("unsupported", "operation `", name.p, name.len, after);
    free(name.p);
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Comparison                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Compares equal-length buffers in time independent of where they differ. */
static bool same(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= (uint8_t)(a[i] ^ b[i]);
    }
    return acc == 0;
}

#endif /* RG_UTIL_H */
