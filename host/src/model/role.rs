//! Roles and their activation policy: who may ask, when, for how long, and what stands in the
//! way (MFA through the role's providers, owner approval, a justification).

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::model::error::{Error, Result};
use crate::model::identity::same_account;

/// Longest activation any role may grant; MIM's RoleMaximalDuration is a day by default, and
/// a week is the ceiling here.
pub const TTL_CEILING: SignedDuration = SignedDuration::from_hours(24 * 7);

pub use crate::model::refusal::{Refusal, Usability};

/// When a role may be activated: on some weekdays, between two times of day, in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct AvailabilityWindow {
    /// Days the window opens on.
    pub days: BTreeSet<u8>,
    /// Opening time of day.
    pub from: Time,
    /// Closing time of day; at or before `from` means the window closes the next day.
    pub to: Time,
    /// IANA time zone name (`Europe/Paris`).
    pub time_zone: String,
    tz: TimeZone,
}

fn weekday_index(w: Weekday) -> u8 {
    w.to_monday_zero_offset() as u8
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl AvailabilityWindow {
    /// A window from day names (`mon`..`sun`, or `mon-fri`), `HH:MM` times and an IANA zone.
    pub fn new(days: &[&str], from: &str, to: &str, time_zone: &str) -> Result<Self> {
        let bad = |m: String| Error::Invalid {
            what: "availability window".into(),
            message: m,
        };
        let mut set = BTreeSet::new();
        for d in days {
            let d = d.trim().to_ascii_lowercase();
            let index = |name: &str| {
                DAY_NAMES
                    .iter()
                    .position(|n| name.starts_with(n) && name.len() >= 3)
                    .map(|i| i as u8)
            };
            match d.split_once('-') {
                Some((a, b)) => {
                    let (Some(a), Some(b)) = (index(a), index(b)) else {
                        return Err(bad(format!("`{d}` is not a range of days like `mon-fri`")));
                    };
                    let mut i = a;
                    loop {
                        set.insert(i);
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => {
                    let Some(i) = index(&d) else {
                        return Err(bad(format!("`{d}` is not a day (mon, tue, ... sun)")));
                    };
                    set.insert(i);
                }
            }
        }
        if set.is_empty() {
            return Err(bad("the window has no days".into()));
        }
        let time = |s: &str, key: &str| {
            s.trim()
                .parse::<Time>()
                .map_err(|_| bad(format!("`{key}` = `{s}` is not a time of day like `09:00`")))
        };
        let from = time(from, "from")?;
        let to = time(to, "to")?;
        let tz = TimeZone::get(time_zone)
            .map_err(|_| bad(format!("`{time_zone}` is not a known time zone")))?;
        Ok(Self {
            days: set,
            from,
            to,
            time_zone: time_zone.to_string(),
            tz,
        })
    }

    /// Whether the window is open at `at`.
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned_datetime(self.tz.clone());
        let t = local.time();
        let today = weekday_index(local.weekday());
        let yesterday = (today + 6) % 7;
        if self.from < self.to {
            self.days.contains(&today) && t >= self.from && t < self.to
        } else {
            // Overnight: opens on a listed day at `from`, closes the next day at `to`.
            (self.days.contains(&today) && t >= self.from)
                || (self.days.contains(&yesterday) && t < self.to)
        }
    }
}

impl fmt::Display for AvailabilityWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = self
            .days
            .iter()
            .filter_map(|d| DAY_NAMES.get(usize::from(*d)).copied())
            .collect();
        write!(
            f,
            "on {} from {} to {} ({})",
            days.join(", "),
            self.from.strftime("%H:%M"),
            self.to.strftime("%H:%M"),
            self.time_zone
        )
    }
}

/// What a role does when the factor chosen for a user is unavailable (the provider fails, or
/// the host sees it down).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FactorDown {
    /// Refuse: "the factor is unavailable, try later" (the default: nothing weaker is offered).
    #[default]
    FailClosed,
    /// Try the role's next provider the user can use, in the role's order (an event each).
    Fallback,
}

