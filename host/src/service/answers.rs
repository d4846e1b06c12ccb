//! Answers and polls: the provider judges the user's input, and one write applies its verdict
//! — the lockout, the credential update, the attempt cap — or records the provider's fault.

use super::*;

impl Service {
    async fn pending(&self, id: &str, account: &str) -> Result<(Stored, User, Vec<Row>)> {
        let (i, a) = (id.to_string(), account.to_string());
        let (stored, user, creds) = self
            .store
            .read(move |tx| {
                let creds = credential_rows(tx, &account_key(&a))?;
                Ok((load(tx, &i)?, users::get(tx, &a)?, creds))
            })
            .await?;
        let not_found = || Error::NotFound {
            what: format!("request `{id}`"),
        };
        let stored = stored.ok_or_else(not_found)?;
        if !users::same_account(&stored.view.account, account) {
            return Err(not_found());
        }
        let user = user.ok_or_else(not_found)?;
        if stored.state != RequestState::PendingMfa {
            return Err(Error::Conflict(format!(
                "request `{id}` is {}, not waiting for MFA",
                stored.state
            )));
        }
        Ok((stored, user, creds))
    }

    /// Answers the request's current prompt (a code, a WebAuthn response, a signature).
    pub async fn answer(&self, id: &str, account: &str, input: Input) -> Result<RequestView> {
        self.continue_mfa(id, account, Some(input)).await
    }

    /// Asks the provider for the outcome of an out-of-band challenge (a phone call).
    pub async fn poll(&self, id: &str, account: &str) -> Result<RequestView> {
        self.continue_mfa(id, account, None).await
    }

    async fn continue_mfa(
        &self,
        id: &str,
        account: &str,
        input: Option<Input>,
    ) -> Result<RequestView> {
        let kept = self.recall(id, account);
        if kept.is_none() {
            return self.continue_mfa_from(id, account, input, None).await;
        }
        match self
            .continue_mfa_from(id, account, input.clone(), kept)
            .await
        {
            // The request this host kept moved on elsewhere since (another host, sharing
            // PostgreSQL, took a wrong answer to it): any host continues any challenge, so
            // the answer is judged again against the request as it is stored now.
            Err(Error::Conflict(m)) if m.ends_with(ALREADY_ANSWERED) => {
                self.continue_mfa_from(id, account, input, None).await
            }
            other => other,
        }
    }

    /// [`Service::continue_mfa`] from the request this host kept (`kept`), or as stored.
    async fn continue_mfa_from(
        &self,
        id: &str,
        account: &str,
        input: Option<Input>,
        kept: Option<Awaiting>,
    ) -> Result<RequestView> {
        let now = self.clock.now();
        // Only a typed answer can be wrong and asked again; a poll's outcome ends the call.
        let answered = input.is_some();
        let (stored, user, credential_rows, kept_state, vouch) = match kept {
            Some(a) => (a.stored, a.user, a.credentials, Some(a.state), a.vouch),
            None => match self.pending(id, account).await {
                Ok((stored, user, creds)) => (stored, user, creds, None, None),
                // Past its MFA: the answer may be for the role's shadow factor.
                Err(Error::Conflict(m)) => {
                    return match self.continue_shadow(id, account, input).await? {
                        Some(view) => Ok(view),
                        None => Err(Error::Conflict(m)),
                    };
                }
                Err(e) => return Err(e),
            },
        };
        let provider_id = stored.view.provider.clone().unwrap_or_default();
        let expired = stored.ask_expires_at.is_some_and(|t| t <= ms(now));
        let outcome = if expired {
            Outcome::Denied(DenyReason::Expired, "the prompt expired".into(), None)
        } else {
            let provider = self.provider(&provider_id)?;
            let state = match kept_state {
                Some(state) => state,
                None => self
                    .key
                    .open(
                        stored.challenge.as_deref().unwrap_or_default(),
                        &format!("challenge/{id}"),
                    )?
                    .into(),
            };
            let ctx =
                self.challenge_context(&user, &stored.view, &provider_id, &credential_rows, now)?;
            let step = provider.challenge_next(ctx, state, input).await;
            // Malformed input changes nothing: the user may answer again.
            self.judge(
                step,
                id,
                now,
                &credential_rows,
                &provider_id,
                &stored.account_key,
            )?
        };
        let settings = self.settings.clone();
        let key = Arc::clone(&self.key);
        let relied = Relied::new(&credential_rows, &provider_id, vouch);
        let owner = stored.account_key.clone();
        let view = self
            .store
            .write_planned(on_account(&owner, true, None), move |tx| {
                // The answer counts only if nothing happened to the request meanwhile: every
                // update `apply` makes is conditional on the version read before the provider
                // ran, and a miss undoes the whole write (credential, lockout, events).
                let id = stored.view.id.clone();
                apply(tx, stored, outcome, answered, &relied, &settings, &key, now).map_err(|e| {
                    match e {
                        Error::Conflict(m)
                            if m.starts_with(CREDENTIAL_RACE)
                                || m.starts_with(CREDENTIALS_CHANGED) =>
                        {
                            Error::Conflict(m)
                        }
                        Error::Conflict(_) => {
                            Error::Conflict(format!("request `{id}` {ALREADY_ANSWERED}"))
                        }
                        e => e,
                    }
                })
            })
            .await?;
        Ok(self.after_mfa(view, &user, &credential_rows, None).await)
    }

