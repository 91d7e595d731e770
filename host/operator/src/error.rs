//! The operator crate's error type: one variant per operation that can fail.

/// Errors of the hoist operator and its subcommands.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Serialising a generated document failed.
    #[error("rendering {what}: {source}")]
    Render {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
}
