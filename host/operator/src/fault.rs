//! Named abort points for fault-injection tests: with `HOIST_TEST_ABORT_AT=<point>` the
//! process aborts (like a SIGKILL, nothing is flushed or released) when it reaches that point,
//! so a test can kill the operator exactly between two writes of the protocol. Unset in
//! production; the points cost one comparison.

use std::sync::OnceLock;

/// Between the status write that records Scaling and the `/scale` write it causes.
pub const AFTER_STATUS_BEFORE_SCALE: &str = "after-status-before-scale";
/// After a hook call returned, before its result is written.
pub const AFTER_HOOK_CALL: &str = "after-hook-call";

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var("HOIST_TEST_ABORT_AT").ok())
        .as_deref()
}

/// Aborts the process if the test armed `point`.
pub fn abort_point(point: &'static str) {
    if armed() == Some(point) {
        tracing::error!(point, "HOIST_TEST_ABORT_AT: aborting");
        std::process::abort();
    }
}
