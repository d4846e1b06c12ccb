/*
 * rolegate_provider.h -- the rolegate MFA provider plugin ABI, version 1.
 *
 * This header is the whole contract for providers written in C, C++, Go (cgo), .NET NativeAOT
 * or any other language that can export a C function from a shared library. It describes
 * exactly the layout of the Rust SDK's `rolegate_sdk::abi::ProviderTableV1` (sdk/src/abi.rs);
 * the JSON messages themselves are specified in docs/abi.md.
 *
 * ---------------------------------------------------------------------------------------------
 * OVERVIEW
 * ---------------------------------------------------------------------------------------------
 *
 * A provider is a shared library that exports ONE function, `rolegate_provider_v1`, taking no
 * arguments and returning a pointer to a table of four functions (`rg_provider_v1`). The table
 * must be static: the host reads it once after loading and keeps using it for the life of the
 * process (plugins are never unloaded). Every function exchanges UTF-8 JSON byte buffers:
 *
 *   create(settings_json)      -> {"ok":null} and an opaque instance pointer, or an error
 *   call(instance, request)    -> {"ok":<value>} or {"error":{...}}
 *   destroy(instance)          -> releases what create made
 *   free_buffer(buffer)        -> releases a buffer that create or call returned
 *
 * Buffers are NOT NUL-terminated on input; always use the length. (A plugin may add a NUL
 * after the returned bytes for its own convenience; the host ignores it.)
 *
 * ---------------------------------------------------------------------------------------------
 * MEMORY OWNERSHIP
 * ---------------------------------------------------------------------------------------------
 *
 * - Input buffers (`settings`, `request`) belong to the host. They are valid for reading only,
 *   and only until the function returns. Do not keep pointers into them; copy what you need.
 *   A NULL pointer with length 0 is an empty input (it is not valid JSON: answer bad_input).
 * - Returned buffers (`rg_buffer` from create and call) are allocated by the plugin, with the
 *   plugin's own allocator. The host copies the bytes and then hands the very same
 *   `rg_buffer` (ptr and len unchanged) to the plugin's `free_buffer`, exactly once. The host
 *   never calls free() or any other allocator on plugin memory, so the plugin may use malloc,
 *   new[], a Go C.malloc, NativeMemory.Alloc, ... as long as free_buffer matches it.
 * - A returned buffer with ptr == NULL is treated as an empty answer, which the host reports as
 *   an invalid (non-JSON) answer; return it only when even allocating the answer failed. The
 *   host does not pass such a buffer to free_buffer, but free_buffer should accept it anyway.
 * - The instance pointer written by create is opaque to the host. The host passes it to call
 *   and, once, to destroy. If create answers with an error it must not leave an instance
 *   behind: either write nothing (the host initialises `*instance` to NULL) or release it
 *   first. (A host that finds a non-NULL instance after an error destroys it, but do not rely
 *   on it.)
 *
 * ---------------------------------------------------------------------------------------------
 * THREADS
 * ---------------------------------------------------------------------------------------------
 *
 * - call() may be invoked CONCURRENTLY from many threads on the SAME instance, and on
 *   different instances of the same table. Treat the instance as read-only after create, or
 *   protect any mutable part with your own locks. Do not use mutable globals or
 *   non-reentrant libc functions (strtok, strerror, localtime, rand, ...).
 * - create and destroy are never concurrent with call on the same instance: the host creates
 *   an instance before any call and destroys it after the last call has returned.
 * - free_buffer may run on any thread, not necessarily the one that allocated the buffer.
 * - The entry function may be called more than once; it must return the same table.
 *
 * ---------------------------------------------------------------------------------------------
 * MESSAGES (full schema in docs/abi.md)
 * ---------------------------------------------------------------------------------------------
 *
 * create() receives the provider's settings, the `[provider.settings]` table of the host's
 * config, as a JSON object (`{}` when there are none). It answers `{"ok":null}`, or an error
 * of kind "config" whose message names the offending key (`unknown setting `digitz``).
 *
 * call() receives one request, a JSON object whose "op" field selects the operation:
 *
 *   {"op":"info"}                                     -> ProviderInfo
 *   {"op":"health"}                                   -> {"status":"ok"|"degraded"|"down",
 *                                                         "message":"..."}
 *   {"op":"enroll_start","ctx":EnrollContext}         -> Step
 *   {"op":"enroll_continue","ctx":EnrollContext,"state":"<base64>","input":Input} -> Step
 *   {"op":"challenge_start","ctx":ChallengeContext}   -> Step
 *   {"op":"challenge_continue","ctx":ChallengeContext,"state":"<base64>","input":Input}
 *                                                     -> Step
 *   {"op":"challenge_poll","ctx":ChallengeContext,"state":"<base64>"}   -> Step
 *   {"op":"cancel","ctx":ChallengeContext,"state":"<base64>"}           -> null
 *
 * A Step is {"step":"ask","prompt":{...},"state":"<base64>","expires_in":N},
 * {"step":"wait","state":"<base64>","poll_after_ms":N,"status":"..."}, or
 * {"step":"done","verdict":{"outcome":"approved","credential":null|{...}}} /
 * {"step":"done","verdict":{"outcome":"denied","reason":"wrong_answer","message":"..."}}.
 * An approval may add "detail":"..." (what was verified, for the admin's event 103); a
 * denial may add "credential_id":"..." (the credential the answer used; with the reason
 * "cloned" the host marks it for the admin). Both optional, never a secret.
 * An "ask" or "wait" may add "reference":"..." (optional): what the provider sent or started
 * out of band (a message SID, a call id), which the host records in the challenge's event;
 * never a secret, at most 128 printable characters kept.
 *
 * Every answer of create and call is one JSON object, the response envelope:
 *
 *   {"ok": <value>}
 *   {"error": {"kind": "<kind>", "message": "<text for an admin, never a secret>"}}
 *
 * Error kinds and what the host does with them:
 *   "config"       the settings are wrong; the host refuses to load the provider.
 *   "unavailable"  a service or device is unreachable now; the host may retry later.
 *   "bad_input"    the request, state or user input is malformed; retrying will not help.
 *   "unsupported"  the provider does not implement this operation.
 *   "internal"     a bug or unexpected condition inside the provider.
 *   "panicked"     reserved for SDKs that catch a crash/exception at the boundary.
 *
 * ---------------------------------------------------------------------------------------------
 * COMPATIBILITY RULES (within ABI v1)
 * ---------------------------------------------------------------------------------------------
 *
 * - Ignore JSON fields you do not know, at every level: a newer host adds optional fields.
 * - Fields are only ever added, never removed, renamed or retyped. New fields are optional.
 * - An op you do not know (a newer host's operation) MUST be answered with
 *   {"error":{"kind":"unsupported","message":"..."}}, never with bad_input or a crash.
 * - A request that is not a JSON object with a string "op" is answered with bad_input.
 * - New function pointers are only ever APPENDED to the table, below free_buffer; nothing is
 *   removed or reordered. Set table_size = sizeof(rg_provider_v1) as you built it: the host
 *   reads a field only when table_size says the table holds it, and refuses a table shorter
 *   than the four v1 functions.
 * - A host refuses a table whose abi_version is not ROLEGATE_ABI_VERSION. An incompatible
 *   ABI would get a new entry symbol (`rolegate_provider_v2`) and a new table type.
 *
 * ---------------------------------------------------------------------------------------------
 * SAFETY RULES FOR PROVIDERS IN UNMANAGED LANGUAGES
 * ---------------------------------------------------------------------------------------------
 *
 * - Never let a failure escape a table function. The host may load the library into its own
 *   process (isolation = "in-process"); a segfault, abort(), exit(), an uncaught C++
 *   exception, a Go panic or an unhandled .NET exception there takes the whole host down.
 *   Catch everything at the boundary (C++: catch (...); Go: recover(); .NET: catch-all) and
 *   answer an "internal" error instead. Never call exit() or install signal handlers.
 * - Validate every input. The host's conformance check (`rolegate provider check`) feeds
 *   random bytes, truncated JSON, requests without a string "op", every field of every
 *   request with the wrong type, huge strings and arrays, deep nesting and bytes that are not
 *   UTF-8: every length must be checked, no read past `len`, no assumption of NUL
 *   termination, no fixed-size buffer overflow, no unbounded recursion.
 * - Do not write to stdout: in process isolation the host redirects it to stderr, but in
 *   in-process mode it is the host's stdout. Log to stderr sparingly, never secrets.
 * - Keep no per-challenge memory. A challenge's state is opaque bytes that you return in a
 *   Step (base64 in JSON); the host persists it and hands it back with the next call for that
 *   challenge, which may reach another instance, another process or another machine after a
 *   restart. Validate returned state like any other input.
 * - Use `ctx.now` (Unix seconds, the host's clock) as the clock for expiry decisions, not the
 *   local time: the host's tests and replicas rely on it.
 * - Every function pointer in the table must be non-NULL.
 *
 * ---------------------------------------------------------------------------------------------
 * THE CONFORMANCE CHECK (docs/abi.md section 8)
 * ---------------------------------------------------------------------------------------------
 *
 *   rolegate provider check ./libmine.so [--isolation process] [--config mine.toml]
 *                                        [--allow-skips] [--json]
 *
 * Every MUST above and in docs/abi.md is a check that can fail, among them: a request without
 * a string "op" is bad_input; an unknown "op" is unsupported (bad_input fails); every field of
 * the wrong type is bad_input; garbage, huge and deeply nested input and bytes that are not
 * UTF-8 get an answer, in time, never a crash; create with a NULL `instance` is bad_input;
 * destroy(NULL) and free_buffer({NULL,0}) are harmless; a request is read by its length;
 * a challenge's state is refused for another request_id and survives a new instance; nothing
 * is written to stdout. In-process, the check loads the library into a child process of its
 * own: a crash fails the check of the call that crashed it, names the call and the signal,
 * and the other checks still run.
 *
 * A provider that needs enrolment is enrolled by a scripted user before its challenges are
 * checked: a "display" prompt with an otpauth://totp/ URI is answered with the app's code;
 * other prompts take the codes listed as `enrol_codes = ["..."]` in a [rolegate_check] table
 * of the --config file; a "display" prompt with nothing else is acknowledged. An enrolment's
 * steps are "ask" and "done" only (there is no enroll poll), and it ends approved with the new
 * credential. A check that cannot run is a skip, listed with its reason; skips fail the check
 * unless --allow-skips. See examples/c-provider/pair_c.c for a provider that passes all of it.
 */

