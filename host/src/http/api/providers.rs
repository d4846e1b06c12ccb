//! One provider, for admins: `POST /v1/providers/{id}/test` sends one message through it
//! (`rolegate provider test`), to check its account without a user's request. (The list of
//! providers with their health is `status::list_providers`.)

use rolegate_sdk::message::{ChallengeContext, UserContext};
use rolegate_sdk::{Step, Verdict};

use super::*;

use crate::records::events::{self, NewEvent, Severity};

/// What a test sends to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TestBody {
    /// A phone number, written as a user's may be (the default country code applies).
    to: String,
}

/// The role a test's challenge names: no role is activated.
const TEST_ROLE: &str = "(provider test)";

/// The number as a test's event shows it: its last four digits.
fn last_four(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// What a test sent.
#[derive(Serialize, ToSchema)]
pub(super) struct TestSent {
    /// The provider.
    provider: String,
    /// The number sent to, E.164.
    to: String,
    /// Always true (a failure is an error).
    sent: bool,
    /// The provider's reference for the message (a Twilio message SID), if it gave one.
    reference: Option<String>,
}

/// Sends one message through a provider that texts or calls a phone (its `needs_phone`),
/// the way a challenge would, then cancels the challenge; records event 410 either way.
/// Answers the provider's reference (a message SID) when it sent, or the provider's error
/// (with the status it maps to) when it did not.
#[utoipa::path(
    post,
    path = "/v1/providers/{id}/test",
    operation_id = "test_provider",
    tag = "providers",
    summary = "Send one test message through a provider that texts or calls",
    description = "Body `{to}`; answers `{provider, to, sent, reference}` (a message SID), or the \
provider's error (400/502/503); event 410 either way (`rolegate provider test`).",
    params(("id" = String, Path, description = "The provider's id")),
    request_body = TestBody,
    responses(
        (status = 200, description = "Sent", body = TestSent),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider", body = ErrorBody),
        (status = 422, description = "`invalid`: not a phone number, or a provider that does not text or call", body = ErrorBody),
        (status = 502, description = "`provider_error`: the provider sent nothing (its own words)", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`: the provider is not available now", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn test_provider(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<TestBody>,
) -> ApiResult<Json<TestSent>> {
    let c = api.admin(&headers).await?;
    let provider = api
        .service
        .providers()
        .get(&id)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            what: format!("provider `{id}`"),
        })?;
    let Some(info) = provider.info().cloned() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            format!("provider `{id}` is not available now; see `rolegate provider list`"),
        ));
    };
    if !info.needs_phone || info.needs_enrolment {
        return Err(Error::Invalid {
            what: "provider test".into(),
            message: format!(
                "provider `{id}` does not send to a phone number by itself (it {}): a test is for providers that text or call, such as sms-twilio",
                if info.needs_phone {
                    "needs an enrolled credential"
                } else {
                    "needs no phone"
                }
            ),
        }
        .into());
    }
    let phone = crate::model::phone::parse(&b.to, api.service.settings().default_country_code)?;
    let e164 = phone.e164();
    let now = api.service.clock().now();
    let ctx = ChallengeContext {
        user: UserContext {
            account: c.account.clone(),
            display_name: String::new(),
            phone: Some(phone.to_string()),
            email: None,
        },
        role: TEST_ROLE.into(),
        request_id: format!(
            "test-{}",
            crate::store::secrets::time_ordered_id(now.as_millisecond())?
        ),
        ttl_s: 0,
        justification: String::new(),
        credentials: Vec::new(),
        origin: None,
        now: now.as_second().max(0) as u64,
    };
    let step = provider.challenge_start(ctx.clone()).await;
    let reference = crate::service::provider_reference(&step);
    // Sent: the challenge is given up at once (nothing waits for its answer).
    if let Ok(Step::Ask { state, .. } | Step::Wait { state, .. }) = &step
        && let Err(e) = provider.cancel(ctx, state.clone()).await
    {
        tracing::warn!(provider = %id, "cancelling a test's challenge failed: {e}");
    }
    let shown = last_four(&e164);
    let failure: Option<ApiError> = match step {
        Ok(Step::Ask { .. } | Step::Wait { .. }) => None,
        Ok(Step::Done {
            verdict: Verdict::Denied { message, .. },
        }) => Some(ApiError(
            StatusCode::BAD_GATEWAY,
            "provider_error",
            format!("provider `{id}` sent nothing: {message}"),
        )),
        Ok(_) => Some(ApiError(
            StatusCode::BAD_GATEWAY,
            "provider_error",
            format!("provider `{id}` answered at once and sent nothing"),
        )),
        // The caller is an admin: the provider's own words (Twilio's code), with the status
        // the API gives that error.
        Err(e) => {
            let words = e.to_string();
            let ApiError(status, code, text) = ApiError::from(e);
            Some(if status == StatusCode::INTERNAL_SERVER_ERROR {
                ApiError(status, code, text)
            } else {
                ApiError(status, code, words)
            })
        }
    };
    let (severity, what) = match (&failure, &reference) {
        (None, Some(r)) => (
            Severity::Information,
            format!("test message sent to {shown}, provider reference `{r}`,"),
        ),
        (None, None) => (
            Severity::Information,
            format!("test message sent to {shown} (the provider gave no reference)"),
        ),
        (Some(f), _) => (
            Severity::Warning,
            format!("test message to {shown} failed ({})", f.2),
        ),
    };
    let mut e = NewEvent::new(
        events::PROVIDER_TESTED,
        severity,
        "admin",
        format!("{what} by `{}`", c.account),
    );
    e.provider = Some(id.clone());
    api.service
        .store()
        .write(move |tx| events::append(tx, e, now.as_millisecond()).map(|_| ()))
        .await?;
    match failure {
        Some(f) => Err(f),
        None => Ok(Json(TestSent {
            provider: id,
            to: e164,
            sent: true,
            reference,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_event_shows_four_digits() {
        assert_eq!(last_four("+14255550142"), "…0142");
        assert_eq!(last_four("+12"), "…12");
    }
}
