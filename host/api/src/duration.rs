//! Durations in the Scaler spec: strings such as `30s`, `5m`, `1h30m` or `250ms`.
//!
//! One form everywhere hoist defines its own duration (timeouts, windows, backoff), chosen because
//! it reads well in YAML, is what `kubectl`/Go users already write, and is a subset of CEL's
//! `duration()` syntax, so CEL rules can compare two durations. (The KEDA pass-through fields keep
//! KEDA's own integer-seconds fields, so a ScaledObject's values can be copied as they are.)
//!
//! Grammar: one or more `<digits><unit>` groups, units `h`, `m`, `s`, `ms`, e.g. `1h30m`, `90s`.
//! No sign, no fractions, no spaces. A bad value is rejected by the schema pattern at admission,
//! and by [`Duration`]'s deserializer with the offending text (and, through
//! [`crate::parse_scaler_json`], the field path).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema pattern for a [`Duration`]; kept equal to what [`Duration::from_str`] accepts.
pub const DURATION_PATTERN: &str = "^([0-9]+(h|ms|m|s))+$";

/// A non-negative duration written as `30s`, `5m`, `1h30m` or `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {problem} (expected e.g. 30s, 5m, 1h30m, 250ms)")]
pub struct DurationParseError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The value as a standard library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whether this is the zero duration.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(value: Duration) -> Self {
        value.0
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem| DurationParseError {
            input: input.to_owned(),
            problem,
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let bytes = input.as_bytes();
        let mut total_ms: u64 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err("each unit needs a number before it"));
            }
            let number: u64 = input[start..i]
                .parse()
                .map_err(|_| err("number too large"))?;
            let unit_ms: u64 = if input[i..].starts_with("ms") {
                i += 2;
                1
            } else if input[i..].starts_with('h') {
                i += 1;
                3_600_000
            } else if input[i..].starts_with('m') {
                i += 1;
                60_000
            } else if input[i..].starts_with('s') {
                i += 1;
                1_000
            } else if i == bytes.len() {
                return Err(err("missing unit (h, m, s or ms)"));
            } else {
                return Err(err("unknown unit (use h, m, s or ms)"));
            };
            total_ms = number
                .checked_mul(unit_ms)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(Self::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    /// The canonical form: largest units first, zero parts left out (`0s` for zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let hours = total_ms / 3_600_000;
        let minutes = (total_ms / 60_000) % 60;
        let seconds = (total_ms / 1_000) % 60;
        let millis = total_ms % 1_000;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        if millis > 0 {
            write!(f, "{millis}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "description": "A duration such as 30s, 5m, 1h30m or 250ms (units h, m, s, ms).",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_documented_forms() {
        let cases = [
            ("30s", 30_000, "30s"),
            ("5m", 300_000, "5m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("90s", 90_000, "1m30s"),
            ("250ms", 250, "250ms"),
            ("0s", 0, "0s"),
            ("1m1ms", 60_001, "1m1ms"),
        ];
        for (text, ms, canonical) in cases {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.get().as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), canonical, "{text}");
            let again: Duration = canonical.parse().unwrap();
            assert_eq!(again, d, "{text} round trip");
        }
    }

    #[test]
    fn rejects_bad_forms_with_the_input_named() {
        for bad in [
            "",
            "30",
            "s",
            "5x",
            "-5s",
            "1.5s",
            " 5s",
            "5 s",
            "99999999999999999999h",
        ] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
