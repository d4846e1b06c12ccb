//! Enrolment and credentials: a user enrols in a provider that needs it; admins list and
//! remove credentials.

use super::*;

impl Service {
    /// Begins enrolling `account` in a provider that needs it.
    pub async fn enroll_start(&self, account: &str, provider_id: &str) -> Result<EnrolmentView> {
        let now = self.clock.now();
        let (user, provider, credential_rows) = self.enrolment_parts(account, provider_id).await?;
        let ctx = EnrollContext {
            credentials: self.unseal(&account_key(account), provider_id, &credential_rows)?,
            user: Self::user_context(&user),
            origin: None,
            now: now.as_second().max(0) as u64,
        };
        let step = provider.enroll_start(ctx).await?;
        self.enrolment_step(&user, provider_id, step, now).await
    }

    /// Continues an enrolment with the user's input and the state `enroll_start` returned.
    pub async fn enroll_continue(
        &self,
        account: &str,
        provider_id: &str,
        state: &str,
        input: Input,
    ) -> Result<EnrolmentView> {
        let now = self.clock.now();
        let (user, provider, credential_rows) = self.enrolment_parts(account, provider_id).await?;
        let key = account_key(account);
        let refused = || Error::Invalid {
            what: "enrolment".into(),
            message: "the enrolment state is not valid; start again".into(),
        };
        let sealed = hex::decode(state.trim()).map_err(|_| refused())?;
        let opened = self
            .key
            .open(&sealed, &format!("enrolment/{key}/{provider_id}"))
            .map_err(|_| refused())?;
        if opened.len() < 8 {
            return Err(refused());
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&opened[..8]);
        if i64::from_be_bytes(expiry) <= ms(now) {
            return Err(Error::Conflict("the enrolment expired; start again".into()));
        }
        let ctx = EnrollContext {
            credentials: self.unseal(&key, provider_id, &credential_rows)?,
            user: Self::user_context(&user),
            origin: None,
            now: now.as_second().max(0) as u64,
        };
        let step = provider
            .enroll_continue(ctx, opened[8..].to_vec().into(), input)
            .await?;
        self.enrolment_step(&user, provider_id, step, now).await
    }