    /// Lifts a user's lockout from a provider (event 301); true when there was one.
    pub async fn unlock(&self, account: &str, provider: &str, actor: &str) -> Result<bool> {
        let now = ms(self.clock.now());
        let (a, p, actor) = (account.to_string(), provider.to_string(), actor.to_string());
        self.store
            .write(move |tx| {
                let user = users::get(tx, &a)?.ok_or_else(|| Error::NotFound {
                    what: format!("user `{a}`"),
                })?;
                let n = tx.execute(
                    "DELETE FROM lockouts WHERE account_key = $1 AND provider = $2 AND locked_until IS NOT NULL",
                    &[account_key(&a).into(), p.clone().into()],
                )?;
                tx.execute(
                    "UPDATE lockouts SET failures = 0 WHERE account_key = $1 AND provider = $2",
                    &[account_key(&a).into(), p.clone().into()],
                )?;
                if n > 0 {
                    let mut e = NewEvent::new(
                        events::UNLOCKED,
                        Severity::Information,
                        "admin",
                        format!("lockout from `{p}` lifted by `{actor}`"),
                    );
                    e.account = Some(user.account);
                    e.provider = Some(p);
                    events::append(tx, e, now)?;
                }
                Ok(n > 0)
            })
            .await
    }
}

/// The start of the refusal of an approval whose credentials an admin changed meanwhile.
const CREDENTIALS_CHANGED: &str =
    "the credentials changed while the answer was checked (an admin removed or replaced one)";

/// Why an answer was undone when another answer changed its credential first.
const CREDENTIAL_RACE: &str = "this code was used already: another request used the credential meanwhile (a code counts once); answer again with a new code";

/// The end of the refusal of an answer to a request that moved on while it was judged.
const ALREADY_ANSWERED: &str = "changed meanwhile: this prompt was already answered";

/// Prepares an approval's credential update for the write: the stored sealed value it was
/// computed from, and the new value sealed here rather than on the writer's thread.
pub(super) fn with_prior(
    outcome: Outcome,
    rows: &[Row],
    provider: &str,
    key: &SealingKey,
    account_key: &str,
) -> Result<Outcome> {
    Ok(match outcome {
        Outcome::Approved(Some(mut u), detail) => {
            u.prior = rows
                .iter()
                .find(|r| {
                    r.text(0).is_ok_and(|id| id == u.credential.id)
                        && r.text(1).is_ok_and(|p| p == provider)
                })
                .and_then(|r| r.blob(3).ok());
            u.sealed = Some(key.seal(
                u.credential.data.as_slice(),
                &Service::credential_context(account_key, provider, &u.credential.id),
            )?);
            Outcome::Approved(Some(u), detail)
        }
        other => other,
    })
}

