/*
 * hello_c: the rolegate "hello" example provider, in plain C11 with nothing but libc.
 *
 * The challenge shows a random number; the user proves they are at the keyboard by typing its
 * digits in reverse order. It is a demonstration of the ABI contract (see
 * sdk/include/rolegate_provider.h and docs/abi.md), not a second factor: anyone who can read
 * the prompt can answer it.
 *
 * It behaves like the Rust example (examples/hello-provider):
 *   - settings: a JSON object with only `digits` (4..9, default 6) and `expires_in`
 *     (10..3600, default 120); anything else is a "config" error naming the key;
 *   - the challenge state is opaque to the host: base64 of "v1:<challenge>:<expires_at>:<rid>";
 *     the provider keeps no memory between calls and uses ctx.now as its clock;
 *   - every malformed request, state or input is answered with "bad_input", an unknown op with
 *     "unsupported"; nothing a caller sends can crash it.
 *
 * The JSON reader and writer, base64, read_urandom and the request checks live in rg_util.h,
 * next to this file, which pair_c.c includes as well; the quoted include needs no extra -I.
 *
 * Build:  cc -std=c11 -O2 -Wall -Wextra -shared -fPIC -I ../../sdk/include \
 *            -o libhello_c.so hello_c.c
 *
 * Design notes for reviewers:
 *   - All input is handled as (pointer, length); nothing assumes NUL termination.
 *   - A request is fully validated as JSON (RFC 8259, strict UTF-8, no lone surrogates, depth
 *     limit) before any field is looked up; the lookup helpers are still bounds-checked on
 *     their own so a bug in one layer does not turn into an out-of-bounds read.
 *   - There is no mutable global state: the instance is immutable after create, so call() is
 *     safe from any number of threads at once.
 *   - Every allocation size is checked for overflow; an allocation failure yields an error
 *     answer or, if even that cannot be allocated, an empty buffer (never a crash).
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
#include "rg_util.h" /* the helpers shared with the other C example */

/* ------------------------------------------------------------------------------------------ */
/* Constants                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define HELLO_ID "hello-c"
#define HELLO_VERSION "0.1.0"

#define DIGITS_MIN 4u
#define DIGITS_MAX 9u
#define DIGITS_DEFAULT 6u
#define EXPIRES_MIN 10u
#define EXPIRES_MAX 3600u
#define EXPIRES_DEFAULT 120u

/* The instance: immutable after create, hence shareable between threads without locks. */
typedef struct hello {
    unsigned digits;
    uint64_t expires_in;
} hello;

/* ------------------------------------------------------------------------------------------ */
/* Randomness                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * Writes `digits` uniformly random decimal digits to out. A byte maps to a digit by b % 10
 * only when b < 250 (the largest multiple of 10 not above 256); larger bytes are rejected,
 * or the digits 0-5 would come up slightly more often than 6-9.
 */