/// What stands between a user and a role's activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// The role's name, unique.
    pub name: String,
    /// Accounts that may request it (compared without regard to case).
    pub candidates: BTreeSet<String>,
    /// Accounts that may approve requests for it.
    pub approvers: BTreeSet<String>,
    /// Activation length when the request names none.
    pub ttl_default: SignedDuration,
    /// Longest activation; longer requests are cut to it.
    pub ttl_max: SignedDuration,
    /// When it may be activated; always when `None`.
    pub availability: Option<AvailabilityWindow>,
    /// Whether a request must carry a justification.
    pub justification_required: bool,
    /// Whether an approver must approve (MIM's ApprovalEnabled).
    pub approval_enabled: bool,
    /// Whether MFA through `providers` is required (MIM's MFAEnabled).
    pub mfa_enabled: bool,
    /// The providers accepted for MFA, in order of preference.
    pub providers: Vec<String>,
    /// What happens when the chosen provider is unavailable.
    pub when_factor_down: FactorDown,
    /// Providers tried in shadow: after the real factor succeeds, the user is asked for the
    /// first of these they can use; the outcome is recorded, never decides the request.
    pub shadow: Vec<String>,
}

/// Where a new request starts, and for how long it will grant the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The activation's length (the request's, cut to the role's maximum).
    pub ttl: SignedDuration,
    /// Whether MFA stands in the way.
    pub needs_mfa: bool,
    /// Whether approval stands in the way.
    pub needs_approval: bool,
}

