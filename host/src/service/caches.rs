//! The service's caches: requests waiting for their first answer, parsed roles by revision,
//! and the account rows a create reads, each trusted only while the store's writer reports
//! them unchanged.

use super::*;

impl Service {
    /// Keeps a request that waits for its first answer (dropping the expired ones when full).
    pub(super) fn remember(&self, a: Awaiting, now_ms: i64) {
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
    pub(super) fn recall(&self, id: &str, account: &str) -> Option<Awaiting> {
        let mut m = self.awaiting.lock().ok()?;
        if !users::same_account(&m.get(id)?.stored.view.account, account) {
            return None;
        }
        m.remove(id)
    }

    /// The revision of the cached role with this name (0: none cached).
    pub(super) fn cached_revision(&self, name: &str) -> i64 {
        self.role_cache
            .lock()
            .ok()
            .and_then(|c| c.get(name.trim()).map(|r| r.revision))
            .unwrap_or(0)
    }

    /// The role at `revision`: parsed from `policy` when the store sent it (the cached
    /// revision was stale), else the cached one — read afresh if the cache lost it meanwhile.
    pub(super) async fn role_from(
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
            // Parsed meanwhile by a request that read the same revision.
            (_, Some(role)) => return Ok(role),
            (Some(policy), None) => (revision, policy),
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

    /// Reads and caches role `name` when no revision of it is cached, once for all the
    /// requests that find it missing meanwhile (the first reads; the others then find it).
    /// A role that cannot be read is left to the caller's own read, which names the problem.
    pub(super) async fn load_role_once(&self, name: &str) {
        let _one = self.role_loading.lock().await;
        if self.cached_revision(name) != 0 {
            return;
        }
        let n = name.trim().to_string();
        if let Ok(Some((revision, policy))) = self
            .store
            .read(move |tx| roles::get_if_changed(tx, &n, 0))
            .await
        {
            let _ = self.role_from(name.trim(), revision, policy).await;
        }
    }

    /// The cached role `name`, when the store's writer has not changed it since it was read.
    pub(super) fn fresh_role(&self, c: &Changes, name: &str, now_ms: i64) -> Option<Arc<Role>> {
        let cache = self.role_cache.lock().ok()?;
        let r = cache.get(name)?;
        let (stamp, read_at) = r.fresh?;
        c.still_fresh(Kind::Role, name, stamp, read_at, now_ms)
            .then(|| Arc::clone(&r.role))
    }

    /// Marks the cached role `name` at `revision` as read unchanged after `stamp` was taken.
    pub(super) fn role_read(&self, name: &str, revision: i64, stamp: Stamp, now_ms: i64) {
        if let Ok(mut cache) = self.role_cache.lock()
            && let Some(r) = cache.get_mut(name)
            && r.revision == revision
        {
            r.fresh = Some((stamp, now_ms));
        }
    }

    /// The cached rows of `key`, when the store's writer has not changed them since.
    pub(super) fn fresh_account(
        &self,
        c: &Changes,
        key: &str,
        now_ms: i64,
    ) -> Option<Arc<AccountRows>> {
        let cache = self.accounts.lock().ok()?;
        let rows = cache.get(key)?;
        c.still_fresh(Kind::Account, key, rows.stamp?, rows.read_at, now_ms)
            .then(|| Arc::clone(rows))
    }

    /// Keeps the rows of `key` read after their stamp was taken.
    pub(super) fn account_read(&self, key: &str, rows: Arc<AccountRows>) {
        if let Ok(mut cache) = self.accounts.lock() {
            let now = rows.read_at;
            crate::model::caches::make_room(
                &mut cache,
                crate::model::caches::MAX_ENTRIES,
                |_, r| !changes::young(r.read_at, now),
            );
            cache.insert(key.to_string(), rows);
        }
    }
}
