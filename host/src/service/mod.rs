//! The activation service: requests, MFA through the role's provider, approval, expiry.
//!
//! Provider calls happen outside database transactions; their outcome is then written with a
//! version check, so two answers to one prompt, two approvals or an expiry racing a close can
//! never both take effect. Every write that matters carries its event in the same transaction.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rolegate_sdk::message::{ChallengeContext, Credential, EnrollContext, UserContext};
use rolegate_sdk::{Bytes, DenyReason, Input, Prompt, Step, Verdict};
use serde::Serialize;

use crate::activation::RequestState;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::{self, NewEvent, Severity};
use crate::plugins::Providers;
use crate::role::{Refusal, Role, Usability};
use crate::roles;
use crate::secrets::{SealingKey, time_ordered_id};
use crate::store::Store;
use crate::store::changes::{self, Changes, Kind, Stamp};
use crate::store::{Row, Tx, Value};
use crate::tokens::{self, Caller};
use crate::users::{self, User, account_key};

/// Furthest a delayed start may lie ahead.
const MAX_START_DELAY: SignedDuration = SignedDuration::from_hours(24 * 30);

/// Limits the host enforces for every provider.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Country code for phone numbers written without one.
    pub default_country_code: u16,
    /// Wrong answers allowed in one challenge before it fails.
    pub max_wrong_answers: i64,
    /// Wrong answers (per user and provider, across all their requests) that lock the user
    /// out of the provider: the last of them locks. Provider faults never count.
    pub lockout_threshold: i64,
    /// How long a lockout lasts.
    pub lockout_duration: SignedDuration,
    /// How long a request may wait for an approver.
    pub approval_timeout: SignedDuration,
    /// Longest a prompt stays open, whatever the provider asks for.
    pub max_prompt_lifetime: SignedDuration,
    /// Requests one account may create per minute (a burst of this many, refilled evenly).
    pub requests_per_minute: u32,
    /// Lengths of free-text fields.
    pub limits: crate::limits::TextLimits,
}

impl Settings {
    /// What a new or changed user is checked against (country code, display name's limit).
    pub fn user_rules(&self) -> users::UserRules {
        users::UserRules {
            default_country_code: self.default_country_code,
            display_name_chars: self.limits.display_name_chars,
            allow_lookalike: false,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_country_code: 1,
            max_wrong_answers: 3,
            lockout_threshold: 5,
            lockout_duration: SignedDuration::from_mins(15),
            approval_timeout: SignedDuration::from_hours(24),
            max_prompt_lifetime: SignedDuration::from_mins(10),
            requests_per_minute: 30,
            limits: crate::limits::TextLimits::default(),
        }
    }
}

/// A request as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    /// Request id.
    pub id: String,
    /// Requester's account key.
    pub account: String,
    /// Role.
    pub role: String,
    /// State name.
    pub state: String,
    /// Justification.
    pub justification: String,
    /// Activation length, seconds.
    pub ttl_s: i64,
    /// The MFA provider, when MFA applies.
    pub provider: Option<String>,
    /// What the user must do now (a prompt, or a wait status), while MFA is pending.
    pub prompt: Option<serde_json::Value>,
    /// When the activation ends (Unix ms), once active.
    pub expires_at: Option<i64>,
    /// Why it ended the way it did, or what the last answer did.
    pub reason: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// When the activation starts, for a delayed start (Unix ms).
    pub starts_at: Option<i64>,
}

/// An enrolment step as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrolmentView {
    /// The provider.
    pub provider: String,
    /// Whether a credential was stored.
    pub done: bool,
    /// What to show or ask next.
    pub prompt: Option<serde_json::Value>,
    /// Opaque state to send back with the answer (sealed; it expires with the prompt).
    pub state: Option<String>,
    /// The stored credential's id, once done.
    pub credential: Option<String>,
    /// Why it did not complete.
    pub message: Option<String>,
}

struct Stored {
    view: RequestView,
    state: RequestState,
    challenge: Option<Vec<u8>>,
    ask_expires_at: Option<i64>,
    version: i64,
    wrong_answers: i64,
    needs_approval: bool,
    updated_at: i64,
}

const COLUMNS: &str = "id, account_key, role, state, justification, ttl_s, provider, prompt, expires_at, reason, created_at, challenge, ask_expires_at, version, wrong_answers, needs_approval, updated_at, starts_at";

fn from_row(r: &Row) -> Result<Stored> {
    let state: RequestState = r.text(3)?.parse()?;
    let prompt = r
        .opt_text(7)?
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok());
    let challenge = match &r.0.get(11) {
        Some(Value::Blob(b)) => Some(b.clone()),
        _ => None,
    };
    let opt_int = |i: usize| match r.0.get(i) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    };
    Ok(Stored {
        view: RequestView {
            id: r.text(0)?,
            account: r.text(1)?,
            role: r.text(2)?,
            state: state.to_string(),
            justification: r.text(4)?,
            ttl_s: r.int(5)?,
            provider: r.opt_text(6)?,
            prompt,
            expires_at: opt_int(8),
            reason: r.opt_text(9)?,
            created_at: r.int(10)?,
            starts_at: opt_int(17),
        },
        state,
        challenge,
        ask_expires_at: opt_int(12),
        version: r.int(13)?,
        wrong_answers: r.int(14)?,
        needs_approval: r.int(15)? != 0,
        updated_at: r.int(16)?,
    })
}

fn load(tx: &mut dyn Tx, id: &str) -> Result<Option<Stored>> {
    let rows = tx.query(
        &format!("SELECT {COLUMNS} FROM requests WHERE id = $1"),
        &[id.into()],
    )?;
    rows.first().map(from_row).transpose()
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn event(
    id: i64,
    severity: Severity,
    s: &Stored,
    provider: Option<&str>,
    message: String,
) -> NewEvent {
    let mut e = NewEvent::new(id, severity, "activation", message);
    e.account = Some(s.view.account.clone());
    e.role = Some(s.view.role.clone());
    e.request = Some(s.view.id.clone());
    e.provider = provider.map(String::from);
    e
}

/// What a provider's step means for the stored request.
enum Outcome {
    /// A new prompt (or wait) with its sealed state.
    Prompt {
        prompt: serde_json::Value,
        sealed: Vec<u8>,
        expires_at: i64,
    },
    /// The factor was verified, perhaps with a credential update.
    Approved(Option<CredentialUpdate>),
    /// The factor was not verified.
    Denied(DenyReason, String),
    /// The provider failed (an error, a crash, a deadline, an outage, a refused
    /// configuration): the factor was neither verified nor refused, and nothing counts
    /// against the user. The text is for admins.
    Fault(String),
}

/// A stored credential as admins and its user see it: never its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialView {
    /// The credential's id among the user's credentials for the provider.
    pub id: String,
    /// The provider it belongs to.
    pub provider: String,
    /// The name the provider gave it ("Authenticator app (SHA1)").
    pub label: String,
    /// When it was stored (ms since the epoch).
    pub created_at: i64,
}

