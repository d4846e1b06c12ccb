//! Shadow factors: after a request's real factor succeeds, the user is asked for one of the
//! role's shadow providers too. The outcome is recorded (events 207, 208) and counted by
//! readiness; it never decides the request — the request has moved on (to approval, or
//! active) before the shadow is asked, and nothing the shadow does can move it back.
//!
//! A shadow challenge lives in a table of its own beside the request, so an abandoned one
//! costs the request nothing: the expiry sweep ends it (event 208, "not answered in time").
//! Wrong shadow answers are capped per challenge (`max_wrong_answers`) and never count
//! toward a lockout, since they decide nothing; a user locked out of the provider is not
//! asked. A verified answer's credential update (a TOTP step, a sign count) is stored as a
//! real answer's is, so a code used in shadow cannot be replayed where the factor is real.

use super::*;

/// What became of a request's shadow factor, as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShadowView {
    /// The shadow provider.
    pub provider: String,
    /// `asked` (answer `prompt`), `completed`, `not_completed` or `not_asked`.
    pub outcome: &'static str,
    /// What to answer, while asked.
    pub prompt: Option<serde_json::Value>,
    /// What happened, in the user's words.
    pub reason: Option<String>,
}

/// A stored shadow challenge.
struct ShadowRow {
    account_key: String,
    role: String,
    provider: String,
    prompt: serde_json::Value,
    challenge: Vec<u8>,
    expires_at: i64,
    wrong_answers: i64,
}

const SHADOW_COLUMNS: &str =
    "account_key, role, provider, prompt, challenge, expires_at, wrong_answers";

fn shadow_from_row(r: &Row) -> Result<ShadowRow> {
    Ok(ShadowRow {
        account_key: r.text(0)?,
        role: r.text(1)?,
        provider: r.text(2)?,
        prompt: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
        challenge: r.blob(4)?,
        expires_at: r.int(5)?,
        wrong_answers: r.int(6)?,
    })
}

/// The sealing context of a shadow challenge's provider state: never the request's own.
fn shadow_context(request: &str) -> String {
    format!("shadow/{request}")
}

/// A shadow event (207 or 208) for a request.
fn shadow_event(
    id: i64,
    account_key: &str,
    role: &str,
    request: &str,
    provider: &str,
    message: String,
) -> NewEvent {
    let severity = if id == events::SHADOW_COMPLETED {
        Severity::Information
    } else {
        Severity::Warning
    };
    let mut e = NewEvent::new(id, severity, "activation", message);
    e.account = Some(account_key.to_string());
    e.role = Some(role.to_string());
    e.request = Some(request.to_string());
    e.provider = Some(provider.to_string());
    e
}

/// Whether a view is of a request whose real factor has just been completed.
fn mfa_completed(view: &RequestView) -> bool {
    view.provider.is_some()
        && matches!(
            view.state.as_str(),
            "pending_approval" | "active" | "scheduled"
        )
}

impl Service {
    /// The role's shadow providers, as this host last read the role (the request's create
    /// read it; none when the role is gone).
    async fn shadows_of(&self, role: &str) -> Vec<String> {
        let cached = self
            .role_cache
            .lock()
            .ok()
            .and_then(|c| c.get(role).map(|r| r.role.shadow.clone()));
        match cached {
            Some(s) => s,
            None => self
                .role_from(role, 0, None)
                .await
                .map(|r| r.shadow.clone())
                .unwrap_or_default(),
        }
    }

    /// After a request's real factor succeeded: asks the first shadow provider of its role the
    /// user can use, and adds what became of it to the view. Nothing here can fail the
    /// request: a shadow that cannot be asked is recorded (event 208), and the view goes back
    /// as it was.
    pub(super) async fn after_mfa(
        &self,
        mut view: RequestView,
        user: &User,
        credential_rows: &[Row],
        shadows: Option<&[String]>,
    ) -> RequestView {
        if !mfa_completed(&view) {
            return view;
        }
        let owned;
        let shadows = match shadows {
            Some(s) => s,
            None => {
                owned = self.shadows_of(&view.role).await;
                &owned[..]
            }
        };
        if shadows.is_empty() {
            return view;
        }
        match self
            .start_shadow(&view, user, credential_rows, shadows)
            .await
        {
            Ok(s) => view.shadow = Some(s),
            Err(e) => {
                // The request stands; the admin hears of the shadow's failure in the log.
                tracing::warn!(request = %view.id, role = %view.role, "shadow factor not recorded: {e}");
            }
        }
        view
    }

