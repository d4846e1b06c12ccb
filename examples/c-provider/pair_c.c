/*
 * pair_c: a rolegate provider in plain C11 with nothing but libc that uses the whole contract:
 * an enrolment, a `display` prompt and an out-of-band wait answered by polling.
 *
 * It stands for a "push" factor: the user pairs a device once (enrolment), and each challenge
 * shows a number on the sign-in page, sends the request to the device and waits until the
 * device approves it. There is no real device: the approval is simulated, arriving after
 * `approve_after` polls. It is a demonstration of the ABI contract (see
 * sdk/include/rolegate_provider.h and docs/abi.md), not a second factor.
 *
 *   enroll_start      -> ask: display prompt with the pairing key (uri, text); acknowledge it
 *   enroll_continue   -> done: approved, the credential (device id + a 16-byte key)
 *   challenge_start   -> ask: display prompt "approve on DEV-1A2B: it shows 42"; acknowledge
 *   challenge_continue-> wait: poll after poll_ms ("waiting for DEV-1A2B")
 *   challenge_poll    -> wait, until the device "approves": done, approved
 *   cancel            -> ok (nothing to release: the provider keeps no memory)
 *
 * Settings: a JSON object with only `approve_after` (0..10 polls, default 1), `expires_in`
 * (30..3600 seconds, default 120) and `poll_ms` (100..10000, default 500); anything else is a
 * "config" error naming the key.
 *
 * Every challenge state carries a MAC (SipHash-2-4 keyed with the paired device's key) over
 * its content, so a state the host hands back is checked before it is believed: a tampered
 * state, a state of another request, or of a device the user no longer holds, is bad_input.
 * Time is ctx.now, never this machine's clock.
 *
 * The JSON reader, the JSON writer, base64 and the request checks are hello_c.c's, as they are
 * (see examples/c-provider/README.md): copy this one file to start a provider of your own.
 *
 * Build:  cc -std=c11 -O2 -Wall -Wextra -shared -fPIC -I ../../sdk/include \
 *            -o libpair_c.so pair_c.c
 */

/* open/read/close and O_CLOEXEC are POSIX, not C11: ask for them explicitly. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rolegate_provider.h"

/* ------------------------------------------------------------------------------------------ */
/* Constants                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define PAIR_ID "pair-c"
#define PAIR_VERSION "0.1.0"

#define APPROVE_AFTER_MAX 10u
#define APPROVE_AFTER_DEFAULT 1u
#define EXPIRES_MIN 30u
#define EXPIRES_MAX 3600u
#define EXPIRES_DEFAULT 120u
#define POLL_MIN 100u
#define POLL_MAX 10000u
#define POLL_DEFAULT 500u

/* How long a user has to pair the device once the pairing key is shown. */
#define ENROL_EXPIRES_IN 600u

/* A paired device: 4 bytes of device id, then its 16-byte key (the credential's data). */
#define DEVICE_ID_LEN 4u
#define KEY_LEN 16u
#define CRED_DATA_LEN (DEVICE_ID_LEN + KEY_LEN)

/*
 * Deepest nesting of arrays/objects accepted. serde_json (the host's and the Rust SDK's
 * decoder) stops at 128 as well; the limit keeps the recursive validator's stack bounded.
 */
#define JSON_MAX_DEPTH 128

/* How many bytes of a caller-supplied name (a key, an op) are echoed in an error message. */
#define ECHO_MAX 64

/* The instance: immutable after create, hence shareable between threads without locks. */
typedef struct pair {
    uint64_t approve_after;
    uint64_t expires_in;
    uint64_t poll_ms;
} pair;

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
/* Contexts                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Hex digits, lower case. */
static const char HEX[] = "0123456789abcdef";

static void sb_hex(sb *b, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char two[2] = {HEX[s[i] >> 4], HEX[s[i] & 0xF]};
        sb_put(b, two, 2);
    }
}

/* Reads 2n lower-case hex digits at s into out[0..n); false for anything else. */
static bool read_hex(const uint8_t *s, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0 || (s[2 * i] >= 'A' && s[2 * i] <= 'F') ||
            (s[2 * i + 1] >= 'A' && s[2 * i + 1] <= 'F')) {
            return false;
        }
        out[i] = (uint8_t)((hi << 4) | lo);
    }
    return true;
}

