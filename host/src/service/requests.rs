//! Requests: creating one (the role's policy, the provider's first step, the code sent with
//! the request), reading and closing them.

use super::*;

impl Service {
    /// Creates a request: checks the role's policy, then starts MFA or activates at once.
    pub async fn request(
        &self,
        account: &str,
        role_name: &str,
        justification: &str,
        ttl: Option<SignedDuration>,
        provider_choice: Option<&str>,
    ) -> Result<RequestView> {
        self.request_at(
            account,
            role_name,
            justification,
            ttl,
            provider_choice,
            None,
        )
        .await
    }

    /// Like [`Service::request`], with an optional delayed start (MIM's -RequestedTime):
    /// MFA and approval happen now, the activation begins at `starts_at`.
    pub async fn request_at(
        &self,
        account: &str,
        role_name: &str,
        justification: &str,
        ttl: Option<SignedDuration>,
        provider_choice: Option<&str>,
        starts_at: Option<Timestamp>,
    ) -> Result<RequestView> {
        self.request_as(
            Requester::Account(account.to_string()),
            NewRequest {
                role: role_name,
                justification,
                ttl,
                provider: provider_choice,
                starts_at,
                answer: None,
            },
        )
        .await
        .map(|(_, v)| v)
    }

    /// Like [`Service::request_at`], for a requester known by account or by a bearer token
    /// the API has not verified lately (the token is then verified in the request's own
    /// read, and its caller returned for the API to remember), perhaps with the answer to
    /// the first prompt (see [`NewRequest::answer`]).
    pub async fn request_as(
        &self,
        who: Requester,
        new: NewRequest<'_>,
    ) -> Result<(Option<Caller>, RequestView)> {
        let NewRequest {
            role: role_name,
            justification,
            ttl,
            provider: provider_choice,
            starts_at,
            answer,
        } = new;
        let now = self.clock.now();
        crate::model::limits::check(
            "justification",
            justification,
            self.settings.limits.justification_chars,
            "justification_chars",
        )?;
        let starts_at = match starts_at {
            Some(t) if t <= now => None,
            Some(t) if t > now + MAX_START_DELAY => {
                return Err(Error::Invalid {
                    what: "request".into(),
                    message: format!(
                        "the start {t} is more than {} days away",
                        MAX_START_DELAY.as_hours() / 24
                    ),
                });
            }
            other => other,
        };
        // The account's key, when the caller is known before any read.
        let known_key = match &who {
            Requester::Account(a) => Some(account_key(a)),
            Requester::TokenHash(_) => None,
        };
        if let Some(k) = &known_key {
            self.rate_limit(k, now)?;
        }
        let now_ms = ms(now);
        let changes = self.store.changes().cloned();
        // Rows the writer reports unchanged since they were read need no read (SQLite).
        let cached = changes.as_deref().and_then(|c| {
            let role = self.fresh_role(c, role_name, now_ms)?;
            let rows = self.fresh_account(c, known_key.as_deref()?, now_ms)?;
            Some((role, rows))
        });
        let (account, caller, role, rows) = match (cached, &who) {
            (Some((role, rows)), Requester::Account(a)) => (a.clone(), None, role, rows),
            _ => {
                self.read_for_request(who, role_name, now_ms, changes.as_deref())
                    .await?
            }
        };
        let key = account_key(&account);
        // The writes below change this account's rows only (and append events).
        let owner = key.clone();
        if caller.is_some() {
            self.rate_limit(&key, now)?;
        }
        let credential_rows = rows.credentials.clone();
        let lockouts = &rows.lockouts[..];
        let enrolled: Vec<String> = credential_rows
            .iter()
            .map(|r| r.text(1))
            .collect::<Result<_>>()?;
        let user = match rows.user.clone() {
            Some(u) if u.enabled => u,
            _ => {
                return Err(Error::Refused(Refusal::UserNotAllowed {
                    account: account.clone(),
                }));
            }
        };
        // The availability window applies to when the activation starts.
        let admission = role.admit(&user.account, justification, ttl, starts_at.unwrap_or(now))?;
        let id = time_ordered_id(ms(now))?;
        let mut stored = Stored {
            view: RequestView {
                id: id.clone(),
                // As the user spells it; the key is kept beside it for look-ups.
                account: user.account.clone(),
                role: role.name.clone(),
                state: String::new(),
                justification: justification.trim().to_string(),
                ttl_s: admission.ttl.as_secs(),
                provider: None,
                prompt: None,
                expires_at: None,
                reason: None,
                created_at: ms(now),
                starts_at: starts_at.map(ms),
                shadow: None,
            },
            state: RequestState::initial(&admission, starts_at.is_some()),
            challenge: None,
            ask_expires_at: None,
            version: 0,
            wrong_answers: 0,
            needs_approval: admission.needs_approval,
            updated_at: ms(now),
            reference: None,
            unsaved: false,
            checked_with_insert: None,
            account_key: key.clone(),
        };
        if !admission.needs_mfa && answer.is_some() {
            return Err(Error::Invalid {
                what: "answer".into(),
                message: format!(
                    "role `{}` asks for no MFA: send the request without an answer",
                    role.name
                ),
            });
        }
        if !admission.needs_mfa {
            stored.view.state = stored.state.to_string();
            if matches!(stored.state, RequestState::Active | RequestState::Scheduled) {
                let from = starts_at.map_or(ms(now), ms);
                stored.view.expires_at = Some(from + admission.ttl.as_millis() as i64);
            }
            let s = stored.clone_for_write();
            return self
                .store
                .write_planned(on_account(&owner, true, None), move |tx| {
                    insert(tx, &s)?;
                    created_events(tx, &s)?;
                    Ok(s.view)
                })
                .await
                .map(|v| (caller, v));
        }
        // MFA: pick the provider the user can use.
        let usability = |p: &str| {
            let Some(lp) = self.providers.get(p) else {
                return Usability::Unavailable;
            };
            if let Some(at) = lp.retired_at(now) {
                return Usability::Retired(at);
            }
            match lp.info() {
                None => Usability::Unavailable,
                Some(info) if info.needs_phone && user.phone.is_none() => Usability::NoPhone,
                Some(info) if info.needs_enrolment && !enrolled.iter().any(|e| e == p) => {
                    Usability::NotEnrolled
                }
                Some(_) => Usability::Usable,
            }
        };
        let chosen = role.choose_provider(provider_choice, usability)?;
        let locked_until = |p: &str| -> Result<Option<i64>> {
            for l in lockouts {
                if l.text(0)? == p
                    && let Some(Value::Int(until)) = l.0.get(1)
                    && *until > ms(now)
                {
                    return Ok(Some(*until));
                }
            }
            Ok(None)
        };
        if let Some(until) = locked_until(&chosen)? {
            let until = Timestamp::from_millisecond(until)
                .map(|t| t.to_string())
                .unwrap_or_default();
            return Err(Error::Refused(Refusal::LockedOut {
                provider: chosen,
                until,
            }));
        }
        // The providers to try, in order: the chosen one, then — when the role falls back —
        // the role's others that the user can use and is not locked out of.
        let mut order = vec![chosen.clone()];
        if role.when_factor_down == FactorDown::Fallback {
            for p in &role.providers {
                if *p != chosen && usability(p) == Usability::Usable && locked_until(p)?.is_none() {
                    order.push(p.clone());
                }
            }
        }
        // A second live request is refused before a provider that sends or calls starts
        // anything for it (a text for a refused request). Quick providers (brief computation,
        // no I/O: TOTP, WebAuthn, a card's challenge) start nothing: when every provider this
        // request may try is one, the write's own check suffices — a read fewer on the hot path.
        let quick = |p: &String| {
            self.providers
                .get(p)
                .and_then(|p| p.info())
                .is_some_and(|i| i.quick)
        };
        if !order.iter().all(quick) {
            self.refuse_second(&key, &role.name, ms(now)).await?;
        }
        let mut fallbacks: Vec<Fallback> = Vec::new();
        let mut answer = answer;
        let (provider_id, provider, kept, step) = loop {
            let provider_id = order.remove(0);
            let provider = self.provider(&provider_id)?;
            let ctx =
                self.challenge_context(&user, &stored.view, &provider_id, &credential_rows, now)?;
            // Refused before the provider starts anything (an SMS provider would send its
            // code). (A typed answer only: the SDK's check fails `answer_ahead` on others.)
            let ahead_ok = provider
                .info()
                .is_some_and(rolegate_sdk::ProviderInfo::takes_answer_ahead);
            if answer.is_some() && !ahead_ok {
                if !fallbacks.is_empty() {
                    // The answer was for the provider that is down: this one asks anew.
                    answer = None;
                } else {
                    return Err(Error::Invalid {
                        what: "answer".into(),
                        message: format!(
                            "provider `{provider_id}` sends or shows what its prompt's answer depends on, so it cannot be answered with the request: send the request without an answer, then answer its prompt"
                        ),
                    });
                }
            }
            // The context again for judging an answer sent with the request, if any.
            let kept = answer.as_ref().map(|_| ctx.clone());
            let step = provider.challenge_start(ctx).await;
            match step {
                Err(e) if e.is_provider_fault() && !order.is_empty() => {
                    let to = order[0].clone();
                    tracing::warn!(
                        provider = %provider_id,
                        fallback = %to,
                        role = %role.name,
                        "the provider failed to start a challenge; falling back: {e}"
                    );
                    fallbacks.push(Fallback {
                        from: provider_id,
                        to,
                        why: e.to_string(),
                    });
                    // An answer sent with the request was for the first provider only.
                    answer = None;
                }
                step => break (provider_id, provider, kept, step),
            }
        };
        let vouch = rows.stamp.map(|stamp| Vouch {
            stamp,
            read_at: rows.read_at,
            failures: lockouts
                .iter()
                .any(|l| l.text(0).is_ok_and(|p| p == provider_id)),
        });
        stored.view.provider = Some(provider_id.clone());
        stored.view.state = RequestState::PendingMfa.to_string();
        stored.state = RequestState::PendingMfa;
        let ahead = answer.zip(kept);
        // The state as the answer needs it: kept beside its sealed copy, not opened again.
        let plain_state = match &step {
            Ok(Step::Ask { state, .. } | Step::Wait { state, .. }) => Some(state.clone()),
            _ => None,
        };
        stored.reference = provider_reference(&step);
        let outcome = match step {
            Ok(step) => with_prior(
                self.outcome(step, &id, now)?,
                &credential_rows,
                &provider_id,
                &self.key,
                &key,
            )?,
            Err(e) => Outcome::Fault(e.to_string()),
        };
        let relied = Relied::new(&credential_rows, &provider_id, vouch);
        if let (
            Some((input, ctx)),
            Outcome::Prompt {
                prompt,
                sealed,
                expires_at,
            },
            Some(state),
        ) = (ahead, &outcome, &plain_state)
        {
            // The answer came with the request: the provider judges it now, and the request
            // is stored with its outcome in one durable write, as create and answer would.
            // (A first step that is no `Ask` — a verdict at once, a wait — leaves it unused.)
            // Malformed input stores nothing: the user may send it again.
            let step = provider.challenge_continue(ctx, state.clone(), input).await;
            let judged = self.judge(step, &id, now, &credential_rows, &provider_id, &key)?;
            let asked = stored.asking(prompt, sealed, *expires_at);
            let settings = self.settings.clone();
            let key = Arc::clone(&self.key);
            // An approval is one statement (the checked update with the insert), found here
            // so that PostgreSQL's writer sends it with its batch's others.
            let lead = (self.store.wants_leads() && matches!(judged, Outcome::Approved(..)))
                .then(|| {
                    let write = AtOnce {
                        asked: asked.clone_for_write(),
                        judged: judged.clone(),
                        fallbacks: fallbacks.clone(),
                        relied: relied.clone(),
                    };
                    crate::store::lead_of(|tx| write.run(tx, &settings, &key, now))
                })
                .flatten();
            let write = AtOnce {
                asked,
                judged,
                fallbacks,
                relied,
            };
            let view = self
                .store
                .write_planned(on_account(&owner, true, lead), move |tx| {
                    write.run(tx, &settings, &key, now)
                })
                .await?;
            let view = self
                .after_mfa(view, &user, &credential_rows, Some(&role.shadow))
                .await;
            return Ok((caller, view));
        }
        let settings = self.settings.clone();
        let key = Arc::clone(&self.key);
        // The usual case: the request is stored with its first prompt, and kept for the answer.
        let s = match &outcome {
            Outcome::Prompt {
                prompt,
                sealed,
                expires_at,
            } => stored.asking(prompt, sealed, *expires_at),
            _ => stored,
        };
        let awaiting = match (&outcome, plain_state) {
            (Outcome::Prompt { .. }, Some(state)) => Some(Awaiting {
                stored: s.clone_for_write(),
                user: user.clone(),
                credentials: credential_rows.clone(),
                vouch,
                state,
            }),
            _ => None,
        };
        // A request still waiting for its answer is cheap to lose in a power cut (the user
        // asks again); anything that decides it is fsync'd before the caller hears of it.
        let durable = !matches!(outcome, Outcome::Prompt { .. });
        // The request with its first prompt is one statement (the insert), found here so
        // that PostgreSQL's writer sends it with its batch's others.
        let lead = (self.store.wants_leads() && matches!(outcome, Outcome::Prompt { .. }))
            .then(|| crate::store::lead_of(|tx| insert(tx, &s)))
            .flatten();
        let view = self
            .store
            .write_planned(on_account(&owner, durable, lead), move |tx| {
                insert(tx, &s)?;
                created_events(tx, &s)?;
                fallback_events(tx, &s, &fallbacks)?;
                match outcome {
                    // In one row write: the request with its first prompt.
                    Outcome::Prompt { .. } => Ok(s.view),
                    outcome => apply(tx, s, outcome, false, &relied, &settings, &key, now),
                }
            })
            .await?;
        if let Some(a) = awaiting {
            self.remember(a, ms(now));
            return Ok((caller, view));
        }
        let view = self
            .after_mfa(view, &user, &credential_rows, Some(&role.shadow))
            .await;
        Ok((caller, view))
    }

