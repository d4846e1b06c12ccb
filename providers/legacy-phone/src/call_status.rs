//! PhoneFactor's `callStatus` codes: what each means, and the verdict it gives.

use rolegate_sdk::DenyReason;

/// What a call's status means for the activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The user proved presence: approve.
    Approved,
    /// Not approved, for this reason.
    Denied(DenyReason),
    /// The call (or text) is still going: ask again later.
    Pending,
}

/// One code: its number, the meaning an admin reads, and the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStatus {
    /// The `callStatus` number.
    pub code: u32,
    /// What it means, in the SDK's words.
    pub meaning: &'static str,
    /// What rolegate makes of it.
    pub outcome: Outcome,
}

use DenyReason::{Declined, Expired, Fraud, NotEnrolled, Other, Unreachable, WrongAnswer};
use Outcome::{Approved, Denied, Pending};

/// Every documented code. Approvals need the SDK's own `authenticated = yes` as well.
pub const TABLE: &[CallStatus] = &[
    CallStatus {
        code: 1,
        meaning: "PIN entered",
        outcome: Approved,
    },
    CallStatus {
        code: 2,
        meaning: "no PIN entered",
        outcome: Denied(WrongAnswer),
    },
    CallStatus {
        code: 3,
        meaning: "# not pressed after entry",
        outcome: Approved,
    },
    CallStatus {
        code: 4,
        meaning: "no phone input: timed out",
        outcome: Denied(Expired),
    },
    CallStatus {
        code: 5,
        meaning: "PIN expired and not changed",
        outcome: Denied(Declined),
    },
    CallStatus {
        code: 6,
        meaning: "used cache",
        outcome: Approved,
    },
    CallStatus {
        code: 7,
        meaning: "bypassed auth",
        outcome: Approved,
    },
    CallStatus {
        code: 8,
        meaning: "used cache",
        outcome: Approved,
    },
    CallStatus {
        code: 9,
        meaning: "used cache",
        outcome: Approved,
    },
    CallStatus {
        code: 10,
        meaning: "call disconnected",
        outcome: Denied(Unreachable),
    },
    CallStatus {
        code: 11,
        meaning: "call timed out",
        outcome: Denied(Expired),
    },
    CallStatus {
        code: 12,
        meaning: "invalid phone input",
        outcome: Denied(WrongAnswer),
    },
    CallStatus {
        code: 13,
        meaning: "got voicemail",
        outcome: Denied(Unreachable),
    },
    CallStatus {
        code: 14,
        meaning: "user is blocked",
        outcome: Denied(Declined),
    },
    CallStatus {
        code: 15,
        meaning: "status pending",
        outcome: Pending,
    },
    CallStatus {
        code: 16,
        meaning: "voiceprint succeeded",
        outcome: Approved,
    },
    CallStatus {
        code: 17,
        meaning: "voiceprint enrolled",
        outcome: Approved,
    },
    CallStatus {
        code: 18,
        meaning: "voiceprint expired",
        outcome: Denied(Declined),
    },
    CallStatus {
        code: 19,
        meaning: "text message authenticated",
        outcome: Approved,
    },
    CallStatus {
        code: 20,
        meaning: "text message sent",
        outcome: Pending,
    },
    CallStatus {
        code: 21,
        meaning: "mobile app authenticated",
        outcome: Approved,
    },
    CallStatus {
        code: 22,
        meaning: "OATH code pending",
        outcome: Pending,
    },
    CallStatus {
        code: 23,
        meaning: "OATH code verified",
        outcome: Approved,
    },
    CallStatus {
        code: 24,
        meaning: "fallback OATH code verified",
        outcome: Approved,
    },
    CallStatus {
        code: 25,
        meaning: "fallback security questions answered",
        outcome: Approved,
    },
    CallStatus {
        code: 100,
        meaning: "invalid phone number",
        outcome: Denied(NotEnrolled),
    },
    CallStatus {
        code: 101,
        meaning: "call already in progress",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 102,
        meaning: "phone unreachable",
        outcome: Denied(Unreachable),
    },
    CallStatus {
        code: 103,
        meaning: "international calls not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 104,
        meaning: "PIN mode not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 105,
        meaning: "account locked",
        outcome: Denied(Declined),
    },
    CallStatus {
        code: 106,
        meaning: "invalid message",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 107,
        meaning: "invalid phone number format",
        outcome: Denied(NotEnrolled),
    },
    CallStatus {
        code: 108,
        meaning: "user hung up",
        outcome: Denied(Declined),
    },
    CallStatus {
        code: 109,
        meaning: "insufficient balance",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 110,
        meaning: "phone extensions not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 111,
        meaning: "invalid extension",
        outcome: Denied(NotEnrolled),
    },
    CallStatus {
        code: 112,
        meaning: "fraud code entered",
        outcome: Denied(Fraud),
    },
    CallStatus {
        code: 113,
        meaning: "rollover not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 114,
        meaning: "return PIN mode not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 115,
        meaning: "event confirmation not allowed",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 116,
        meaning: "invalid event parameter",
        outcome: Denied(Other),
    },
    CallStatus {
        code: 117,
        meaning: "unable to place call",
        outcome: Denied(Unreachable),
    },
];

