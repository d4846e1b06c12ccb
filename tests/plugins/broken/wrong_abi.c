/*
 * A complete, working v1-sized table that declares abi_version = 7. Everything else is valid
 * (size, functions), so only the version check can refuse it: the loader must say the plugin
 * speaks ABI v7 and never call any of its functions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static buffer create(const uint8_t *s, size_t n, void **out) {
    (void)s;
    (void)n;
    if (out != NULL) {
        *out = &instance;
    }
    return answer("{\"ok\":null}");
}

static buffer call(void *inst, const uint8_t *r, size_t n) {
    (void)inst;
    (void)r;
    (void)n;
    return answer("{\"error\":{\"kind\":\"unsupported\",\"message\":\"never called\"}}");
}

static void destroy(void *inst) { (void)inst; }

static void free_buffer(buffer b) { free(b.ptr); }

static const table TABLE = {7, (uint32_t)sizeof(table), create, call, destroy, free_buffer};

const table *rolegate_provider_v1(void);

const table *rolegate_provider_v1(void) { return &TABLE; }