    /// Reads what a create decides on, in one read (the token too, when it needs a look), and
    /// keeps the role and the account's rows for the next creates (SQLite).
    async fn read_for_request(
        &self,
        who: Requester,
        role_name: &str,
        now_ms: i64,
        changes: Option<&Changes>,
    ) -> Result<(String, Option<Caller>, Arc<Role>, Arc<AccountRows>)> {
        let known_key = match &who {
            Requester::Account(a) => Some(account_key(a)),
            Requester::TokenHash(_) => None,
        };
        // A role the writer reports unchanged is not read again (a caller known only by a
        // token not seen lately: the account's rows are read with the token).
        let fresh_role = changes.and_then(|c| self.fresh_role(c, role_name, now_ms));
        // Stamped before the read: a change committed meanwhile leaves what it read stale.
        // The account's too when only the token names it: the writer then trusts the read.
        let stamp = changes.map(Changes::stamp);
        let role_stamp = stamp.filter(|_| fresh_role.is_none());
        if fresh_role.is_none() && self.cached_revision(role_name) == 0 {
            self.load_role_once(role_name).await;
        }
        let known = self.cached_revision(role_name);
        // One statement, pipelined on PostgreSQL with the other requests' reads.
        let role = fresh_role.is_none().then_some((role_name, known));
        let key = match &who {
            Requester::Account(a) => account_key(a),
            Requester::TokenHash(h) => h.clone(),
        };
        let of = match &who {
            Requester::Account(_) => AccountOf::Key(&key),
            Requester::TokenHash(_) => AccountOf::Token { hash: &key, now_ms },
        };
        let (sql, params) = account_and_role_sql(of, role);
        let rows = self.store.query(sql, params).await?;
        let read = account_read(of, role.is_some(), rows)?;
        let account = match who {
            Requester::Account(a) => a,
            // Its user is read with it, and a disabled or missing one refused below.
            Requester::TokenHash(_) => match &read.caller {
                Some(c) => c.account.clone(),
                None => return Err(Error::Unauthorized),
            },
        };
        let AccountRead {
            caller,
            user,
            credentials,
            lockouts,
            role: spec,
        } = read;
        let role = match (fresh_role, spec) {
            (Some(role), _) => role,
            (None, spec) => {
                let (revision, policy) = spec.flatten().ok_or_else(|| Error::NotFound {
                    what: format!("role `{role_name}`"),
                })?;
                let trimmed = role_name.trim();
                let role = self.role_from(trimmed, revision, policy).await?;
                if let Some(stamp) = role_stamp
                    && trimmed == role_name
                {
                    self.role_read(role_name, revision, stamp, now_ms);
                }
                role
            }
        };
        let rows = Arc::new(AccountRows {
            user,
            credentials,
            lockouts,
            stamp,
            read_at: now_ms,
        });
        if let Some(k) = known_key
            && stamp.is_some()
        {
            self.account_read(&k, Arc::clone(&rows));
        }
        Ok((account, caller, role, rows))
    }