/* A paired device, as its credential holds it. */
typedef struct device {
    char cred_id[5 + 2 * DEVICE_ID_LEN + 1]; /* "pair-" and 8 hex digits, NUL-terminated */
    char name[4 + 4 + 1];                    /* "DEV-" and 4 hex digits, NUL-terminated */
    uint8_t key[KEY_LEN];
} device;

static void device_from(const uint8_t data[CRED_DATA_LEN], device *d) {
    memcpy(d->cred_id, "pair-", 5);
    for (size_t i = 0; i < DEVICE_ID_LEN; i++) {
        d->cred_id[5 + 2 * i] = HEX[data[i] >> 4];
        d->cred_id[5 + 2 * i + 1] = HEX[data[i] & 0xF];
    }
    d->cred_id[sizeof d->cred_id - 1] = '\0';
    snprintf(d->name, sizeof d->name, "DEV-%c%c%c%c", HEX[data[0] >> 4], HEX[data[0] & 0xF],
             HEX[data[1] >> 4], HEX[data[1] & 0xF]);
    memcpy(d->key, data + DEVICE_ID_LEN, KEY_LEN);
}

/*
 * What pair-c reads of a context: request_id (challenges only), now, and the credentials
 * array (a validated span, or empty). The context is checked the way the Rust SDK's decoder
 * would: required fields present and of the right type, optional ones of the right type when
 * present, every credential an object {id, label?, data: base64}. Unknown fields are ignored.
 */
typedef struct ctx_view {
    span request_id; /* a string span, quotes included (challenges only) */
    uint64_t now;
    span credentials; /* an array span, or {NULL, 0} when absent */
} ctx_view;

static bool check_ctx(span req, bool challenge, ctx_view *out, char *err, size_t errcap) {
    span ctx = {NULL, 0}, user = {NULL, 0}, v = {NULL, 0};
    bool present;
    out->credentials.p = NULL;
    out->credentials.n = 0;
    if (!check_field(req, "", "ctx", J_OBJECT, REQUIRED, &ctx, &present, err, errcap)) {
        return false;
    }
    if (!check_field(ctx, "ctx.", "user", J_OBJECT, REQUIRED, &user, &present, err, errcap) ||
        !check_field(user, "ctx.user.", "account", J_STRING, REQUIRED, NULL, &present, err,
                     errcap) ||
        !check_field(user, "ctx.user.", "display_name", J_STRING, OPTIONAL, NULL, &present, err,
                     errcap) ||
        !check_field(user, "ctx.user.", "phone", J_STRING, NULLABLE, NULL, &present, err,
                     errcap) ||
        !check_field(user, "ctx.user.", "email", J_STRING, NULLABLE, NULL, &present, err,
                     errcap) ||
        !check_field(ctx, "ctx.", "origin", J_STRING, NULLABLE, NULL, &present, err, errcap) ||
        !check_field(ctx, "ctx.", "now", J_NUMBER, REQUIRED, &v, &present, err, errcap)) {
        return false;
    }
    if (challenge &&
        (!check_field(ctx, "ctx.", "role", J_STRING, REQUIRED, NULL, &present, err, errcap) ||
         !check_field(ctx, "ctx.", "request_id", J_STRING, REQUIRED, &out->request_id, &present,
                      err, errcap))) {
        return false;
    }
    if (!json_u64(v, &out->now)) {
        snprintf(err, errcap, "`ctx.now` must be a non-negative integer (Unix seconds)");
        return false;
    }
    span creds = {NULL, 0};
    if (!check_field(ctx, "ctx.", "credentials", J_ARRAY, OPTIONAL, &creds, &present, err,
                     errcap)) {
        return false;
    }
    if (!present) {
        return true;
    }
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
    out->credentials = creds;
    return true;
}

/* The outcome of looking for a device among the credentials. */
typedef enum find_result { FIND_NONE, FIND_FOUND, FIND_FOREIGN } find_result;

/*
 * Finds the device whose credential id is `want` (NULL: the first device) among the
 * credentials of a validated context. A credential whose data is not 20 bytes is not
 * pair-c's: FIND_FOREIGN, unless a good one is found first.
 */