#ifndef ROLEGATE_PROVIDER_H
#define ROLEGATE_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes; the only value `abi_version` may hold in v1. */
#define ROLEGATE_ABI_VERSION 1

/* The name of the entry symbol for ABI v1 (the major version is part of the name). */
#define ROLEGATE_ENTRY_SYMBOL "rolegate_provider_v1"

/*
 * Marks the entry function as exported from the shared library, also when the library is built
 * with -fvisibility=hidden (recommended: export nothing else). Define ROLEGATE_EXPORT yourself
 * before including this header to override it.
 */
#ifndef ROLEGATE_EXPORT
#  if defined(_WIN32) || defined(__CYGWIN__)
#    define ROLEGATE_EXPORT __declspec(dllexport)
#  elif defined(__GNUC__) || defined(__clang__)
#    define ROLEGATE_EXPORT __attribute__((visibility("default")))
#  else
#    define ROLEGATE_EXPORT
#  endif
#endif

/*
 * A byte buffer crossing the boundary. Same layout as Rust's `rolegate_sdk::abi::Buffer`.
 * `ptr` may be NULL when `len` is 0. Whoever allocated a buffer frees it (see MEMORY OWNERSHIP).
 */
typedef struct rg_buffer {
    uint8_t *ptr;
    size_t len;
} rg_buffer;

