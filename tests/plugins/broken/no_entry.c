/*
 * A valid shared library that is not a rolegate plugin: it exports an unrelated function and
 * no `rolegate_provider_v1`. The loader must refuse it ("does not export `rolegate_provider_v1`").
 */
int rolegate_unrelated_function(int x);

int rolegate_unrelated_function(int x) { return x + 1; }
