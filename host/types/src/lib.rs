//! Small domain types the host crates share, so that each fact has one type: which hook
//! ([`Hook`]), which way an operation goes ([`Direction`]) and which plugin ([`Digest`]).
//! `hoist-decide` (no wasm) and `hoist-sandbox` (no Kubernetes) both depend on this crate and
//! on nothing of each other.
#![forbid(unsafe_code)]

mod digest;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use digest::{Digest, DigestError};

/// A hook of the `hoist:hooks` contract: which export of the plugin to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `pre-scale`, before the target is written.
    PreScale,
    /// `post-scale`, after the target runs the new count.
    PostScale,
    /// `on-failure`, after an operation went to Failed (best effort).
    OnFailure,
    /// `validate-config`, before any operation uses a plugin/configuration pair.
    ValidateConfig,
}

impl Hook {
    /// The WIT name (`pre-scale`, ...), also the `hook` label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreScale => "pre-scale",
            Self::PostScale => "post-scale",
            Self::OnFailure => "on-failure",
            Self::ValidateConfig => "validate-config",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an operation adds or removes replicas (`up` / `down` in a hook context's JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// More replicas (`to > from`).
    Up,
    /// Fewer replicas (`to < from`).
    Down,
}

impl Direction {
    /// The direction of a change from `from` to `to` (`Up` when equal, as Stackable does).
    pub fn of(from: i32, to: i32) -> Self {
        if to >= from { Self::Up } else { Self::Down }
    }
}

#[cfg(test)]
mod tests {
    use super::{Direction, Hook};

    #[test]
    fn hooks_are_named_as_in_the_wit_contract() {
        let names: Vec<String> = [
            Hook::PreScale,
            Hook::PostScale,
            Hook::OnFailure,
            Hook::ValidateConfig,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            ["pre-scale", "post-scale", "on-failure", "validate-config"]
        );
    }

    #[test]
    fn direction_of_a_change() {
        assert_eq!(Direction::of(1, 3), Direction::Up);
        assert_eq!(Direction::of(3, 1), Direction::Down);
        assert_eq!(Direction::of(2, 2), Direction::Up);
    }
}
