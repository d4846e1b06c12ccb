//! `rolegate provider list`: the daemon's providers with their health.

use rolegate::client::Client;

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
                ("SUNSET", "sunset"),
            ][..],
        ),
    ))
}