    async fn enrolment_parts(
        &self,
        account: &str,
        provider_id: &str,
    ) -> Result<(User, Arc<crate::plugins::LoadedProvider>, Vec<Row>)> {
        let (user, rows) = self.user_and_credentials(account).await?;
        let user = match user {
            Some(u) if u.enabled => u,
            _ => {
                return Err(Error::Refused(Refusal::UserNotAllowed {
                    account: account.to_string(),
                }));
            }
        };
        let provider = self
            .providers
            .get(provider_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("provider `{provider_id}`"),
            })?;
        if let Some(at) = provider.retired_at(self.clock.now()) {
            return Err(Error::Refused(Refusal::ProviderRetired {
                provider: provider_id.to_string(),
                at: at.to_string(),
            }));
        }
        if !provider.info().is_some_and(|i| i.needs_enrolment) {
            return Err(Error::Invalid {
                what: "enrolment".into(),
                message: format!("provider `{provider_id}` needs no enrolment"),
            });
        }
        // A user's API token is one factor: it must not be enough to add a second factor
        // beside the one they hold (or to swap it). An admin removes the old credential first,
        // unless the provider keeps several and proves a held one before adding another. A
        // credential set aside as a suspected copy blocks both: whoever holds the copy must not
        // enrol their own, and an admin looks first.
        let several = provider.info().is_some_and(|i| i.several_credentials);
        let held = rows
            .iter()
            .filter(|r| r.text(1).is_ok_and(|p| p == provider_id));
        for existing in held {
            if !usable(existing) {
                return Err(Error::Conflict(format!(
                    "`{account}`'s credential `{}` in `{provider_id}` was set aside for an admin to review (a suspected copy); an admin removes it before a new enrolment",
                    existing.text(0)?
                )));
            }
            if !several {
                return Err(Error::Conflict(format!(
                    "`{account}` is enrolled in `{provider_id}` already (credential `{}`); an admin removes that credential before a new enrolment",
                    existing.text(0)?
                )));
            }
        }
        Ok((user, provider, rows))
    }

    /// The user and their stored credential rows, in one read.
    async fn user_and_credentials(&self, account: &str) -> Result<(Option<User>, Vec<Row>)> {
        let a = account.to_string();
        self.store
            .read(move |tx| Ok((users::get(tx, &a)?, credential_rows(tx, &account_key(&a))?)))
            .await
    }

    /// A user's credentials, without their private data (for admins and the user).
    pub async fn credentials(&self, account: &str) -> Result<Vec<CredentialView>> {
        let (user, rows) = self.user_and_credentials(account).await?;
        if user.is_none() {
            return Err(Error::NotFound {
                what: format!("user `{account}`"),
            });
        }
        rows.iter()
            .map(|r| {
                Ok(CredentialView {
                    id: r.text(0)?,
                    provider: r.text(1)?,
                    label: r.text(2)?,
                    created_at: r.int(4)?,
                    flag: r.opt_text(5)?,
                    flagged_at: r.opt_text(5)?.and(r.int(6).ok()),
                })
            })
            .collect()
    }

    /// Removes one of a user's credentials (a lost phone or key), raising event 311.
    pub async fn remove_credential(
        &self,
        account: &str,
        provider: &str,
        id: &str,
        actor: &str,
    ) -> Result<()> {
        let now = ms(self.clock.now());
        let (a, p, i, actor) = (
            account.to_string(),
            provider.to_string(),
            id.to_string(),
            actor.to_string(),
        );
        self.store
            .write(move |tx| {
                let user = users::get(tx, &a)?.ok_or_else(|| Error::NotFound {
                    what: format!("user `{a}`"),
                })?;
                let n = tx.execute(
                    "DELETE FROM credentials WHERE account_key = $1 AND provider = $2 AND id = $3",
                    &[account_key(&a).into(), p.clone().into(), i.clone().into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound {
                        what: format!("credential `{i}` of `{a}` in `{p}`"),
                    });
                }
                let mut e = NewEvent::new(
                    events::CREDENTIAL_REMOVED,
                    Severity::Warning,
                    "admin",
                    format!("credential `{i}` in `{p}` removed by `{actor}`"),
                );
                e.account = Some(user.account);
                e.provider = Some(p);
                events::append(tx, e, now)?;
                Ok(())
            })
            .await
    }

    async fn enrolment_step(
        &self,
        user: &User,
        provider_id: &str,
        step: Step,
        now: Timestamp,
    ) -> Result<EnrolmentView> {
        let key = account_key(&user.account);
        let mut view = EnrolmentView {
            provider: provider_id.to_string(),
            done: false,
            prompt: None,
            state: None,
            credential: None,
            message: None,
        };
        match step {
            Step::Ask {
                prompt,
                state,
                expires_in,
                ..
            } => {
                let cap = self.settings.max_prompt_lifetime.as_millis() as i64;
                let expiry = ms(now) + ((expires_in as i64).saturating_mul(1000)).min(cap);
                let mut blob = expiry.to_be_bytes().to_vec();
                blob.extend_from_slice(state.as_slice());
                let sealed = self
                    .key
                    .seal(&blob, &format!("enrolment/{key}/{provider_id}"))?;
                view.prompt = Some(serde_json::to_value(&prompt).unwrap_or_default());
                view.state = Some(hex::encode(sealed));
            }
            Step::Done {
                verdict:
                    Verdict::Approved {
                        credential: Some(c),
                        ..
                    },
            } => {
                let (p, account) = (provider_id.to_string(), user.account.clone());
                let id = c.id.clone();
                let sealing = Arc::clone(&self.key);
                self.store
                    .write(move |tx| {
                        store_credential(tx, &sealing, &account, &p, &c, ms(now))?;
                        let mut e = NewEvent::new(
                            events::ENROLLED,
                            Severity::Information,
                            "enrolment",
                            format!("enrolled in `{p}` (credential `{}`)", c.id),
                        );
                        e.account = Some(account);
                        e.provider = Some(p);
                        events::append(tx, e, ms(now))
                    })
                    .await?;
                view.done = true;
                view.credential = Some(id);
            }
            Step::Done {
                verdict: Verdict::Denied { message, .. },
            } => view.message = Some(format!("{message}; start the enrolment again")),
            _ => {
                view.message = Some("the provider ended the enrolment without a credential".into())
            }
        }
        Ok(view)
    }
}

/// Stores (or replaces) a user's credential for a provider, sealed with the host's key —
/// what a finished enrolment does; also for bulk imports of enrolments made elsewhere.
pub fn store_credential(
    tx: &mut dyn Tx,
    key: &SealingKey,
    account: &str,
    provider: &str,
    credential: &Credential,
    now_ms: i64,
) -> Result<()> {
    let account_key = account_key(account);
    let sealed = key.seal(
        credential.data.as_slice(),
        &Service::credential_context(&account_key, provider, &credential.id),
    )?;
    tx.execute(
        "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (account_key, provider, id) DO UPDATE SET label = excluded.label, sealed = excluded.sealed, updated_at = excluded.updated_at",
        &[
            account_key.into(),
            provider.into(),
            credential.id.clone().into(),
            crate::model::limits::cut(&credential.label, crate::model::limits::PROVIDER_LABEL_CHARS).into(),
            Value::Blob(sealed),
            Value::Int(now_ms),
        ],
    )?;
    Ok(())
}
