//! The life of an activation request, as a state machine the store enforces.
//!
//! `pending_mfa → pending_approval → scheduled → active → expired | closed`, with
//! `rejected`, `failed` and `cancelled` as the other ends. States a role does not need are
//! skipped: a role with neither MFA nor approval activates at once, as in MIM.

use std::fmt;
use std::str::FromStr;

use crate::model::error::{Error, Result};
use crate::model::role::Admission;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestState {
    /// Waiting for the user to complete MFA.
    PendingMfa,
    /// Waiting for an approver.
    PendingApproval,
    /// Granted, starting at a later time the user asked for.
    Scheduled,
    /// The user holds the role.
    Active,
    /// The activation ran its time.
    Expired,
    /// Closed before its time by the user or an admin.
    Closed,
    /// An approver said no, or approval timed out.
    Rejected,
    /// MFA failed (denied, timed out, attempts exhausted, provider failure).
    Failed,
    /// The user withdrew it before it was granted.
    Cancelled,
}

const ALL: [(RequestState, &str); 9] = [
    (RequestState::PendingMfa, "pending_mfa"),
    (RequestState::PendingApproval, "pending_approval"),
    (RequestState::Scheduled, "scheduled"),
    (RequestState::Active, "active"),
    (RequestState::Expired, "expired"),
    (RequestState::Closed, "closed"),
    (RequestState::Rejected, "rejected"),
    (RequestState::Failed, "failed"),
    (RequestState::Cancelled, "cancelled"),
];

impl RequestState {
    /// The state's stable name (stored, and shown by the API and CLI).
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(s, _)| *s == self)
            .map(|(_, n)| *n)
            .unwrap_or("unknown")
    }

    /// The states a request can still leave, in the lifecycle's order.
    pub fn unfinished() -> impl Iterator<Item = RequestState> {
        ALL.iter().map(|(s, _)| *s).filter(|s| !s.is_final())
    }

    /// Whether nothing can happen to the request any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Expired
                | RequestState::Closed
                | RequestState::Rejected
                | RequestState::Failed
                | RequestState::Cancelled
        )
    }

    /// Whether the request moves from `self` to `next` legally.
    pub fn can_become(self, next: RequestState) -> bool {
        use RequestState::*;
        matches!(
            (self, next),
            (
                PendingMfa,
                PendingApproval | Scheduled | Active | Failed | Cancelled
            ) | (PendingApproval, Scheduled | Active | Rejected | Cancelled)
                | (Scheduled, Active | Cancelled | Closed)
                | (Active, Expired | Closed)
        )
    }

    /// Checks a transition, with an error that names both states.
    pub fn transition(self, next: RequestState) -> Result<RequestState> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::Invalid {
                what: "request".into(),
                message: format!("a request in state `{self}` cannot become `{next}`"),
            })
        }
    }

    /// Where a new request starts.
    pub fn initial(admission: &Admission, starts_later: bool) -> RequestState {
        if admission.needs_mfa {
            RequestState::PendingMfa
        } else {
            RequestState::after_mfa(admission, starts_later)
        }
    }

    /// Where a request goes once its MFA is complete (or when it needs none).
    pub fn after_mfa(admission: &Admission, starts_later: bool) -> RequestState {
        if admission.needs_approval {
            RequestState::PendingApproval
        } else {
            RequestState::granted(starts_later)
        }
    }

    /// Where a granted request goes.
    pub fn granted(starts_later: bool) -> RequestState {
        if starts_later {
            RequestState::Scheduled
        } else {
            RequestState::Active
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ALL.iter()
            .find(|(_, n)| *n == s)
            .map(|(st, _)| *st)
            .ok_or_else(|| Error::Invalid {
                what: "request state".into(),
                message: format!(
                    "`{s}` is not a state; states are {}",
                    ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::RequestState::*;
    use super::*;
    use jiff::SignedDuration;

    fn admission(needs_mfa: bool, needs_approval: bool) -> Admission {
        Admission {
            ttl: SignedDuration::from_hours(1),
            needs_mfa,
            needs_approval,
        }
    }

    #[test]
    fn states_a_role_does_not_need_are_skipped() {
        assert_eq!(
            RequestState::initial(&admission(false, false), false),
            Active
        );
        assert_eq!(
            RequestState::initial(&admission(false, false), true),
            Scheduled
        );
        assert_eq!(
            RequestState::initial(&admission(true, false), false),
            PendingMfa
        );
        assert_eq!(
            RequestState::initial(&admission(false, true), false),
            PendingApproval
        );
        assert_eq!(
            RequestState::after_mfa(&admission(true, true), false),
            PendingApproval
        );
        assert_eq!(
            RequestState::after_mfa(&admission(true, false), false),
            Active
        );
    }

    #[test]
    fn final_states_never_move_and_nothing_goes_back() {
        for (from, _) in ALL {
            for (to, _) in ALL {
                if from.is_final() {
                    assert!(!from.can_become(to), "{from} -> {to}");
                }
                if from.can_become(to) {
                    assert!(!to.can_become(from), "{from} <-> {to}");
                }
            }
        }
        let e = Expired.transition(Active).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request: a request in state `expired` cannot become `active`"
        );
        assert!(Active.transition(Closed).is_ok());
        assert!(PendingMfa.transition(Rejected).is_err());
    }

    #[test]
    fn names_round_trip() {
        for (s, n) in ALL {
            assert_eq!(s.as_str(), n);
            assert_eq!(n.parse::<RequestState>().unwrap(), s);
        }
        let e = "processing".parse::<RequestState>().unwrap_err();
        assert!(e.to_string().contains("`processing` is not a state"), "{e}");
    }
}
