//! Readiness: for each role, which candidates could satisfy its MFA today with each of its
//! providers and shadows (enrolled, a phone on record, not locked out, enabled), and how
//! often each completed a shadow factor — so an admin sees when a role can drop the phone
//! call, before anyone is stranded by the switch.

use std::collections::BTreeMap;

use super::*;

/// A role's readiness, as `rolegate role readiness` and `GET /v1/readiness` show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// The role.
    pub role: String,
    /// Whether the role asks for MFA at all.
    pub mfa_enabled: bool,
    /// Each provider of the role, then each shadow.
    pub providers: Vec<ProviderReadiness>,
    /// Each candidate, with where they stand with each provider.
    pub candidates: Vec<CandidateReadiness>,
    /// What it means, in sentences: who is not ready for what, and which provider the role
    /// could drop today.
    pub summary: Vec<String>,
}

/// One provider of a role, over all its candidates.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProviderReadiness {
    /// The provider.
    pub provider: String,
    /// Whether the role lists it as a shadow (tried, not relied on).
    pub shadow: bool,
    /// `ok`, `degraded` or `down` as the host sees it; `not loaded`; `retired`.
    pub status: String,
    /// Enabled candidates who can use it today.
    pub ready: usize,
    /// Enabled candidates.
    pub candidates: usize,
    /// Candidates who completed it as a shadow at least once (event 207).
    pub shadow_completed_by: usize,
    /// Shadow challenges completed (event 207), all candidates.
    pub shadow_completed: i64,
    /// Shadow challenges not completed (event 208), all candidates.
    pub shadow_not_completed: i64,
}

/// One candidate of a role.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CandidateReadiness {
    /// The candidate as the role names it.
    pub account: String,
    /// Whether a stored, enabled user is behind the name.
    pub enabled: bool,
    /// By provider: `ready`, or what stands in the way (`not enrolled`, `no phone on
    /// record`, `locked out until …`, `disabled`, `no such user`).
    pub providers: BTreeMap<String, String>,
    /// By provider: shadow challenges this candidate completed (event 207).
    pub shadow_completed: BTreeMap<String, i64>,
}

/// What the store holds of one candidate.
struct Seen {
    account: String,
    user: Option<User>,
    enrolled: Vec<String>,
    locked: Vec<(String, i64)>,
}

impl Service {
    /// The readiness of one role (`Some(name)`) or of every role, by name.
    pub async fn readiness(&self, role: Option<&str>) -> Result<Vec<Readiness>> {
        let now = self.clock.now();
        let name = role.map(str::to_string);
        let (specs, seen, shadow_counts) = self
            .store
            .read_long(move |tx| {
                let specs = match &name {
                    Some(n) => vec![roles::get(tx, n)?.ok_or_else(|| Error::NotFound {
                        what: format!("role `{n}`"),
                    })?],
                    None => roles::list(tx)?,
                };
                let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
                for c in specs.iter().flat_map(|s| s.candidates.iter()) {
                    if seen.contains_key(c) {
                        continue;
                    }
                    let user = users::get(tx, c)?;
                    let (enrolled, locked) = match &user {
                        None => (Vec::new(), Vec::new()),
                        Some(u) => {
                            let key = account_key(&u.account);
                            let enrolled = tx
                                .query(
                                    "SELECT DISTINCT provider FROM credentials WHERE account_key = $1 AND flag IS NULL",
                                    &[key.clone().into()],
                                )?
                                .iter()
                                .map(|r| r.text(0))
                                .collect::<Result<Vec<_>>>()?;
                            let locked = tx
                                .query(
                                    "SELECT provider, locked_until FROM lockouts WHERE account_key = $1 AND locked_until > $2",
                                    &[key.into(), Value::Int(ms(now))],
                                )?
                                .iter()
                                .map(|r| Ok((r.text(0)?, r.int(1)?)))
                                .collect::<Result<Vec<_>>>()?;
                            (enrolled, locked)
                        }
                    };
                    seen.insert(
                        c.clone(),
                        Seen {
                            account: c.clone(),
                            user,
                            enrolled,
                            locked,
                        },
                    );
                }
                // Shadow outcomes by (role, provider, account key).
                let mut counts: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
                for (id, done) in [
                    (events::SHADOW_COMPLETED, true),
                    (events::SHADOW_NOT_COMPLETED, false),
                ] {
                    let rows = tx.query(
                        "SELECT role, provider, account, COUNT(*) FROM events WHERE id = $1 GROUP BY role, provider, account",
                        &[Value::Int(id)],
                    )?;
                    for r in &rows {
                        let k = (
                            r.opt_text(0)?.unwrap_or_default(),
                            r.opt_text(1)?.unwrap_or_default(),
                            r.opt_text(2)?.unwrap_or_default(),
                        );
                        let e = counts.entry(k).or_default();
                        if done {
                            e.0 += r.int(3)?;
                        } else {
                            e.1 += r.int(3)?;
                        }
                    }
                }
                Ok((specs, seen, counts))
            })
            .await?;
        let mut out = Vec::with_capacity(specs.len());
        for spec in &specs {
            out.push(self.role_readiness(spec, &seen, &shadow_counts, now));
        }
        Ok(out)
    }