/// A provider's credential update on its way to the store.
#[derive(Debug)]
struct CredentialUpdate {
    credential: Credential,
    /// The update sealed for storage (sealed before the write, off the writer's thread).
    sealed: Option<Vec<u8>>,
    /// The stored sealed value the provider saw: the update lands only over it.
    prior: Option<Vec<u8>>,
}

/// The activation service.
pub struct Service {
    store: Arc<Store>,
    providers: Arc<Providers>,
    clock: Arc<dyn Clock>,
    key: Arc<SealingKey>,
    settings: Settings,
    buckets: crate::caches::Buckets,
    /// Parsed roles by name, with the policy text they were parsed from: a role is parsed
    /// again only when its stored policy changes.
    role_cache: std::sync::Mutex<std::collections::HashMap<String, CachedRole>>,
    /// The rows a create reads per account, kept while the store's writer reports them
    /// unchanged (SQLite; see [`Changes`]), by account key.
    accounts: std::sync::Mutex<std::collections::HashMap<String, Arc<AccountRows>>>,
    /// Requests this host created that wait for their first answer, by id: the answer then
    /// needs no read, and its write re-checks all it relies on (see [`Awaiting`]).
    awaiting: std::sync::Mutex<std::collections::HashMap<String, Awaiting>>,
}

/// A parsed role and the revision it was parsed from.
struct CachedRole {
    revision: i64,
    role: Arc<Role>,
    /// When known unchanged since: the key's stamp and the read's time (Unix ms).
    fresh: Option<(Stamp, i64)>,
}

/// What a create reads of the requesting account.
struct AccountRows {
    user: Option<User>,
    credentials: Vec<Row>,
    /// The provider and end (or NULL) of each lockout or failure count on record.
    lockouts: Vec<Row>,
    /// The account key's stamp before the read, and the read's time (Unix ms).
    stamp: Option<Stamp>,
    read_at: i64,
}

/// A request waiting for its first answer, as this host wrote it. The answer's write checks
/// that nothing it relied on changed meanwhile: the request's version (an admin's close, the
/// expiry sweep, another host), the user still enabled, the provider's credentials the same.
struct Awaiting {
    stored: Stored,
    user: User,
    credentials: Vec<Row>,
    /// The create's read of the account, for the answer's write to trust.
    vouch: Option<Vouch>,
    /// The provider's state for the answer, as `stored` holds it sealed.
    state: Bytes,
}

/// What the answer's write relied on: the provider's credentials as the provider saw them,
/// and, when the writer can vouch for it, the read of the account they came from.
struct Relied {
    /// The sealed values of the provider's credentials, sorted.
    seen: Vec<Vec<u8>>,
    /// The read, when the store keeps an account of changed keys (SQLite).
    vouch: Option<Vouch>,
}

impl Relied {
    /// The provider's credentials among a user's rows, and the read they came from.
    fn new(rows: &[Row], provider: &str, vouch: Option<Vouch>) -> Self {
        let mut seen: Vec<Vec<u8>> = rows
            .iter()
            .filter(|r| r.text(1).is_ok_and(|p| p == provider))
            .filter_map(|r| r.blob(3).ok())
            .collect();
        seen.sort();
        Self { seen, vouch }
    }
}

/// A read of an account's rows (user, credentials, lockouts) that the SQLite writer can
/// vouch for later: if no write changed the account since, and the read is younger than
/// [`crate::store::changes::MAX_AGE_MS`], the write trusts it instead of reading it again.
#[derive(Debug, Clone, Copy)]
struct Vouch {
    /// The account key's epoch before the read.
    stamp: Stamp,
    /// When it was read (Unix ms).
    read_at: i64,
    /// Whether the read found failures or a lockout for the request's provider.
    failures: bool,
}

/// What a create asks for.
#[derive(Debug, Clone, Default)]
pub struct NewRequest<'a> {
    /// The role's name.
    pub role: &'a str,
    /// Why (-Justification).
    pub justification: &'a str,
    /// The activation's length, when not the role's default.
    pub ttl: Option<SignedDuration>,
    /// The MFA provider, when the role accepts several.
    pub provider: Option<&'a str>,
    /// A delayed start (MIM's -RequestedTime).
    pub starts_at: Option<Timestamp>,
    /// The answer to the first prompt, sent with the request: accepted from providers that
    /// know it is the user's to give before any challenge ([`rolegate_sdk::ProviderInfo::answer_ahead`], TOTP),
    /// and judged at once: one round trip instead of two.
    pub answer: Option<Input>,
}

/// Who asks for a request.
#[derive(Debug, Clone)]
pub enum Requester {
    /// An account the caller has verified.
    Account(String),
    /// A bearer token still to verify (in the request's own read), by its hash as stored.
    TokenHash(String),
}

