//! `rolegate events`: the event log, filtered, and `events verify`.

use anyhow::{Context as _, bail};
use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// What `rolegate events` was asked.
pub(crate) struct Query {
    /// `verify`, or nothing to list.
    pub(crate) action: Option<String>,
    /// Only this event id.
    pub(crate) id: Option<i64>,
    /// Only this user.
    pub(crate) user: Option<String>,
    /// Only this role.
    pub(crate) role: Option<String>,
    /// Only since this time (RFC 3339).
    pub(crate) since: Option<String>,
    /// At most this many.
    pub(crate) limit: i64,
}

/// Lists or verifies the event log.
pub(crate) async fn run(client: &Client, json: bool, q: Query) -> anyhow::Result<Out> {
    let Query {
        action,
        id,
        user,
        role,
        since,
        limit,
    } = q;
    Ok(match action {
        Some(a) if a == "verify" => {
            let v = client.call("GET", "/v1/events/verify", None).await?;
            // A daemon that predates anchors sends no `anchored_seq`.
            let anchored = match (v["anchored_seq"].as_i64(), v["anchored_at"].as_str()) {
                (Some(seq), Some(at)) => format!("anchored up to event {seq}, signed {at}"),
                _ if v.get("anchored_seq").is_some() => "no anchor yet".to_string(),
                _ => String::new(),
            };
            if json && v["intact"] != true {
                // Scripts read the report and the exit code: a broken log is a failure.
                println!("{}", serde_json::to_string_pretty(&v)?);
                std::process::exit(2);
            }
            if json {
                (v, None)
            } else if v["intact"] == true {
                let anchored = if anchored.is_empty() {
                    anchored
                } else {
                    format!("; {anchored}")
                };
                (
                    json!(format!(
                        "event log intact: {} events verified{anchored}",
                        v["events"]
                    )),
                    None,
                )
            } else {
                let anchored = if anchored.is_empty() {
                    anchored
                } else {
                    format!("; {anchored}")
                };
                bail!(
                    "event log TAMPERED at event {}: {}{anchored}",
                    v["seq"],
                    v["reason"].as_str().unwrap_or("")
                );
            }
        }
        Some(a) => bail!("unknown events action `{a}`: use `rolegate events verify`"),
        None => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(i) = id {
                q.push(format!("id={i}"));
            }
            if let Some(u) = user {
                q.push(format!("account={}", segment(&u)));
            }
            if let Some(r) = role {
                q.push(format!("role={}", segment(&r)));
            }
            if let Some(s) = since {
                let t: jiff::Timestamp = s
                    .parse()
                    .with_context(|| format!("--since `{s}` is not an RFC 3339 time"))?;
                q.push(format!("since_ms={}", t.as_millisecond()));
            }
            (
                client
                    .call("GET", &format!("/v1/events?{}", q.join("&")), None)
                    .await?,
                Some(
                    &[
                        ("SEQ", "seq"),
                        ("ID", "id"),
                        ("SEVERITY", "severity"),
                        ("USER", "account"),
                        ("ROLE", "role"),
                        ("MESSAGE", "message"),
                    ][..],
                ),
            )
        }
    })
}
