//! What a role's providers mean for its candidates today: the warnings `rolegate role get`
//! shows an admin before users meet them (nobody enrolled, no phone on record, a provider
//! down or retired).

use super::*;

impl Service {
    /// Warnings about a role an admin should act on: providers no candidate can use today,
    /// and a role none of whose providers any candidate can use. Empty when all is well.
    pub async fn role_warnings(&self, role: &Role) -> Result<Vec<String>> {
        if !role.mfa_enabled || role.providers.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let candidates: Vec<String> = role.candidates.iter().cloned().collect();
        // Each candidate: enabled, has a phone, and the providers they are enrolled in.
        let seen: Vec<(bool, bool, Vec<String>)> = self
            .store
            .read(move |tx| {
                let mut out = Vec::with_capacity(candidates.len());
                for c in &candidates {
                    let Some(u) = users::get(tx, c)? else {
                        continue;
                    };
                    let enrolled = tx
                        .query(
                            "SELECT DISTINCT provider FROM credentials WHERE account_key = $1 AND flag IS NULL",
                            &[account_key(&u.account).into()],
                        )?
                        .iter()
                        .map(|r| r.text(0))
                        .collect::<Result<Vec<_>>>()?;
                    out.push((u.enabled, u.phone.is_some(), enrolled));
                }
                Ok(out)
            })
            .await?;
        let enabled: Vec<&(bool, bool, Vec<String>)> = seen.iter().filter(|c| c.0).collect();
        let mut warnings = Vec::new();
        let mut usable_by_someone = false;
        for p in &role.providers {
            let Some(lp) = self.providers.get(p) else {
                warnings.push(format!(
                    "provider `{p}` is not loaded on this daemon: add it to the config or remove it from the role"
                ));
                continue;
            };
            if let Some(at) = lp.retired_at(now) {
                warnings.push(format!(
                    "provider `{p}` was retired on {at}: add its replacement to the role"
                ));
                continue;
            }
            let Some(info) = lp.info() else {
                continue;
            };
            let users_of = enabled
                .iter()
                .filter(|(_, phone, enrolled)| {
                    (!info.needs_phone || *phone)
                        && (!info.needs_enrolment || enrolled.iter().any(|e| e == p))
                })
                .count();
            if users_of == 0 {
                let why = match (info.needs_enrolment, info.needs_phone) {
                    _ if enabled.is_empty() => "the role has no enabled candidate".to_string(),
                    (true, true) => "no candidate is enrolled in it with a phone on record".into(),
                    (true, false) => format!("nobody is enrolled (`rolegate enrol {p}`)"),
                    (false, true) => "no candidate has a phone number on record".into(),
                    (false, false) => "the role has no enabled candidate".into(),
                };
                warnings.push(format!("no candidate can use provider `{p}` today: {why}"));
            } else {
                usable_by_someone = true;
            }
            let seen = lp.observed();
            if seen.status != crate::plugins::health::Seen::Ok {
                warnings.push(format!(
                    "provider `{p}` is {} as the host sees it: {}",
                    seen.status,
                    seen.reason.as_deref().unwrap_or("its calls fail")
                ));
            }
        }
        if !usable_by_someone {
            warnings.push(format!(
                "no candidate can activate role `{}` today: none of its providers ({}) is usable by any candidate",
                role.name,
                role.providers
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for p in &role.shadow {
            match self.providers.get(p) {
                None => warnings.push(format!(
                    "shadow provider `{p}` is not loaded on this daemon: it is never asked"
                )),
                Some(lp) if lp.retired_at(now).is_some() => warnings.push(format!(
                    "shadow provider `{p}` is retired: it is never asked"
                )),
                Some(_) => {}
            }
        }
        if role.when_factor_down == FactorDown::Fallback && role.providers.len() < 2 {
            warnings.push(
                "`when_factor_down = fallback` has nothing to fall back to: the role lists one provider"
                    .into(),
            );
        }
        Ok(warnings)
    }
}