/// What a verdict's write checks of the account, read in one statement
/// ([`account_and_role`]): whether its user is enabled, its lockout from the provider, and
/// the provider's credentials in use.
struct AccountNow {
    /// The account is an enabled user.
    enabled: bool,
    /// Until when (Unix ms) it is locked out of the provider, if it is.
    locked_until: Option<i64>,
    /// A lockout or failure count is on record for the provider: a success has one to clear.
    failures_on_record: bool,
    /// The provider's credentials in use (id, sealed), sorted.
    credentials: Vec<(String, Vec<u8>)>,
}

impl AccountNow {
    fn read(tx: &mut dyn Tx, account_key: &str, provider: &str) -> Result<Self> {
        let AccountRead {
            user,
            credentials,
            lockouts,
            ..
        } = account_and_role(tx, AccountOf::Key(account_key), None)?;
        let of_provider = |r: &&Row| r.text(1).is_ok_and(|p| p == provider);
        let lockout = lockouts
            .iter()
            .find(|r| r.text(0).is_ok_and(|p| p == provider));
        let mut credentials = credentials
            .iter()
            .filter(of_provider)
            .filter(|r| usable(r))
            .map(|r| Ok((r.text(0)?, r.blob(3)?)))
            .collect::<Result<Vec<_>>>()?;
        credentials.sort();
        Ok(AccountNow {
            enabled: user.is_some_and(|u| u.enabled),
            locked_until: lockout.and_then(|r| match r.0.get(1) {
                Some(Value::Int(v)) => Some(*v),
                _ => None,
            }),
            failures_on_record: lockout.is_some(),
            credentials,
        })
    }
}

