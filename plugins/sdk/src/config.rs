//! The plugin's configuration: the Scaler's `spec.hooks.config`, handed over as JSON text.

use serde::de::DeserializeOwned;

use crate::HookError;

/// Parse a plugin configuration into `T`. Errors name the offending field by its path
/// (`drain.path: invalid type: integer, expected a string`), so a person can fix the Scaler.
///
/// An empty string is read as `{}`, so a configuration whose fields all have defaults needs
/// no `config` at all.
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, HookError> {
    parse_message(config).map_err(HookError::InvalidConfig)
}

/// Like [`parse`], but the error is the bare message (what `validate-config` returns).
pub fn parse_message<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        if path == "." || path.is_empty() {
            format!("config: {}", err.inner())
        } else {
            format!("config field `{path}`: {}", err.inner())
        }
    })?;
    de.end().map_err(|err| format!("config: {err}"))?;
    Ok(value)
}
