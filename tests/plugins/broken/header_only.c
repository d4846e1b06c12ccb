/*
 * A provider written from the header alone, the way issue 28's vendor wrote one: it works for
 * every well-formed request the host sends (info, health, a challenge asking for `1234`,
 * cancel), and breaks three rules of the contract that only garbage reveals:
 *
 *   - it finds the op with strstr and reads past it, so a request without a string `op`
 *     dereferences NULL (a segfault);
 *   - it answers an op it does not know with bad_input, where the header says unsupported;
 *   - it copies the request id into a fixed 64-byte buffer without checking its length, so a
 *     long one smashes the stack (an abort), and it reads the request with strlen, past a
 *     request that is not text.
 *
 * `rolegate provider check` must fail it on each, in both isolations, and survive.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rolegate_provider.h"

static int instance;

static rg_buffer answer(const char *text) {
    rg_buffer b = {NULL, 0};
    size_t n = strlen(text);
    b.ptr = malloc(n);
    if (b.ptr != NULL) {
        memcpy(b.ptr, text, n);
        b.len = n;
    }
    return b;
}

static rg_buffer create(const uint8_t *s, size_t n, void **out) {
    if (n > 2 || (n == 2 && memcmp(s, "{}", 2) != 0)) {
        return answer("{\"error\":{\"kind\":\"config\",\"message\":\"unknown setting: "
                      "rolegate_check_unknown_key or any other\"}}");
    }
    if (out == NULL) {
        return answer("{\"error\":{\"kind\":\"bad_input\",\"message\":\"null instance\"}}");
    }
    *out = &instance;
    return answer("{\"ok\":null}");
}

/* The value of a string field `"key":"value"`, copied into out (FLAW: no length check). */
static void field(const char *req, const char *key, char *out) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *p = strstr(req, pattern);
    if (p == NULL) {
        out[0] = '\0';
        return;
    }
    p += strlen(pattern);
    const char *end = strchr(p, '"');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    memcpy(out, p, n); /* FLAW: out holds 64 bytes */
    out[n] = '\0';
}

static rg_buffer call(void *inst, const uint8_t *r, size_t n) {
    (void)inst;
    char *req = malloc(n + 1);
    if (req == NULL) {
        return answer("{\"error\":{\"kind\":\"internal\",\"message\":\"out of memory\"}}");
    }
    if (n > 0) {
        memcpy(req, r, n);
    }
    req[n] = '\0';
    /* FLAW: no check that `"op":"` is there. */
    const char *op = strstr(req, "\"op\":\"") + 6;
    char name[32];
    size_t k = 0;
    while (op[k] != '"' && op[k] != '\0' && k < sizeof name - 1) {
        name[k] = op[k];
        k++;
    }
    name[k] = '\0';
    rg_buffer out;
    char rid[64];
    if (strcmp(name, "info") == 0) {
        out = answer("{\"ok\":{\"id\":\"header-only\",\"name\":\"Header only (test plugin)\","
                     "\"version\":\"0.0.0\",\"vendor\":\"rolegate tests\",\"factor\":\"code\","
                     "\"needs_enrolment\":false,\"needs_phone\":false,\"responder\":\"code\"}}");
    } else if (strcmp(name, "health") == 0) {
        out = answer("{\"ok\":{\"status\":\"ok\",\"message\":\"\"}}");
    } else if (strcmp(name, "challenge_start") == 0) {
        field(req, "request_id", rid);
        out = answer("{\"ok\":{\"step\":\"ask\",\"prompt\":{\"kind\":\"code\",\"message\":"
                     "\"Type 1234\",\"length\":4},\"state\":\"AAAA\",\"expires_in\":60}}");
    } else if (strcmp(name, "challenge_continue") == 0) {
        char code[64];
        field(req, "code", code);
        out = strcmp(code, "1234") == 0
                  ? answer("{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"approved\"}}}")
                  : answer("{\"ok\":{\"step\":\"done\",\"verdict\":{\"outcome\":\"denied\","
                           "\"reason\":\"wrong_answer\",\"message\":\"wrong code\"}}}");
    } else if (strcmp(name, "cancel") == 0) {
        out = answer("{\"ok\":null}");
    } else if (strncmp(name, "enroll_", 7) == 0) {
        out = answer("{\"error\":{\"kind\":\"unsupported\",\"message\":\"no enrolment\"}}");
    } else {
        /* FLAW: an unknown op must be unsupported. */
        out = answer("{\"error\":{\"kind\":\"bad_input\",\"message\":\"unknown op\"}}");
    }
    free(req);
    return out;
}

static void destroy(void *inst) { (void)inst; }

static void free_buffer(rg_buffer b) { free(b.ptr); }

static const rg_provider_v1 TABLE = {
    ROLEGATE_ABI_VERSION, (uint32_t)sizeof(rg_provider_v1), create, call, destroy, free_buffer,
};

ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void) { return &TABLE; }
