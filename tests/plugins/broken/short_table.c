/*
 * Declares ABI v1 but a table_size of 8 bytes: only the two header fields, none of the four
 * functions. The object really is 8 bytes long, so a loader that reads the function pointers
 * before checking table_size reads past it. The loader must refuse it ("too short for ABI v1").
 */
#include <stdint.h>

struct header {
    uint32_t abi_version;
    uint32_t table_size;
};

static const struct header TABLE = {1, (uint32_t)sizeof(struct header)};

const struct header *rolegate_provider_v1(void);

const struct header *rolegate_provider_v1(void) { return &TABLE; }
