//! `rolegate provider check`: the SDK's conformance suite run against a loaded library.

use std::sync::Arc;

use rolegate_sdk::ProviderError;
use rolegate_sdk::conformance::{Endpoint, Target};

use crate::model::error::Error;
use crate::plugins::{LoadedProvider, Plugin};

/// A plugin library seen through the host's loader, as the conformance suite's target.
pub struct HostTarget {
    plugin: Plugin,
    runtime: tokio::runtime::Handle,
}

impl HostTarget {
    /// Wraps a plugin; calls run on `runtime` (the suite calls from plain threads).
    pub fn new(plugin: Plugin, runtime: tokio::runtime::Handle) -> Self {
        Self { plugin, runtime }
    }
}

fn as_provider_error(e: Error) -> ProviderError {
    match e {
        Error::Settings { source, .. } => source,
        Error::Provider { source, .. } => source,
        other => ProviderError::unavailable(other.to_string()),
    }
}

struct HostEndpoint {
    provider: Arc<LoadedProvider>,
    runtime: tokio::runtime::Handle,
}

impl Endpoint for HostEndpoint {
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let provider = Arc::clone(&self.provider);
        let request = request.to_vec();
        self.runtime
            .block_on(async move { provider.call_raw("check", request).await })
            .map_err(as_provider_error)
    }
}

impl Drop for HostEndpoint {
    fn drop(&mut self) {
        let provider = Arc::clone(&self.provider);
        self.runtime.spawn(async move { provider.shutdown().await });
    }
}

impl Target for HostTarget {
    fn create(&self, settings: &serde_json::Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        let provider = self
            .runtime
            .block_on(self.plugin.instantiate(settings))
            .map_err(as_provider_error)?;
        Ok(Box::new(HostEndpoint {
            provider: Arc::new(provider),
            runtime: self.runtime.clone(),
        }))
    }
}