    /// Closes a request: an active one ends its activation; a pending one is cancelled.
    pub async fn close(&self, id: &str, actor: &str, is_admin: bool) -> Result<RequestView> {
        let now = self.clock.now();
        let (id, actor) = (id.to_string(), actor.to_string());
        self.store
            .write(move |tx| {
                let mut s = load(tx, &id)?
                    .filter(|s| is_admin || users::same_account(&s.view.account, &actor))
                    .ok_or_else(|| Error::NotFound {
                        what: format!("request `{id}`"),
                    })?;
                let next = match s.state {
                    RequestState::Active | RequestState::Scheduled => RequestState::Closed,
                    RequestState::PendingMfa | RequestState::PendingApproval => {
                        RequestState::Cancelled
                    }
                    other => {
                        return Err(Error::Conflict(format!(
                            "request `{id}` is {other} already"
                        )));
                    }
                };
                s.view.reason = Some(format!("closed by `{actor}`"));
                transition(tx, &mut s, next, now)?;
                let message = s.view.reason.clone().unwrap_or_default();
                events::append(
                    tx,
                    event(
                        events::REQUEST_CLOSED,
                        Severity::Information,
                        &s,
                        None,
                        message,
                    ),
                    ms(now),
                )?;
                Ok(s.view)
            })
            .await
    }

