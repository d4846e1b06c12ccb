//! Why a request is refused by policy, and whether a provider can serve a user: reasons the
//! error type carries and the role's policy gives, each saying what the user can do.

use std::fmt;

/// Why a request is refused by policy; each says what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The user is not a candidate of the role.
    NotCandidate {
        /// The user.
        account: String,
        /// The role.
        role: String,
    },
    /// The role requires a justification and none was given.
    JustificationRequired {
        /// The role.
        role: String,
    },
    /// The request falls outside the role's availability window.
    OutsideWindow {
        /// The role.
        role: String,
        /// The window, as an admin wrote it.
        window: String,
    },
    /// The requested duration is not positive.
    BadTtl {
        /// What was asked, in seconds.
        requested_s: i64,
    },
    /// The approver is the requester.
    SelfApproval {
        /// The account.
        account: String,
    },
    /// The approver is not an approver of the role.
    NotApprover {
        /// The account.
        account: String,
        /// The role.
        role: String,
    },
    /// The user cannot use any provider the role accepts.
    NoUsableProvider {
        /// The role.
        role: String,
        /// The providers the role accepts, in order, each with why the user cannot use it.
        accepted: Vec<(String, Usability)>,
    },
    /// The provider was retired (its `sunset` has passed): no new enrolment, no new challenge.
    ProviderRetired {
        /// The provider.
        provider: String,
        /// When it was retired, RFC 3339.
        at: String,
    },
    /// The user is unknown or disabled.
    UserNotAllowed {
        /// The account.
        account: String,
    },
    /// The user is locked out of a provider after repeated failures.
    LockedOut {
        /// The provider.
        provider: String,
        /// Until when, RFC 3339.
        until: String,
    },
    /// The user asks for activations faster than the rate limit allows.
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after_s: i64,
    },
    /// The user chose a provider the role does not accept, or cannot use.
    ProviderNotAllowed {
        /// The role.
        role: String,
        /// The provider asked for.
        provider: String,
        /// Why it cannot be used.
        why: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotCandidate { account, role } => {
                write!(f, "`{account}` is not a candidate for role `{role}`")
            }
            Refusal::JustificationRequired { role } => {
                write!(f, "role `{role}` requires a justification")
            }
            Refusal::OutsideWindow { role, window } => write!(
                f,
                "role `{role}` can be activated only {window}; try again then"
            ),
            Refusal::BadTtl { requested_s } => write!(
                f,
                "a requested duration must be positive, not {requested_s} s"
            ),
            Refusal::SelfApproval { account } => {
                write!(f, "`{account}` cannot approve their own request")
            }
            Refusal::NotApprover { account, role } => {
                write!(f, "`{account}` is not an approver of role `{role}`")
            }
            Refusal::NoUsableProvider { role, accepted } => write!(
                f,
                "role `{role}` accepts MFA through {}, and you can use none of them yet",
                accepted
                    .iter()
                    .map(|(p, u)| match u {
                        Usability::NotEnrolled => {
                            format!("`{p}` (you are not enrolled: `rolegate enrol {p}`)")
                        }
                        Usability::NoPhone => format!(
                            "`{p}` (you have no phone number on record: ask an admin to add it)"
                        ),
                        Usability::Retired(at) => format!(
                            "`{p}` (retired on {at}: ask an admin which factor replaces it)"
                        ),
                        _ => format!("`{p}` (not available now)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Refusal::ProviderRetired { provider, at } => write!(
                f,
                "provider `{provider}` was retired on {at}: it takes no new enrolments or challenges; ask an admin which factor replaces it"
            ),
            Refusal::UserNotAllowed { account } => write!(
                f,
                "`{account}` is not an enabled rolegate user; ask an admin to add or enable the account"
            ),
            Refusal::LockedOut { provider, until } => write!(
                f,
                "too many failed attempts with `{provider}`: locked out until {until} (an admin can unlock)"
            ),
            Refusal::RateLimited { retry_after_s } => {
                write!(f, "too many requests; try again in {retry_after_s} s")
            }
            Refusal::ProviderNotAllowed {
                role,
                provider,
                why,
            } => write!(
                f,
                "provider `{provider}` cannot be used for role `{role}`: {why}"
            ),
        }
    }
}

/// Whether a provider can serve a user now, as the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    /// The user can be challenged.
    Usable,
    /// The provider needs an enrolment the user does not have.
    NotEnrolled,
    /// The provider calls or texts, and the user has no phone number.
    NoPhone,
    /// The provider is not loaded.
    Unavailable,
    /// The provider was retired at this moment (its `sunset`): roles no longer accept it.
    Retired(jiff::Timestamp),
}