/// Inside an approval's write: the user is still enabled, and the provider's credentials are
/// still the ones it verified against (an admin may have disabled the user or removed a lost
/// key while the answer was on its way); otherwise the approval is refused and undone.
fn still_allowed(s: &Stored, provider: &str, relied: &Relied, now: &AccountNow) -> Result<()> {
    if !now.enabled {
        return Err(Error::Refused(Refusal::UserNotAllowed {
            account: s.account_key.clone(),
        }));
    }
    let current = &now.credentials;
    if *current == relied.seen {
        return Ok(());
    }
    // The same credentials with another value: another request's answer used one (a TOTP
    // code's step, a key's counter) — on this host or another sharing the database.
    let ids = |v: &[(String, Vec<u8>)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    if ids(current) == ids(&relied.seen) {
        return Err(Error::Conflict(format!(
            "{CREDENTIAL_RACE} (request `{}`)",
            s.view.id
        )));
    }
    Err(Error::Conflict(format!(
        "{CREDENTIALS_CHANGED}: `{}` in `{provider}` (request `{}`)",
        s.view.account, s.view.id
    )))
}

/// Refuses the write of a verdict while the request's account is locked out of its
/// provider (a lockout another request's wrong answers set while this one was judged).
fn refuse_if_locked(now_state: &AccountNow, provider: &str, now: Timestamp) -> Result<()> {
    if let Some(until) = now_state.locked_until
        && until > ms(now)
    {
        let until = Timestamp::from_millisecond(until)
            .map(|t| t.to_string())
            .unwrap_or_default();
        return Err(Error::Refused(Refusal::LockedOut {
            provider: provider.to_string(),
            until,
        }));
    }
    Ok(())
}

/// Ends the account's requests waiting for MFA with `provider` when a lockout starts (the one
/// whose answer set it too, when it would have asked again): none of them may take an answer
/// during it (event 101 each).
fn fail_open_requests(tx: &mut dyn Tx, s: &Stored, provider: &str, now: Timestamp) -> Result<()> {
    let open = tx.query(
        &format!(
            "SELECT {COLUMNS} FROM requests WHERE account_key = $1 AND state = 'pending_mfa' AND provider = $2"
        ),
        &[s.account_key.clone().into(), provider.into()],
    )?;
    for row in &open {
        let mut other = from_row(row)?;
        other.view.reason = Some(format!(
            "locked out of `{provider}` after too many wrong answers"
        ));
        transition(tx, &mut other, RequestState::Failed, now)?;
        events::append(
            tx,
            event(
                events::MFA_NOT_COMPLETED,
                Severity::Error,
                &other,
                Some(provider),
                format!(
                    "MFA not completed: the account was locked out of `{provider}` (request `{}`)",
                    s.view.id
                ),
            ),
            ms(now),
        )?;
    }
    Ok(())
}

/// Counts a wrong answer (or a reported fraud) against the account and provider; locks the
/// account out of the provider at the threshold. True when it locked.
fn record_failure(
    tx: &mut dyn Tx,
    s: &Stored,
    provider: &str,
    settings: &Settings,
    now: Timestamp,
    lock_now: bool,
) -> Result<bool> {
    let t = ms(now);
    tx.execute(
        "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, $2, 0, NULL) ON CONFLICT (account_key, provider) DO NOTHING",
        &[s.account_key.clone().into(), provider.into()],
    )?;
    tx.execute(
        "UPDATE lockouts SET failures = failures + 1 WHERE account_key = $1 AND provider = $2",
        &[s.account_key.clone().into(), provider.into()],
    )?;
    let rows = tx.query(
        "SELECT failures FROM lockouts WHERE account_key = $1 AND provider = $2",
        &[s.account_key.clone().into(), provider.into()],
    )?;
    let failures = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
    if lock_now || failures >= settings.lockout_threshold {
        let until = t + settings.lockout_duration.as_millis() as i64;
        tx.execute(
            "UPDATE lockouts SET locked_until = $1, failures = 0 WHERE account_key = $2 AND provider = $3",
            &[Value::Int(until), s.account_key.clone().into(), provider.into()],
        )?;
        let why = if lock_now {
            "fraud was reported"
        } else {
            "too many wrong answers"
        };
        events::append(
            tx,
            event(
                events::LOCKED_OUT,
                Severity::Warning,
                s,
                Some(provider),
                format!(
                    "locked out of `{provider}` for {} s: {why}",
                    settings.lockout_duration.as_secs()
                ),
            ),
            t,
        )?;
        fail_open_requests(tx, s, provider, now)?;
        return Ok(true);
    }
    Ok(false)
}

/// Writes a provider's credential update; false when the stored value is no longer the one
/// the provider saw (another answer advanced it first). With `check_account`, the same
/// statement checks what a verdict's write must find of the account ([`AccountNow`]): the
/// user enabled, no lockout or failure count on record for the provider, and the updated
/// credential the provider's only one in use — one statement for a read and an update; false
/// (nothing written) when any of it does not hold, and the caller then reads the account to
/// say which.
pub(super) fn write_credential_update(
    tx: &mut dyn Tx,
    account_key: &str,
    provider: &str,
    update: &CredentialUpdate,
    key: &SealingKey,
    now: Timestamp,
    check_account: bool,
) -> Result<bool> {
    let sealed = sealed_value(update, key, account_key, provider)?;
    let (sql, params) =
        credential_update(0, account_key, provider, update, sealed, now, check_account);
    Ok(tx.execute(&sql, &params)? > 0)
}

/// The update's value as stored: sealed before the write when it could be, else now.
fn sealed_value(
    update: &CredentialUpdate,
    key: &SealingKey,
    account_key: &str,
    provider: &str,
) -> Result<Vec<u8>> {
    match &update.sealed {
        Some(sealed) => Ok(sealed.clone()),
        None => key.seal(
            update.credential.data.as_slice(),
            &Service::credential_context(account_key, provider, &update.credential.id),
        ),
    }
}

/// The statement (its parameters numbered from `$base + 1`) and parameters of a credential
/// update storing `sealed`, as [`write_credential_update`] describes it.
fn credential_update(
    base: usize,
    account_key: &str,
    provider: &str,
    update: &CredentialUpdate,
    sealed: Vec<u8>,
    now: Timestamp,
    check_account: bool,
) -> (String, Vec<Value>) {
    let c = &update.credential;
    let mut params = vec![
        Value::Blob(sealed),
        Value::Int(ms(now)),
        account_key.into(),
        provider.into(),
        c.id.clone().into(),
        crate::model::limits::cut(&c.label, crate::model::limits::PROVIDER_LABEL_CHARS).into(),
    ];
    let p = |i: usize| format!("${}", base + i);
    let (sealed, at, account, provider, id, label) = (p(1), p(2), p(3), p(4), p(5), p(6));
    let mut sql = format!(
        "UPDATE credentials SET sealed = {sealed}, label = {label}, updated_at = {at} WHERE account_key = {account} AND provider = {provider} AND id = {id}"
    );
    // Replay protection (a TOTP step, a sign count) holds only if two answers cannot both
    // advance the same credential value: the update is conditional on the value the provider
    // saw, and a miss undoes the caller's whole write.
    if let Some(prior) = &update.prior {
        params.push(Value::Blob(prior.clone()));
        sql.push_str(&format!(" AND sealed = {}", p(7)));
    }
    if check_account {
        sql.push_str(&format!(
            " AND flag IS NULL \
             AND EXISTS (SELECT 1 FROM users WHERE account_key = {account} AND enabled <> 0) \
             AND NOT EXISTS (SELECT 1 FROM lockouts WHERE account_key = {account} AND provider = {provider} AND (locked_until IS NOT NULL OR failures <> 0)) \
             AND NOT EXISTS (SELECT 1 FROM credentials o WHERE o.account_key = {account} AND o.provider = {provider} AND o.id <> {id} AND o.flag IS NULL)"
        ));
    }
    (sql, params)
}

/// A credential update with its account check, left for the statement that inserts its
/// request (PostgreSQL: one statement for both), with what its write relied on, to judge it
/// again when it misses.
#[derive(Debug)]
pub(super) struct CheckedWithInsert {
    /// The update, sealed.
    update: CredentialUpdate,
    sealed: Vec<u8>,
    /// The provider, and the credentials it saw.
    provider: String,
    seen: Vec<(String, Vec<u8>)>,
}

impl CheckedWithInsert {
    /// The checked update for request `s`, its parameters numbered from `$base + 1`.
    pub(super) fn statement(
        &self,
        base: usize,
        s: &Stored,
        now: Timestamp,
    ) -> (String, Vec<Value>) {
        credential_update(
            base,
            &s.account_key,
            &self.provider,
            &self.update,
            self.sealed.clone(),
            now,
            true,
        )
    }
}

/// When the check of a [`CheckedWithInsert`] missed (nothing was written): judges the account
/// as a verdict's write does without it — a lockout, a disabled user, other credentials are
/// refused; failures on record are cleared — and writes the credential's update.
pub(super) fn settle(
    tx: &mut dyn Tx,
    s: &Stored,
    c: CheckedWithInsert,
    now: Timestamp,
) -> Result<()> {
    let account = AccountNow::read(tx, &s.account_key, &c.provider)?;
    refuse_if_locked(&account, &c.provider, now)?;
    let relied = Relied {
        seen: c.seen,
        vouch: None,
    };
    still_allowed(s, &c.provider, &relied, &account)?;
    let (sql, params) = credential_update(
        0,
        &s.account_key,
        &c.provider,
        &c.update,
        c.sealed,
        now,
        false,
    );
    if tx.execute(&sql, &params)? == 0 {
        return Err(Error::Conflict(format!(
            "{CREDENTIAL_RACE} (request `{}`)",
            s.view.id
        )));
    }
    if account.failures_on_record {
        tx.execute(
            "UPDATE lockouts SET failures = 0 WHERE account_key = $1 AND provider = $2 AND failures <> 0",
            &[s.account_key.clone().into(), c.provider.into()],
        )?;
    }
    Ok(())
}

/// Sets a user's credential aside for an admin (a suspected copy: its signature counter went
/// backwards), raising event 312 the first time: it is no longer offered to its provider,
/// and blocks new enrolments in it until an admin removes it.
pub(super) fn flag_credential(
    tx: &mut dyn Tx,
    account_key: &str,
    provider: &str,
    id: &str,
    why: &str,
    t: i64,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE credentials SET flag = $1, flagged_at = $2 WHERE account_key = $3 AND provider = $4 AND id = $5 AND flag IS NULL",
        &[
            crate::model::limits::cut(why, 512).into(),
            Value::Int(t),
            account_key.into(),
            provider.into(),
            id.into(),
        ],
    )?;
    if n > 0 {
        let account = users::get(tx, account_key)?
            .map(|u| u.account)
            .unwrap_or_else(|| account_key.to_string());
        let mut e = NewEvent::new(
            events::CREDENTIAL_FLAGGED,
            Severity::Error,
            "activation",
            format!(
                "credential `{id}` in `{provider}` set aside as a suspected copy: {why}; it is no longer offered: remove it (`rolegate user remove-credential`) and have the user enrol again"
            ),
        );
        e.account = Some(account);
        e.provider = Some(provider.to_string());
        events::append(tx, e, t)?;
    }
    Ok(())
}