    async fn start_shadow(
        &self,
        view: &RequestView,
        user: &User,
        credential_rows: &[Row],
        shadows: &[String],
    ) -> Result<ShadowView> {
        let now = self.clock.now();
        let key = account_key(&user.account);
        let k = key.clone();
        let locked: Vec<String> = self
            .store
            .read(move |tx| {
                tx.query(
                    "SELECT provider FROM lockouts WHERE account_key = $1 AND locked_until > $2",
                    &[k.into(), Value::Int(ms(now))],
                )?
                .iter()
                .map(|r| r.text(0))
                .collect()
            })
            .await?;
        // The first shadow the user can use; else why none could be asked.
        let mut why_not = Vec::new();
        let mut chosen = None;
        for p in shadows {
            let why = match self.providers.get(p) {
                None => Some("it is not loaded on this daemon"),
                Some(lp) if lp.retired_at(now).is_some() => Some("it has been retired"),
                Some(lp) => match lp.info() {
                    None => Some("it is not available"),
                    Some(info) if info.needs_phone && user.phone.is_none() => {
                        Some("no phone number on record")
                    }
                    Some(info)
                        if info.needs_enrolment
                            && !credential_rows
                                .iter()
                                .any(|r| r.text(1).is_ok_and(|x| x == *p)) =>
                    {
                        Some("not enrolled")
                    }
                    Some(_) if locked.iter().any(|l| l == p) => Some("locked out"),
                    Some(_) => None,
                },
            };
            match why {
                None => {
                    chosen = Some(p.clone());
                    break;
                }
                Some(w) => why_not.push(format!("`{p}`: {w}")),
            }
        }
        let Some(provider_id) = chosen else {
            let first = shadows.first().cloned().unwrap_or_default();
            let message = format!("shadow factor not asked: {}", why_not.join("; "));
            let e = shadow_event(
                events::SHADOW_NOT_COMPLETED,
                &key,
                &view.role,
                &view.id,
                &first,
                message,
            );
            self.store
                .write_planned(on_account(&key, true, None), move |tx| {
                    events::append(tx, e, ms(now))
                })
                .await?;
            return Ok(ShadowView {
                provider: first,
                outcome: "not_asked",
                prompt: None,
                reason: Some(format!(
                    "this role is trying a new factor, which you cannot use yet ({})",
                    why_not.join("; ")
                )),
            });
        };
        let provider = self.provider(&provider_id)?;
        let ctx = self.challenge_context(user, view, &provider_id, credential_rows, now)?;
        let step = provider.challenge_start(ctx).await;
        let outcome = self.judge(
            step,
            &shadow_context(&view.id),
            now,
            credential_rows,
            &provider_id,
            &key,
        );
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => Outcome::Fault(e.to_string()),
        };
        let row = ShadowRow {
            account_key: key,
            role: view.role.clone(),
            provider: provider_id,
            prompt: serde_json::Value::Null,
            challenge: Vec::new(),
            expires_at: 0,
            wrong_answers: 0,
        };
        let id = view.id.clone();
        let settings = self.settings.clone();
        let key = Arc::clone(&self.key);
        let owner = row.account_key.clone();
        self.store
            .write_planned(on_account(&owner, true, None), move |tx| {
                settle(tx, &id, row, outcome, false, true, &settings, &key, now)
            })
            .await
    }

    /// Answers (or polls) a request's shadow factor, when the request has one asked; `None`
    /// when it has none.
    pub(super) async fn continue_shadow(
        &self,
        id: &str,
        account: &str,
        input: Option<Input>,
    ) -> Result<Option<RequestView>> {
        let now = self.clock.now();
        let (i, a) = (id.to_string(), account.to_string());
        let found = self
            .store
            .read(move |tx| {
                let rows = tx.query(
                    &format!(
                        "SELECT {SHADOW_COLUMNS} FROM shadow_challenges WHERE request_id = $1"
                    ),
                    &[i.clone().into()],
                )?;
                let Some(row) = rows.first().map(shadow_from_row).transpose()? else {
                    return Ok(None);
                };
                let user = users::get(tx, &a)?;
                let creds = credential_rows(tx, &row.account_key)?;
                let Some(request) = load(tx, &i)? else {
                    return Ok(None);
                };
                Ok(Some((row, user, creds, request.view)))
            })
            .await?;
        let Some((row, user, creds, request)) = found else {
            return Ok(None);
        };
        // Another account's shadow is as unknown as its request.
        if !users::same_account(&row.account_key, account) {
            return Ok(None);
        }
        let Some(user) = user.filter(|u| u.enabled) else {
            return Err(Error::Refused(Refusal::UserNotAllowed {
                account: account.to_string(),
            }));
        };
        let answered = input.is_some();
        let outcome = if row.expires_at <= ms(now) {
            Outcome::Denied(DenyReason::Expired, "the prompt expired".into(), None)
        } else {
            let provider =
                self.providers
                    .get(&row.provider)
                    .cloned()
                    .ok_or_else(|| Error::NotFound {
                        what: format!("provider `{}`", row.provider),
                    })?;
            let state: Bytes = self
                .key
                .open(&row.challenge, &format!("challenge/{}", shadow_context(id)))?
                .into();
            let ctx = self.challenge_context(&user, &request, &row.provider, &creds, now)?;
            let step = provider.challenge_next(ctx, state, input).await;
            // Malformed input changes nothing: the user may answer again.
            self.judge(
                step,
                &shadow_context(id),
                now,
                &creds,
                &row.provider,
                &row.account_key,
            )?
        };
        let i = id.to_string();
        let settings = self.settings.clone();
        let key = Arc::clone(&self.key);
        let owner = row.account_key.clone();
        let shadow = self
            .store
            .write_planned(on_account(&owner, true, None), move |tx| {
                settle(tx, &i, row, outcome, answered, false, &settings, &key, now)
            })
            .await?;
        let (i, a) = (id.to_string(), account.to_string());
        let mut view = self.get(&i, Some(&a)).await?;
        view.shadow = Some(shadow);
        Ok(Some(view))
    }

    /// Ends the shadow challenges of `accounts` past their time (event 208 each); returns how
    /// many.
    pub(super) fn expire_shadows(
        tx: &mut dyn Tx,
        now_ms: i64,
        accounts: &[String],
    ) -> Result<usize> {
        let mut params = vec![Value::Int(now_ms)];
        params.extend(accounts.iter().map(|a| Value::from(a.as_str())));
        let due = tx.query(
            &format!(
                "SELECT request_id, {SHADOW_COLUMNS} FROM shadow_challenges WHERE expires_at <= $1 AND account_key IN ({}) LIMIT 10000",
                crate::store::placeholders_from(2, accounts.len())
            ),
            &params,
        )?;
        for r in &due {
            let id = r.text(0)?;
            let s = shadow_from_row(&crate::store::Row(r.0[1..].to_vec()))?;
            tx.execute(
                "DELETE FROM shadow_challenges WHERE request_id = $1",
                &[id.clone().into()],
            )?;
            events::append(
                tx,
                shadow_event(
                    events::SHADOW_NOT_COMPLETED,
                    &s.account_key,
                    &s.role,
                    &id,
                    &s.provider,
                    "shadow factor not completed (expired): not answered in time".into(),
                ),
                now_ms,
            )?;
        }
        Ok(due.len())
    }
}