    /// A request, for its owner (or anyone when `account` is `None`).
    pub async fn get(&self, id: &str, account: Option<&str>) -> Result<RequestView> {
        let i = id.to_string();
        let now = ms(self.clock.now());
        let s = self
            .store
            .read(move |tx| {
                let Some(mut s) = load(tx, &i)? else {
                    return Ok(None);
                };
                // Past its MFA, a request may still have its shadow factor's prompt open.
                if s.state != RequestState::PendingMfa && s.view.provider.is_some() {
                    s.view.shadow = shadow::open_shadow(tx, &i, now)?;
                }
                Ok(Some(s))
            })
            .await?;
        match s {
            Some(s) if account.is_none_or(|a| users::same_account(a, &s.view.account)) => {
                Ok(s.view)
            }
            _ => Err(Error::NotFound {
                what: format!("request `{id}`"),
            }),
        }
    }

    /// The caller's own requests, newest first.
    pub async fn requests_of(&self, account: &str, limit: i64) -> Result<Vec<RequestView>> {
        self.list_requests(RequestFilter {
            account: Some(account.to_string()),
            limit,
            ..RequestFilter::default()
        })
        .await
    }

    /// Requests, newest first, as the filter narrows them (MIM's `Get-PAMRequest`): the
    /// caller's own, or for an admin anyone's.
    pub async fn list_requests(&self, f: RequestFilter) -> Result<Vec<RequestView>> {
        self.store
            .read(move |tx| {
                let mut sql = format!("SELECT {COLUMNS} FROM requests WHERE 1 = 1");
                let mut params: Vec<Value> = Vec::new();
                if let Some(a) = &f.account {
                    params.push(account_key(a).into());
                    sql.push_str(&format!(" AND account_key = ${}", params.len()));
                }
                if let Some(r) = &f.role {
                    params.push(r.trim().into());
                    sql.push_str(&format!(" AND role = ${}", params.len()));
                }
                if !f.states.is_empty() {
                    // The names come from the enum, never from the caller.
                    let names: Vec<String> = f
                        .states
                        .iter()
                        .map(|s| format!("'{}'", s.as_str()))
                        .collect();
                    sql.push_str(&format!(" AND state IN ({})", names.join(", ")));
                }
                if let Some(t) = f.before_ms {
                    params.push(Value::Int(t));
                    sql.push_str(&format!(" AND created_at < ${}", params.len()));
                }
                params.push(Value::Int(f.limit.clamp(1, 10_000)));
                sql.push_str(&format!(
                    " ORDER BY created_at DESC, id DESC LIMIT ${}",
                    params.len()
                ));
                tx.query(&sql, &params)?
                    .iter()
                    .map(|r| from_row(r).map(|s| s.view))
                    .collect()
            })
            .await
    }