static find_result find_device(span creds, const char *want, device *out) {
    if (creds.n == 0) {
        return FIND_NONE;
    }
    find_result result = FIND_NONE;
    size_t i = skip_ws(creds.p, creds.n, 1);
    while (i < creds.n && creds.p[i] != ']') {
        size_t e0 = i;
        if (!scan_value(creds.p, creds.n, &i, 1)) {
            return FIND_FOREIGN;
        }
        span cred = {creds.p + e0, i - e0}, data_v = {NULL, 0};
        dstr text = {NULL, 0}, data = {NULL, 0};
        if (json_obj_get(cred, "data", &data_v) == GET_FOUND && json_str_dup(data_v, &text)) {
            if (base64_decode(text.p, text.len, &data) && data.len == CRED_DATA_LEN) {
                device d;
                device_from(data.p, &d);
                span id_v;
                bool id_ok = json_obj_get(cred, "id", &id_v) == GET_FOUND &&
                             json_str_eq(id_v, d.cred_id);
                if (id_ok && (want == NULL || strcmp(want, d.cred_id) == 0)) {
                    *out = d;
                    memset(&d, 0, sizeof d);
                    free(text.p);
                    memset(data.p, 0, data.len);
                    free(data.p);
                    return FIND_FOUND;
                }
                memset(&d, 0, sizeof d);
                if (!id_ok) {
                    result = FIND_FOREIGN;
                }
            } else {
                result = FIND_FOREIGN;
            }
            if (data.p != NULL) {
                memset(data.p, 0, data.len);
            }
            free(data.p);
        } else {
            result = FIND_FOREIGN;
        }
        free(text.p);
        i = skip_ws(creds.p, creds.n, i);
        if (i < creds.n && creds.p[i] == ',') {
            i = skip_ws(creds.p, creds.n, i + 1);
        }
    }
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* SipHash-2-4 (Aumasson and Bernstein): the MAC of the challenge state                       */
/* ------------------------------------------------------------------------------------------ */

static uint64_t rotl(uint64_t x, unsigned b) { return (x << b) | (x >> (64 - b)); }

static uint64_t load_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

#define SIPROUND                                                                                 \
    do {                                                                                         \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                                \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                                   \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                                   \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                                \
    } while (0)

static uint64_t siphash24(const uint8_t key[16], const uint8_t *m, size_t n) {
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t full = n - n % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t mi = load_le64(m + i);
        v3 ^= mi;
        SIPROUND;
        SIPROUND;
        v0 ^= mi;
    }
    uint64_t last = (uint64_t)(n & 0xFF) << 56;
    for (size_t i = full; i < n; i++) {
        last |= (uint64_t)m[i] << (8 * (i - full));
    }
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xFF;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The MAC of s[0..n) under key, as 16 hex digits (no NUL). */
static void mac_hex(const uint8_t key[16], const uint8_t *s, size_t n, char out[16]) {
    uint64_t m = siphash24(key, s, n);
    for (unsigned i = 0; i < 16; i++) {
        out[i] = HEX[(m >> (60 - 4 * i)) & 0xF];
    }
}

/* Compares equal-length buffers in time independent of where they differ. */
static bool same(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= (uint8_t)(a[i] ^ b[i]);
    }
    return acc == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Settings and create                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Reads one integer setting, refusing a second copy and a value out of range. */
static bool int_setting(span v, const char *key, bool *seen, uint64_t lo, uint64_t hi,
                        const char *unit, uint64_t *out, rg_buffer *refusal) {
    if (*seen) {
        char msg[100];
        snprintf(msg, sizeof msg, "setting `%s` is given twice", key);
        *refusal = error_answer("config", msg);
        return false;
    }
    *seen = true;
    if (jtype_of(v) != J_NUMBER || !json_u64(v, out) || *out < lo || *out > hi) {
        *refusal = bad_setting(key, v, lo, hi, unit);
        return false;
    }
    return true;
}

static rg_buffer pair_create(const uint8_t *settings, size_t len, void **instance) {
    span doc;
    size_t err_at = 0;
    if (!json_parse_doc(settings, len, &doc, &err_at)) {
        char msg[120];
        snprintf(msg, sizeof msg, "settings are not a JSON object: invalid JSON at byte %zu",
                 err_at);
        return error_answer("bad_input", msg);
    }
    if (jtype_of(doc) != J_OBJECT) {
        return error_answer("bad_input", "settings are not a JSON object");
    }
    pair p = {APPROVE_AFTER_DEFAULT, EXPIRES_DEFAULT, POLL_DEFAULT};
    bool seen_approve = false, seen_expires = false, seen_poll = false;
    size_t pos = 0;
    span k, v;
    rg_buffer refusal;
    while (json_obj_next(doc, &pos, &k, &v)) {
        if (json_str_eq(k, "approve_after")) {
            if (!int_setting(v, "approve_after", &seen_approve, 0, APPROVE_AFTER_MAX, " polls",
                             &p.approve_after, &refusal)) {
                return refusal;
            }
        } else if (json_str_eq(k, "expires_in")) {
            if (!int_setting(v, "expires_in", &seen_expires, EXPIRES_MIN, EXPIRES_MAX,
                             " seconds", &p.expires_in, &refusal)) {
                return refusal;
            }
        } else if (json_str_eq(k, "poll_ms")) {
            if (!int_setting(v, "poll_ms", &seen_poll, POLL_MIN, POLL_MAX, " ms", &p.poll_ms,
                             &refusal)) {
                return refusal;
            }
        } else {
            dstr name;
            if (!json_str_dup(k, &name)) {
                return error_answer("config", "unknown setting");
            }
            rg_buffer out = error_answer_named("config", "unknown setting `", name.p, name.len,
                                               "`");
            free(name.p);
            return out;
        }
    }
    if (instance == NULL) {
        return error_answer("bad_input", "create: null instance pointer");
    }
    pair *h = malloc(sizeof *h);
    if (h == NULL) {
        return error_answer("internal", "out of memory");
    }
    *h = p;
    rg_buffer out = ok_null();
    if (out.ptr == NULL) {
        /* The success answer could not be allocated: do not leave an instance behind. */
        free(h);
        return out;
    }
    *instance = h;
    return out;
}

static void pair_destroy(void *instance) { free(instance); }

static void pair_free_buffer(rg_buffer buf) { free(buf.ptr); }

/* ------------------------------------------------------------------------------------------ */
/* Answers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static rg_buffer finish_or_oom(sb *b) {
    if (b->oom) {
        free(b->p);
        return error_answer("internal", "out of memory");
    }
    return sb_finish(b);
}

static rg_buffer done_denied(const char *reason, const char *message) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"denied\",\"reason\":");
    sb_json_cstr(&b, reason);
    sb_puts(&b, ",\"message\":");
    sb_json_cstr(&b, message);
    sb_puts(&b, "}}}");
    return finish_or_oom(&b);
}

/* Saturating addition: a clock near UINT64_MAX must not make a deadline wrap around. */
static uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static rg_buffer op_info(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"id\":\"" PAIR_ID "\","
                "\"name\":\"Paired device in C (example: approve on the device)\","
                "\"version\":\"" PAIR_VERSION "\","
                "\"vendor\":\"rolegate examples\","
                "\"factor\":\"other\","
                "\"needs_enrolment\":true,"
                "\"needs_phone\":false,"
                "\"responder\":\"display\"}}");
    return finish_or_oom(&b);
}

