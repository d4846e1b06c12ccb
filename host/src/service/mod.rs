//! The activation service: requests, MFA through the role's provider, approval, expiry.
//!
//! Provider calls happen outside database transactions; their outcome is then written with a
//! version check, so two answers to one prompt, two approvals or an expiry racing a close can
//! never both take effect. Every write that matters carries its event in the same transaction.
//!
//! Rooms by job, each an `impl Service` block of its own: `requests` (create, get, close),
//! `answers` (answers, polls, the verdict's write, lockout), `approvals`, `enrolment` (and
//! credentials), `expiry` (and the end of a disabled user's access), `caches`, `shadow` (a
//! role's shadow factor, asked after the real one), `readiness` and `role_warnings` (what a
//! role's providers mean for its candidates today). This file keeps
//! the types they share, the service's construction and the helpers of every write.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rolegate_sdk::message::{ChallengeContext, Credential, EnrollContext, UserContext};
use rolegate_sdk::{Bytes, DenyReason, Input, Prompt, Step, Verdict};
use serde::Serialize;

use crate::model::activation::RequestState;
use crate::model::clock::Clock;
use crate::model::error::{Error, Result};
use crate::model::role::{FactorDown, Refusal, Role, Usability};
use crate::plugins::Providers;
use crate::records::events::{self, NewEvent, Severity};
use crate::records::roles;
use crate::records::tokens::Caller;
use crate::records::users::{self, User, account_key};
use crate::store::Store;
use crate::store::changes::{self, Changes, Kind, Stamp};
use crate::store::secrets::{SealingKey, time_ordered_id};
use crate::store::{Row, Tx, Value};

mod answers;
mod approvals;
mod caches;
mod enrolment;
mod expiry;
mod readiness;
mod requests;
mod role_warnings;
mod shadow;

use answers::{apply, with_prior};
pub use enrolment::store_credential;
pub use expiry::{end_access, in_flight};
pub use readiness::{CandidateReadiness, ProviderReadiness, Readiness};
pub use requests::RequestFilter;
pub use shadow::ShadowView;

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
    pub limits: crate::model::limits::TextLimits,
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
            limits: crate::model::limits::TextLimits::default(),
        }
    }
}

/// A request as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// The role's shadow factor, in the answer that completed the real factor and in the
    /// answers to the shadow's own prompt; it never decides the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<shadow::ShadowView>,
}

/// An enrolment step as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// The requester's account key (the view shows the account as its user spells it).
    account_key: String,
    state: RequestState,
    challenge: Option<Vec<u8>>,
    ask_expires_at: Option<i64>,
    version: i64,
    wrong_answers: i64,
    needs_approval: bool,
    updated_at: i64,
    /// What the provider's first step sent (a message SID), for event 200; not a column.
    reference: Option<String>,
    /// Not in the database yet: its first transition inserts it in its new state (a request
    /// that came with its answer, approved in the write that creates it: one statement, not
    /// an insert and an update).
    unsaved: bool,
    /// The checked credential update its insert runs too (PostgreSQL), if any.
    checked_with_insert: Option<Box<answers::CheckedWithInsert>>,
}