    /// Refuses a new request while the user has one for the role that holds it or waits for
    /// an approver: read before a provider starts anything (an SMS sent for a request refused
    /// after it would be a text for nothing); the write checks again ([`insert`]).
    async fn refuse_second(&self, key: &str, role: &str, now_ms: i64) -> Result<()> {
        let (k, r) = (key.to_string(), role.to_string());
        let live = self
            .store
            .read(move |tx| live_requests(tx, &k, &r, now_ms))
            .await?;
        match live.iter().find(|s| s.state != RequestState::PendingMfa) {
            Some(first) => Err(already_live(first)),
            None => Ok(()),
        }
    }
}

/// Which requests [`Service::list_requests`] returns.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this user's (any spelling of the account).
    pub account: Option<String>,
    /// Only this role's.
    pub role: Option<String>,
    /// Only in these states; any state when empty.
    pub states: Vec<RequestState>,
    /// Only those created before this time (Unix ms): the next page.
    pub before_ms: Option<i64>,
    /// At most this many (1 to 10,000).
    pub limit: i64,
}

/// The states in which a request holds its role or is on its way to: one per user and role.
pub(super) const LIVE: &str = "('pending_mfa', 'pending_approval', 'scheduled', 'active')";

/// The user's live requests for the role (one, but for rows from before the rule): those
/// whose activation has not run out (the sweep may not have passed yet) and, waiting for
/// MFA, whose prompt is still open.
pub(super) fn live_requests(
    tx: &mut dyn Tx,
    key: &str,
    role: &str,
    now_ms: i64,
) -> Result<Vec<Stored>> {
    let mut live = Vec::new();
    for row in tx.query(
        &format!(
            "SELECT {COLUMNS} FROM requests WHERE account_key = $1 AND role = $2 AND state IN {LIVE}"
        ),
        &[key.into(), role.into()],
    )? {
        let s = from_row(&row)?;
        let ran_out = s.view.expires_at.is_some_and(|e| e <= now_ms);
        let prompt_gone = s.state == RequestState::PendingMfa
            && s.ask_expires_at.is_some_and(|e| e <= now_ms);
        if !ran_out && !prompt_gone {
            live.push(s);
        }
    }
    Ok(live)
}

