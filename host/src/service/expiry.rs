//! What ends by itself or with an account: activations, prompts and approvals past their
//! time, and everything of a disabled or removed user; the in-flight count for metrics.

use super::*;

impl Service {
    /// Ends what is due: activations past their end, prompts past their expiry, approvals
    /// past their timeout. Runs at start-up (the host may have been down) and periodically.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let timeout = self.settings.approval_timeout.as_millis() as i64;
        let (t, before) = (ms(now), ms(now) - timeout);
        // Whose requests are due, read first: nothing due (most seconds of a quiet instance)
        // writes nothing, and the write locks only those accounts (on PostgreSQL other
        // instances' writes for other accounts go on meanwhile). What falls due in between
        // waits for the next sweep.
        let accounts: Vec<String> = self
            .store
            .read(move |tx| {
                tx.query(
                    &format!(
                        "SELECT account_key FROM (SELECT account_key FROM requests WHERE {DUE} LIMIT {SWEPT_ACCOUNTS}) r UNION SELECT account_key FROM (SELECT account_key FROM shadow_challenges WHERE expires_at <= $1 LIMIT {SWEPT_ACCOUNTS}) s"
                    ),
                    &[Value::Int(t), Value::Int(before)],
                )
            })
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_>>()?;
        if accounts.is_empty() {
            return Ok(0);
        }
        let plan = crate::store::Plan {
            durable: true,
            lead: None,
            accounts: accounts.clone(),
        };
        self.store
            .write_planned(plan, move |tx| {
                let mut params = vec![Value::Int(t), Value::Int(before)];
                params.extend(accounts.iter().map(|a| Value::from(a.as_str())));
                let due = tx.query(
                    &format!(
                        "SELECT {COLUMNS} FROM requests WHERE ({DUE}) AND account_key IN ({}) LIMIT 10000",
                        crate::store::placeholders_from(3, accounts.len())
                    ),
                    &params,
                )?;
                let mut n = 0;
                for row in &due {
                    let mut s = from_row(row)?;
                    // What is due for each state: where it goes, why, and which event says so.
                    let (next, reason, id, severity, message) = match s.state {
                        RequestState::Active => (
                            RequestState::Expired,
                            Some("the activation ran its time"),
                            events::REQUEST_EXPIRED,
                            Severity::Information,
                            "activation expired",
                        ),
                        // Its time came; expires_at was set from the start when granted.
                        RequestState::Scheduled => (
                            RequestState::Active,
                            None,
                            events::REQUEST_ACTIVATED,
                            Severity::Information,
                            "activated (delayed start)",
                        ),
                        RequestState::PendingMfa => (
                            RequestState::Failed,
                            Some("MFA was not completed in time"),
                            events::MFA_NOT_COMPLETED,
                            Severity::Error,
                            "MFA not completed: the prompt expired",
                        ),
                        RequestState::PendingApproval => (
                            RequestState::Rejected,
                            Some("approval timed out"),
                            events::REQUEST_REJECTED,
                            Severity::Warning,
                            "approval timed out",
                        ),
                        _ => continue,
                    };
                    let provider = (id == events::MFA_NOT_COMPLETED)
                        .then(|| s.view.provider.clone())
                        .flatten();
                    if let Some(r) = reason {
                        s.view.reason = Some(r.into());
                    }
                    transition(tx, &mut s, next, now)?;
                    events::append(
                        tx,
                        event(id, severity, &s, provider.as_deref(), message.into()),
                        t,
                    )?;
                    n += 1;
                }
                n += Self::expire_shadows(tx, t, &accounts)?;
                Ok(n)
            })
            .await
    }
}

/// How many requests and shadow challenges a sweep reads the accounts of (the rest wait for
/// the next sweep, a second later). A sweep for more accounts than PostgreSQL's writer locks
/// one by one locks the whole store: a backlog (after an outage) is cleared as fast as before.
const SWEPT_ACCOUNTS: usize = 10_000;

/// What is due at `$1` (now, Unix ms) with approvals asked before `$2`: activations past
/// their end, scheduled ones past their start, prompts past their expiry, approvals past the
/// timeout.
const DUE: &str = "(state = 'active' AND expires_at <= $1) OR (state = 'scheduled' AND starts_at <= $1) OR (state = 'pending_mfa' AND ask_expires_at <= $1) OR (state = 'pending_approval' AND updated_at <= $2)";

/// Ends, inside an admin's write, what an account holds or waits for when the account is
/// disabled or removed: active and scheduled activations close, pending requests are
/// cancelled (event 205 each, saying why). Returns how many ended.
pub fn end_access(tx: &mut dyn Tx, account: &str, why: &str, now_ms: i64) -> Result<usize> {
    let now = Timestamp::from_millisecond(now_ms).map_err(|e| Error::Invalid {
        what: "time".into(),
        message: e.to_string(),
    })?;
    let rows = tx.query(
        &format!(
            "SELECT {COLUMNS} FROM requests WHERE account_key = $1 AND state IN ('active', 'scheduled', 'pending_mfa', 'pending_approval')"
        ),
        &[account_key(account).into()],
    )?;
    for row in &rows {
        let mut s = from_row(row)?;
        let next = match s.state {
            RequestState::Active | RequestState::Scheduled => RequestState::Closed,
            _ => RequestState::Cancelled,
        };
        s.view.reason = Some(why.to_string());
        transition(tx, &mut s, next, now)?;
        events::append(
            tx,
            event(
                events::REQUEST_CLOSED,
                Severity::Warning,
                &s,
                None,
                why.to_string(),
            ),
            now_ms,
        )?;
    }
    Ok(rows.len())
}

/// Counts the requests in each unfinished state (an indexed count per state), for the
/// metrics page to render.
pub fn in_flight(tx: &mut dyn Tx) -> Result<crate::model::metrics::InFlight> {
    let mut out = Vec::new();
    for state in RequestState::unfinished().map(|s| s.as_str()) {
        let rows = tx.query(
            "SELECT COUNT(*) FROM requests WHERE state = $1",
            &[state.into()],
        )?;
        let n = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
        out.push((state, n));
    }
    Ok(out)
}
