//! `rolegate approval`: the requests an approver may decide on, and the decision.

use clap::Subcommand;
use rolegate::client::{Client, request_summary, segment};
use serde_json::json;

use super::Out;

use super::request::REQUEST_LIST_COLUMNS;

/// The `rolegate approval` commands.
#[derive(Subcommand)]
pub(crate) enum ApprovalCommand {
    /// Requests waiting for you (Get-PAMRequestToApprove).
    List,
    /// Approve (Set-PAMRequestToApprove -Approve).
    Approve {
        /// Request id.
        id: String,
    },
    /// Reject (Set-PAMRequestToApprove -Reject).
    Reject {
        /// Request id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs an `approval` command against the daemon.
pub(crate) async fn run(client: &Client, json: bool, cmd: ApprovalCommand) -> anyhow::Result<Out> {
    Ok(match cmd {
        ApprovalCommand::List => (
            client.call("GET", "/v1/approvals", None).await?,
            Some(REQUEST_LIST_COLUMNS),
        ),
        ApprovalCommand::Approve { id } => {
            let v = client
                .call(
                    "POST",
                    &format!("/v1/approvals/{}/approve", segment(&id)),
                    None,
                )
                .await?;
            if json {
                (v, None)
            } else {
                (json!(request_summary(&v)), None)
            }
        }
        ApprovalCommand::Reject { id, reason } => {
            let v = client
                .call(
                    "POST",
                    &format!("/v1/approvals/{}/reject", segment(&id)),
                    Some(json!({"reason": reason})),
                )
                .await?;
            if json {
                (v, None)
            } else {
                (json!(request_summary(&v)), None)
            }
        }
    })
}