static rg_buffer op_health(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"status\":\"ok\",\"message\":\"\"}}");
    return finish_or_oom(&b);
}

/* The user's input must be {"kind":"acknowledge"}: what a display prompt takes here. */
static bool is_acknowledge(span req, const char *op, rg_buffer *refusal) {
    char err[300];
    span input = {NULL, 0}, kind = {NULL, 0};
    bool present;
    if (!check_field(req, "", "input", J_OBJECT, REQUIRED, &input, &present, err, sizeof err) ||
        !check_field(input, "input.", "kind", J_STRING, REQUIRED, &kind, &present, err,
                     sizeof err)) {
        *refusal = malformed(op, err);
        return false;
    }
    if (!json_str_eq(kind, "acknowledge")) {
        *refusal = error_answer("bad_input",
                                "pair-c's prompts show something and take an acknowledgement");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Enrolment                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/*
 * The enrolment state: "e1:<40 hex: device id and key>:<expires_at>:<account>". It holds the
 * key the device is given, so it is as secret as the credential: the host seals states at rest.
 */
static rg_buffer op_enroll_start(span req) {
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, false, &ctx, err, sizeof err)) {
        return malformed("enroll_start", err);
    }
    span ctx_v, user_v, account_v;
    dstr account = {NULL, 0};
    if (json_obj_get(req, "ctx", &ctx_v) != GET_FOUND ||
        json_obj_get(ctx_v, "user", &user_v) != GET_FOUND ||
        json_obj_get(user_v, "account", &account_v) != GET_FOUND ||
        !json_str_dup(account_v, &account)) {
        return error_answer("internal", "out of memory");
    }
    uint8_t data[CRED_DATA_LEN];
    if (!read_urandom(data, sizeof data)) {
        free(account.p);
        return error_answer("unavailable", "no randomness: cannot read /dev/urandom");
    }
    device d;
    device_from(data, &d);
    sb state = {0};
    sb_puts(&state, "e1:");
    sb_hex(&state, data, sizeof data);
    sb_puts(&state, ":");
    sb_u64(&state, add_sat(ctx.now, ENROL_EXPIRES_IN));
    sb_puts(&state, ":");
    sb_put(&state, account.p, account.len);
    free(account.p);

    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"ask\",\"prompt\":{\"kind\":\"display\",\"message\":");
    sb_puts(&b, "\"Open the pair-c app on your device and enter the pairing key below, then "
                "acknowledge: the device will be ");
    sb_puts(&b, d.name);
    sb_puts(&b, "\",\"uri\":\"pair-c://pair?device=");
    sb_puts(&b, d.name);
    sb_puts(&b, "&key=");
    sb_hex(&b, d.key, KEY_LEN);
    sb_puts(&b, "\",\"png\":null,\"text\":\"");
    sb_hex(&b, d.key, KEY_LEN);
    sb_puts(&b, "\"},\"state\":\"");
    if (state.oom) {
        b.oom = true;
    } else {
        sb_base64(&b, state.p, state.len);
    }
    sb_puts(&b, "\",\"expires_in\":");
    sb_u64(&b, ENROL_EXPIRES_IN);
    sb_puts(&b, "}}");
    if (state.p != NULL) {
        memset(state.p, 0, state.len);
    }
    free(state.p);
    memset(data, 0, sizeof data);
    memset(&d, 0, sizeof d);
    return finish_or_oom(&b);
}

