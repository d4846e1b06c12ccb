//! `rolegate provider list` and `provider test`: the daemon's providers with their health,
//! and one test message through one of them.

use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// The daemon's providers, as a table.
pub(crate) async fn list(client: &Client) -> anyhow::Result<Out> {
    Ok((
        client.call("GET", "/v1/providers", None).await?,
        Some(
            &[
                ("ID", "id"),
                ("NAME", "info.name"),
                ("VERSION", "info.version"),
                ("ISOLATION", "isolation"),
                ("HEALTH", "health.status"),
                ("SEEN", "health.seen.status"),
                ("WHY", "health.seen.reason"),
                ("SUNSET", "sunset"),
            ][..],
        ),
    ))
}

/// Sends one test message through the daemon's provider `id` to `to`: what it answered (the
/// provider's reference, such as Twilio's message SID), or its error (the caller's exit
/// status says so).
pub(crate) async fn test(client: &Client, json: bool, id: &str, to: &str) -> anyhow::Result<Out> {
    let v = client
        .call(
            "POST",
            &format!("/v1/providers/{}/test", segment(id)),
            Some(json!({"to": to})),
        )
        .await?;
    if json {
        return Ok((v, None));
    }
    let to = v["to"].as_str().unwrap_or(to);
    let line = match v["reference"].as_str() {
        Some(r) => format!("provider `{id}` sent a test message to {to}: reference {r}"),
        None => format!("provider `{id}` sent a test message to {to} (it gave no reference)"),
    };
    Ok((json!(line), None))
}
