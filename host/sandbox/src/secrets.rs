//! Secrets a call hands its plugin (`hoist:hooks/secrets`), and their redaction.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// What replaces a secret value found in a guest log line or in a text a hook returns.
pub const REDACTED: &str = "[redacted]";

/// Shortest value [`HookSecrets::redact`] replaces: shorter ones would blank out ordinary
/// words and digits of every message.
const MIN_REDACTED_LEN: usize = 4;

/// Named secret values for one call, read by the plugin with `secrets.get(name)`.
///
/// The operator fills it from the Secrets a Scaler names and bounds it (how many, how
/// large). Cheap to clone (shared); values are wiped from memory when the last clone is
/// dropped. `Debug` shows names only. The host never logs a value; a guest log line, a
/// hook's message or error text that contains a value verbatim has it replaced by
/// `[redacted]` (best effort: a plugin that transforms a value before printing it is not
/// caught; values shorter than 4 bytes are not replaced).
#[derive(Clone, Default)]
pub struct HookSecrets {
    values: Arc<BTreeMap<String, Zeroizing<String>>>,
}

impl HookSecrets {
    /// No secrets.
    pub fn new() -> Self {
        HookSecrets::default()
    }

    /// Also hand the plugin `value` under `name` (replacing a value of the same name).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.values).insert(name.into(), Zeroizing::new(value.into()));
        self
    }

    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.as_str())
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value (of at least 4 bytes) replaced by `[redacted]`,
    /// longest values first.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut values: Vec<&str> = self
            .values
            .values()
            .map(|v| v.as_str())
            .filter(|v| v.len() >= MIN_REDACTED_LEN && text.contains(*v))
            .collect();
        if values.is_empty() {
            return Cow::Borrowed(text);
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for value in values {
            if out.contains(value) {
                out = out.replace(value, REDACTED);
            }
        }
        Cow::Owned(out)
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for HookSecrets {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        HookSecrets {
            values: Arc::new(
                iter.into_iter()
                    .map(|(n, v)| (n.into(), Zeroizing::new(v.into())))
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for HookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::HookSecrets;

    #[test]
    fn values_are_redacted_and_never_debug_printed() {
        let secrets: HookSecrets = [
            ("password", "hunter2-long"),
            ("pin", "123"),
            ("user", "hunter"),
        ]
        .into_iter()
        .collect();
        assert_eq!(secrets.get("password"), Some("hunter2-long"));
        assert_eq!(
            secrets.redact("login hunter / hunter2-long, pin 123"),
            "login [redacted] / [redacted], pin 123"
        );
        let debug = format!("{secrets:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert!(debug.contains("password"), "{debug}");
        let more = secrets.clone().with("token", "abcdef");
        assert_eq!(more.len(), 4);
        assert_eq!(secrets.len(), 3);
    }
}