static rg_buffer op_enroll_continue(span req) {
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, false, &ctx, err, sizeof err)) {
        return malformed("enroll_continue", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("enroll_continue", err);
    }
    rg_buffer out;
    uint8_t data[CRED_DATA_LEN];
    uint64_t expires_at = 0;
    dstr account = {NULL, 0};
    span ctx_v, user_v, account_v;
    /* "e1:" 40 hex ":" expires_at ":" account */
    size_t hex_end = 3 + 2 * CRED_DATA_LEN;
    if (state.len < hex_end + 2 || memcmp(state.p, "e1:", 3) != 0 ||
        !read_hex(state.p + 3, CRED_DATA_LEN, data) || state.p[hex_end] != ':') {
        out = error_answer("bad_input", "the enrolment state is not pair-c's");
        goto done;
    }
    size_t i = hex_end + 1, e0 = i;
    while (i < state.len && is_digit(state.p[i])) {
        i++;
    }
    span e = {state.p + e0, i - e0};
    if (!json_u64(e, &expires_at) || i >= state.len || state.p[i] != ':') {
        out = error_answer("bad_input", "the enrolment state is not pair-c's");
        goto done;
    }
    i++;
    if (json_obj_get(req, "ctx", &ctx_v) != GET_FOUND ||
        json_obj_get(ctx_v, "user", &user_v) != GET_FOUND ||
        json_obj_get(user_v, "account", &account_v) != GET_FOUND ||
        !json_str_dup(account_v, &account)) {
        out = error_answer("internal", "out of memory");
        goto done;
    }
    if (account.len != state.len - i || memcmp(account.p, state.p + i, account.len) != 0) {
        out = error_answer("bad_input", "the enrolment state belongs to another user");
        goto done;
    }
    if (!is_acknowledge(req, "enroll_continue", &out)) {
        goto done;
    }
    if (ctx.now >= expires_at) {
        out = done_denied("expired", "the pairing expired; start it again");
        goto done;
    }
    device d;
    device_from(data, &d);
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"approved\","
                "\"credential\":{\"id\":\"");
    sb_puts(&b, d.cred_id);
    sb_puts(&b, "\",\"label\":\"Paired device ");
    sb_puts(&b, d.name);
    sb_puts(&b, "\",\"data\":\"");
    sb_base64(&b, data, sizeof data);
    sb_puts(&b, "\"}}}}");
    memset(&d, 0, sizeof d);
    out = finish_or_oom(&b);
