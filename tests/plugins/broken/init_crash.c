/*
 * A complete, valid ABI v1 plugin whose initialiser (run by the loader, before any of its
 * functions) writes through a null pointer: loading it crashes the process that loads it.
 * `rolegate provider check` must report it as a failure to load, in both isolations.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rolegate_provider.h"

/* Volatile, so the compiler cannot see the null store and replace it by a trap or nothing. */
static int *volatile nowhere = NULL;

__attribute__((constructor)) static void crash_on_load(void) { *nowhere = 1; }

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
    (void)s;
    (void)n;
    if (out == NULL) {
        return answer("{\"error\":{\"kind\":\"bad_input\",\"message\":\"null instance\"}}");
    }
    *out = &instance;
    return answer("{\"ok\":null}");
}

static rg_buffer call(void *inst, const uint8_t *r, size_t n) {
    (void)inst;
    (void)r;
    (void)n;
    return answer("{\"error\":{\"kind\":\"unsupported\",\"message\":\"never loaded\"}}");
}

static void destroy(void *inst) { (void)inst; }

static void free_buffer(rg_buffer b) { free(b.ptr); }

static const rg_provider_v1 TABLE = {
    ROLEGATE_ABI_VERSION, (uint32_t)sizeof(rg_provider_v1), create, call, destroy, free_buffer,
};

ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void) { return &TABLE; }