/// Applies a provider's outcome to a pending-MFA request, inside the writer's transaction.
/// `answered`: the outcome judges a typed answer to an `Ask`, so a wrong one may be asked
/// again; a wrong outcome of a poll (a PIN mistyped on the phone) has no prompt to re-ask.
#[allow(clippy::too_many_arguments)] // one call per path; a struct would only rename them
pub(super) fn apply(
    tx: &mut dyn Tx,
    mut s: Stored,
    outcome: Outcome,
    answered: bool,
    relied: &Relied,
    settings: &Settings,
    key: &SealingKey,
    now: Timestamp,
) -> Result<RequestView> {
    let provider = s.view.provider.clone().unwrap_or_default();
    // Asked before this write changes the account itself (a credential's update, a failure).
    let trust = trusted(tx, &s, relied, now);
    // An approval that advances the provider's one credential in use checks the account in
    // that update's own statement when no read the writer vouches for stands for it
    // (PostgreSQL): one statement instead of two. A request not stored yet (its answer came
    // with it) leaves that update to the statement that inserts it, on PostgreSQL (`insert`):
    // one statement for three. When the check or the update misses, the account is read to
    // tell why, as below.
    let mut outcome = outcome;
    let mut settled = false;
    if !trust
        && let Outcome::Approved(update, _) = &mut outcome
        && let Some(u) = update.as_ref()
        && u.prior.as_ref().is_some_and(|prior| {
            matches!(relied.seen.as_slice(), [(id, seen)] if *id == u.credential.id && seen == prior)
        })
    {
        if s.unsaved && tx.backend() == "postgres" {
            let sealed = sealed_value(u, key, &s.account_key, &provider)?;
            if let Some(u) = update.take() {
                s.checked_with_insert = Some(Box::new(CheckedWithInsert {
                    update: u,
                    sealed,
                    provider: provider.clone(),
                    seen: relied.seen.clone(),
                }));
                settled = true;
            }
        } else if write_credential_update(tx, &s.account_key, &provider, u, key, now, true)? {
            *update = None;
            settled = true;
        }
    }
    // What the account is now, unless a read the writer vouches for stands for it.
    let account_now = match (&outcome, trust || settled) {
        (Outcome::Approved(..) | Outcome::Denied(..), false) => {
            Some(AccountNow::read(tx, &s.account_key, &provider)?)
        }
        _ => None,
    };
    if let Some(a) = &account_now {
        // A verdict lands only while the account is not locked out of the provider, whatever
        // it says: during a lockout a right answer and a wrong one get the same refusal.
        // (A read the writer vouches for saw no lockout, and nothing changed since.)
        refuse_if_locked(a, &provider, now)?;
    }
    match outcome {
        Outcome::Prompt {
            prompt,
            sealed,
            expires_at,
        } => {
            let n = tx.execute(
                "UPDATE requests SET prompt = $1, challenge = $2, ask_expires_at = $3, version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6",
                &[
                    prompt.to_string().into(),
                    Value::Blob(sealed),
                    Value::Int(expires_at),
                    Value::Int(ms(now)),
                    s.view.id.clone().into(),
                    Value::Int(s.version),
                ],
            )?;
            ensure_updated(n, &s.view.id)?;
            s.view.prompt = Some(prompt);
            Ok(s.view)
        }
        Outcome::Approved(credential, detail) => {
            if let Some(a) = &account_now {
                still_allowed(&s, &provider, relied, a)?;
            }
            if let Some(update) = &credential
                && !write_credential_update(tx, &s.account_key, &provider, update, key, now, false)?
            {
                return Err(Error::Conflict(format!(
                    "{CREDENTIAL_RACE} (request `{}`)",
                    s.view.id
                )));
            }
            // Failures are cleared; a read that found none (this write's own, or one the
            // writer vouches for) needs no statement.
            let none = match &account_now {
                Some(a) => !a.failures_on_record,
                // The checked update found no failures on record.
                None if settled => true,
                None => trust && relied.vouch.is_some_and(|v| !v.failures),
            };
            if !none {
                tx.execute(
                    "UPDATE lockouts SET failures = 0 WHERE account_key = $1 AND provider = $2 AND failures <> 0",
                    &[s.account_key.clone().into(), provider.clone().into()],
                )?;
            }
            events::append(
                tx,
                event(
                    events::MFA_COMPLETED,
                    Severity::Information,
                    &s,
                    Some(&provider),
                    if detail.is_empty() {
                        "MFA completed".into()
                    } else {
                        format!("MFA completed: {detail}")
                    },
                ),
                ms(now),
            )?;
            if s.needs_approval {
                s.view.reason = None;
                transition(tx, &mut s, RequestState::PendingApproval, now)?;
            } else {
                activate(tx, &mut s, now)?;
            }
            Ok(s.view)
        }
        Outcome::Fault(detail) => {
            // Not the user's failure: recorded as the provider's, counted nowhere.
            s.view.reason = Some(format!(
                "the factor `{provider}` is unavailable now, so MFA could not be checked (nothing was counted against you): try again later, or choose another factor"
            ));
            transition(tx, &mut s, RequestState::Failed, now)?;
            events::append(
                tx,
                event(
                    events::MFA_NOT_COMPLETED,
                    Severity::Error,
                    &s,
                    Some(&provider),
                    format!(
                        "MFA not completed: the provider failed ({detail}); not counted as the user's failure"
                    ),
                ),
                ms(now),
            )?;
            Ok(s.view)
        }
        Outcome::Denied(reason, message, used) => {
            if reason == DenyReason::Cloned
                && let Some(id) = &used
            {
                flag_credential(tx, &s.account_key, &provider, id, &message, ms(now))?;
            }
            // Only a wrong answer counts toward the attempt cap and the lockout; a replayed
            // code is one the user can correct (the app's next code). A reported fraud locks
            // at once. Anything else (declined, unreachable, expired, not enrolled, another
            // refusal) ends the challenge and counts nowhere.
            let retryable = matches!(reason, DenyReason::WrongAnswer | DenyReason::Replayed);
            if retryable && answered {
                s.wrong_answers += 1;
                let left = settings.max_wrong_answers - s.wrong_answers;
                if left > 0 {
                    // Re-ask the same prompt: the provider's state is still valid.
                    let n = tx.execute(
                        "UPDATE requests SET wrong_answers = $1, version = version + 1, reason = $2, updated_at = $3 WHERE id = $4 AND version = $5",
                        &[
                            Value::Int(s.wrong_answers),
                            format!("{message}; {left} attempt(s) left").into(),
                            Value::Int(ms(now)),
                            s.view.id.clone().into(),
                            Value::Int(s.version),
                        ],
                    )?;
                    ensure_updated(n, &s.view.id)?;
                    if record_failure(tx, &s, &provider, settings, now, false)? {
                        // That wrong answer locked the account out: the request ended with it.
                        return load(tx, &s.view.id)?.map(|s| s.view).ok_or_else(|| {
                            Error::NotFound {
                                what: format!("request `{}`", s.view.id),
                            }
                        });
                    }
                    s.view.reason = Some(format!("{message}; {left} attempt(s) left"));
                    return Ok(s.view);
                }
            }
            let why = if retryable && answered {
                format!("{message}; no attempts left")
            } else {
                message
            };
            // The user reads a sentence they can act on; the provider's words (a number to
            // correct, an upstream's code) are the admin's, in event 101.
            s.view.reason = Some(match reason {
                // The user's own doing: the provider's words tell them what happened.
                DenyReason::WrongAnswer
                | DenyReason::Replayed
                | DenyReason::Declined
                | DenyReason::Expired
                | DenyReason::Fraud => why.clone(),
                other => user_sentence(other, &provider),
            });
            transition(tx, &mut s, RequestState::Failed, now)?;
            if retryable || reason == DenyReason::Fraud {
                record_failure(
                    tx,
                    &s,
                    &provider,
                    settings,
                    now,
                    reason == DenyReason::Fraud,
                )?;
            }
            events::append(
                tx,
                event(
                    events::MFA_NOT_COMPLETED,
                    Severity::Error,
                    &s,
                    Some(&provider),
                    format!(
                        "MFA not completed ({}): {why}{}",
                        deny_name(reason),
                        used.as_deref()
                            .map(|c| format!(" (credential `{c}`)"))
                            .unwrap_or_default()
                    ),
                ),
                ms(now),
            )?;
            Ok(s.view)
        }
    }
}

