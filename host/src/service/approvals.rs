//! Approvals: an approver decides on a request waiting for them.

use super::*;

impl Service {
    /// Approves a request waiting for approval.
    pub async fn approve(&self, id: &str, approver: &str) -> Result<RequestView> {
        self.decide(id, approver, true, None).await
    }

    /// Rejects a request waiting for approval.
    pub async fn reject(
        &self,
        id: &str,
        approver: &str,
        reason: Option<&str>,
    ) -> Result<RequestView> {
        self.decide(id, approver, false, reason).await
    }

    async fn decide(
        &self,
        id: &str,
        approver: &str,
        approve: bool,
        reason: Option<&str>,
    ) -> Result<RequestView> {
        let now = self.clock.now();
        if let Some(r) = reason {
            crate::model::limits::check(
                "reason",
                r,
                self.settings.limits.reason_chars,
                "reason_chars",
            )?;
        }
        let i = id.to_string();
        let stored = self
            .store
            .read(move |tx| load(tx, &i))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("request `{id}`"),
            })?;
        let r = stored.view.role.clone();
        let spec = self
            .store
            .read(move |tx| roles::get(tx, &r))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("role `{}`", stored.view.role),
            })?;
        spec.to_role()?
            .check_approver(approver, &stored.view.account)?;
        let approver = approver.to_string();
        let reason = reason.map(String::from);
        let timeout = self.settings.approval_timeout;
        // The request's account's rows change (the approver's are only read: a user's
        // account is changed by an admin, whose writes lock the whole store).
        let owner = stored.account_key.clone();
        self.store
            .write_planned(on_account(&owner, true, None), move |tx| {
                // Whoever decides must be an enabled user when they decide (a token checked
                // a moment ago, or an account disabled since, decides nothing).
                if !users::get(tx, &approver)?.is_some_and(|u| u.enabled) {
                    return Err(Error::Refused(Refusal::UserNotAllowed {
                        account: approver.clone(),
                    }));
                }
                let mut s = load(tx, &stored.view.id)?
                    .filter(|c| c.state == RequestState::PendingApproval)
                    .ok_or_else(|| {
                        Error::Conflict(format!(
                            "request `{}` is not waiting for approval (already decided?)",
                            stored.view.id
                        ))
                    })?;
                if s.updated_at + timeout.as_millis() as i64 <= ms(now) {
                    s.view.reason = Some("approval timed out".into());
                    transition(tx, &mut s, RequestState::Rejected, now)?;
                    events::append(
                        tx,
                        event(
                            events::REQUEST_REJECTED,
                            Severity::Warning,
                            &s,
                            None,
                            "approval timed out".into(),
                        ),
                        ms(now),
                    )?;
                    return Err(Error::Conflict(format!(
                        "request `{}` waited longer than the approval timeout and was rejected",
                        s.view.id
                    )));
                }
                if approve {
                    // Nor is a role granted to a requester disabled or removed meanwhile.
                    ensure_enabled(tx, &s.account_key)?;
                    events::append(
                        tx,
                        event(
                            events::REQUEST_APPROVED,
                            Severity::Information,
                            &s,
                            None,
                            format!("approved by `{approver}`"),
                        ),
                        ms(now),
                    )?;
                    activate(tx, &mut s, now)?;
                } else {
                    s.view.reason = Some(match &reason {
                        Some(r) => format!("rejected by `{approver}`: {r}"),
                        None => format!("rejected by `{approver}`"),
                    });
                    transition(tx, &mut s, RequestState::Rejected, now)?;
                    let message = s.view.reason.clone().unwrap_or_default();
                    events::append(
                        tx,
                        event(
                            events::REQUEST_REJECTED,
                            Severity::Information,
                            &s,
                            None,
                            message,
                        ),
                        ms(now),
                    )?;
                }
                tx.execute(
                    "UPDATE requests SET decided_by = $1 WHERE id = $2",
                    &[approver.clone().into(), s.view.id.clone().into()],
                )?;
                Ok(s.view)
            })
            .await
    }

    /// Requests waiting for `approver`'s decision (roles they approve, not their own requests).
    pub async fn pending_approvals(&self, approver: &str) -> Result<Vec<RequestView>> {
        let a = approver.to_string();
        self.store
            .read_long(move |tx| {
                let roles = roles::list(tx)?;
                let rows = tx.query(
                    &format!("SELECT {COLUMNS} FROM requests WHERE state = 'pending_approval' ORDER BY created_at LIMIT 10000"),
                    &[],
                )?;
                let mut out = Vec::new();
                for r in &rows {
                    let s = from_row(r)?;
                    let approves = roles.iter().any(|spec| {
                        spec.name == s.view.role
                            && spec.approvers.iter().any(|x| users::same_account(x, &a))
                    });
                    if approves && !users::same_account(&s.view.account, &a) {
                        out.push(s.view);
                    }
                }
                Ok(out)
            })
            .await
    }
}