done:
    memset(data, 0, sizeof data);
    free(account.p);
    if (state.p != NULL) {
        memset(state.p, 0, state.len);
    }
    free(state.p);
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Challenges                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * The challenge state: "<mac>:c1:<stage>:<polls>:<expires_at>:<number>:<cred id>:<request id>",
 * the MAC (16 hex digits) over everything after its colon, keyed with the device's key.
 * Stage `a`: the number is shown (ask); stage `w`: the request is on the device (wait).
 */
typedef struct challenge {
    char stage;
    uint64_t polls;
    uint64_t expires_at;
    unsigned number;
    device dev;
} challenge;

#define MAC_HEX 16u

/* Writes the state of `c` for request `rid` as base64 into b. */
static void put_state(sb *b, const challenge *c, const uint8_t *rid, size_t rid_len) {
    sb body = {0};
    char head[64];
    snprintf(head, sizeof head, "c1:%c:", c->stage);
    sb_puts(&body, head);
    sb_u64(&body, c->polls);
    sb_puts(&body, ":");
    sb_u64(&body, c->expires_at);
    snprintf(head, sizeof head, ":%02u:%s:", c->number, c->dev.cred_id);
    sb_puts(&body, head);
    sb_put(&body, rid, rid_len);
    if (body.oom || body.p == NULL) {
        b->oom = true;
        free(body.p);
        return;
    }
    sb full = {0};
    char mac[MAC_HEX];
    mac_hex(c->dev.key, body.p, body.len, mac);
    sb_put(&full, mac, MAC_HEX);
    sb_puts(&full, ":");
    sb_put(&full, body.p, body.len);
    free(body.p);
    if (full.oom) {
        b->oom = true;
    } else {
        sb_base64(b, full.p, full.len);
    }
    free(full.p);
}

/* Reads a decimal u64 at s[*i] up to the next ':'; advances past the ':'. */
static bool read_u64_field(const uint8_t *s, size_t n, size_t *i, uint64_t *out) {
    size_t j = *i;
    while (j < n && is_digit(s[j])) {
        j++;
    }
    span v = {s + *i, j - *i};
    if (!json_u64(v, out) || j >= n || s[j] != ':') {
        return false;
    }
    *i = j + 1;
    return true;
}

/*
 * Parses and authenticates a challenge state against the context's credentials and request
 * id. On failure writes a bad_input answer to *refusal.
 */
static bool read_challenge(const dstr *state, const ctx_view *ctx, challenge *c,
                           rg_buffer *refusal) {
    const uint8_t *s = state->p;
    size_t n = state->len;
    const size_t id_len = 5 + 2 * DEVICE_ID_LEN;
    /* mac ":" "c1:" stage ":" */
    if (n < MAC_HEX + 1 + 5 || s[MAC_HEX] != ':' || memcmp(s + MAC_HEX + 1, "c1:", 3) != 0 ||
        (s[MAC_HEX + 4] != 'a' && s[MAC_HEX + 4] != 'w') || s[MAC_HEX + 5] != ':') {
        *refusal = error_answer("bad_input", "the challenge state is not pair-c's");
        return false;
    }
    c->stage = (char)s[MAC_HEX + 4];
    size_t i = MAC_HEX + 6;
    uint64_t number;
    if (!read_u64_field(s, n, &i, &c->polls) || !read_u64_field(s, n, &i, &c->expires_at) ||
        !read_u64_field(s, n, &i, &number) || number > 99 || n - i < id_len + 1 ||
        memcmp(s + i, "pair-", 5) != 0 || s[i + id_len] != ':') {
        *refusal = error_answer("bad_input", "the challenge state is not pair-c's");
        return false;
    }
    c->number = (unsigned)number;
    char cred_id[5 + 2 * DEVICE_ID_LEN + 1];
    memcpy(cred_id, s + i, id_len);
    cred_id[id_len] = '\0';
    i += id_len + 1;
    /* The device must be one the user still holds; its key authenticates the state. */
    switch (find_device(ctx->credentials, cred_id, &c->dev)) {
    case FIND_FOUND:
        break;
    case FIND_FOREIGN:
        *refusal = error_answer("bad_input", "a stored credential is not pair-c's");
        return false;
    case FIND_NONE:
        *refusal = error_answer("bad_input",
                                "the challenge's device is not among the user's credentials");
        return false;
    }
    char mac[MAC_HEX];
    mac_hex(c->dev.key, s + MAC_HEX + 1, n - MAC_HEX - 1, mac);
    if (!same((const uint8_t *)mac, s, MAC_HEX)) {
        memset(&c->dev, 0, sizeof c->dev);
        *refusal = error_answer("bad_input", "the challenge state is not pair-c's");
        return false;
    }
    dstr rid;
    if (!json_str_dup(ctx->request_id, &rid)) {
        *refusal = error_answer("internal", "out of memory");
        return false;
    }
    bool ours = rid.len == n - i && memcmp(rid.p, s + i, rid.len) == 0;
    free(rid.p);
    if (!ours) {
        memset(&c->dev, 0, sizeof c->dev);
        *refusal = error_answer("bad_input", "the challenge state belongs to another request");
        return false;
    }
    return true;
}

