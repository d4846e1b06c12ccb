//! The event log: listing and verifying its chain and anchors.

use super::*;

use crate::records::events::{self, Filter};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventQuery {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    since_ms: Option<i64>,
    #[serde(default)]
    until_ms: Option<i64>,
    #[serde(default)]
    provider: Option<String>,
    /// Only events older than this sequence number: the next page.
    #[serde(default)]
    before_seq: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

pub(super) async fn list_events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let f = Filter {
        id: q.id,
        account: q.account,
        role: q.role,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        provider: q.provider,
        before_seq: q.before_seq,
        limit: q.limit,
    };
    let list = api
        .service
        .store()
        .read_long(move |tx| events::list(tx, &f))
        .await?;
    let out: Vec<Json_> = list.iter().map(events::to_json).collect();
    Ok(Json(Json_::Array(out)))
}

/// The chain's verdict, checked against the anchor file when there is one: `intact` and
/// `events`, or `seq` and `reason`; and `anchored_seq` and `anchored_at`, the newest valid
/// checkpoint (null when none).
pub(super) async fn verify_events(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let anchors = api.anchors.clone();
    let r = api
        .service
        .store()
        .read_long(move |tx| {
            let anchors = match anchors {
                Some(file) => file.read()?,
                None => Default::default(),
            };
            events::verify_anchored(tx, &anchors)
        })
        .await?;
    let mut out = match r.verification {
        events::Verification::Intact(n) => json!({"intact": true, "events": n}),
        events::Verification::Broken { seq, reason } => {
            json!({"intact": false, "seq": seq, "reason": reason})
        }
    };
    out["anchored_seq"] = json!(r.anchored_seq);
    out["anchored_at"] = json!(r.anchored_at_ms.map(crate::records::anchor::time));
    Ok(Json(out))
}
