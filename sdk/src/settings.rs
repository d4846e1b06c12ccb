//! A provider's own settings table, as the host's config file gives it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;

/// The provider's settings: the `[providers.<id>.settings]` table of the host's config, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub serde_json::Map<String, serde_json::Value>);

impl Settings {
    /// Settings from a JSON object.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(map)
    }

    /// Decodes the settings into the provider's own struct.
    ///
    /// Use `#[serde(deny_unknown_fields)]` on `T` so a misspelt key is refused; the error
    /// names the key at fault.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        let value = serde_json::Value::Object(self.0.clone());
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            if path == "." || path.is_empty() || message.starts_with("unknown field") {
                ProviderError::config(format!("settings: {message}"))
            } else {
                ProviderError::config(format!("setting `{path}`: {message}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[allow(dead_code)]
        digits: u8,
    }

    fn settings(json: &str) -> Settings {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_an_unknown_key() {
        let e = settings(r#"{"digits":6,"digitz":7}"#)
            .parse::<S>()
            .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Config);
        assert!(e.message.contains("digitz"), "{}", e.message);
    }

    #[test]
    fn names_a_key_with_a_bad_value() {
        let e = settings(r#"{"digits":"six"}"#).parse::<S>().unwrap_err();
        assert!(e.message.contains("`digits`"), "{}", e.message);
    }

    #[test]
    fn names_a_missing_key() {
        let e = settings("{}").parse::<S>().unwrap_err();
        assert!(e.message.contains("digits"), "{}", e.message);
    }
}
