//! What a re-run would change: only the fields the files carry, never what an admin set that
//! MIM has no word for (providers once set, `when_factor_down`, justification, days).

use std::collections::BTreeSet;

use crate::records::roles::RoleSpec;

/// The stored role with the fields the file carries (by its `columns`, lower case) taken from
/// the file's, and the names of the fields that differ. A role the file turns MFA on for gets
/// the file's provider only when it has none.
pub(super) fn merge_role(
    existing: &RoleSpec,
    file: &RoleSpec,
    columns: &BTreeSet<String>,
) -> (RoleSpec, Vec<String>) {
    let mut merged = existing.clone();
    let mut changed = Vec::new();
    let carries = |c: &str| columns.contains(c);
    if carries("candidates") && existing.candidates != file.candidates {
        merged.candidates = file.candidates.clone();
        changed.push("candidates".to_string());
    }
    if carries("approvers") && existing.approvers != file.approvers {
        merged.approvers = file.approvers.clone();
        changed.push("approvers".to_string());
    }
    if carries("ttl") && existing.ttl_s != file.ttl_s {
        merged.ttl_s = file.ttl_s;
        changed.push("ttl_s".to_string());
        if merged.max_ttl_s < file.ttl_s {
            merged.max_ttl_s = file.ttl_s;
            changed.push("max_ttl_s".to_string());
        }
    }
    if carries("mfaenabled") && existing.mfa_enabled != file.mfa_enabled {
        merged.mfa_enabled = file.mfa_enabled;
        changed.push("mfa_enabled".to_string());
        if file.mfa_enabled && merged.providers.is_empty() {
            merged.providers = file.providers.clone();
            changed.push("providers".to_string());
        }
    }
    if carries("approvalenabled") && existing.approval_enabled != file.approval_enabled {
        merged.approval_enabled = file.approval_enabled;
        changed.push("approval_enabled".to_string());
    }
    if carries("availabilitywindowenabled") && existing.availability != file.availability {
        merged.availability = file.availability.clone();
        changed.push("availability".to_string());
    }
    (merged, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RoleSpec {
        RoleSpec {
            name: "Ops".into(),
            candidates: ["C\\jen".to_string()].into(),
            approvers: BTreeSet::new(),
            ttl_s: 3600,
            max_ttl_s: 3600,
            availability: None,
            justification_required: false,
            approval_enabled: false,
            mfa_enabled: true,
            providers: vec!["phone-legacy".into()],
            when_factor_down: Default::default(),
            shadow: Vec::new(),
        }
    }

    #[test]
    fn an_admin_s_changes_stay_and_only_carried_fields_differ() {
        let mut stored = spec();
        stored.providers = vec!["totp".into()];
        stored.justification_required = true;
        stored.max_ttl_s = 7200;
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let all = cols(&[
            "candidates",
            "approvers",
            "ttl",
            "mfaenabled",
            "approvalenabled",
        ]);
        let (merged, changed) = merge_role(&stored, &spec(), &all);
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(merged, stored);
        let mut file = spec();
        file.ttl_s = 10_800;
        file.candidates.insert("C\\bob".into());
        let (merged, changed) = merge_role(&stored, &file, &all);
        assert_eq!(changed, ["candidates", "ttl_s", "max_ttl_s"]);
        assert_eq!(merged.providers, ["totp"]);
        assert!(merged.justification_required);
        // A column the file lacks is not a difference.
        let (_, changed) = merge_role(&stored, &file, &cols(&["mfaenabled"]));
        assert!(changed.is_empty(), "{changed:?}");
        // MFA turned on: the import's provider only when the role has none.
        let mut off = spec();
        off.mfa_enabled = false;
        off.providers.clear();
        let (merged, changed) = merge_role(&off, &spec(), &all);
        assert_eq!(changed, ["mfa_enabled", "providers"]);
        assert_eq!(merged.providers, ["phone-legacy"]);
    }
}
