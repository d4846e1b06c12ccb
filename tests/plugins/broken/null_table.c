/*
 * Exports the ABI v1 entry symbol, but it returns NULL instead of a table. The loader must
 * refuse it ("returned a null table") without dereferencing the pointer.
 */
#include <stddef.h>

const void *rolegate_provider_v1(void);

const void *rolegate_provider_v1(void) { return NULL; }
