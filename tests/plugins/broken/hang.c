/*
 * A complete, valid ABI v1 plugin (id "hang") whose call() never returns (a loop of sleep(1))
 * when the request contains "challenge_start". Every other request is answered properly
 * (info, health, cancel; anything else is "unsupported"). It pins the call deadline: the host
 * must give up after deadline_ms, and in process isolation kill and restart the worker.
 */
#define _POSIX_C_SOURCE 200809L /* sleep() also under -std=c11 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint8_t *ptr;
    size_t len;
} buffer;

typedef struct {
    uint32_t abi_version;
    uint32_t table_size;
    buffer (*create)(const uint8_t *, size_t, void **);
    buffer (*call)(void *, const uint8_t *, size_t);
    void (*destroy)(void *);
    void (*free_buffer)(buffer);
} table;

static int instance;

static buffer answer(const char *text) {
    buffer b = {NULL, 0};
    size_t n = strlen(text);
    b.ptr = malloc(n);
    if (b.ptr != NULL) {
        memcpy(b.ptr, text, n);
        b.len = n;
    }
    return b;
}

/* Whether the (not NUL-terminated) request holds `needle`. */
static int contains(const uint8_t *p, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; p != NULL && k <= n && i <= n - k; i++) {
        if (memcmp(p + i, needle, k) == 0) {
            return 1;
        }
    }
    return 0;
}

static buffer create(const uint8_t *s, size_t n, void **out) {
    (void)s;
    (void)n;
    if (out == NULL) {
        return answer("{\"error\":{\"kind\":\"bad_input\",\"message\":\"null instance pointer\"}}");
    }
    *out = &instance;
    return answer("{\"ok\":null}");
}

static buffer call(void *inst, const uint8_t *r, size_t n) {
    (void)inst;
    if (contains(r, n, "challenge_start")) {
        for (;;) {
            sleep(1);
        }
    }
    if (contains(r, n, "\"info\"")) {
        return answer("{\"ok\":{\"id\":\"hang\",\"name\":\"Hang (test plugin)\","
                      "\"version\":\"0.0.0\",\"vendor\":\"rolegate tests\",\"factor\":\"code\","
                      "\"needs_enrolment\":false,\"needs_phone\":false,\"responder\":\"code\"}}");
    }
    if (contains(r, n, "\"health\"")) {
        return answer("{\"ok\":{\"status\":\"ok\",\"message\":\"\"}}");
    }
    if (contains(r, n, "\"cancel\"")) {
        return answer("{\"ok\":null}");
    }
    return answer("{\"error\":{\"kind\":\"unsupported\",\"message\":\"hang only hangs\"}}");
}

static void destroy(void *inst) { (void)inst; }

static void free_buffer(buffer b) { free(b.ptr); }

static const table TABLE = {1, (uint32_t)sizeof(table), create, call, destroy, free_buffer};

const table *rolegate_provider_v1(void);

const table *rolegate_provider_v1(void) { return &TABLE; }