/* The request id of a validated challenge context, decoded. */
static bool request_id(const ctx_view *ctx, dstr *rid) { return json_str_dup(ctx->request_id, rid); }

static rg_buffer op_challenge_start(const pair *p, span req) {
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, true, &ctx, err, sizeof err)) {
        return malformed("challenge_start", err);
    }
    challenge c = {'a', 0, add_sat(ctx.now, p->expires_in), 0, {{0}, {0}, {0}}};
    switch (find_device(ctx.credentials, NULL, &c.dev)) {
    case FIND_FOUND:
        break;
    case FIND_FOREIGN:
        return error_answer("bad_input", "a stored credential is not pair-c's");
    case FIND_NONE:
        return done_denied("not_enrolled", "no paired device: pair one first");
    }
    uint8_t r;
    do {
        if (!read_urandom(&r, 1)) {
            memset(&c.dev, 0, sizeof c.dev);
            return error_answer("unavailable", "no randomness: cannot read /dev/urandom");
        }
    } while (r >= 180); /* 90 numbers, 10 to 99, each twice in 0..179: no bias */
    c.number = 10u + r % 90u;
    dstr rid;
    if (!request_id(&ctx, &rid)) {
        memset(&c.dev, 0, sizeof c.dev);
        return error_answer("internal", "out of memory");
    }
    char message[160];
    snprintf(message, sizeof message,
             "Approve the sign-in on your device %s: check that it shows the number %02u, then "
             "acknowledge here",
             c.dev.name, c.number);
    char number[3];
    snprintf(number, sizeof number, "%02u", c.number);
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"ask\",\"prompt\":{\"kind\":\"display\",\"message\":");
    sb_json_cstr(&b, message);
    sb_puts(&b, ",\"uri\":null,\"png\":null,\"text\":\"");
    sb_puts(&b, number);
    sb_puts(&b, "\"},\"state\":\"");
    put_state(&b, &c, rid.p, rid.len);
    sb_puts(&b, "\",\"expires_in\":");
    sb_u64(&b, p->expires_in);
    sb_puts(&b, "}}");
    free(rid.p);
    memset(&c.dev, 0, sizeof c.dev);
    return finish_or_oom(&b);
}

/* {"ok":{"step":"wait",...}} with the next state. */
static rg_buffer wait_step(const pair *p, const challenge *c, const ctx_view *ctx) {
    dstr rid;
    if (!request_id(ctx, &rid)) {
        return error_answer("internal", "out of memory");
    }
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"wait\",\"state\":\"");
    put_state(&b, c, rid.p, rid.len);
    sb_puts(&b, "\",\"poll_after_ms\":");
    sb_u64(&b, p->poll_ms);
    sb_puts(&b, ",\"status\":\"Waiting for your approval on ");
    sb_puts(&b, c->dev.name);
    sb_puts(&b, "\"}}");
    free(rid.p);
    return finish_or_oom(&b);
}

static rg_buffer op_challenge_continue(const pair *p, span req) {
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, true, &ctx, err, sizeof err)) {
        return malformed("challenge_continue", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("challenge_continue", err);
    }
    rg_buffer out;
    challenge c;
    memset(&c, 0, sizeof c);
    if (!read_challenge(&state, &ctx, &c, &out)) {
        goto done;
    }
    if (c.stage != 'a') {
        out = error_answer("bad_input", "this challenge waits for the device: poll it");
        goto done;
    }
    if (!is_acknowledge(req, "challenge_continue", &out)) {
        goto done;
    }
    if (ctx.now >= c.expires_at) {
        out = done_denied("expired", "the challenge expired");
        goto done;
    }
    /* Here a real provider would send the request to the device. */
    c.stage = 'w';
    c.polls = 0;
    out = wait_step(p, &c, &ctx);
done:
    memset(&c, 0, sizeof c);
    free(state.p);
    return out;
}