/*
 * create(settings, len, &instance): builds an instance from the settings JSON object.
 * On success writes the new instance to *instance and answers {"ok":null}; on failure leaves
 * *instance alone (or NULL) and answers an error, of kind "config" for wrong settings.
 * `instance` may be NULL (a broken caller): answer bad_input then.
 */
typedef rg_buffer (*rg_create_fn)(const uint8_t *settings, size_t len, void **instance);

/*
 * call(instance, request, len): answers one JSON request with one JSON response envelope.
 * Must be safe to call concurrently on the same instance.
 */
typedef rg_buffer (*rg_call_fn)(void *instance, const uint8_t *request, size_t len);

/* destroy(instance): releases an instance made by create. Must accept NULL (and ignore it). */
typedef void (*rg_destroy_fn)(void *instance);

/* free_buffer(buf): releases a buffer returned by create or call. Must accept ptr == NULL. */
typedef void (*rg_free_buffer_fn)(rg_buffer buf);

/*
 * The ABI v1 function table. Exactly the layout of Rust's `ProviderTableV1`:
 * two uint32_t, then four function pointers (40 bytes on 64-bit targets, 24 on 32-bit).
 */
typedef struct rg_provider_v1 {
    /* Always ROLEGATE_ABI_VERSION (1). */
    uint32_t abi_version;
    /* sizeof(rg_provider_v1) as the plugin was built. */
    uint32_t table_size;
    rg_buffer (*create)(const uint8_t *settings, size_t len, void **instance);
    rg_buffer (*call)(void *instance, const uint8_t *request, size_t len);
    void (*destroy)(void *instance);
    void (*free_buffer)(rg_buffer buf);
    /* Last field of ABI v1. Future fields are appended here only; check table_size. */
} rg_provider_v1;

/* The signature of the entry symbol, for code that resolves it with dlsym/GetProcAddress. */
typedef const rg_provider_v1 *(*rg_entry_v1_fn)(void);

/*
 * The entry point every provider library exports. Returns a pointer to a table with static
 * storage duration (never NULL, never freed). Typical implementation:
 *
 *   static const rg_provider_v1 TABLE = {
 *       ROLEGATE_ABI_VERSION, (uint32_t)sizeof(rg_provider_v1),
 *       my_create, my_call, my_destroy, my_free_buffer,
 *   };
 *   ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void) { return &TABLE; }
 */
ROLEGATE_EXPORT const rg_provider_v1 *rolegate_provider_v1(void);

/* Compile-time checks that this compiler lays the structures out as the host expects. */
#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(rg_buffer) == 2 * sizeof(void *), "rg_buffer layout");
static_assert(offsetof(rg_provider_v1, create) == 8, "rg_provider_v1 layout");
static_assert(sizeof(rg_provider_v1) == 8 + 4 * sizeof(void *), "rg_provider_v1 layout");
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(rg_buffer) == 2 * sizeof(void *), "rg_buffer layout");
_Static_assert(offsetof(rg_provider_v1, create) == 8, "rg_provider_v1 layout");
_Static_assert(sizeof(rg_provider_v1) == 8 + 4 * sizeof(void *), "rg_provider_v1 layout");
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ROLEGATE_PROVIDER_H */