impl Role {
    /// Checks the role's own consistency; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Error::Invalid {
            what: format!("role `{}`", self.name),
            message: m,
        };
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(bad("the name must be 1 to 128 characters".into()));
        }
        if self.ttl_default <= SignedDuration::ZERO || self.ttl_max <= SignedDuration::ZERO {
            return Err(bad("`ttl` and `max_ttl` must be positive".into()));
        }
        if self.ttl_default > self.ttl_max {
            return Err(bad(format!(
                "`ttl` ({} s) is longer than `max_ttl` ({} s)",
                self.ttl_default.as_secs(),
                self.ttl_max.as_secs()
            )));
        }
        if self.ttl_max > TTL_CEILING {
            return Err(bad(format!(
                "`max_ttl` ({} s) is longer than the {} s ceiling",
                self.ttl_max.as_secs(),
                TTL_CEILING.as_secs()
            )));
        }
        if self.mfa_enabled && self.providers.is_empty() {
            return Err(bad(
                "MFA is enabled but no provider is listed: add one with `--providers`".into(),
            ));
        }
        if self.approval_enabled && self.approvers.is_empty() {
            return Err(bad(
                "approval is enabled but the role has no approvers".into()
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &self.providers {
            if !seen.insert(p) {
                return Err(bad(format!("provider `{p}` is listed twice")));
            }
        }
        if !self.shadow.is_empty() && !self.mfa_enabled {
            return Err(bad(
                "a shadow provider is tried after the role's MFA succeeds, and MFA is not enabled: enable it or remove `shadow`".into(),
            ));
        }
        let mut shadows = BTreeSet::new();
        for p in &self.shadow {
            if seen.contains(p) {
                return Err(bad(format!(
                    "provider `{p}` is both one of the role's providers and a shadow: a shadow is a factor the role does not accept yet"
                )));
            }
            if !shadows.insert(p) {
                return Err(bad(format!("shadow provider `{p}` is listed twice")));
            }
        }
        Ok(())
    }

    /// Whether `account` is a candidate (under any spelling of its key).
    pub fn is_candidate(&self, account: &str) -> bool {
        // The exact spelling is a tree lookup; only another spelling scans the set.
        self.candidates.contains(account)
            || self.candidates.iter().any(|c| same_account(c, account))
    }

    /// Whether `account` is an approver (under any spelling of its key).
    pub fn is_approver(&self, account: &str) -> bool {
        self.approvers.contains(account) || self.approvers.iter().any(|c| same_account(c, account))
    }

    /// Decides whether `account` may request the role at `at`, and on what terms.
    pub fn admit(
        &self,
        account: &str,
        justification: &str,
        requested_ttl: Option<SignedDuration>,
        at: Timestamp,
    ) -> Result<Admission> {
        let refuse = |r: Refusal| Err(Error::Refused(r));
        if !self.is_candidate(account) {
            return refuse(Refusal::NotCandidate {
                account: account.to_string(),
                role: self.name.clone(),
            });
        }
        if self.justification_required && justification.trim().is_empty() {
            return refuse(Refusal::JustificationRequired {
                role: self.name.clone(),
            });
        }
        if let Some(w) = &self.availability
            && !w.contains(at)
        {
            return refuse(Refusal::OutsideWindow {
                role: self.name.clone(),
                window: w.to_string(),
            });
        }
        let ttl = match requested_ttl {
            None => self.ttl_default,
            Some(t) if t <= SignedDuration::ZERO => {
                return refuse(Refusal::BadTtl {
                    requested_s: t.as_secs(),
                });
            }
            Some(t) => t.min(self.ttl_max),
        };
        Ok(Admission {
            ttl,
            needs_mfa: self.mfa_enabled,
            needs_approval: self.approval_enabled,
        })
    }

    /// Checks that `approver` may decide on a request made by `requester`.
    pub fn check_approver(&self, approver: &str, requester: &str) -> Result<()> {
        if same_account(approver, requester) {
            return Err(Error::Refused(Refusal::SelfApproval {
                account: approver.to_string(),
            }));
        }
        if !self.is_approver(approver) {
            return Err(Error::Refused(Refusal::NotApprover {
                account: approver.to_string(),
                role: self.name.clone(),
            }));
        }
        Ok(())
    }

    /// Picks the provider for a user's MFA: the user's choice when the role accepts it and the
    /// user can use it, else the first of the role's providers the user can use.
    pub fn choose_provider(
        &self,
        chosen: Option<&str>,
        usability: impl Fn(&str) -> Usability,
    ) -> Result<String> {
        if let Some(c) = chosen {
            if !self.providers.iter().any(|p| p == c) {
                return Err(Error::Refused(Refusal::ProviderNotAllowed {
                    role: self.name.clone(),
                    provider: c.to_string(),
                    why: "the role does not accept it",
                }));
            }
            return match usability(c) {
                Usability::Usable => Ok(c.to_string()),
                u => Err(Error::Refused(Refusal::ProviderNotAllowed {
                    role: self.name.clone(),
                    provider: c.to_string(),
                    why: match u {
                        Usability::NotEnrolled => "you are not enrolled",
                        Usability::NoPhone => "you have no phone number on record",
                        Usability::Retired(_) => "it has been retired (its sunset has passed)",
                        _ => "it is not available",
                    },
                })),
            };
        }
        let mut accepted = Vec::with_capacity(self.providers.len());
        for p in &self.providers {
            match usability(p) {
                Usability::Usable => return Ok(p.clone()),
                u => accepted.push((p.clone(), u)),
            }
        }
        Err(Error::Refused(Refusal::NoUsableProvider {
            role: self.name.clone(),
            accepted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> Role {
        Role {
            name: "Domain Admins".into(),
            candidates: ["CONTOSO\\jdoe".to_string()].into(),
            approvers: ["CONTOSO\\boss".to_string()].into(),
            ttl_default: SignedDuration::from_hours(1),
            ttl_max: SignedDuration::from_hours(4),
            availability: None,
            justification_required: true,
            approval_enabled: true,
            mfa_enabled: true,
            providers: vec!["phone-legacy".into(), "totp".into()],
            when_factor_down: FactorDown::FailClosed,
            shadow: Vec::new(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-11-26T10:00:00Z"; // a Thursday

    #[test]
    fn candidates_are_admitted_with_a_capped_ttl() {
        let r = role();
        let a = r
            .admit(
                "contoso\\JDOE",
                "patching",
                Some(SignedDuration::from_hours(9)),
                at(NOW),
            )
            .unwrap();
        assert_eq!(a.ttl, SignedDuration::from_hours(4));
        assert!(a.needs_mfa && a.needs_approval);
        let a = r.admit("CONTOSO\\jdoe", "x", None, at(NOW)).unwrap();
        assert_eq!(a.ttl, SignedDuration::from_hours(1));
    }

    #[test]
    fn refusals_say_why() {
        let r = role();
        let e = r.admit("CONTOSO\\eve", "x", None, at(NOW)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`CONTOSO\\eve` is not a candidate for role `Domain Admins`"
        );
        let e = r.admit("CONTOSO\\jdoe", "  ", None, at(NOW)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "role `Domain Admins` requires a justification"
        );
        let e = r
            .admit("CONTOSO\\jdoe", "x", Some(SignedDuration::ZERO), at(NOW))
            .unwrap_err();
        assert!(e.to_string().contains("must be positive"), "{e}");
    }

    #[test]
    fn the_window_is_checked_in_its_time_zone() {
        let mut r = role();
        r.availability =
            Some(AvailabilityWindow::new(&["mon-fri"], "09:00", "17:00", "Europe/Paris").unwrap());
        // 10:00Z is 11:00 in Paris on a Thursday: open.
        assert!(r.admit("CONTOSO\\jdoe", "x", None, at(NOW)).is_ok());
        // 16:30Z is 17:30 in Paris: closed.
        let e = r
            .admit("CONTOSO\\jdoe", "x", None, at("2026-11-26T16:30:00Z"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "role `Domain Admins` can be activated only on mon, tue, wed, thu, fri from 09:00 to 17:00 (Europe/Paris); try again then"
        );
        // Saturday: closed.
        assert!(
            r.admit("CONTOSO\\jdoe", "x", None, at("2026-11-28T10:00:00Z"))
                .is_err()
        );
    }

    #[test]
    fn an_overnight_window_closes_the_next_morning() {
        let w = AvailabilityWindow::new(&["fri"], "22:00", "06:00", "UTC").unwrap();
        assert!(w.contains(at("2026-11-27T23:00:00Z"))); // Friday night
        assert!(w.contains(at("2026-11-28T05:59:00Z"))); // Saturday early
        assert!(!w.contains(at("2026-11-28T06:00:00Z")));
        assert!(!w.contains(at("2026-11-26T23:00:00Z"))); // Thursday night
        let wrap = AvailabilityWindow::new(&["sat-mon"], "00:00", "00:00", "UTC").unwrap();
        assert_eq!(wrap.days, [0u8, 5, 6].into());
    }

    #[test]
    fn bad_windows_name_the_problem() {
        let e = AvailabilityWindow::new(&["funday"], "09:00", "17:00", "UTC").unwrap_err();
        assert!(e.to_string().contains("`funday` is not a day"), "{e}");
        let e = AvailabilityWindow::new(&["mon"], "9am", "17:00", "UTC").unwrap_err();
        assert!(e.to_string().contains("`from` = `9am`"), "{e}");
        let e = AvailabilityWindow::new(&["mon"], "09:00", "17:00", "Mars/Olympus").unwrap_err();
        assert!(
            e.to_string()
                .contains("`Mars/Olympus` is not a known time zone"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = role();
        r.validate().unwrap();
        r.ttl_default = SignedDuration::from_hours(5);
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("longer than `max_ttl`")
        );
        let mut r = role();
        r.providers.clear();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("no provider")
        );
        let mut r = role();
        r.approvers.clear();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("no approvers")
        );
        let mut r = role();
        r.providers.push("totp".into());
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
    }

    #[test]
    fn a_shadow_is_a_factor_the_role_does_not_accept_yet() {
        let mut r = role();
        r.providers = vec!["phone-legacy".into()];
        r.shadow = vec!["totp".into()];
        r.validate().unwrap();
        r.shadow = vec!["phone-legacy".into()];
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("both one of the role's providers and a shadow"),
            "{e}"
        );
        r.shadow = vec!["totp".into(), "totp".into()];
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("shadow provider `totp` is listed twice"), "{e}");
        r.shadow = vec!["totp".into()];
        r.mfa_enabled = false;
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("MFA is not enabled"), "{e}");
    }

    #[test]
    fn approvers_cannot_approve_themselves() {
        let mut r = role();
        r.approvers.insert("CONTOSO\\jdoe".into());
        let e = r
            .check_approver("contoso\\jdoe", "CONTOSO\\jdoe")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`contoso\\jdoe` cannot approve their own request"
        );
        let e = r
            .check_approver("CONTOSO\\eve", "CONTOSO\\jdoe")
            .unwrap_err();
        assert!(e.to_string().contains("not an approver"));
        r.check_approver("CONTOSO\\boss", "CONTOSO\\jdoe").unwrap();
    }

    #[test]
    fn the_first_usable_provider_wins_unless_the_user_chooses() {
        let r = role();
        let usable = |p: &str| match p {
            "phone-legacy" => Usability::NoPhone,
            _ => Usability::Usable,
        };
        assert_eq!(r.choose_provider(None, usable).unwrap(), "totp");
        assert_eq!(r.choose_provider(Some("totp"), usable).unwrap(), "totp");
        let e = r.choose_provider(Some("phone-legacy"), usable).unwrap_err();
        assert!(e.to_string().contains("no phone number on record"), "{e}");
        let e = r.choose_provider(Some("sms"), usable).unwrap_err();
        assert!(e.to_string().contains("does not accept it"), "{e}");
        let e = r
            .choose_provider(None, |_| Usability::NotEnrolled)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("role `Domain Admins` accepts MFA through `phone-legacy` (you are not enrolled: `rolegate enrol phone-legacy`), `totp` (you are not enrolled: `rolegate enrol totp`), and you can use none of them yet"),
            "{e}"
        );
    }
}
