//! A directory source over LDAP: `user new --from-directory` copies a user's display name,
//! phone and e-mail once, as New-PAMUser did from the CORP domain.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::model::error::{Error, Result};

/// `[directory]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// The DN to bind as (anonymous when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A private file (mode 0600) holding the bind password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// The attribute holding the account name without its domain.
    #[serde(default = "default_account_attribute")]
    pub account_attribute: String,
    /// The display name's attribute.
    #[serde(default = "default_display_name_attribute")]
    pub display_name_attribute: String,
    /// The phone attributes, in order of preference (the first present is taken).
    #[serde(default = "default_phone_attributes")]
    pub phone_attributes: Vec<String>,
    /// The e-mail attribute.
    #[serde(default = "default_email_attribute")]
    pub email_attribute: String,
    /// Seconds between two comparisons of the directory's phone numbers with the stored ones
    /// (event 825 for each difference); 0 turns the monitor off.
    #[serde(default = "default_monitor_interval")]
    pub monitor_interval_s: u64,
}

fn default_monitor_interval() -> u64 {
    3600
}

fn default_account_attribute() -> String {
    "sAMAccountName".into()
}
fn default_display_name_attribute() -> String {
    "displayName".into()
}
fn default_phone_attributes() -> Vec<String> {
    vec!["telephoneNumber".into(), "mobile".into()]
}
fn default_email_attribute() -> String {
    "mail".into()
}

/// A user as the directory has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The entry's DN.
    pub dn: String,
    /// Display name, when set.
    pub display_name: Option<String>,
    /// Phone (the first phone attribute present), as written there.
    pub phone: Option<String>,
    /// E-mail, when set.
    pub email: Option<String>,
}

fn ldap_error(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: format!("directory {url}"),
        message: e.to_string(),
    }
}

impl DirectoryConfig {
    /// Checks the settings that can be checked without the server (at config load).
    pub fn check(&self) -> Result<()> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
            return Err(Error::Invalid {
                what: "[directory] url".into(),
                message: format!("must start with ldap:// or ldaps://, not `{}`", self.url),
            });
        }
        if self.base_dn.trim().is_empty() || self.phone_attributes.is_empty() {
            return Err(Error::Invalid {
                what: "[directory]".into(),
                message: "base_dn and at least one phone attribute are needed".into(),
            });
        }
        if let Some(p) = &self.bind_password_file {
            crate::store::private_files::check_private(p)?;
        }
        Ok(())
    }

    /// Looks `account` (`DOMAIN\name` or `name`) up by its name part; blocking.
    pub fn lookup(&self, account: &str) -> Result<Option<DirectoryUser>> {
        let mut ldap = self.connect()?;
        let found = self.find(&mut ldap, account);
        let _ = ldap.unbind();
        found
    }

    /// Looks several accounts up over one connection; blocking.
    pub fn lookup_many(&self, accounts: &[String]) -> Result<Vec<Option<DirectoryUser>>> {
        let mut ldap = self.connect()?;
        let found = accounts.iter().map(|a| self.find(&mut ldap, a)).collect();
        let _ = ldap.unbind();
        found
    }

    fn connect(&self) -> Result<ldap3::LdapConn> {
        let settings = ldap3::LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        let mut ldap = ldap3::LdapConn::with_settings(settings, &self.url)
            .map_err(|e| ldap_error(&self.url, e))?;
        ldap.with_timeout(Duration::from_secs(10));
        if let Some(dn) = &self.bind_dn {
            let password = match &self.bind_password_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|source| Error::Io {
                        what: format!("cannot read {}", p.display()),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            ldap.simple_bind(dn, &password)
                .and_then(|r| r.success())
                .map_err(|e| ldap_error(&self.url, format!("binding as {dn}: {e}")))?;
        }
        Ok(ldap)
    }

    fn find(&self, ldap: &mut ldap3::LdapConn, account: &str) -> Result<Option<DirectoryUser>> {
        let name = account.rsplit('\\').next().unwrap_or(account).trim();
        if name.is_empty() {
            return Err(Error::Invalid {
                what: "account".into(),
                message: "the account has no name".into(),
            });
        }
        let filter = format!("({}={})", self.account_attribute, ldap3::ldap_escape(name));
        let mut attrs: Vec<&str> = vec![&self.display_name_attribute, &self.email_attribute];
        attrs.extend(self.phone_attributes.iter().map(String::as_str));
        let (entries, _) = ldap
            .search(&self.base_dn, ldap3::Scope::Subtree, &filter, attrs)
            .and_then(|r| r.success())
            .map_err(|e| ldap_error(&self.url, format!("searching {filter}: {e}")))?;
        if entries.len() > 1 {
            return Err(ldap_error(
                &self.url,
                format!(
                    "{} entries match {filter}; the account must be unique",
                    entries.len()
                ),
            ));
        }
        let Some(entry) = entries.into_iter().next() else {
            return Ok(None);
        };
        let e = ldap3::SearchEntry::construct(entry);
        let first = |attr: &str| {
            e.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(attr))
                .and_then(|(_, v)| v.first())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(Some(DirectoryUser {
            dn: e.dn.clone(),
            display_name: first(&self.display_name_attribute),
            phone: self.phone_attributes.iter().find_map(|a| first(a)),
            email: first(&self.email_attribute),
        }))
    }
}

/// Compares the directory's phone numbers with the stored ones and raises event 825 (Warning,
/// source `monitoring`) for each difference not reported yet. The stored number is never
/// changed: someone who edits a phone in the directory must not receive the next call.
/// `reported` remembers what was reported (a difference is raised once, again after it
/// changes). Returns how many events were raised.
pub async fn monitor_once(
    store: &crate::store::Store,
    directory: std::sync::Arc<DirectoryConfig>,
    default_cc: u16,
    reported: &mut std::collections::HashMap<String, String>,
) -> Result<usize> {
    let users = store.read_long(crate::records::users::list).await?;
    let accounts: Vec<String> = users.iter().map(|u| u.account.clone()).collect();
    let found = tokio::task::spawn_blocking(move || directory.lookup_many(&accounts))
        .await
        .map_err(|e| Error::Invalid {
            what: "directory monitor".into(),
            message: e.to_string(),
        })??;
    let mut events = Vec::new();
    for (user, entry) in users.iter().zip(found) {
        let key = crate::records::users::account_key(&user.account);
        let Some(raw) = entry.and_then(|e| e.phone) else {
            continue;
        };
        let Ok(phone) = crate::model::phone::parse(&raw, default_cc).map(|p| p.to_string()) else {
            continue;
        };
        if user.phone.as_deref() == Some(phone.as_str()) {
            reported.remove(&key);
            continue;
        }
        if reported.get(&key) == Some(&phone) {
            continue;
        }
        reported.insert(key, phone.clone());
        let mut e = crate::records::events::NewEvent::new(
            crate::records::events::PHONE_CHANGED,
            crate::records::events::Severity::Warning,
            "monitoring",
            format!(
                "the directory's telephone number is now {} (stored: {}); the stored number is kept until an admin changes it",
                crate::records::users::masked(Some(&phone)),
                crate::records::users::masked(user.phone.as_deref())
            ),
        );
        e.account = Some(user.account.clone());
        events.push(e);
    }
    let n = events.len();
    if n > 0 {
        let now = jiff::Timestamp::now().as_millisecond();
        store
            .write(move |tx| {
                for e in events {
                    crate::records::events::append(tx, e, now)?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(n)
}