/// The shadow prompt still open for a request, as its view shows it.
pub(super) fn open_shadow(tx: &mut dyn Tx, id: &str, now_ms: i64) -> Result<Option<ShadowView>> {
    let rows = tx.query(
        "SELECT provider, prompt FROM shadow_challenges WHERE request_id = $1 AND expires_at > $2",
        &[id.into(), Value::Int(now_ms)],
    )?;
    rows.first()
        .map(|r| {
            Ok(ShadowView {
                provider: r.text(0)?,
                outcome: "asked",
                prompt: serde_json::from_str(&r.text(1)?).ok(),
                reason: None,
            })
        })
        .transpose()
}

/// Writes what a shadow step means: a prompt is kept (inserted when `new`, else updated), a
/// verdict ends the challenge with its event. Returns what the user is told.
#[allow(clippy::too_many_arguments)] // one call per path, as `apply`'s
fn settle(
    tx: &mut dyn Tx,
    id: &str,
    mut row: ShadowRow,
    outcome: Outcome,
    answered: bool,
    new: bool,
    settings: &Settings,
    key: &SealingKey,
    now: Timestamp,
) -> Result<ShadowView> {
    let t = ms(now);
    let provider = row.provider.clone();
    let view =
        |outcome: &'static str, prompt: Option<serde_json::Value>, reason: Option<String>| {
            ShadowView {
                provider: provider.clone(),
                outcome,
                prompt,
                reason,
            }
        };
    // Ends the challenge: the row goes (unless it was never stored), the event is written.
    let end = |tx: &mut dyn Tx, row: &ShadowRow, event_id: i64, message: String| -> Result<()> {
        if !new {
            let n = tx.execute(
                "DELETE FROM shadow_challenges WHERE request_id = $1",
                &[id.into()],
            )?;
            if n == 0 {
                return Err(Error::Conflict(format!(
                    "the trial factor of request `{id}` was already answered"
                )));
            }
        }
        events::append(
            tx,
            shadow_event(
                event_id,
                &row.account_key,
                &row.role,
                id,
                &row.provider,
                message,
            ),
            t,
        )?;
        Ok(())
    };
    match outcome {
        Outcome::Prompt {
            prompt,
            sealed,
            expires_at,
        } => {
            if new {
                tx.execute(
                    "INSERT INTO shadow_challenges (request_id, account_key, role, provider, prompt, challenge, expires_at, wrong_answers, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
                    &[
                        id.into(),
                        row.account_key.clone().into(),
                        row.role.clone().into(),
                        row.provider.clone().into(),
                        prompt.to_string().into(),
                        Value::Blob(sealed),
                        Value::Int(expires_at),
                        Value::Int(t),
                    ],
                )?;
            } else {
                let n = tx.execute(
                    "UPDATE shadow_challenges SET prompt = $1, challenge = $2, expires_at = $3 WHERE request_id = $4 AND wrong_answers = $5",
                    &[
                        prompt.to_string().into(),
                        Value::Blob(sealed),
                        Value::Int(expires_at),
                        id.into(),
                        Value::Int(row.wrong_answers),
                    ],
                )?;
                ensure_updated(n, id)?;
            }
            Ok(view("asked", Some(prompt), None))
        }
        Outcome::Approved(update, _) => {
            // As a real answer's: only over the value the provider saw (replay).
            if let Some(update) = &update
                && !answers::write_credential_update(
                    tx,
                    &row.account_key,
                    &row.provider,
                    update,
                    key,
                    now,
                    false,
                )?
            {
                return Err(Error::Conflict(format!(
                    "this code was used already: another request used the credential meanwhile; answer the trial factor of request `{id}` again with a new code"
                )));
            }
            end(
                tx,
                &row,
                events::SHADOW_COMPLETED,
                "shadow factor completed".into(),
            )?;
            Ok(view(
                "completed",
                None,
                Some("the new factor worked; thank you (it did not decide this request)".into()),
            ))
        }
        Outcome::Denied(reason, message, used) => {
            if reason == DenyReason::Cloned
                && let Some(c) = &used
            {
                answers::flag_credential(tx, &row.account_key, &row.provider, c, &message, t)?;
            }
            let retryable = matches!(reason, DenyReason::WrongAnswer | DenyReason::Replayed);
            if retryable && answered && !new {
                row.wrong_answers += 1;
                let left = settings.max_wrong_answers - row.wrong_answers;
                if left > 0 {
                    let n = tx.execute(
                        "UPDATE shadow_challenges SET wrong_answers = $1 WHERE request_id = $2 AND wrong_answers = $3",
                        &[
                            Value::Int(row.wrong_answers),
                            id.into(),
                            Value::Int(row.wrong_answers - 1),
                        ],
                    )?;
                    ensure_updated(n, id)?;
                    return Ok(view(
                        "asked",
                        Some(row.prompt.clone()),
                        Some(format!("{message}; {left} attempt(s) left")),
                    ));
                }
            }
            let why = if retryable && answered {
                format!("{message}; no attempts left")
            } else {
                message
            };
            end(
                tx,
                &row,
                events::SHADOW_NOT_COMPLETED,
                format!(
                    "shadow factor not completed ({}): {why}",
                    answers::deny_name(reason)
                ),
            )?;
            Ok(view(
                "not_completed",
                None,
                Some(format!(
                    "the new factor was not completed ({why}); this did not change your request"
                )),
            ))
        }
        Outcome::Fault(detail) => {
            end(
                tx,
                &row,
                events::SHADOW_NOT_COMPLETED,
                format!("shadow factor not completed: the provider failed ({detail})"),
            )?;
            Ok(view(
                "not_completed",
                None,
                Some(format!(
                    "the new factor `{}` is unavailable now; this did not change your request",
                    row.provider
                )),
            ))
        }
    }
}
