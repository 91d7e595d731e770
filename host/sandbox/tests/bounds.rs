//! What a plugin says is bounded on its way out: 10 MiB messages and error texts come back
//! cut to `MAX_MESSAGE_BYTES` with a note, an over-limit in-progress state is an error, and a
//! guest logging 100,000 lines (some forging log records) writes at most the per-call budget
//! of one-line records plus one summary, within its deadline.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Logs, options, plugin_bytes, pod, sandbox, scale_down};
use hoist_sandbox::{
    CallIdentity, CallOptions, FailedStage, FailureInfo, HookContext, HookErrorKind, HookOutcome,
    HookRunner, LOG_LINES_PER_CALL, MAX_MESSAGE_BYTES, SandboxError,
};

/// The fixture's text size.
const HUGE: usize = 10 * 1024 * 1024;

fn ctx(config: &str) -> HookContext {
    scale_down(
        vec![pod("w-0", 0, "127.0.0.1"), pod("w-1", 1, "127.0.0.1")],
        1,
        config,
    )
}

/// Check `text` is fixture-huge-message's text with `prefix`, cut to the limit with a note
/// that counts the rest.
fn assert_cut(text: &str, prefix: &str) {
    // The fixture's text: the prefix, then as many 3-byte '€' as fit in 10 MiB.
    let full_len = prefix.len() + (HUGE - prefix.len()) / 3 * 3;
    assert!(
        text.len() <= MAX_MESSAGE_BYTES,
        "{} bytes: {text}",
        text.len()
    );
    let (kept, note) = text
        .split_once("… [cut: ")
        .unwrap_or_else(|| panic!("no cut note in {text:?}"));
    assert!(kept.starts_with(prefix), "{kept}");
    assert!(kept[prefix.len()..].chars().all(|c| c == '€'), "{kept}");
    let cut: usize = note
        .strip_suffix(" bytes more]")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad note in {text:?}"));
    assert_eq!(kept.len() + cut, full_len, "{text}");
}