static bool random_digits(char *out, unsigned digits) {
    uint8_t pool[32];
    size_t used = sizeof pool, filled = 0;
    unsigned refills = 0;
    while (filled < digits) {
        if (used == sizeof pool) {
            /* Each byte is rejected with probability 6/256; 16 refills failing means broken. */
            if (++refills > 16 || !read_urandom(pool, sizeof pool)) {
                return false;
            }
            used = 0;
        }
        uint8_t b = pool[used++];
        if (b < 250) {
            out[filled++] = (char)('0' + b % 10);
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Settings and create                                                                        */
/* ------------------------------------------------------------------------------------------ */

static rg_buffer hello_create(const uint8_t *settings, size_t len, void **instance) {
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

    uint64_t digits = DIGITS_DEFAULT, expires_in = EXPIRES_DEFAULT;
    bool seen_digits = false, seen_expires = false;
    size_t pos = 0;
    span k, v;
    while (json_obj_next(doc, &pos, &k, &v)) {
        if (json_str_eq(k, "digits")) {
            if (seen_digits) {
                return error_answer("config", "setting `digits` is given twice");
            }
            seen_digits = true;
            if (jtype_of(v) != J_NUMBER || !json_u64(v, &digits) || digits < DIGITS_MIN ||
                digits > DIGITS_MAX) {
                return bad_setting("digits", v, DIGITS_MIN, DIGITS_MAX, "");
            }
        } else if (json_str_eq(k, "expires_in")) {
            if (seen_expires) {
                return error_answer("config", "setting `expires_in` is given twice");
            }
            seen_expires = true;
            if (jtype_of(v) != J_NUMBER || !json_u64(v, &expires_in) ||
                expires_in < EXPIRES_MIN || expires_in > EXPIRES_MAX) {
                return bad_setting("expires_in", v, EXPIRES_MIN, EXPIRES_MAX, " seconds");
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
    hello *h = malloc(sizeof *h);
    if (h == NULL) {
        return error_answer("internal", "out of memory");
    }
    h->digits = (unsigned)digits;
    h->expires_in = expires_in;
    rg_buffer out = ok_null();
    if (out.ptr == NULL) {
        /* The success answer could not be allocated: do not leave an instance behind. */
        free(h);
        return out;
    }
    *instance = h;
    return out;
}

static void hello_destroy(void *instance) { free(instance); }

static void hello_free_buffer(rg_buffer buf) { free(buf.ptr); }

/* ------------------------------------------------------------------------------------------ */
/* Request validation                                                                         */
/* ------------------------------------------------------------------------------------------ */

/*
 * Checks a ChallengeContext the way the Rust SDK's decoder would (required fields present and
 * of the right type, optional ones of the right type when present), and extracts what hello
 * uses. Writes a message to err on failure. Unknown fields are ignored (compatibility rule).
 */
typedef struct challenge_ctx {
    span request_id; /* a string span, quotes included */
    uint64_t now;
} challenge_ctx;

static bool check_challenge_ctx(span req, challenge_ctx *out, char *err, size_t errcap) {
    span ctx = {NULL, 0}, user = {NULL, 0}, v = {NULL, 0};
    bool present;
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
        !check_field(ctx, "ctx.", "role", J_STRING, REQUIRED, NULL, &present, err, errcap) ||
        !check_field(ctx, "ctx.", "request_id", J_STRING, REQUIRED, &out->request_id, &present,
                     err, errcap) ||
        !check_field(ctx, "ctx.", "origin", J_STRING, NULLABLE, NULL, &present, err, errcap) ||
        !check_field(ctx, "ctx.", "now", J_NUMBER, REQUIRED, &v, &present, err, errcap)) {
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
    return !present || check_credentials(creds, err, errcap);
}

/* ------------------------------------------------------------------------------------------ */
/* Operations                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static rg_buffer op_info(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"id\":\"" HELLO_ID "\","
                "\"name\":\"Hello in C (example: type the code backwards)\","
                "\"version\":\"" HELLO_VERSION "\","
                "\"vendor\":\"rolegate examples\","
                "\"factor\":\"code\","
                "\"needs_enrolment\":false,"
                "\"needs_phone\":false,"
                "\"responder\":\"code\"}}");
    return sb_finish(&b);
}

static rg_buffer op_health(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"status\":\"ok\",\"message\":\"\"}}");
    return sb_finish(&b);
}

static rg_buffer op_challenge_start(const hello *h, span req) {
    char err[300];
    challenge_ctx ctx;
    if (!check_challenge_ctx(req, &ctx, err, sizeof err)) {
        return malformed("challenge_start", err);
    }
    dstr rid;
    if (!json_str_dup(ctx.request_id, &rid)) {
        return error_answer("internal", "out of memory");
    }

    char challenge[DIGITS_MAX + 1];
    if (h->digits < DIGITS_MIN || h->digits > DIGITS_MAX) {
        free(rid.p);
        return error_answer("internal", "the instance is corrupt");
    }
    if (!random_digits(challenge, h->digits)) {
        free(rid.p);
        return error_answer("unavailable", "no randomness: cannot read /dev/urandom");
    }
    challenge[h->digits] = '\0';

    /* Saturate rather than wrap: a host clock near UINT64_MAX must not make it never expire. */
    uint64_t expires_at =
        (ctx.now > UINT64_MAX - h->expires_in) ? UINT64_MAX : ctx.now + h->expires_in;

    /* The state: "v1:<challenge>:<expires_at>:<request_id>" (the id last: it may hold ':'). */
    sb state = {0};
    sb_puts(&state, "v1:");
    sb_puts(&state, challenge);
    sb_puts(&state, ":");
    sb_u64(&state, expires_at);
    sb_puts(&state, ":");
    sb_put(&state, rid.p, rid.len);
    free(rid.p);

    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"ask\",\"prompt\":{\"kind\":\"code\",\"message\":\"Type ");
    sb_puts(&b, challenge);
    sb_puts(&b, " backwards\",\"length\":");
    sb_u64(&b, h->digits);
    sb_puts(&b, "},\"state\":\"");
    if (state.oom) {
        b.oom = true;
    } else {
        sb_base64(&b, state.p, state.len);
    }
    sb_puts(&b, "\",\"expires_in\":");
    sb_u64(&b, h->expires_in);
    sb_puts(&b, "}}");
    free(state.p);
    memset(challenge, 0, sizeof challenge);
    if (b.oom) {
        free(b.p);
        return error_answer("internal", "out of memory");
    }
    return sb_finish(&b);
}

/* The parsed state of a challenge. */
typedef struct hello_state {
    const uint8_t *challenge;
    size_t digits;
    uint64_t expires_at;
    const uint8_t *request_id;
    size_t request_id_len;
} hello_state;

/* Parses "v1:<4-9 digits>:<u64>:<request id>" strictly; false for anything else. */
static bool parse_state(const uint8_t *s, size_t n, hello_state *out) {
    if (n < 3 || memcmp(s, "v1:", 3) != 0) {
        return false;
    }
    size_t i = 3, c0 = 3;
    while (i < n && is_digit(s[i])) {
        i++;
    }
    size_t digits = i - c0;
    if (digits < DIGITS_MIN || digits > DIGITS_MAX || i >= n || s[i] != ':') {
        return false;
    }
    i++;
    size_t e0 = i;
    while (i < n && is_digit(s[i])) {
        i++;
    }
    span e = {s + e0, i - e0};
    if (!json_u64(e, &out->expires_at) || i >= n || s[i] != ':') {
        return false;
    }
    i++;
    out->challenge = s + c0;
    out->digits = digits;
    out->request_id = s + i;
    out->request_id_len = n - i;
    return true;
}

static rg_buffer done_denied(const char *reason, const char *message) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"denied\",\"reason\":");
    sb_json_cstr(&b, reason);
    sb_puts(&b, ",\"message\":");
    sb_json_cstr(&b, message);
    sb_puts(&b, "}}}");
    return sb_finish(&b);
}

static rg_buffer done_approved(void) {
    sb b = {0};
    sb_puts(&b, "{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"approved\","
                "\"credential\":null}}}");
    return sb_finish(&b);
}

static bool is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static rg_buffer op_challenge_continue(span req) {
    char err[300];
    challenge_ctx ctx;
    if (!check_challenge_ctx(req, &ctx, err, sizeof err)) {
        return malformed("challenge_continue", err);
    }
    span input = {NULL, 0}, kind = {NULL, 0}, code_v = {NULL, 0};
    bool present;
    if (!check_field(req, "", "input", J_OBJECT, REQUIRED, &input, &present, err, sizeof err) ||
        !check_field(input, "input.", "kind", J_STRING, REQUIRED, &kind, &present, err,
                     sizeof err)) {
        return malformed("challenge_continue", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("challenge_continue", err);
    }

    /* From here on the order of checks follows the Rust example. */
    rg_buffer out;
    dstr rid = {NULL, 0}, code = {NULL, 0};
    hello_state st;
    if (!parse_state(state.p, state.len, &st)) {
        out = error_answer("bad_input", "the challenge state is not hello-c's");
        goto done;
    }
    if (!json_str_dup(ctx.request_id, &rid)) {
        out = error_answer("internal", "out of memory");
        goto done;
    }
    if (rid.len != st.request_id_len || memcmp(rid.p, st.request_id, rid.len) != 0) {
        out = error_answer("bad_input", "the challenge state belongs to another request");
        goto done;
    }
    if (!json_str_eq(kind, "code")) {
        out = error_answer("bad_input", "hello-c expects a typed code");
        goto done;
    }
    if (!check_field(input, "input.", "code", J_STRING, REQUIRED, &code_v, &present, err,
                     sizeof err)) {
        out = malformed("challenge_continue", err);
        goto done;
    }
    if (!json_str_dup(code_v, &code)) {
        out = error_answer("internal", "out of memory");
        goto done;
    }
    /* Trim surrounding ASCII whitespace (the Rust example trims Unicode whitespace). */
    size_t a = 0, z = code.len;
    while (a < z && is_space(code.p[a])) {
        a++;
    }
    while (z > a && is_space(code.p[z - 1])) {
        z--;
    }
    bool digits_only = (z - a == st.digits);
    for (size_t i = a; digits_only && i < z; i++) {
        digits_only = is_digit(code.p[i]);
    }
    if (!digits_only) {
        char msg[64];
        snprintf(msg, sizeof msg, "the code must be %zu digits", st.digits);
        out = error_answer("bad_input", msg);
        goto done;
    }
    if (ctx.now >= st.expires_at) {
        out = done_denied("expired", "the challenge expired");
        goto done;
    }
    uint8_t expected[DIGITS_MAX];
    for (size_t i = 0; i < st.digits; i++) {
        expected[i] = st.challenge[st.digits - 1 - i];
    }
    bool right = same(code.p + a, expected, st.digits);
    memset(expected, 0, sizeof expected);
    out = right ? done_approved() : done_denied("wrong_answer", "wrong code");
done:
    free(code.p);
    free(rid.p);
    free(state.p);
    return out;
}

static rg_buffer op_cancel(span req) {
    /* Nothing to release: hello keeps no memory of challenges. Cancel is idempotent. */
    char err[300];
    challenge_ctx ctx;
    if (!check_challenge_ctx(req, &ctx, err, sizeof err)) {
        return malformed("cancel", err);
    }
    dstr state;
    if (!get_state(req, &state, err, sizeof err)) {
        return malformed("cancel", err);
    }
    free(state.p);
    return ok_null();
}

static rg_buffer hello_call(void *instance, const uint8_t *request, size_t len) {
    if (instance == NULL) {
        return error_answer("bad_input", "call: null instance pointer");
    }
    const hello *h = instance;
    span req, op;
    rg_buffer refusal;
    if (!read_request(request, len, &req, &op, &refusal)) {
        return refusal;
    }

    if (json_str_eq(op, "info")) {
        return op_info();
    }
    if (json_str_eq(op, "health")) {
        return op_health();
    }
    if (json_str_eq(op, "challenge_start")) {
        return op_challenge_start(h, req);
    }
    if (json_str_eq(op, "challenge_continue")) {
        return op_challenge_continue(req);
    }
    if (json_str_eq(op, "challenge_poll")) {
        return error_answer("bad_input", "this provider never waits, so there is nothing to poll");
    }
    if (json_str_eq(op, "cancel")) {
        return op_cancel(req);
    }
    if (json_str_eq(op, "enroll_start") || json_str_eq(op, "enroll_continue")) {
        return error_answer("unsupported", "this provider needs no enrolment");
    }
    /* An op from a newer host: unsupported, never bad_input (compatibility rule). */
    return unsupported_op(op, "operation is not supported by " HELLO_ID,
                          "` is not supported by " HELLO_ID);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry point                                                                                */
/* ------------------------------------------------------------------------------------------ */

static const rg_provider_v1 TABLE = {
    ROLEGATE_ABI_VERSION,
    (uint32_t)sizeof(rg_provider_v1),
    hello_create,
    hello_call,
    hello_destroy,
    hello_free_buffer,
};

ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void) { return &TABLE; }
