/* A plugin built for a future ABI v2 only: it exports rolegate_provider_v2 and not v1.
 * The host must say which ABI the plugin speaks instead of "not a plugin". */
#include <stddef.h>

struct v2_table { unsigned int abi_version; unsigned int table_size; };
static const struct v2_table table = { 2, sizeof(struct v2_table) };

__attribute__((visibility("default"))) const void *rolegate_provider_v2(void) { return &table; }
