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
 * The JSON reader, the JSON writer, base64 and the request checks are the ones hello_c.c uses:
 * both include them from rg_util.h, next to this file (see examples/c-provider/README.md). Copy
 * this file and rg_util.h to start a provider of your own.
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
#include "rg_util.h" /* the helpers shared with the other C example */

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

/* The instance: immutable after create, hence shareable between threads without locks. */
typedef struct pair {
    uint64_t approve_after;
    uint64_t expires_in;
    uint64_t poll_ms;
} pair;

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
    if (!check_credentials(creds, err, errcap)) {
        return false;
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
    return unsupported_op(op, "operation is not supported by " PAIR_ID,
                          "` is not supported by " PAIR_ID);
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
