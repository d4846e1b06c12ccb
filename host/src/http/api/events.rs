//! The event log: listing and verifying its chain and anchors.

use super::*;

use crate::records::events::{self, Filter};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventQuery {
    /// Only events with this id (e.g. 825, a phone change).
    #[serde(default)]
    id: Option<i64>,
    /// Only this user's.
    #[serde(default)]
    account: Option<String>,
    /// Only this role's.
    #[serde(default)]
    role: Option<String>,
    /// Only those at or after this time (Unix ms).
    #[serde(default)]
    since_ms: Option<i64>,
    /// Only those before this time (Unix ms).
    #[serde(default)]
    until_ms: Option<i64>,
    /// Only this provider's.
    #[serde(default)]
    provider: Option<String>,
    /// Only events older than this sequence number: the next page.
    #[serde(default)]
    before_seq: Option<i64>,
    /// At most this many, newest first.
    #[serde(default)]
    limit: Option<i64>,
}

/// An event of the log.
#[derive(Serialize, ToSchema)]
pub(super) struct EventView {
    /// Position in the hash chain, from 1.
    seq: i64,
    /// The event id (MIM-style numbers: 825 a phone change, 207/208 a shadow factor…).
    id: i64,
    /// Severity name.
    severity: String,
    /// What raised it.
    source: String,
    /// When (Unix ms).
    at: i64,
    /// The user.
    account: Option<String>,
    /// The role.
    role: Option<String>,
    /// The request.
    request: Option<String>,
    /// The provider.
    provider: Option<String>,
    /// What happened.
    message: String,
    /// The previous event's hash.
    prev_hash: String,
    /// This event's hash.
    hash: String,
}

impl From<events::Event> for EventView {
    fn from(e: events::Event) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            severity: e.severity,
            source: e.source,
            at: e.at,
            account: e.account,
            role: e.role,
            request: e.request,
            provider: e.provider,
            message: e.message,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "events",
    summary = "Events, newest first",
    description = "Filtered by `id`, `account`, `role`, `provider`, `since_ms`, `until_ms`; at \
most `limit`. Page with `before_seq`: the `seq` of the last event of the previous page.",
    params(EventQuery),
    responses(
        (status = 200, description = "The events, newest first", body = Vec<EventView>),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 422, description = "`invalid`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn list_events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
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
    Ok(Json(list.into_iter().map(EventView::from).collect()))
}

/// The chain's verdict.
#[derive(Serialize, ToSchema)]
pub(super) struct Verified {
    /// Whether every event is intact and the anchors agree.
    intact: bool,
    /// How many events were checked (intact).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<i64>,
    /// The first event at fault (broken).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    /// What is wrong (broken).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The newest valid checkpoint's sequence number (null when none).
    anchored_seq: Option<i64>,
    /// When that checkpoint was signed, RFC 3339 (null when none).
    anchored_at: Option<String>,
}

/// The chain's verdict, checked against the anchor file when there is one: `intact` and
/// `events`, or `seq` and `reason`; and `anchored_seq` and `anchored_at`, the newest valid
/// checkpoint (null when none).
#[utoipa::path(
    get,
    path = "/v1/events/verify",
    operation_id = "verify_events",
    tag = "events",
    summary = "Verify the event hash chain",
    description = "Recomputes every hash and link, and checks the chain against the anchor file \
when there is one: `intact` and `events`, or `seq` and `reason`; and `anchored_seq` and \
`anchored_at`, the newest valid checkpoint.",
    responses(
        (status = 200, description = "The verdict", body = Verified),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn verify_events(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Verified>> {
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
    let (intact, events, seq, reason) = match r.verification {
        events::Verification::Intact(n) => (true, Some(n), None, None),
        events::Verification::Broken { seq, reason } => (false, None, Some(seq), Some(reason)),
    };
    Ok(Json(Verified {
        intact,
        events,
        seq,
        reason,
        anchored_seq: r.anchored_seq,
        anchored_at: r.anchored_at_ms.map(crate::records::anchor::time),
    }))
}
