//! The model: what a role, a request, an account name, a phone number and a refusal are.
//! Pure: no I/O, nothing above it imported; every other layer builds on it.

pub mod activation;
pub mod caches;
pub mod clock;
pub mod error;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod phone;
pub mod refusal;
pub mod role;
