//! `hoist simulate` end to end: the real binary on committed trace fixtures, its summary and
//! the SVG it draws.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/simulate")
        .join(name)
}

fn hoist(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(args)
        .output()
        .unwrap()
}

/// The summary's `key: value` lines.
fn summary(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn replays_a_trace_prints_the_figures_and_draws_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    let trace = fixture("burst.csv");
    let out = hoist(&[
        "simulate",
        "--algorithm",
        "kpa",
        "--trace",
        trace.to_str().unwrap(),
        "--target",
        "10",
        "--min",
        "2",
        "--max",
        "20",
        "--ready-delay",
        "4s",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out.stdout);
    // Decisions every 2 s (KPA's default) from 0 s to 400 s inclusive.
    assert_eq!(s["decisions"], "201", "{stdout}");
    assert_eq!(s["trace rows"], "4 over 400s", "{stdout}");
    // The burst of 70 against target 10 × utilization 0.7: ceil(70 / 7) = 10 replicas.
    assert_eq!(s["max replicas"], "10", "{stdout}");
    // The steady 14 needs ceil(14 / 7) = 2, the minimum; after the burst, zero demand goes
    // back down to the minimum.
    assert_eq!(s["min replicas"], "2", "{stdout}");
    assert_eq!(s["final replicas"], "2", "{stdout}");
    assert_ne!(s["scale ups"], "0", "{stdout}");
    assert_ne!(s["scale downs"], "0", "{stdout}");
    // Panic: 2 ready replicas meet a burst that asks for ≥ 2× their count. Reported as time and decisions,
    // consistently (2 s per decision).
    let panic = &s["time in panic"];
    let (time, decisions) = panic.split_once(" (").unwrap();
    let decisions: u32 = decisions.trim_end_matches(" decisions)").parse().unwrap();
    assert!(decisions > 0, "{stdout}");
    assert_eq!(time, format!("{}s", decisions * 2), "{stdout}");
    assert_eq!(s["plot"], svg.display().to_string());

    // The SVG is well-formed XML with a line per series and the legend's labels.
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for label in [
        "metric",
        "desired",
        "replicas",
        "ready",
        "hoist simulate: kpa",
    ] {
        assert!(
            texts.iter().any(|t| t.trim() == label),
            "no {label:?} in {texts:?}"
        );
    }
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("points")
                .is_some_and(|p| p.split(' ').count() > 100)
        })
        .count();
    assert!(lines >= 4, "{lines} long polylines");
}

#[test]
fn takes_parameters_from_a_scaler_manifest() {
    let trace = fixture("burst.csv");
    let scaler = fixture("scaler.yaml");
    let out = hoist(&[
        "simulate",
        "--scaler",
        scaler.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out.stdout);
    assert_eq!(s["algorithm"], "kpa");
    assert_eq!(s["bounds"], "min 2 max 8");
    assert!(s["parameters"].contains("stable_window: 30s"), "{stdout}");
    assert!(s["target"].starts_with("10 "), "{stdout}");
    // ceil(70 / 7) = 10, clamped to the manifest's maximum.
    assert_eq!(s["max replicas"], "8", "{stdout}");
    assert!(!stdout.contains("plot:"), "no plot without --plot");
}

#[test]
fn bad_input_is_refused_with_its_line_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "time,value\n0,1\n5,lots\n").unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--algorithm", "hpa", "--target", "1"],
            format!(
                "trace {}: line 3: value \"lots\" is not a number",
                bad.display()
            ),
        ),
        (
            vec!["--algorithm", "hpa"],
            "--target is required without --scaler".to_owned(),
        ),
        (
            vec!["--algorithm", "kpa", "--target", "1", "--tolerance", "0.2"],
            "--tolerance tunes hpa, but the algorithm is kpa".to_owned(),
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["simulate", "--trace", bad.to_str().unwrap()];
        all.extend(args);
        let out = hoist(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?}");
        assert!(stderr.contains(&want), "{all:?}: {stderr:?} lacks {want:?}");
    }
}