/// Requests kept in [`Service::awaiting`] at most: beyond, answers read the store as before.
const AWAITING_MAX: usize = 4096;

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// A service over a store, the loaded providers, a clock and the sealing key.
    pub fn new(
        store: Arc<Store>,
        providers: Arc<Providers>,
        clock: Arc<dyn Clock>,
        key: Arc<SealingKey>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            providers,
            clock,
            key,
            settings,
            buckets: crate::caches::Buckets::default(),
            role_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            accounts: std::sync::Mutex::new(std::collections::HashMap::new()),
            awaiting: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Keeps a request that waits for its first answer (dropping the expired ones when full).
    fn remember(&self, a: Awaiting, now_ms: i64) {
        if let Ok(mut m) = self.awaiting.lock() {
            if m.len() >= AWAITING_MAX {
                m.retain(|_, a| a.stored.ask_expires_at.is_some_and(|t| t > now_ms));
                if m.len() >= AWAITING_MAX {
                    return;
                }
            }
            m.insert(a.stored.view.id.clone(), a);
        }
    }

    /// Takes the kept request `id` if `account` made it (another caller's attempt leaves it).
    fn recall(&self, id: &str, account: &str) -> Option<Awaiting> {
        let mut m = self.awaiting.lock().ok()?;
        if !users::same_account(&m.get(id)?.stored.view.account, account) {
            return None;
        }
        m.remove(id)
    }

    /// The revision of the cached role with this name (0: none cached).
    fn cached_revision(&self, name: &str) -> i64 {
        self.role_cache
            .lock()
            .ok()
            .and_then(|c| c.get(name.trim()).map(|r| r.revision))
            .unwrap_or(0)
    }

    /// The role at `revision`: parsed from `policy` when the store sent it (the cached
    /// revision was stale), else the cached one — read afresh if the cache lost it meanwhile.
    async fn role_from(
        &self,
        name: &str,
        revision: i64,
        policy: Option<String>,
    ) -> Result<Arc<Role>> {
        let cached = self.role_cache.lock().ok().and_then(|c| {
            c.get(name)
                .filter(|r| r.revision == revision)
                .map(|r| Arc::clone(&r.role))
        });
        let (revision, policy) = match (policy, cached) {
            (Some(policy), _) => (revision, policy),
            (None, Some(role)) => return Ok(role),
            (None, None) => {
                let n = name.to_string();
                let fresh = self
                    .store
                    .read(move |tx| roles::get_if_changed(tx, &n, 0))
                    .await?;
                match fresh {
                    Some((rev, Some(policy))) => (rev, policy),
                    _ => {
                        return Err(Error::NotFound {
                            what: format!("role `{name}`"),
                        });
                    }
                }
            }
        };
        let role = Arc::new(roles::parse(name, &policy)?.to_role()?);
        if let Ok(mut cache) = self.role_cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(
                name.to_string(),
                CachedRole {
                    revision,
                    role: Arc::clone(&role),
                    fresh: None,
                },
            );
        }
        Ok(role)
    }

    /// The cached role `name`, when the store's writer has not changed it since it was read.
    fn fresh_role(&self, c: &Changes, name: &str, now_ms: i64) -> Option<Arc<Role>> {
        let cache = self.role_cache.lock().ok()?;
        let r = cache.get(name)?;
        let (stamp, read_at) = r.fresh?;
        c.still_fresh(Kind::Role, name, stamp, read_at, now_ms)
            .then(|| Arc::clone(&r.role))
    }

    /// Marks the cached role `name` at `revision` as read unchanged after `stamp` was taken.
    fn role_read(&self, name: &str, revision: i64, stamp: Stamp, now_ms: i64) {
        if let Ok(mut cache) = self.role_cache.lock()
            && let Some(r) = cache.get_mut(name)
            && r.revision == revision
        {
            r.fresh = Some((stamp, now_ms));
        }
    }

    /// The cached rows of `key`, when the store's writer has not changed them since.
    fn fresh_account(&self, c: &Changes, key: &str, now_ms: i64) -> Option<Arc<AccountRows>> {
        let cache = self.accounts.lock().ok()?;
        let rows = cache.get(key)?;
        c.still_fresh(Kind::Account, key, rows.stamp?, rows.read_at, now_ms)
            .then(|| Arc::clone(rows))
    }

    /// Keeps the rows of `key` read after their stamp was taken.
    fn account_read(&self, key: &str, rows: Arc<AccountRows>) {
        if let Ok(mut cache) = self.accounts.lock() {
            let now = rows.read_at;
            crate::caches::make_room(&mut cache, crate::caches::MAX_ENTRIES, |_, r| {
                !changes::young(r.read_at, now)
            });
            cache.insert(key.to_string(), rows);
        }
    }

    /// Takes one request from the account's token bucket, or says when the next one is due.
    fn rate_limit(&self, key: &str, now: Timestamp) -> Result<()> {
        self.buckets
            .take(key, self.settings.requests_per_minute, ms(now))
            .map_err(|retry_after_s| Error::Refused(Refusal::RateLimited { retry_after_s }))
    }

    /// The store, for admin operations.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The service's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn seal_state(&self, state: &Bytes, request: &str) -> Result<Vec<u8>> {
        self.key
            .seal(state.as_slice(), &format!("challenge/{request}"))
    }

    fn credential_context(account_key: &str, provider: &str, id: &str) -> String {
        format!("credential/{account_key}/{provider}/{id}")
    }

    /// Unseals stored credential rows (id, provider, label, sealed) of one provider.
    fn unseal(&self, account_key: &str, provider: &str, rows: &[Row]) -> Result<Vec<Credential>> {
        let mut out = Vec::new();
        for r in rows {
            if r.text(1)? != provider {
                continue;
            }
            let id = r.text(0)?;
            let data = self.key.open(
                &r.blob(3)?,
                &Self::credential_context(account_key, provider, &id),
            )?;
            out.push(Credential {
                id,
                label: r.text(2)?,
                data: data.into(),
            });
        }
        Ok(out)
    }

    fn user_context(user: &User) -> UserContext {
        UserContext {
            account: user.account.clone(),
            display_name: user.display_name.clone(),
            phone: user.phone.clone(),
            email: user.email.clone(),
        }
    }

    /// What a provider's step after the user's input means, its credential update sealed;
    /// input the provider calls malformed is the caller's error, and changes nothing.
    fn judge(
        &self,
        step: Result<Step>,
        request: &str,
        now: Timestamp,
        rows: &[Row],
        provider: &str,
        account_key: &str,
    ) -> Result<Outcome> {
        match step {
            Ok(step) => with_prior(
                self.outcome(step, request, now)?,
                rows,
                provider,
                &self.key,
                account_key,
            ),
            Err(e)
                if e.provider_error().map(|p| p.kind)
                    == Some(rolegate_sdk::ErrorKind::BadInput) =>
            {
                Err(e)
            }
            Err(e) => Ok(Outcome::Fault(e.to_string())),
        }
    }

    fn outcome(&self, step: Step, request: &str, now: Timestamp) -> Result<Outcome> {
        let cap = ms(now) + self.settings.max_prompt_lifetime.as_millis() as i64;
        Ok(match step {
            Step::Ask {
                prompt,
                state,
                expires_in,
            } => {
                let asked = ms(now).saturating_add((expires_in as i64).saturating_mul(1000));
                Outcome::Prompt {
                    prompt: serde_json::to_value(&prompt).unwrap_or_default(),
                    sealed: self.seal_state(&state, request)?,
                    expires_at: asked.min(cap),
                }
            }
            Step::Wait {
                state,
                poll_after_ms,
                status,
            } => Outcome::Prompt {
                prompt: serde_json::json!({"kind": "wait", "status": status, "poll_after_ms": poll_after_ms}),
                sealed: self.seal_state(&state, request)?,
                expires_at: cap,
            },
            Step::Done {
                verdict: Verdict::Approved { credential },
            } => Outcome::Approved(credential.map(|credential| CredentialUpdate {
                credential,
                sealed: None,
                prior: None,
            })),
            Step::Done {
                verdict: Verdict::Denied { reason, message },
            } => Outcome::Denied(reason, message),
            _ => Outcome::Denied(
                DenyReason::Other,
                "the provider sent an unknown step".into(),
            ),
        })
    }

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
        crate::limits::check(
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
                account: key.clone(),
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
            },
            state: RequestState::initial(&admission, starts_at.is_some()),
            challenge: None,
            ask_expires_at: None,
            version: 0,
            wrong_answers: 0,
            needs_approval: admission.needs_approval,
            updated_at: ms(now),
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
                .write(move |tx| {
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
        let provider_id = role.choose_provider(provider_choice, usability)?;
        let vouch = rows.stamp.map(|stamp| Vouch {
            stamp,
            read_at: rows.read_at,
            failures: lockouts
                .iter()
                .any(|l| l.text(0).is_ok_and(|p| p == provider_id)),
        });
        for l in lockouts {
            if l.text(0)? == provider_id
                && let Some(Value::Int(until)) = l.0.get(1)
                && *until > ms(now)
            {
                let until = Timestamp::from_millisecond(*until)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                return Err(Error::Refused(Refusal::LockedOut {
                    provider: provider_id,
                    until,
                }));
            }
        }
        let provider =
            self.providers
                .get(&provider_id)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    what: format!("provider `{provider_id}`"),
                })?;
        let ctx = ChallengeContext {
            user: Self::user_context(&user),
            role: role.name.clone(),
            request_id: id.clone(),
            credentials: self.unseal(&key, &provider_id, &credential_rows)?,
            origin: None,
            now: now.as_second().max(0) as u64,
        };
        // Refused before the provider starts anything (an SMS provider would send its code).
        // (A typed answer only: the SDK's check fails `answer_ahead` on other responders.)
        let ahead_ok = provider
            .info()
            .is_some_and(rolegate_sdk::ProviderInfo::takes_answer_ahead);
        if answer.is_some() && !ahead_ok {
            return Err(Error::Invalid {
                what: "answer".into(),
                message: format!(
                    "provider `{provider_id}` sends or shows what its prompt's answer depends on, so it cannot be answered with the request: send the request without an answer, then answer its prompt"
                ),
            });
        }
        stored.view.provider = Some(provider_id.clone());
        stored.view.state = RequestState::PendingMfa.to_string();
        stored.state = RequestState::PendingMfa;
        let ahead = answer.map(|input| (input, ctx.clone()));
        let step = provider.challenge_start(ctx).await;
        // The state as the answer needs it: kept beside its sealed copy, not opened again.
        let plain_state = match &step {
            Ok(Step::Ask { state, .. } | Step::Wait { state, .. }) => Some(state.clone()),
            _ => None,
        };
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
            let view = self
                .store
                .write(move |tx| {
                    insert(tx, &asked)?;
                    created_events(tx, &asked)?;
                    apply(tx, asked, judged, true, &relied, &settings, &key, now)
                })
                .await?;
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
        let view = self
            .store
            .write_with(durable, move |tx| {
                insert(tx, &s)?;
                created_events(tx, &s)?;
                match outcome {
                    // In one row write: the request with its first prompt.
                    Outcome::Prompt { .. } => Ok(s.view),
                    outcome => apply(tx, s, outcome, false, &relied, &settings, &key, now),
                }
            })
            .await?;
        if let Some(a) = awaiting {
            self.remember(a, ms(now));
        }
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
        let known = self.cached_revision(role_name);
        let r = fresh_role.is_none().then(|| role_name.to_string());
        let (account, caller, spec, user, credentials, lockouts) = self
            .store
            .read(move |tx| {
                let (account, caller) = match who {
                    Requester::Account(a) => (a, None),
                    // Its user is read below, and a disabled or missing one refused.
                    Requester::TokenHash(h) => match tokens::holder_of_hash(tx, &h, now_ms)? {
                        Some(c) => (c.account.clone(), Some(c)),
                        None => return Err(Error::Unauthorized),
                    },
                };
                let key = account_key(&account);
                let spec = match r {
                    Some(r) => Some(roles::get_if_changed(tx, &r, known)?),
                    None => None,
                };
                let user = users::get(tx, &account)?;
                let creds = credential_rows(tx, &key)?;
                let lockouts = tx.query(
                    "SELECT provider, locked_until FROM lockouts WHERE account_key = $1 AND (locked_until IS NOT NULL OR failures <> 0)",
                    &[key.into()],
                )?;
                Ok((account, caller, spec, user, creds, lockouts))
            })
            .await?;
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
        let now = self.clock.now();
        // Only a typed answer can be wrong and asked again; a poll's outcome ends the call.
        let answered = input.is_some();
        let (stored, user, credential_rows, kept_state, vouch) = match self.recall(id, account) {
            Some(a) => (a.stored, a.user, a.credentials, Some(a.state), a.vouch),
            None => {
                let (stored, user, creds) = self.pending(id, account).await?;
                (stored, user, creds, None, None)
            }
        };
        let provider_id = stored.view.provider.clone().unwrap_or_default();
        let expired = stored.ask_expires_at.is_some_and(|t| t <= ms(now));
        let outcome = if expired {
            Outcome::Denied(DenyReason::Expired, "the prompt expired".into())
        } else {
            let provider =
                self.providers
                    .get(&provider_id)
                    .cloned()
                    .ok_or_else(|| Error::NotFound {
                        what: format!("provider `{provider_id}`"),
                    })?;
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
            let ctx = ChallengeContext {
                user: Self::user_context(&user),
                role: stored.view.role.clone(),
                request_id: id.to_string(),
                credentials: self.unseal(&stored.view.account, &provider_id, &credential_rows)?,
                origin: None,
                now: now.as_second().max(0) as u64,
            };
            let step = match input {
                Some(input) => provider.challenge_continue(ctx, state, input).await,
                None => provider.challenge_poll(ctx, state).await,
            };
            // Malformed input changes nothing: the user may answer again.
            self.judge(
                step,
                id,
                now,
                &credential_rows,
                &provider_id,
                &stored.view.account,
            )?
        };
        let settings = self.settings.clone();
        let key = Arc::clone(&self.key);
        let relied = Relied::new(&credential_rows, &provider_id, vouch);
        self.store
            .write(move |tx| {
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
                        Error::Conflict(_) => Error::Conflict(format!(
                            "request `{id}` changed meanwhile: this prompt was already answered"
                        )),
                        e => e,
                    }
                })
            })
            .await
    }

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
            crate::limits::check(
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
        self.store
            .write(move |tx| {
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
                    ensure_enabled(tx, &s.view.account)?;
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
        let s = self.store.read(move |tx| load(tx, &i)).await?;
        match s {
            Some(s) if account.is_none_or(|a| users::same_account(a, &s.view.account)) => {
                Ok(s.view)
            }
            _ => Err(Error::NotFound {
                what: format!("request `{id}`"),
            }),
        }
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

    /// The caller's own requests, newest first.
    pub async fn requests_of(&self, account: &str, limit: i64) -> Result<Vec<RequestView>> {
        let a = account_key(account);
        self.store
            .read(move |tx| {
                tx.query(
                    &format!("SELECT {COLUMNS} FROM requests WHERE account_key = $1 ORDER BY created_at DESC LIMIT $2"),
                    &[a.into(), Value::Int(limit.clamp(1, 10_000))],
                )?
                .iter()
                .map(|r| from_row(r).map(|s| s.view))
                .collect()
            })
            .await
    }

    /// Begins enrolling `account` in a provider that needs it.
    pub async fn enroll_start(&self, account: &str, provider_id: &str) -> Result<EnrolmentView> {
        let now = self.clock.now();
        let (user, provider, credential_rows) = self.enrolment_parts(account, provider_id).await?;
        let ctx = EnrollContext {
            credentials: self.unseal(&account_key(account), provider_id, &credential_rows)?,
            user: Self::user_context(&user),
            origin: None,
            now: now.as_second().max(0) as u64,
        };
        let step = provider.enroll_start(ctx).await?;
        self.enrolment_step(&user, provider_id, step, now).await
    }

    /// Continues an enrolment with the user's input and the state `enroll_start` returned.
    pub async fn enroll_continue(
        &self,
        account: &str,
        provider_id: &str,
        state: &str,
        input: Input,
    ) -> Result<EnrolmentView> {
        let now = self.clock.now();
        let (user, provider, credential_rows) = self.enrolment_parts(account, provider_id).await?;
        let key = account_key(account);
        let refused = || Error::Invalid {
            what: "enrolment".into(),
            message: "the enrolment state is not valid; start again".into(),
        };
        let sealed = hex::decode(state.trim()).map_err(|_| refused())?;
        let opened = self
            .key
            .open(&sealed, &format!("enrolment/{key}/{provider_id}"))
            .map_err(|_| refused())?;
        if opened.len() < 8 {
            return Err(refused());
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&opened[..8]);
        if i64::from_be_bytes(expiry) <= ms(now) {
            return Err(Error::Conflict("the enrolment expired; start again".into()));
        }
        let ctx = EnrollContext {
            credentials: self.unseal(&key, provider_id, &credential_rows)?,
            user: Self::user_context(&user),
            origin: None,
            now: now.as_second().max(0) as u64,
        };
        let step = provider
            .enroll_continue(ctx, opened[8..].to_vec().into(), input)
            .await?;
        self.enrolment_step(&user, provider_id, step, now).await
    }

    async fn enrolment_parts(
        &self,
        account: &str,
        provider_id: &str,
    ) -> Result<(User, Arc<crate::plugins::LoadedProvider>, Vec<Row>)> {
        let (user, rows) = self.user_and_credentials(account).await?;
        let user = match user {
            Some(u) if u.enabled => u,
            _ => {
                return Err(Error::Refused(Refusal::UserNotAllowed {
                    account: account.to_string(),
                }));
            }
        };
        let provider = self
            .providers
            .get(provider_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("provider `{provider_id}`"),
            })?;
        if let Some(at) = provider.retired_at(self.clock.now()) {
            return Err(Error::Refused(Refusal::ProviderRetired {
                provider: provider_id.to_string(),
                at: at.to_string(),
            }));
        }
        if !provider.info().is_some_and(|i| i.needs_enrolment) {
            return Err(Error::Invalid {
                what: "enrolment".into(),
                message: format!("provider `{provider_id}` needs no enrolment"),
            });
        }
        // A user's API token is one factor: it must not be enough to add a second factor
        // beside the one they hold (or to swap it). An admin removes the old credential first.
        if let Some(existing) = rows
            .iter()
            .find(|r| r.text(1).is_ok_and(|p| p == provider_id))
        {
            return Err(Error::Conflict(format!(
                "`{account}` is enrolled in `{provider_id}` already (credential `{}`); an admin removes that credential before a new enrolment",
                existing.text(0)?
            )));
        }
        Ok((user, provider, rows))
    }

    /// The user and their stored credential rows, in one read.
    async fn user_and_credentials(&self, account: &str) -> Result<(Option<User>, Vec<Row>)> {
        let a = account.to_string();
        self.store
            .read(move |tx| Ok((users::get(tx, &a)?, credential_rows(tx, &account_key(&a))?)))
            .await
    }

    /// A user's credentials, without their private data (for admins and the user).
    pub async fn credentials(&self, account: &str) -> Result<Vec<CredentialView>> {
        let (user, rows) = self.user_and_credentials(account).await?;
        if user.is_none() {
            return Err(Error::NotFound {
                what: format!("user `{account}`"),
            });
        }
        rows.iter()
            .map(|r| {
                Ok(CredentialView {
                    id: r.text(0)?,
                    provider: r.text(1)?,
                    label: r.text(2)?,
                    created_at: r.int(4)?,
                })
            })
            .collect()
    }

    /// Removes one of a user's credentials (a lost phone or key), raising event 311.
    pub async fn remove_credential(
        &self,
        account: &str,
        provider: &str,
        id: &str,
        actor: &str,
    ) -> Result<()> {
        let now = ms(self.clock.now());
        let (a, p, i, actor) = (
            account.to_string(),
            provider.to_string(),
            id.to_string(),
            actor.to_string(),
        );
        self.store
            .write(move |tx| {
                let user = users::get(tx, &a)?.ok_or_else(|| Error::NotFound {
                    what: format!("user `{a}`"),
                })?;
                let n = tx.execute(
                    "DELETE FROM credentials WHERE account_key = $1 AND provider = $2 AND id = $3",
                    &[account_key(&a).into(), p.clone().into(), i.clone().into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound {
                        what: format!("credential `{i}` of `{a}` in `{p}`"),
                    });
                }
                let mut e = NewEvent::new(
                    events::CREDENTIAL_REMOVED,
                    Severity::Warning,
                    "admin",
                    format!("credential `{i}` in `{p}` removed by `{actor}`"),
                );
                e.account = Some(user.account);
                e.provider = Some(p);
                events::append(tx, e, now)?;
                Ok(())
            })
            .await
    }

    async fn enrolment_step(
        &self,
        user: &User,
        provider_id: &str,
        step: Step,
        now: Timestamp,
    ) -> Result<EnrolmentView> {
        let key = account_key(&user.account);
        let mut view = EnrolmentView {
            provider: provider_id.to_string(),
            done: false,
            prompt: None,
            state: None,
            credential: None,
            message: None,
        };
        match step {
            Step::Ask {
                prompt,
                state,
                expires_in,
            } => {
                let cap = self.settings.max_prompt_lifetime.as_millis() as i64;
                let expiry = ms(now) + ((expires_in as i64).saturating_mul(1000)).min(cap);
                let mut blob = expiry.to_be_bytes().to_vec();
                blob.extend_from_slice(state.as_slice());
                let sealed = self
                    .key
                    .seal(&blob, &format!("enrolment/{key}/{provider_id}"))?;
                view.prompt = Some(serde_json::to_value(&prompt).unwrap_or_default());
                view.state = Some(hex::encode(sealed));
            }
            Step::Done {
                verdict:
                    Verdict::Approved {
                        credential: Some(c),
                    },
            } => {
                let (p, account) = (provider_id.to_string(), user.account.clone());
                let id = c.id.clone();
                let sealing = Arc::clone(&self.key);
                self.store
                    .write(move |tx| {
                        store_credential(tx, &sealing, &account, &p, &c, ms(now))?;
                        let mut e = NewEvent::new(
                            events::ENROLLED,
                            Severity::Information,
                            "enrolment",
                            format!("enrolled in `{p}` (credential `{}`)", c.id),
                        );
                        e.account = Some(account);
                        e.provider = Some(p);
                        events::append(tx, e, ms(now))
                    })
                    .await?;
                view.done = true;
                view.credential = Some(id);
            }
            Step::Done {
                verdict: Verdict::Denied { message, .. },
            } => view.message = Some(format!("{message}; start the enrolment again")),
            _ => {
                view.message = Some("the provider ended the enrolment without a credential".into())
            }
        }
        Ok(view)
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

    /// The providers, with whether they are loaded and healthy.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The service's clock (injected in tests).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Ends what is due: activations past their end, prompts past their expiry, approvals
    /// past their timeout. Runs at start-up (the host may have been down) and periodically.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let timeout = self.settings.approval_timeout.as_millis() as i64;
        self.store
            .write(move |tx| {
                let t = ms(now);
                let due = tx.query(
                    &format!(
                        "SELECT {COLUMNS} FROM requests WHERE (state = 'active' AND expires_at <= $1) OR (state = 'scheduled' AND starts_at <= $1) OR (state = 'pending_mfa' AND ask_expires_at <= $1) OR (state = 'pending_approval' AND updated_at <= $2) LIMIT 10000"
                    ),
                    &[Value::Int(t), Value::Int(t - timeout)],
                )?;
                let mut n = 0;
                for row in &due {
                    let mut s = from_row(row)?;
                    // What is due for each state: where it goes, why, and which event says so.
                    let (next, reason, id, severity, message) = match s.state {
                        RequestState::Active => (RequestState::Expired, Some("the activation ran its time"), events::REQUEST_EXPIRED, Severity::Information, "activation expired"),
                        // Its time came; expires_at was set from the start when granted.
                        RequestState::Scheduled => (RequestState::Active, None, events::REQUEST_ACTIVATED, Severity::Information, "activated (delayed start)"),
                        RequestState::PendingMfa => (RequestState::Failed, Some("MFA was not completed in time"), events::MFA_NOT_COMPLETED, Severity::Error, "MFA not completed: the prompt expired"),
                        RequestState::PendingApproval => (RequestState::Rejected, Some("approval timed out"), events::REQUEST_REJECTED, Severity::Warning, "approval timed out"),
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
                Ok(n)
            })
            .await
    }
}

impl Stored {
    fn clone_for_write(&self) -> Stored {
        Stored {
            view: self.view.clone(),
            state: self.state,
            challenge: self.challenge.clone(),
            ask_expires_at: self.ask_expires_at,
            version: self.version,
            wrong_answers: self.wrong_answers,
            needs_approval: self.needs_approval,
            updated_at: self.updated_at,
        }
    }

    /// The new request as `insert` stores it with its first prompt (version 1), for the
    /// answer's write.
    fn asking(&self, prompt: &serde_json::Value, sealed: &[u8], expires_at: i64) -> Stored {
        let mut kept = self.clone_for_write();
        kept.view.prompt = Some(prompt.clone());
        kept.challenge = Some(sealed.to_vec());
        kept.ask_expires_at = Some(expires_at);
        kept.version = 1;
        kept
    }
}

/// A user's credential rows (id, provider, label, sealed, created_at), oldest first.
fn credential_rows(tx: &mut dyn Tx, account_key: &str) -> Result<Vec<Row>> {
    // Sorted here rather than by ORDER BY: with that clause, SQLite (STAT4 build) re-plans
    // the statement on every run, which cost a tenth of the whole request path.
    let mut rows = tx.query(
        "SELECT id, provider, label, sealed, created_at FROM credentials WHERE account_key = $1",
        &[account_key.into()],
    )?;
    rows.sort_by_key(|r| r.int(4).unwrap_or(0));
    Ok(rows)
}

/// Inserts a new request as `s` has it: with its first prompt (text, sealed provider state,
/// when it expires) when [`Stored::asking`] made it, in the same row.
fn insert(tx: &mut dyn Tx, s: &Stored) -> Result<()> {
    tx.execute(
        "INSERT INTO requests (id, account_key, role, state, justification, ttl_s, provider, prompt, challenge, ask_expires_at, expires_at, reason, created_at, updated_at, version, wrong_answers, needs_approval, starts_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $12, $13, 0, $14, $15)",
        &[
            s.view.id.clone().into(),
            s.view.account.clone().into(),
            s.view.role.clone().into(),
            s.state.as_str().into(),
            s.view.justification.clone().into(),
            Value::Int(s.view.ttl_s),
            s.view.provider.clone().into(),
            s.view.prompt.as_ref().map(|p| p.to_string()).into(),
            s.challenge.clone().map(Value::Blob).unwrap_or(Value::Null),
            s.ask_expires_at.map(Value::Int).unwrap_or(Value::Null),
            s.view.expires_at.map(Value::Int).unwrap_or(Value::Null),
            Value::Int(s.view.created_at),
            Value::Int(s.version),
            s.needs_approval.into(),
            s.view.starts_at.map(Value::Int).unwrap_or(Value::Null),
        ],
    )?;
    Ok(())
}

fn created_events(tx: &mut dyn Tx, s: &Stored) -> Result<()> {
    let t = s.view.created_at;
    events::append(
        tx,
        event(
            events::REQUEST_CREATED,
            Severity::Information,
            s,
            s.view.provider.as_deref(),
            format!("requested for {} s: {}", s.view.ttl_s, s.view.justification),
        ),
        t,
    )?;
    if s.state == RequestState::Active {
        events::append(
            tx,
            event(
                events::REQUEST_ACTIVATED,
                Severity::Information,
                s,
                None,
                "activated".into(),
            ),
            t,
        )?;
    }
    Ok(())
}

/// Stores (or replaces) a user's credential for a provider, sealed with the host's key —
/// what a finished enrolment does; also for bulk imports of enrolments made elsewhere.
pub fn store_credential(
    tx: &mut dyn Tx,
    key: &SealingKey,
    account: &str,
    provider: &str,
    credential: &Credential,
    now_ms: i64,
) -> Result<()> {
    let account_key = account_key(account);
    let sealed = key.seal(
        credential.data.as_slice(),
        &Service::credential_context(&account_key, provider, &credential.id),
    )?;
    tx.execute(
        "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (account_key, provider, id) DO UPDATE SET label = excluded.label, sealed = excluded.sealed, updated_at = excluded.updated_at",
        &[
            account_key.into(),
            provider.into(),
            credential.id.clone().into(),
            crate::limits::cut(&credential.label, crate::limits::PROVIDER_LABEL_CHARS).into(),
            Value::Blob(sealed),
            Value::Int(now_ms),
        ],
    )?;
    Ok(())
}

/// The start of the refusal of an approval whose credentials an admin changed meanwhile.
const CREDENTIALS_CHANGED: &str =
    "the credentials changed while the answer was checked (an admin removed or replaced one)";

/// Why an answer was undone when another answer changed its credential first.
const CREDENTIAL_RACE: &str =
    "the credential changed meanwhile (another request used it): answer again with a new code";

/// Prepares an approval's credential update for the write: the stored sealed value it was
/// computed from, and the new value sealed here rather than on the writer's thread.
fn with_prior(
    outcome: Outcome,
    rows: &[Row],
    provider: &str,
    key: &SealingKey,
    account_key: &str,
) -> Result<Outcome> {
    Ok(match outcome {
        Outcome::Approved(Some(mut u)) => {
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
            Outcome::Approved(Some(u))
        }
        other => other,
    })
}

/// Inside an approval's write: the user is still enabled, and the provider's credentials are
/// still the ones it verified against (an admin may have disabled the user or removed a lost
/// key while the answer was on its way); otherwise the approval is refused and undone.
/// A read the writer vouches for (`trusted`: nothing changed the account since) stands for
/// a new one.
fn still_allowed(
    tx: &mut dyn Tx,
    s: &Stored,
    provider: &str,
    relied: &Relied,
    trusted: bool,
) -> Result<()> {
    if trusted {
        return Ok(());
    }
    ensure_enabled(tx, &s.view.account)?;
    let rows = tx.query(
        "SELECT sealed FROM credentials WHERE account_key = $1 AND provider = $2",
        &[s.view.account.clone().into(), provider.into()],
    )?;
    let mut current: Vec<Vec<u8>> = rows.iter().filter_map(|r| r.blob(0).ok()).collect();
    current.sort();
    if current != relied.seen {
        return Err(Error::Conflict(format!(
            "{CREDENTIALS_CHANGED}: `{}` in `{provider}` (request `{}`)",
            s.view.account, s.view.id
        )));
    }
    Ok(())
}

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
pub fn in_flight(tx: &mut dyn Tx) -> Result<crate::metrics::InFlight> {
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

/// Refuses, inside a write, an account (by key) that is no enabled user.
fn ensure_enabled(tx: &mut dyn Tx, key: &str) -> Result<()> {
    let user = tx.query(
        "SELECT enabled FROM users WHERE account_key = $1",
        &[key.into()],
    )?;
    if !matches!(user.first().map(|r| r.int(0)), Some(Ok(e)) if e != 0) {
        return Err(Error::Refused(Refusal::UserNotAllowed {
            account: key.to_string(),
        }));
    }
    Ok(())
}

/// Whether the writer vouches for the read the request's write relied on.
fn trusted(tx: &dyn Tx, s: &Stored, relied: &Relied, now: Timestamp) -> bool {
    relied.vouch.is_some_and(|v| {
        tx.unchanged_since(Kind::Account, &s.view.account, v.stamp, v.read_at, ms(now))
    })
}

/// Fails with a conflict when a version-checked update changed no row: someone else moved
/// the request first.
fn ensure_updated(n: u64, id: &str) -> Result<()> {
    if n == 0 {
        return Err(Error::Conflict(format!("request `{id}` changed meanwhile")));
    }
    Ok(())
}

/// Writes a state change, checked against the state machine and the stored version.
fn transition(tx: &mut dyn Tx, s: &mut Stored, next: RequestState, now: Timestamp) -> Result<()> {
    s.state.transition(next)?;
    let n = tx.execute(
        "UPDATE requests SET state = $1, version = version + 1, updated_at = $2, expires_at = $3, reason = $4, prompt = NULL, challenge = NULL, ask_expires_at = NULL WHERE id = $5 AND version = $6",
        &[
            next.as_str().into(),
            Value::Int(ms(now)),
            s.view.expires_at.map(Value::Int).unwrap_or(Value::Null),
            s.view.reason.clone().into(),
            s.view.id.clone().into(),
            Value::Int(s.version),
        ],
    )?;
    ensure_updated(n, &s.view.id)?;
    s.version += 1;
    s.state = next;
    s.view.state = next.to_string();
    s.view.prompt = None;
    s.updated_at = ms(now);
    Ok(())
}

fn activate(tx: &mut dyn Tx, s: &mut Stored, now: Timestamp) -> Result<()> {
    if let Some(start) = s.view.starts_at.filter(|t| *t > ms(now)) {
        // Granted, but it begins later: expiry's sweep makes it active then.
        s.view.expires_at = Some(start + s.view.ttl_s * 1000);
        return transition(tx, s, RequestState::Scheduled, now);
    }
    s.view.expires_at = Some(ms(now) + s.view.ttl_s * 1000);
    transition(tx, s, RequestState::Active, now)?;
    events::append(
        tx,
        event(
            events::REQUEST_ACTIVATED,
            Severity::Information,
            s,
            None,
            "activated".into(),
        ),
        ms(now),
    )?;
    Ok(())
}

/// Refuses the write of a verdict while the request's account is locked out of its
/// provider (a lockout another request's wrong answers set while this one was judged).
fn refuse_if_locked(tx: &mut dyn Tx, s: &Stored, provider: &str, now: Timestamp) -> Result<()> {
    let rows = tx.query(
        "SELECT locked_until FROM lockouts WHERE account_key = $1 AND provider = $2",
        &[s.view.account.clone().into(), provider.into()],
    )?;
    if let Some(Value::Int(until)) = rows.first().and_then(|r| r.0.first())
        && *until > ms(now)
    {
        let until = Timestamp::from_millisecond(*until)
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
        &[s.view.account.clone().into(), provider.into()],
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
        &[s.view.account.clone().into(), provider.into()],
    )?;
    tx.execute(
        "UPDATE lockouts SET failures = failures + 1 WHERE account_key = $1 AND provider = $2",
        &[s.view.account.clone().into(), provider.into()],
    )?;
    let rows = tx.query(
        "SELECT failures FROM lockouts WHERE account_key = $1 AND provider = $2",
        &[s.view.account.clone().into(), provider.into()],
    )?;
    let failures = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
    if lock_now || failures >= settings.lockout_threshold {
        let until = t + settings.lockout_duration.as_millis() as i64;
        tx.execute(
            "UPDATE lockouts SET locked_until = $1, failures = 0 WHERE account_key = $2 AND provider = $3",
            &[Value::Int(until), s.view.account.clone().into(), provider.into()],
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

/// Applies a provider's outcome to a pending-MFA request, inside the writer's transaction.
/// `answered`: the outcome judges a typed answer to an `Ask`, so a wrong one may be asked
/// again; a wrong outcome of a poll (a PIN mistyped on the phone) has no prompt to re-ask.
#[allow(clippy::too_many_arguments)] // one call per path; a struct would only rename them
fn apply(
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
    if matches!(outcome, Outcome::Approved(_) | Outcome::Denied(..)) && !trust {
        // A verdict lands only while the account is not locked out of the provider, whatever
        // it says: during a lockout a right answer and a wrong one get the same refusal.
        // (A read the writer vouches for saw no lockout, and nothing changed since.)
        refuse_if_locked(tx, &s, &provider, now)?;
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
        Outcome::Approved(credential) => {
            still_allowed(tx, &s, &provider, relied, trust)?;
            if let Some(CredentialUpdate {
                credential: c,
                sealed,
                prior,
            }) = credential
            {
                let sealed = match sealed {
                    Some(sealed) => sealed,
                    None => key.seal(
                        c.data.as_slice(),
                        &Service::credential_context(&s.view.account, &provider, &c.id),
                    )?,
                };
                let mut params = vec![
                    Value::Blob(sealed),
                    Value::Int(ms(now)),
                    s.view.account.clone().into(),
                    provider.clone().into(),
                    c.id.into(),
                    crate::limits::cut(&c.label, crate::limits::PROVIDER_LABEL_CHARS).into(),
                ];
                // Replay protection (a TOTP step, a sign count) holds only if two answers
                // cannot both advance the same credential value: the update is conditional
                // on the value the provider saw, and a miss undoes this whole answer.
                let n = match prior {
                    Some(prior) => {
                        params.push(Value::Blob(prior));
                        tx.execute(
                            "UPDATE credentials SET sealed = $1, label = $6, updated_at = $2 WHERE account_key = $3 AND provider = $4 AND id = $5 AND sealed = $7",
                            &params,
                        )?
                    }
                    None => tx.execute(
                        "UPDATE credentials SET sealed = $1, label = $6, updated_at = $2 WHERE account_key = $3 AND provider = $4 AND id = $5",
                        &params,
                    )?,
                };
                if n == 0 {
                    return Err(Error::Conflict(format!(
                        "{CREDENTIAL_RACE} (request `{}`)",
                        s.view.id
                    )));
                }
            }
            // Failures are cleared; a read the writer vouches for that found none needs no
            // statement (else only a row with failures is rewritten).
            if !(trust && relied.vouch.is_some_and(|v| !v.failures)) {
                tx.execute(
                    "UPDATE lockouts SET failures = 0 WHERE account_key = $1 AND provider = $2 AND failures <> 0",
                    &[s.view.account.clone().into(), provider.clone().into()],
                )?;
            }
            events::append(
                tx,
                event(
                    events::MFA_COMPLETED,
                    Severity::Information,
                    &s,
                    Some(&provider),
                    "MFA completed".into(),
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
                "the provider `{provider}` failed, so MFA could not be checked (nothing was counted against you): try again, or choose another factor"
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
        Outcome::Denied(reason, message) => {
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
            s.view.reason = Some(why.clone());
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
                    format!("MFA not completed: {why}"),
                ),
                ms(now),
            )?;
            Ok(s.view)
        }
    }
}

/// The prompt kinds a client must answer, for documentation and tests.
pub fn prompt_kind(p: &serde_json::Value) -> Option<&str> {
    p.get("kind").and_then(|k| k.as_str())
}

/// Decodes a stored prompt back into the SDK's type (for clients written in Rust).
pub fn decode_prompt(p: &serde_json::Value) -> Option<Prompt> {
    serde_json::from_value(p.clone()).ok()
}