const COLUMNS: &str = "id, account_key, role, state, justification, ttl_s, provider, prompt, expires_at, reason, created_at, challenge, ask_expires_at, version, wrong_answers, needs_approval, updated_at, starts_at, account";

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
    let account_key = r.text(1)?;
    Ok(Stored {
        view: RequestView {
            id: r.text(0)?,
            // Rows written before schema 10 whose user is gone know only the key.
            account: r.opt_text(18)?.unwrap_or_else(|| account_key.clone()),
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
            shadow: None,
        },
        state,
        challenge,
        ask_expires_at: opt_int(12),
        version: r.int(13)?,
        wrong_answers: r.int(14)?,
        needs_approval: r.int(15)? != 0,
        updated_at: r.int(16)?,
        reference: None,
        account_key,
        unsaved: false,
        checked_with_insert: None,
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
#[derive(Clone)]
enum Outcome {
    /// A new prompt (or wait) with its sealed state.
    Prompt {
        prompt: serde_json::Value,
        sealed: Vec<u8>,
        expires_at: i64,
    },
    /// The factor was verified, perhaps with a credential update, and what was verified (for
    /// the admin's event; may be empty).
    Approved(Option<CredentialUpdate>, String),
    /// The factor was not verified: why, the provider's words, and the credential the answer
    /// was made with, when the provider named it.
    Denied(DenyReason, String, Option<String>),
    /// The provider failed (an error, a crash, a deadline, an outage, a refused
    /// configuration): the factor was neither verified nor refused, and nothing counts
    /// against the user. The text is for admins.
    Fault(String),
}

/// A stored credential as admins and its user see it: never its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// The credential's id among the user's credentials for the provider.
    pub id: String,
    /// The provider it belongs to.
    pub provider: String,
    /// The name the provider gave it ("Authenticator app (SHA1)").
    pub label: String,
    /// When it was stored (ms since the epoch).
    pub created_at: i64,
    /// Why the host set it aside for an admin (a signature counter that went backwards),
    /// when it did: it is no longer offered; remove it and have the user enrol again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// When the flag was set (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged_at: Option<i64>,
}

/// A provider's credential update on its way to the store.
#[derive(Debug, Clone)]
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
    buckets: crate::model::caches::Buckets,
    /// Parsed roles by name, with the policy text they were parsed from: a role is parsed
    /// again only when its stored policy changes.
    role_cache: std::sync::Mutex<std::collections::HashMap<String, CachedRole>>,
    /// Held while a role missing from the cache is read: requests that find it missing
    /// together wait for one read and parse (a role of 100,000 candidates is megabytes).
    role_loading: tokio::sync::Mutex<()>,
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
#[derive(Clone)]
struct Relied {
    /// The provider's credentials (id, sealed value), sorted.
    seen: Vec<(String, Vec<u8>)>,
    /// The read, when the store keeps an account of changed keys (SQLite).
    vouch: Option<Vouch>,
}

impl Relied {
    /// The provider's credentials among a user's rows, and the read they came from.
    fn new(rows: &[Row], provider: &str, vouch: Option<Vouch>) -> Self {
        let mut seen: Vec<(String, Vec<u8>)> = rows
            .iter()
            .filter(|r| r.text(1).is_ok_and(|p| p == provider) && usable(r))
            .filter_map(|r| Some((r.text(0).ok()?, r.blob(3).ok()?)))
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
            buckets: crate::model::caches::Buckets::default(),
            role_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            role_loading: tokio::sync::Mutex::new(()),
            accounts: std::sync::Mutex::new(std::collections::HashMap::new()),
            awaiting: std::sync::Mutex::new(std::collections::HashMap::new()),
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
            if r.text(1)? != provider || !usable(r) {
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

    /// The loaded provider `id`, or an error naming it.
    fn provider(&self, id: &str) -> Result<Arc<crate::plugins::LoadedProvider>> {
        self.providers
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("provider `{id}`"),
            })
    }

    /// What a provider is told of a challenge: the user, the request (its id, role, length
    /// and justification: what a provider may bind its challenge to), the user's credentials
    /// of that provider (unsealed from `rows`), the time.
    fn challenge_context(
        &self,
        user: &User,
        request: &RequestView,
        provider: &str,
        rows: &[Row],
        now: Timestamp,
    ) -> Result<ChallengeContext> {
        Ok(ChallengeContext {
            user: Self::user_context(user),
            role: request.role.clone(),
            request_id: request.id.clone(),
            ttl_s: u64::try_from(request.ttl_s).unwrap_or(0),
            justification: request.justification.clone(),
            credentials: self.unseal(&account_key(&request.account), provider, rows)?,
            origin: None,
            now: now.as_second().max(0) as u64,
        })
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
                ..
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
                ..
            } => Outcome::Prompt {
                prompt: serde_json::json!({"kind": "wait", "status": status, "poll_after_ms": poll_after_ms}),
                sealed: self.seal_state(&state, request)?,
                expires_at: cap,
            },
            Step::Done {
                verdict:
                    Verdict::Approved {
                        credential, detail, ..
                    },
            } => Outcome::Approved(
                credential.map(|credential| CredentialUpdate {
                    credential,
                    sealed: None,
                    prior: None,
                }),
                provider_text(&detail, MAX_DETAIL_CHARS),
            ),
            Step::Done {
                verdict:
                    Verdict::Denied {
                        reason,
                        message,
                        credential_id,
                        ..
                    },
            } => Outcome::Denied(
                reason,
                message,
                credential_id
                    .map(|c| provider_text(&c, MAX_REFERENCE_CHARS))
                    .filter(|c| !c.is_empty()),
            ),
            _ => Outcome::Denied(
                DenyReason::Other,
                "the provider sent an unknown step".into(),
                None,
            ),
        })
    }

    /// The providers, with whether they are loaded and healthy.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The service's clock (injected in tests).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