/// Makes room for a new request: one that holds the role, is scheduled or waits for an
/// approver refuses it (with its id and end); one still waiting for its MFA answer — a
/// prompt abandoned in a closed tab, usually — is cancelled in its favour (event 205
/// naming the new request), so an abandoned prompt does not keep the user from the role.
pub(super) fn make_room(tx: &mut dyn Tx, new: &Stored) -> Result<()> {
    let now_ms = new.view.created_at;
    let live = live_requests(tx, &new.account_key, &new.view.role, now_ms)?;
    if let Some(first) = live.iter().find(|s| s.state != RequestState::PendingMfa) {
        return Err(already_live(first));
    }
    let now = Timestamp::from_millisecond(now_ms).map_err(|e| Error::Invalid {
        what: "request".into(),
        message: e.to_string(),
    })?;
    for mut old in live {
        old.view.reason = Some(format!(
            "superseded by request {} before its MFA was answered",
            new.view.id
        ));
        transition(tx, &mut old, RequestState::Cancelled, now)?;
        let message = old.view.reason.clone().unwrap_or_default();
        events::append(
            tx,
            event(
                events::REQUEST_CLOSED,
                Severity::Information,
                &old,
                old.view.provider.clone().as_deref(),
                message,
            ),
            now_ms,
        )?;
    }
    Ok(())
}

