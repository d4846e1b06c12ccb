//! `rolegate enrol`: enrolment in a provider that needs it, step by step.

use anyhow::bail;
use rolegate::client::Client;
use serde_json::json;

use super::Out;

/// Enrols the token's user in `provider`, showing what it shows and asking what it asks.
pub(crate) async fn run(client: &Client, json: bool, provider: String) -> anyhow::Result<Out> {
    let v = client
        .call(
            "POST",
            "/v1/enrolments",
            Some(json!({"provider": provider})),
        )
        .await?;
    let v = rolegate::client::walk_enrolment(client, v).await?;
    Ok(if json {
        (v, None)
    } else if v["done"] == true {
        (
            json!(format!(
                "enrolled in `{provider}` (credential `{}`)",
                v["credential"].as_str().unwrap_or("")
            )),
            None,
        )
    } else {
        bail!(
            "enrolment in `{provider}` did not complete: {}",
            v["message"].as_str().unwrap_or("no reason given")
        );
    })
}