/// The code's entry; codes the SDK never documented deny, naming the number.
pub fn lookup(code: u32) -> CallStatus {
    TABLE
        .iter()
        .copied()
        .find(|s| s.code == code)
        .unwrap_or(CallStatus {
            code,
            meaning: "an undocumented call status",
            outcome: Denied(Other),
        })
}

/// The verdict for a finished call: approved only when PhoneFactor said `authenticated =
/// yes` *and* the status is one that approves (a mismatch is a denial).
pub fn verdict(code: u32, authenticated: bool) -> (Outcome, String) {
    let s = lookup(code);
    let message = format!("the phone call ended: {} (call status {code})", s.meaning);
    match s.outcome {
        Approved if authenticated => (Approved, message),
        Approved => (
            Denied(Other),
            format!("{message}, but PhoneFactor did not report the user authenticated"),
        ),
        other => (other, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_documented_code_once() {
        let mut codes: Vec<u32> = TABLE.iter().map(|s| s.code).collect();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n, "no code twice");
        for c in (1..=25).chain(100..=117) {
            assert!(TABLE.iter().any(|s| s.code == c), "code {c}");
        }
    }

    #[test]
    fn the_issue_s_examples_map_as_mim_did() {
        assert_eq!(verdict(1, true).0, Approved);
        assert_eq!(verdict(3, true).0, Approved);
        assert_eq!(verdict(2, false).0, Denied(WrongAnswer));
        assert_eq!(verdict(4, false).0, Denied(Expired));
        assert_eq!(verdict(11, false).0, Denied(Expired));
        assert_eq!(verdict(10, false).0, Denied(Unreachable));
        assert_eq!(verdict(13, false).0, Denied(Unreachable));
        assert_eq!(verdict(14, false).0, Denied(Declined));
        assert_eq!(verdict(100, false).0, Denied(NotEnrolled));
        assert_eq!(verdict(107, false).0, Denied(NotEnrolled));
        assert_eq!(verdict(108, false).0, Denied(Declined));
        assert_eq!(
            verdict(112, false).0,
            Denied(Fraud),
            "fraud: the host locks out"
        );
        assert_eq!(verdict(15, false).0, Pending);
        let (o, m) = verdict(13, false);
        assert_eq!(o, Denied(Unreachable));
        assert_eq!(m, "the phone call ended: got voicemail (call status 13)");
    }

    #[test]
    fn an_approving_status_without_authenticated_is_denied_and_unknown_codes_deny() {
        let (o, m) = verdict(1, false);
        assert_eq!(o, Denied(Other));
        assert!(m.contains("did not report the user authenticated"), "{m}");
        let (o, m) = verdict(999, true);
        assert_eq!(o, Denied(Other));
        assert!(m.contains("999"), "{m}");
    }
}
