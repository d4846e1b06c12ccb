//! The typed trait a Rust vendor implements.

use crate::error::ProviderError;
use crate::message::{ChallengeContext, EnrollContext, Health, Input, ProviderInfo, Step};
use crate::settings::Settings;

/// One MFA factor, as a state machine the host drives.
///
/// Providers are stateless between calls: everything a challenge needs later travels in the
/// opaque `state` of the step, which the host persists. Calls may come concurrently from many
/// threads, and a later call of the same challenge may reach another instance (after a
/// restart, or on another host replica). Use `ctx.now` as the clock.
pub trait Provider: Send + Sync + Sized + 'static {
    /// Builds an instance from the provider's own settings; refuse unknown keys, naming them.
    fn create(settings: Settings) -> Result<Self, ProviderError>;

    /// Describes the provider.
    fn info(&self) -> ProviderInfo;

    /// Reports whether the provider can serve now (reach its service or device).
    fn health(&self) -> Health {
        Health::ok()
    }

    /// Begins an enrolment; providers that need none keep the default refusal.
    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        let _ = ctx;
        Err(ProviderError::unsupported(
            "this provider needs no enrolment",
        ))
    }

    /// Continues an enrolment with the user's input; ends in `Done(Approved { credential })`.
    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let _ = (ctx, state, input);
        Err(ProviderError::unsupported(
            "this provider needs no enrolment",
        ))
    }

    /// Begins a challenge: `Ask` the user, `Wait` for something out of band, or decide at once.
    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError>;

    /// Continues a challenge with the user's answer to an `Ask`.
    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError>;

    /// Reports the outcome of an out-of-band challenge after a `Wait`.
    fn challenge_poll(&self, ctx: &ChallengeContext, state: &[u8]) -> Result<Step, ProviderError> {
        let _ = (ctx, state);
        Err(ProviderError::bad_input(
            "this provider never waits, so there is nothing to poll",
        ))
    }

    /// Abandons a challenge; calling it twice must be harmless.
    fn cancel(&self, ctx: &ChallengeContext, state: &[u8]) -> Result<(), ProviderError> {
        let _ = (ctx, state);
        Ok(())
    }
}