/// The refusal of a second request: the first one's id, where it stands and until when.
pub(super) fn already_live(first: &Stored) -> Error {
    let at = |ms: Option<i64>| {
        ms.and_then(|m| Timestamp::from_millisecond(m).ok())
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let v = &first.view;
    let standing = match first.state {
        RequestState::Active => format!("active until {}", at(v.expires_at)),
        RequestState::Scheduled => format!(
            "scheduled from {} until {}",
            at(v.starts_at),
            at(v.expires_at)
        ),
        RequestState::PendingApproval => "waiting for an approver".to_string(),
        _ => format!("waiting for its MFA until {}", at(first.ask_expires_at)),
    };
    Error::Conflict(format!(
        "you already have request {} for role `{}` ({standing}): one at a time per role; close it first (`rolegate request close {}`)",
        v.id, v.role, v.id
    ))
}

/// The write of a request whose answer came with it: stored with its outcome at once.
struct AtOnce {
    asked: Stored,
    judged: Outcome,
    fallbacks: Vec<Fallback>,
    relied: Relied,
}

impl AtOnce {
    fn run(
        self,
        tx: &mut dyn Tx,
        settings: &Settings,
        key: &SealingKey,
        now: Timestamp,
    ) -> Result<RequestView> {
        let AtOnce {
            mut asked,
            judged,
            fallbacks,
            relied,
        } = self;
        // Approved: the row is written once, by the transition that grants it.
        asked.unsaved = matches!(judged, Outcome::Approved(..));
        if !asked.unsaved {
            insert(tx, &asked)?;
        }
        created_events(tx, &asked)?;
        fallback_events(tx, &asked, &fallbacks)?;
        apply(tx, asked, judged, true, &relied, settings, key, now)
    }
}

/// A provider that failed to start a challenge, and the one tried next (the role falls back).
#[derive(Clone)]
struct Fallback {
    from: String,
    to: String,
    /// The failure, for the admin.
    why: String,
}

/// Records each fallback of a new request, in the request's own write.
fn fallback_events(tx: &mut dyn Tx, s: &Stored, fallbacks: &[Fallback]) -> Result<()> {
    for f in fallbacks {
        events::append(
            tx,
            event(
                events::MFA_FELL_BACK,
                Severity::Warning,
                s,
                Some(&f.from),
                format!(
                    "MFA fell back from `{}` to `{}` (the role's rule when a factor is down): `{}` failed: {}",
                    f.from, f.to, f.from, f.why
                ),
            ),
            s.view.created_at,
        )?;
    }
    Ok(())
}