static rg_buffer op_challenge_poll(const pair *p, span req) {
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, true, &ctx, err, sizeof err)) {
        return malformed("challenge_poll", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("challenge_poll", err);
    }
    rg_buffer out;
    challenge c;
    memset(&c, 0, sizeof c);
    if (!read_challenge(&state, &ctx, &c, &out)) {
        goto done;
    }
    if (c.stage != 'w') {
        out = error_answer("bad_input", "this challenge waits for an acknowledgement, not a poll");
        goto done;
    }
    if (ctx.now >= c.expires_at) {
        out = done_denied("expired", "the device did not approve in time");
        goto done;
    }
    /* Here a real provider would ask its service whether the device answered. */
    if (c.polls >= p->approve_after) {
        sb b = {0};
        sb_puts(&b, "{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"approved\","
                    "\"credential\":null}}}");
        out = finish_or_oom(&b);
        goto done;
    }
    c.polls++;
    out = wait_step(p, &c, &ctx);
done:
    memset(&c, 0, sizeof c);
    free(state.p);
    return out;
}

static rg_buffer op_cancel(span req) {
    /* Nothing to release: pair-c keeps no memory of challenges. Cancel is idempotent. */
    char err[300];
    ctx_view ctx;
    if (!check_ctx(req, true, &ctx, err, sizeof err)) {
        return malformed("cancel", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("cancel", err);
    }
    free(state.p);
    return ok_null();
}

static rg_buffer pair_call(void *instance, const uint8_t *request, size_t len) {
    if (instance == NULL) {
        return error_answer("bad_input", "call: null instance pointer");
    }
    const pair *p = instance;
    span req;
    size_t err_at = 0;
    if (!json_parse_doc(request, len, &req, &err_at)) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "malformed request: not a JSON object with an `op` field (invalid JSON at "
                 "byte %zu)", err_at);
        return error_answer("bad_input", msg);
    }
    span op;
    if (jtype_of(req) != J_OBJECT) {
        return error_answer("bad_input", "malformed request: not a JSON object with an `op` field");
    }
    /* No string op: bad_input (never a crash: `op` may be missing, a number, an object...). */
    switch (json_obj_get(req, "op", &op)) {
    case GET_MISSING:
        return error_answer("bad_input", "malformed request: not a JSON object with an `op` field");
    case GET_DUPLICATE:
        return error_answer("bad_input", "malformed request: the `op` field is given twice");
    case GET_FOUND:
        break;
    }
    if (jtype_of(op) != J_STRING) {
        return error_answer("bad_input", "malformed request: the `op` field must be a string");
    }
    if (json_str_eq(op, "info")) {
        return op_info();
    }
    if (json_str_eq(op, "health")) {
        return op_health();
    }
    if (json_str_eq(op, "enroll_start")) {
        return op_enroll_start(req);
    }
    if (json_str_eq(op, "enroll_continue")) {
        return op_enroll_continue(req);
    }
    if (json_str_eq(op, "challenge_start")) {
        return op_challenge_start(p, req);
    }
    if (json_str_eq(op, "challenge_continue")) {
        return op_challenge_continue(p, req);
    }
    if (json_str_eq(op, "challenge_poll")) {
        return op_challenge_poll(p, req);
    }
    if (json_str_eq(op, "cancel")) {
        return op_cancel(req);
    }
    /* An op from a newer host: unsupported, never bad_input (compatibility rule). */
    dstr name;
    if (!json_str_dup(op, &name)) {
        return error_answer("unsupported", "operation is not supported by pair-c");
    }
    rg_buffer out = error_answer_named("unsupported", "operation `", name.p, name.len,
                                       "` is not supported by pair-c");
    free(name.p);
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry point                                                                                */
/* ------------------------------------------------------------------------------------------ */

static const rg_provider_v1 TABLE = {
    ROLEGATE_ABI_VERSION,
    (uint32_t)sizeof(rg_provider_v1),
    pair_create,
    pair_call,
    pair_destroy,
    pair_free_buffer,
};

ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void) { return &TABLE; }
