//! Enrolments: a user enrols in a provider that needs it, step by step.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolStart {
    provider: String,
}

pub(super) async fn enrol_start(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolStart>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.enroll_start(&c.account, &b.provider).await?
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolContinue {
    provider: String,
    state: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    input: Option<rolegate_sdk::Input>,
}

pub(super) async fn enrol_continue(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolContinue>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let input = match (b.code, b.input) {
        (Some(code), None) => rolegate_sdk::Input::Code { code },
        (None, Some(i)) => i,
        (None, None) => rolegate_sdk::Input::Acknowledge,
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "send `code`, `input`, or neither (to acknowledge)".into(),
            ));
        }
    };
    Ok(Json(json!(
        api.service
            .enroll_continue(&c.account, &b.provider, &b.state, input)
            .await?
    )))
}
