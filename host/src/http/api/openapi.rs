//! The OpenAPI document of the API.

use super::*;

pub(super) async fn openapi() -> Json<Json_> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi_document() -> Json_ {
    let op = |summary: &str, admin: bool| {
        json!({"summary": summary, "security": [{"bearer": []}],
               "x-rolegate-admin": admin,
               "responses": {"200": {"description": "OK"}, "401": {"description": "no or bad token"},
                             "403": {"description": "refused by policy, or not an admin"},
                             "404": {"description": "not found"}, "409": {"description": "conflict"},
                             "408": {"description": "the body did not arrive within [server] client_timeout_s"},
                             "413": {"description": "the body is over 1 MiB"},
                             "503": {"description": "a provider is unavailable, or too many large bodies are being received (Retry-After)"},
                             "422": {"description": "invalid input"}}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "rolegate", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Privileged role activation gated by pluggable MFA. Errors are {\"error\": {\"code\", \"message\"}}."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/me": {"get": op("The caller: {account, admin, expires_at}", false)},
            "/v1/requests": {"post": op("Request a role (New-PAMRequest): {role, justification, ttl_s?, provider?, starts_at?}", false),
                              "get": op("The caller's requests", false)},
            "/v1/requests/{id}": {"get": op("A request (Get-PAMRequest); with `shadow` while its role's shadow factor's prompt is open", false)},
            "/v1/requests/{id}/answer": {"post": op("Answer the MFA prompt: {code} or {input}; once MFA is done, the role's shadow factor's prompt (the view's `shadow`: {provider, outcome: asked|completed|not_completed|not_asked, prompt?, reason?}; it never decides the request)", false)},
            "/v1/requests/{id}/poll": {"post": op("Poll an out-of-band MFA (a phone call), or the shadow factor's", false)},
            "/v1/requests/{id}/close": {"post": op("Close a request (Close-PAMRequest)", false)},
            "/v1/enrolments": {"post": op("Begin enrolling the caller in a provider: {provider}", false)},
            "/v1/enrolments/continue": {"post": op("Continue an enrolment: {provider, state, code?|input?}", false)},
            "/v1/approvals": {"get": op("Requests to approve (Get-PAMRequestToApprove)", false)},
            "/v1/approvals/{id}/approve": {"post": op("Approve (Set-PAMRequestToApprove -Approve)", false)},
            "/v1/approvals/{id}/reject": {"post": op("Reject: {reason?} (Set-PAMRequestToApprove -Reject)", false)},
            "/v1/users": {"get": op("Users (Get-PAMUser)", true), "post": op("New user (New-PAMUser)", true)},
            "/v1/users/{account}": {"get": op("A user", false), "patch": op("Change a user (Set-PAMUser); a phone change raises event 825", true),
                                    "delete": op("Remove a user (Remove-PAMUser)", true)},
            "/v1/users/{account}/unlock": {"post": op("Lift a lockout: {provider} (event 301)", true)},
            "/v1/users/{account}/credentials": {"get": op("A user's credentials (id, provider, label, created_at, and flag and flagged_at when set aside as a suspected copy; never their data): admins, or the user", false)},
            "/v1/users/{account}/credentials/{provider}/{id}": {"delete": op("Remove a credential, e.g. a lost phone (event 311)", true)},
            "/v1/roles": {"get": op("Roles (Get-PAMRole)", false), "post": op("New role (New-PAMRole)", true)},
            "/v1/roles/{name}": {"get": op("A role (its policy, when_factor_down: fail_closed|fallback, shadow: providers tried after the real factor without deciding); for an admin also `warnings`: what stands in its candidates' way today", false), "put": op("Replace a role's policy (Set-PAMRole)", true),
                                 "delete": op("Remove a role (Remove-PAMRole)", true)},
            "/v1/readiness": {"get": op("Every role's readiness: for each provider and shadow, how many enabled candidates can use it today (enrolled, phone on record, not locked out) and completed it in shadow; each candidate's standing; a summary saying which provider the role could drop", true)},
            "/v1/roles/{name}/readiness": {"get": op("One role's readiness (as /v1/readiness)", true)},
            "/v1/roles/{name}/history": {"get": op("A role's provider changes, newest first: {role, changes: [{at, actor, providers_before, shadow_before, providers_after, shadow_after, rollback}]}", true)},
            "/v1/roles/{name}/rollback": {"post": op("Put the role's providers and shadows back as they were before their latest change (event 513); 409 when there is none", true)},
            "/v1/events": {"get": op("Events, newest first: ?id&account&role&since_ms&until_ms&limit", true)},
            "/v1/events/verify": {"get": op("Verify the event hash chain", true)},
            "/v1/providers": {"get": op("Providers with their health: health.status is the worse of the provider's own answer and what the host has seen of its calls (ok, degraded, down); an admin also gets health.provider, health.seen {status, reason, since, failures_in_window, failures_in_a_row}, sha256 and isolation", false)},
            "/v1/providers/{id}/test": {"post": op("Send one test message through a provider that texts or calls: {to}; answers {provider, to, sent, reference} (a message SID), or the provider's error (400/502/503); event 410 either way", true)},
            "/v1/tokens": {"post": op("Issue a token: {account, admin?, label?}; shown once", true),
                           "get": op("List tokens: id, account, admin, label, created_at, expires_at (never a secret)", true)},
            "/v1/tokens/{id}": {"delete": op("Revoke a token by its id; it stops working at once", true)},
            "/metrics": {"get": op("Metrics in Prometheus's text format: admins, or the token of [server] metrics_token_file", true)},
        }
    })
}