    fn role_readiness(
        &self,
        spec: &roles::RoleSpec,
        seen: &BTreeMap<String, Seen>,
        counts: &BTreeMap<(String, String, String), (i64, i64)>,
        now: Timestamp,
    ) -> Readiness {
        let listed: Vec<(String, bool)> = spec
            .providers
            .iter()
            .map(|p| (p.clone(), false))
            .chain(spec.shadow.iter().map(|p| (p.clone(), true)))
            .collect();
        let mut candidates = Vec::new();
        for c in &spec.candidates {
            let Some(s) = seen.get(c) else { continue };
            let enabled = s.user.as_ref().is_some_and(|u| u.enabled);
            let key = s.user.as_ref().map(|u| account_key(&u.account));
            let mut by = BTreeMap::new();
            let mut shadow_completed = BTreeMap::new();
            for (p, shadow) in &listed {
                by.insert(p.clone(), self.stands(s, p));
                if *shadow && let Some(k) = &key {
                    let n = counts
                        .get(&(spec.name.clone(), p.clone(), k.clone()))
                        .map_or(0, |c| c.0);
                    shadow_completed.insert(p.clone(), n);
                }
            }
            candidates.push(CandidateReadiness {
                account: s.account.clone(),
                enabled,
                providers: by,
                shadow_completed,
            });
        }
        let enabled = candidates.iter().filter(|c| c.enabled).count();
        let mut providers = Vec::new();
        for (p, shadow) in &listed {
            let ready = candidates
                .iter()
                .filter(|c| c.enabled && c.providers.get(p).is_some_and(|s| s == "ready"))
                .count();
            let (mut done, mut not_done) = (0, 0);
            for ((r, q, _), (d, n)) in counts {
                if *r == spec.name && q == p {
                    done += d;
                    not_done += n;
                }
            }
            let shadow_completed_by = candidates
                .iter()
                .filter(|c| c.shadow_completed.get(p).is_some_and(|n| *n > 0))
                .count();
            providers.push(ProviderReadiness {
                provider: p.clone(),
                shadow: *shadow,
                status: self.provider_status(p, now),
                ready,
                candidates: enabled,
                shadow_completed_by,
                shadow_completed: done,
                shadow_not_completed: not_done,
            });
        }
        let summary = summary(spec, &providers, &candidates);
        Readiness {
            role: spec.name.clone(),
            mfa_enabled: spec.mfa_enabled,
            providers,
            candidates,
            summary,
        }
    }

    /// Where one candidate stands with one provider today.
    fn stands(&self, s: &Seen, p: &str) -> String {
        let Some(u) = &s.user else {
            return "no such user".into();
        };
        if !u.enabled {
            return "disabled".into();
        }
        let info = self.providers.get(p).and_then(|lp| lp.info());
        if info.is_some_and(|i| i.needs_phone) && u.phone.is_none() {
            return "no phone on record".into();
        }
        if info.is_some_and(|i| i.needs_enrolment) && !s.enrolled.iter().any(|e| e == p) {
            return "not enrolled".into();
        }
        if let Some((_, until)) = s.locked.iter().find(|(q, _)| q == p) {
            let until = Timestamp::from_millisecond(*until)
                .map(|t| t.to_string())
                .unwrap_or_default();
            return format!("locked out until {until}");
        }
        if info.is_none() {
            // Not loaded here: what it needs is unknown, so nobody is counted ready.
            return "provider not loaded".into();
        }
        "ready".into()
    }

    /// A provider's state on this daemon, as readiness shows it.
    fn provider_status(&self, p: &str, now: Timestamp) -> String {
        match self.providers.get(p) {
            None => "not loaded".into(),
            Some(lp) if lp.retired_at(now).is_some() => "retired".into(),
            Some(lp) => lp.observed().status.to_string(),
        }
    }
}

/// The sentences that say what a role's readiness means.
fn summary(
    spec: &roles::RoleSpec,
    providers: &[ProviderReadiness],
    candidates: &[CandidateReadiness],
) -> Vec<String> {
    let mut out = Vec::new();
    if !spec.mfa_enabled {
        out.push("the role asks for no MFA: nothing to move".into());
        return out;
    }
    let enabled = candidates.iter().filter(|c| c.enabled).count();
    if enabled == 0 {
        out.push("the role has no enabled candidate".into());
        return out;
    }
    for p in providers {
        let kind = if p.shadow { " (shadow)" } else { "" };
        let mut line = format!(
            "`{}`{kind}: {} of {} candidates ready",
            p.provider, p.ready, p.candidates
        );
        let waiting: Vec<String> = candidates
            .iter()
            .filter(|c| c.enabled)
            .filter_map(|c| {
                let s = c.providers.get(&p.provider)?;
                (s != "ready").then(|| format!("{} ({s})", c.account))
            })
            .collect();
        if !waiting.is_empty() {
            line.push_str(&format!("; not yet: {}", waiting.join(", ")));
        }
        if p.shadow {
            line.push_str(&format!(
                "; completed in shadow by {} of {} ({} completed, {} not)",
                p.shadow_completed_by, p.candidates, p.shadow_completed, p.shadow_not_completed
            ));
        }
        if p.status != "ok" {
            line.push_str(&format!("; the provider is {}", p.status));
        }
        out.push(line);
    }
    // A provider every enabled candidate can use, loaded and not retired, lets the others go.
    let all_ready: Vec<&ProviderReadiness> = providers
        .iter()
        .filter(|p| p.ready == enabled && p.status != "not loaded" && p.status != "retired")
        .collect();
    for q in providers.iter().filter(|q| !q.shadow) {
        match all_ready.iter().find(|p| p.provider != q.provider) {
            Some(p) if p.shadow && p.shadow_completed_by < enabled => out.push(format!(
                "`{}` could be dropped: every candidate can use `{}`, but only {} of {} completed it in shadow yet",
                q.provider, p.provider, p.shadow_completed_by, enabled
            )),
            Some(p) => out.push(format!(
                "ready to drop `{}`: every candidate can use `{}`",
                q.provider, p.provider
            )),
            None if providers.len() > 1 => out.push(format!(
                "not ready to drop `{}`: no other provider of the role is usable by every candidate",
                q.provider
            )),
            None => {}
        }
    }
    out
}