impl Stored {
    fn clone_for_write(&self) -> Stored {
        Stored {
            view: self.view.clone(),
            account_key: self.account_key.clone(),
            state: self.state,
            challenge: self.challenge.clone(),
            ask_expires_at: self.ask_expires_at,
            version: self.version,
            wrong_answers: self.wrong_answers,
            needs_approval: self.needs_approval,
            updated_at: self.updated_at,
            reference: self.reference.clone(),
            unsaved: self.unsaved,
            checked_with_insert: None,
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

/// A user's credential rows (id, provider, label, sealed, created_at, flag, flagged_at),
/// oldest first. A row with a flag (see [`usable`]) is listed, never offered to a provider.
fn credential_rows(tx: &mut dyn Tx, account_key: &str) -> Result<Vec<Row>> {
    // Sorted here rather than by ORDER BY: with that clause, SQLite (STAT4 build) re-plans
    // the statement on every run, which cost a tenth of the whole request path.
    let mut rows = tx.query(
        "SELECT id, provider, label, sealed, created_at, flag, flagged_at FROM credentials WHERE account_key = $1",
        &[account_key.into()],
    )?;
    rows.sort_by_key(|r| r.int(4).unwrap_or(0));
    Ok(rows)
}

/// Whose account [`account_and_role`] reads: one named by its key, or the holder of a bearer
/// token not verified lately (its token read in the same statement).
#[derive(Debug, Clone, Copy)]
pub(super) enum AccountOf<'a> {
    /// The account with this key.
    Key(&'a str),
    /// The holder of the token with this hash, as of `now_ms` (an expired token has none).
    Token { hash: &'a str, now_ms: i64 },
}

/// What [`account_and_role`] read.
#[derive(Debug, Default)]
pub(super) struct AccountRead {
    /// The token's holder, when the account was named by a token that is valid.
    pub(super) caller: Option<Caller>,
    /// The user, if there is one.
    pub(super) user: Option<users::User>,
    /// Its credential rows, as [`credential_rows`] gives them.
    pub(super) credentials: Vec<Row>,
    /// Its lockouts and failure counts (provider, end or NULL).
    pub(super) lockouts: Vec<Row>,
    /// The role, when asked for: `None` when there is no such role, else its revision and
    /// its policy (`None` when the cached revision is current).
    pub(super) role: Option<Option<(i64, Option<String>)>>,
}

/// What a request reads of its account (and of the token that names it, when it needs a
/// look) and role, and a verdict's write of its account, in one statement: one round trip
/// on PostgreSQL instead of five. `role` names the role with the revision cached; the role
/// is then read as [`roles::get_if_changed`] gives it.
pub(super) fn account_and_role(
    tx: &mut dyn Tx,
    of: AccountOf<'_>,
    role: Option<(&str, i64)>,
) -> Result<AccountRead> {
    let (sql, params) = account_and_role_sql(of, role);
    let rows = tx.query(&sql, &params)?;
    account_read(of, role.is_some(), rows)
}

/// The statement of [`account_and_role`] and its parameters, to run where the caller
/// chooses ([`crate::store::Store::query`] on the request path).
pub(super) fn account_and_role_sql(
    of: AccountOf<'_>,
    role: Option<(&str, i64)>,
) -> (String, Vec<Value>) {
    // One row shape for all: the tag, five text columns, three integers, one of bytes. The
    // user's branch comes first and the credentials' second: PostgreSQL types a UNION's
    // columns pair by pair from the left, and these two leave no column NULL in both.
    // The token, when it names the account, is read once (a CTE referred to twice is read
    // once by both databases) and its account's rows by the key it holds.
    let (key, with, subject) = match of {
        AccountOf::Key(k) => (k, "", "$1"),
        AccountOf::Token { hash, .. } => (
            hash,
            "WITH t AS (SELECT account, account_key, admin, expires_at FROM tokens WHERE hash = $1) ",
            "(SELECT account_key FROM t)",
        ),
    };
    let mut sql = format!(
        "{with}SELECT 'u', account, display_name, phone, email, source, enabled, created_at, updated_at, NULL FROM users WHERE account_key = {subject} \
         UNION ALL SELECT 'c', id, provider, label, flag, NULL, created_at, flagged_at, NULL, sealed FROM credentials WHERE account_key = {subject} \
         UNION ALL SELECT 'l', provider, NULL, NULL, NULL, NULL, locked_until, NULL, NULL, NULL FROM lockouts WHERE account_key = {subject} AND (locked_until IS NOT NULL OR failures <> 0)",
    );
    if matches!(of, AccountOf::Token { .. }) {
        sql.push_str(" UNION ALL SELECT 't', account, NULL, NULL, NULL, NULL, admin, expires_at, NULL, NULL FROM t");
    }
    let mut params: Vec<Value> = vec![key.into()];
    if let Some((name, known)) = role {
        sql.push_str(" UNION ALL SELECT 'r', CASE WHEN revision = $3 THEN NULL ELSE policy END, NULL, NULL, NULL, NULL, revision, NULL, NULL, NULL FROM roles WHERE name = $2");
        params.push(name.trim().into());
        params.push(Value::Int(known));
    }
    (sql, params)
}

/// What the rows of [`account_and_role_sql`] say (`with_role`: whether it read the role).
pub(super) fn account_read(
    of: AccountOf<'_>,
    with_role: bool,
    rows: Vec<Row>,
) -> Result<AccountRead> {
    let at = |r: &Row, i: usize| r.0.get(i).cloned().unwrap_or(Value::Null);
    let mut read = AccountRead {
        role: with_role.then_some(None),
        ..AccountRead::default()
    };
    for r in rows {
        match r.text(0)?.as_str() {
            "u" => read.user = Some(users::from_row(&Row((1..=8).map(|i| at(&r, i)).collect()))?),
            // id, provider, label, sealed, created_at, flag, flagged_at
            "c" => read.credentials.push(Row(vec![
                at(&r, 1),
                at(&r, 2),
                at(&r, 3),
                at(&r, 9),
                at(&r, 6),
                at(&r, 4),
                at(&r, 7),
            ])),
            "l" => read.lockouts.push(Row(vec![at(&r, 1), at(&r, 6)])),
            "t" => {
                // As `tokens::verify_hash` judges it: an expired token names no one.
                let expires_at = match at(&r, 7) {
                    Value::Int(e) => Some(e),
                    _ => None,
                };
                let now_ms = match of {
                    AccountOf::Token { now_ms, .. } => now_ms,
                    AccountOf::Key(_) => i64::MIN,
                };
                if expires_at.is_none_or(|e| now_ms < e) {
                    read.caller = Some(Caller {
                        account: r.text(1)?,
                        admin: r.int(6)? != 0,
                        expires_at,
                    });
                }
            }
            _ => {
                let policy = match at(&r, 1) {
                    Value::Null => None,
                    _ => Some(r.text(1)?),
                };
                read.role = Some(Some((r.int(6)?, policy)));
            }
        }
    }
    if matches!(of, AccountOf::Token { .. }) && read.caller.is_none() {
        // No valid token: nothing of an account is returned with it.
        read.user = None;
        read.credentials.clear();
        read.lockouts.clear();
    }
    // Sorted here rather than by ORDER BY, as `credential_rows` sorts them.
    read.credentials.sort_by_key(|r| r.int(4).unwrap_or(0));
    Ok(read)
}

/// Whether a credential row of [`credential_rows`] may be offered to its provider: not
/// marked for an admin (a suspected clone).
fn usable(row: &Row) -> bool {
    matches!(row.opt_text(5), Ok(None))
}

/// How a write that changes only the rows of the account `key` (its requests, credentials,
/// lockouts, shadow challenges) is queued: PostgreSQL then locks that account rather than
/// the whole store, and other instances write for other accounts meanwhile.
fn on_account(key: &str, durable: bool, lead: Option<crate::store::Lead>) -> crate::store::Plan {
    crate::store::Plan {
        durable,
        lead,
        accounts: vec![key.to_string()],
    }
}

/// Inserts a new request as `s` has it: with its first prompt (text, sealed provider state,
/// when it expires) when [`Stored::asking`] made it, in the same row. One live request per
/// user and role ([`requests::make_room`]), checked in the write: two hosts, or two
/// requests racing, cannot both pass.
fn insert(tx: &mut dyn Tx, s: &Stored) -> Result<()> {
    let params = insert_params(s);
    // The usual case in one statement (one round trip on PostgreSQL, not two): inserted when
    // the user has no request for the role that is live and has not run out. Any other —
    // even one whose prompt lapsed — leaves it to `make_room`, which judges each.
    if tx.execute(&insert_if_room(), &params)? == 1 {
        return Ok(());
    }
    insert_making_room(tx, s, &params)
}

/// [`insert`] with a checked credential update ([`answers::CheckedWithInsert`]) in the same
/// statement: the request is inserted only if the update lands. When its check misses, nothing
/// is written and the account is judged again ([`answers::settle`]) before the insert.
fn insert_with_update(
    tx: &mut dyn Tx,
    s: &Stored,
    checked: answers::CheckedWithInsert,
    now: Timestamp,
) -> Result<()> {
    let mut params = insert_params(s);
    let (update, update_params) = checked.statement(INSERT_PARAMS, s, now);
    params.extend(update_params);
    let rows = tx.query(
        &format!(
            "WITH c AS ({update} RETURNING 1), i AS ({} AND EXISTS (SELECT 1 FROM c) RETURNING 1) SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM i)",
            insert_if_room()
        ),
        &params,
    )?;
    let counts = rows.first().map(|r| (r.int(0), r.int(1)));
    match counts {
        Some((Ok(1), Ok(1))) => Ok(()),
        // Updated, but another request of the user's for the role is on record.
        Some((Ok(1), _)) => insert_making_room(tx, s, &params[..INSERT_PARAMS]),
        _ => {
            answers::settle(tx, s, checked, now)?;
            insert(tx, s)
        }
    }
}

/// How many parameters [`insert_params`] gives.
const INSERT_PARAMS: usize = 19;

/// The parameters of [`insert_if_room`] and [`insert_making_room`]'s insert, as `s` has it.
fn insert_params(s: &Stored) -> Vec<Value> {
    vec![
        s.view.id.clone().into(),
        s.account_key.clone().into(),
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
        s.view.account.clone().into(),
        Value::Int(s.updated_at),
        s.view.reason.clone().into(),
        Value::Int(s.wrong_answers),
    ]
}

/// The insert of a new request ([`insert_params`]) when the user has no request for the
/// role that is live and has not run out.
fn insert_if_room() -> String {
    format!(
        "INSERT INTO requests ({INSERT_COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $18, $12, $17, $13, $19, $14, $15, $16 WHERE NOT EXISTS (SELECT 1 FROM requests WHERE account_key = $2 AND role = $3 AND state IN {} AND (expires_at IS NULL OR expires_at > $12))",
        requests::LIVE
    )
}

/// Inserts a new request when another of the user's for the role is on record:
/// [`requests::make_room`] judges it (a lapsed one is ended, a live one refuses).
fn insert_making_room(tx: &mut dyn Tx, s: &Stored, params: &[Value]) -> Result<()> {
    requests::make_room(tx, s)?;
    tx.execute(
        &format!(
            "INSERT INTO requests ({INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $18, $12, $17, $13, $19, $14, $15, $16)"
        ),
        params,
    )?;
    Ok(())
}

/// The columns [`insert`] writes, in its parameters' order.
const INSERT_COLUMNS: &str = "id, account_key, role, state, justification, ttl_s, provider, prompt, challenge, ask_expires_at, expires_at, reason, created_at, updated_at, version, wrong_answers, needs_approval, starts_at, account";

fn created_events(tx: &mut dyn Tx, s: &Stored) -> Result<()> {
    let t = s.view.created_at;
    // The provider's reference before the justification, which the user wrote.
    let reference = s
        .reference
        .as_deref()
        .map(|r| format!(", provider reference `{r}`"))
        .unwrap_or_default();
    events::append(
        tx,
        event(
            events::REQUEST_CREATED,
            Severity::Information,
            s,
            s.view.provider.as_deref(),
            format!(
                "requested for {} s{reference}: {}",
                s.view.ttl_s, s.view.justification
            ),
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

/// Longest provider reference kept for an event.
const MAX_REFERENCE_CHARS: usize = 128;

/// The reference a provider's step gave (a message SID, a call id), fit for an event: its
/// printable characters, at most [`MAX_REFERENCE_CHARS`]; none when nothing is left.
pub(crate) fn provider_reference(step: &Result<Step>) -> Option<String> {
    let raw = step.as_ref().ok()?.reference()?;
    let kept = provider_text(raw, MAX_REFERENCE_CHARS);
    (!kept.is_empty()).then_some(kept)
}

/// Longest verdict detail kept for an event.
const MAX_DETAIL_CHARS: usize = 512;

/// A provider's words for an admin's event (a reference, a verdict's detail): its printable
/// characters but the backquote that quotes names in events, at most `max`, trimmed.
fn provider_text(raw: &str, max: usize) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control() && *c != '`')
        .take(max)
        .collect();
    kept.trim().to_string()
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
        tx.unchanged_since(Kind::Account, &s.account_key, v.stamp, v.read_at, ms(now))
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
    if s.unsaved {
        // Its first write: inserted as it is now.
        s.version += 1;
        s.state = next;
        s.view.state = next.to_string();
        s.view.prompt = None;
        s.challenge = None;
        s.ask_expires_at = None;
        s.updated_at = ms(now);
        match s.checked_with_insert.take() {
            Some(checked) => insert_with_update(tx, s, *checked, now)?,
            None => insert(tx, s)?,
        }
        s.unsaved = false;
        return Ok(());
    }
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

/// The prompt kinds a client must answer, for documentation and tests.
pub fn prompt_kind(p: &serde_json::Value) -> Option<&str> {
    p.get("kind").and_then(|k| k.as_str())
}

/// Decodes a stored prompt back into the SDK's type (for clients written in Rust).
pub fn decode_prompt(p: &serde_json::Value) -> Option<Prompt> {
    serde_json::from_value(p.clone()).ok()
}