#[tokio::test]
async fn huge_messages_and_error_texts_come_back_cut_with_a_note() {
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-huge-message")).unwrap();
    let opts = options(Duration::from_secs(20), &[]);

    match sb.pre_scale(&plugin, &ctx("{}"), &opts).await.unwrap() {
        HookOutcome::Done { message } => assert_cut(&message, "pre-scale done: "),
        other @ HookOutcome::InProgress { .. } => panic!("expected done, got {other:?}"),
    }

    match sb.post_scale(&plugin, &ctx("{}"), &opts).await.unwrap() {
        HookOutcome::InProgress {
            state,
            retry_after,
            message,
        } => {
            assert_eq!(state, "s".repeat(16));
            assert_eq!(retry_after, Duration::from_secs(1));
            assert_cut(&message, "post-scale in progress: ");
        }
        other @ HookOutcome::Done { .. } => panic!("expected in-progress, got {other:?}"),
    }

    let failure = FailureInfo {
        stage: FailedStage::PreScaling,
        reason: "HookFailed".into(),
    };
    match sb
        .on_failure(&plugin, &ctx("{}"), &failure, &opts)
        .await
        .unwrap_err()
    {
        SandboxError::HookFailed {
            hook,
            kind,
            message,
        } => {
            assert_eq!(hook, "on-failure");
            assert_eq!(kind, HookErrorKind::Other);
            assert_cut(&message, "on-failure error: ");
        }
        other => panic!("expected HookFailed, got {other:?}"),
    }

    match sb.validate_config(&plugin, "{}", &opts).await.unwrap_err() {
        SandboxError::ConfigRejected(message) => assert_cut(&message, "config rejected: "),
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn an_in_progress_state_over_the_limit_is_an_error_not_cut() {
    let sb = sandbox();
    let max = sb.config().max_state_bytes;
    assert_eq!(max, 64 * 1024);
    let plugin = sb.load(&plugin_bytes("fixture-huge-message")).unwrap();
    let opts = options(Duration::from_secs(20), &[]);

    let at_limit = ctx(&format!(r#"{{"stateBytes": {max}}}"#));
    match sb.post_scale(&plugin, &at_limit, &opts).await.unwrap() {
        HookOutcome::InProgress { state, .. } => assert_eq!(state.len(), max),
        other @ HookOutcome::Done { .. } => panic!("expected in-progress, got {other:?}"),
    }

    let over = ctx(&format!(r#"{{"stateBytes": {}}}"#, max + 1));
    let err = sb.post_scale(&plugin, &over, &opts).await.unwrap_err();
    match &err {
        SandboxError::HookResult { hook, message } => {
            assert_eq!(*hook, "post-scale");
            assert!(
                message.contains(&format!(
                    "state is {} bytes, more than the {max} allowed",
                    max + 1
                )),
                "{message}"
            );
        }
        other => panic!("expected HookResult, got {other:?}"),
    }
    assert_eq!(err.reason(), "HookResult");
}

fn flood_options(scaler: &str, deadline: Duration) -> CallOptions {
    CallOptions::new(
        deadline,
        hoist_sandbox::AllowList::new(&[] as &[String]),
        CallIdentity {
            namespace: "data".into(),
            scaler: scaler.into(),
            operation: "op-flood".into(),
            attempt: 1,
        },
    )
}

/// The captured log records of the call for `scaler`: (plugin lines, summary lines).
fn records_of(text: &str, scaler: &str) -> (Vec<String>, Vec<String>) {
    let ours: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&format!(" scaler={scaler} ")))
        .map(str::to_string)
        .collect();
    let (summary, plugin): (Vec<String>, Vec<String>) = ours
        .into_iter()
        .partition(|l| l.contains("plugin log budget spent"));
    (plugin, summary)
}

#[tokio::test]
async fn a_log_flood_is_cut_to_the_budget_and_cannot_forge_records() {
    Logs::capture();
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-log-flood")).unwrap();
    let deadline = Duration::from_secs(30);
    let failure = FailureInfo {
        stage: FailedStage::Scaling,
        reason: "ScaleTimeout".into(),
    };
    for hook in ["pre-scale", "post-scale", "on-failure", "validate-config"] {
        let scaler = format!("flood-{hook}");
        let opts = flood_options(&scaler, deadline);
        let ctx = ctx("{}");
        let started = Instant::now();
        match hook {
            "pre-scale" => assert_eq!(
                sb.pre_scale(&plugin, &ctx, &opts).await.unwrap(),
                HookOutcome::Done {
                    message: "pre-scale logged 100000 lines".into()
                }
            ),
            "post-scale" => assert_eq!(
                sb.post_scale(&plugin, &ctx, &opts).await.unwrap(),
                HookOutcome::Done {
                    message: "post-scale logged 100000 lines".into()
                }
            ),
            "on-failure" => sb.on_failure(&plugin, &ctx, &failure, &opts).await.unwrap(),
            _ => sb.validate_config(&plugin, "{}", &opts).await.unwrap(),
        }
        let took = started.elapsed();
        eprintln!("{hook}: 100000 log calls in {took:?}");
        assert!(took < deadline, "{hook} took {took:?}");

        let text = Logs::text();
        let (lines, summary) = records_of(&text, &scaler);
        // Exactly the budget of plugin records (the lines are short: the line limit binds
        // before the byte limit), the first ones the guest wrote, and one summary.
        assert_eq!(lines.len(), LOG_LINES_PER_CALL, "{hook}");
        assert!(
            lines[0].contains(&format!("{hook} flood line 0\\n")),
            "{}",
            lines[0]
        );
        assert!(
            lines[LOG_LINES_PER_CALL - 1]
                .contains(&format!("{hook} flood line {}", LOG_LINES_PER_CALL - 1)),
            "{}",
            lines[LOG_LINES_PER_CALL - 1]
        );
        assert_eq!(summary.len(), 1, "{summary:?}");
        let dropped = 100_000 - LOG_LINES_PER_CALL;
        assert!(
            summary[0].contains(&format!("dropped_lines={dropped}"))
                && summary[0].contains("WARN")
                && summary[0].contains(&format!("hook=\"{hook}\""))
                && summary[0].contains("operation=op-flood"),
            "{}",
            summary[0]
        );
        // Each guest line stayed one record: the forged text follows its real prefix on the
        // same line, and no control character reached the log.
        for line in &lines {
            assert!(
                !line.contains(['\r', '\u{1b}', '\u{85}', '\u{2028}', '\u{202e}']),
                "{line:?}"
            );
        }
        let forged: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("forged record"))
            .collect();
        assert_eq!(forged.len(), LOG_LINES_PER_CALL / 10);
        for line in &forged {
            assert!(line.contains(&format!("{hook} flood line ")), "{line}");
            assert!(
                line.contains("flood line ") && line.contains("\\n2026-01-01T"),
                "{line}"
            );
        }
    }
    // Across the whole captured log, no physical line starts as a forged record.
    let text = Logs::text();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")),
        "a forged record reached the log as its own line"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("forged record"))
            .all(|l| l.contains(" flood line ")),
        "a forged record reached the log as its own line"
    );
}