/// What a user is told when a provider denies for a reason that is not their own doing (its
/// words — a number to correct, an upstream's code — are the admin's, in event 101).
fn user_sentence(reason: DenyReason, provider: &str) -> String {
    match reason {
        DenyReason::Unreachable => format!(
            "the factor `{provider}` could not reach you (no answer, or the number on record may be wrong: ask an admin to check it)"
        ),
        DenyReason::NotEnrolled => format!(
            "you are not enrolled in `{provider}`: enrol first (`rolegate enrol {provider}`), or choose another factor"
        ),
        DenyReason::Cloned => format!(
            "the credential you used with `{provider}` was refused and set aside for an administrator to review: use another one, or ask an admin"
        ),
        _ => format!(
            "MFA with `{provider}` was not completed: try again, or ask an admin (the event log has the reason)"
        ),
    }
}

/// A deny reason's stable name, for the admin's event.
pub(super) fn deny_name(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::WrongAnswer => "wrong_answer",
        DenyReason::Expired => "expired",
        DenyReason::Declined => "declined",
        DenyReason::Unreachable => "unreachable",
        DenyReason::Fraud => "fraud",
        DenyReason::NotEnrolled => "not_enrolled",
        DenyReason::Replayed => "replayed",
        DenyReason::Cloned => "cloned",
        _ => "other",
    }
}
