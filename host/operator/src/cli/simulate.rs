//! `hoist simulate`: replay a metric trace through a builtin autoscaling algorithm, to tune
//! windows before going live.
//!
//! ```text
//! hoist simulate --algorithm kpa --trace load.csv --target 10 --plot out.svg
//! hoist simulate --scaler scaler.yaml --trace load.csv --plot out.svg --ready-delay 30s
//! ```
//!
//! **Trace** (CSV): one row per observation, `time,value` — time in seconds from any origin
//! (increasing), value the metric (a finite number ≥ 0) as the Scaler's metric source would
//! report it: by default the total demand (what a Prometheus query returns); with
//! `--metric per-pod` an average per ready pod (what a pods metric gives; the default when the
//! `--scaler`'s first metric is a pods metric). A value holds until the next row. An empty value
//! (`120,`) is a source outage from that time: as in the operator, the last value is held for
//! `--max-hold` (default 5m), after which decisions stop and the replicas are kept. A first line
//! that is not numeric (a header such as `time,value`), blank lines and lines starting with `#`
//! are skipped. A bad row is an error naming its line.
//!
//! **Parameters**: `--scaler FILE.yaml` takes `spec.autoscaling.builtin` (algorithm, tuning,
//! `decisionInterval`, `scaleToZeroGracePeriod`, the first metric's `target`) and
//! `minReplicas`/`maxReplicas` from a Scaler manifest; flags override them. Without
//! `--scaler`, `--algorithm` and `--target` are required and everything else has the upstream
//! default.
//!
//! **Replay** (pure, in [`hoist_decide::modes::replay`]): a decision every `decisionInterval`
//! from the first row's time to the last's, through the same tick the operator runs
//! (`hoist_decide::modes::builtin::tick`: the algorithm, the bounds, the scale-to-zero grace).
//! Replicas asked for become ready `--ready-delay` later; removed replicas go at once
//! (not-yet-ready ones first).
//!
//! **Output**: a summary on stdout (decisions, scale changes, max/min replicas, decisions on a
//! held value and held back for want of one, time in panic for kpa), and with `--plot` an SVG
//! (drawn in `simulate/plot.rs`) of the metric, the desired count (what the metric alone asks
//! for), the replicas written and the ready replicas over time.

mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hoist_api::autoscaling::{
    Algorithm as AlgorithmName, ApaTuning, BuiltinAutoscaling, HpaTuning, KpaTuning,
};
use hoist_api::{Scaler, ScalerSpec};
use hoist_decide::autoscale::Algorithm;
use hoist_decide::modes::builtin::algorithm;
use hoist_decide::modes::replay::{MetricKind, Replay, Row, Setup, replay};

/// The algorithm, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// Knative's KPA.
    Kpa,
    /// `AIBrix`'s APA.
    Apa,
    /// The HPA formula.
    Hpa,
}

impl From<AlgorithmArg> for AlgorithmName {
    fn from(a: AlgorithmArg) -> Self {
        match a {
            AlgorithmArg::Kpa => Self::Kpa,
            AlgorithmArg::Apa => Self::Apa,
            AlgorithmArg::Hpa => Self::Hpa,
        }
    }
}

/// How the trace's values are to be read, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricArg {
    /// The total demand across the target (a Prometheus query).
    Total,
    /// An average per ready pod (a pods metric).
    PerPod,
}

impl From<MetricArg> for MetricKind {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Total => Self::Total,
            MetricArg::PerPod => Self::PerPod,
        }
    }
}

/// `hoist simulate`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct Args {
    /// The metric trace: CSV rows `time_seconds,value`.
    #[arg(long, value_name = "FILE.csv")]
    pub trace: PathBuf,
    /// Write an SVG plot of metric, desired, replicas and ready replicas over time.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// Take the algorithm, its tuning and min/max from this Scaler manifest (YAML).
    #[arg(long, value_name = "FILE.yaml")]
    pub scaler: Option<PathBuf>,
    /// The algorithm (required without --scaler).
    #[arg(long, value_enum)]
    pub algorithm: Option<AlgorithmArg>,
    /// The value one replica should carry (required without --scaler).
    #[arg(long)]
    pub target: Option<f64>,
    /// How the trace's values are read: the total demand, or an average per ready pod
    /// (default: per-pod when the --scaler's first metric is a pods metric, else total).
    #[arg(long, value_enum)]
    pub metric: Option<MetricArg>,
    /// How long the last value is used while the trace shows an outage (an empty value).
    #[arg(long, default_value = "5m")]
    pub max_hold: hoist_api::Duration,
    /// Fewest replicas (default: the Scaler's minReplicas, else 1).
    #[arg(long)]
    pub min: Option<i32>,
    /// Most replicas (default: the Scaler's maxReplicas, else 100).
    #[arg(long)]
    pub max: Option<i32>,
    /// Replicas at the start, all ready (default: the minimum, at least 1).
    #[arg(long)]
    pub initial: Option<i32>,
    /// How long a new replica takes to become ready.
    #[arg(long, default_value = "0s")]
    pub ready_delay: hoist_api::Duration,
    /// Time between decisions (default: decisionInterval, else kpa 2s, apa/hpa 15s).
    #[arg(long)]
    pub interval: Option<hoist_api::Duration>,
    /// How long zero must be asked for before scaling to zero (with --min 0).
    #[arg(long)]
    pub scale_to_zero_grace: Option<hoist_api::Duration>,
    /// kpa: stable window.
    #[arg(long, help_heading = "KPA")]
    pub stable_window: Option<hoist_api::Duration>,
    /// kpa: panic window, percent of the stable window.
    #[arg(long, help_heading = "KPA")]
    pub panic_window_percentage: Option<f64>,
    /// kpa: panic threshold, percent of ready capacity.
    #[arg(long, help_heading = "KPA")]
    pub panic_threshold_percentage: Option<f64>,
    /// kpa: largest scale-up factor per decision.
    #[arg(long, help_heading = "KPA")]
    pub max_scale_up_rate: Option<f64>,
    /// kpa: largest scale-down factor per decision.
    #[arg(long, help_heading = "KPA")]
    pub max_scale_down_rate: Option<f64>,
    /// kpa: fraction of the target to aim for.
    #[arg(long, help_heading = "KPA")]
    pub target_utilization: Option<f64>,
    /// apa: scale up only above target × (1 + this).
    #[arg(long, help_heading = "APA")]
    pub up_tolerance: Option<f64>,
    /// apa: scale down only below target × (1 − this).
    #[arg(long, help_heading = "APA")]
    pub down_tolerance: Option<f64>,
    /// apa: scale-up cooldown window.
    #[arg(long, help_heading = "APA")]
    pub scale_up_cooldown: Option<hoist_api::Duration>,
    /// apa: scale-down cooldown window.
    #[arg(long, help_heading = "APA")]
    pub scale_down_cooldown: Option<hoist_api::Duration>,
    /// hpa: skip changes within this fraction of the target.
    #[arg(long, help_heading = "HPA")]
    pub tolerance: Option<f64>,
    /// hpa: scale-up stabilization window.
    #[arg(long, help_heading = "HPA")]
    pub scale_up_stabilization: Option<hoist_api::Duration>,
    /// hpa: scale-down stabilization window.
    #[arg(long, help_heading = "HPA")]
    pub scale_down_stabilization: Option<hoist_api::Duration>,
}

/// Runs `hoist simulate`.
pub fn run(args: &Args) -> Result<()> {
    let setup = setup(args)?;
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading the trace {}", args.trace.display()))?;
    let trace = parse_trace(&text).with_context(|| format!("trace {}", args.trace.display()))?;
    let replay = replay(&setup, &trace);
    print!("{}", summary(&setup, &trace, &replay));
    if let Some(out) = &args.plot {
        plot::plot(&setup, &replay, out).with_context(|| format!("drawing {}", out.display()))?;
        println!("plot: {}", out.display());
    }
    Ok(())
}

/// The replay's setup from the flags and the `--scaler` manifest; flags win.
fn setup(args: &Args) -> Result<Setup> {
    let from_file = match &args.scaler {
        Some(path) => Some(read_scaler(path)?),
        None => None,
    };
    let (mut spec, mut builtin, file_target, file_kind) =
        if let Some((spec, builtin, target, kind)) = from_file {
            (spec, builtin, Some(target), Some(kind))
        } else {
            let Some(algorithm) = args.algorithm else {
                bail!("--algorithm is required without --scaler");
            };
            let builtin = BuiltinAutoscaling {
                algorithm: algorithm.into(),
                metrics: Vec::new(),
                scale_to_zero_grace_period: None,
                decision_interval: None,
                kpa: None,
                apa: None,
                hpa: None,
            };
            let spec = ScalerSpec {
                min_replicas: Some(1),
                max_replicas: Some(100),
                ..ScalerSpec::default()
            };
            (spec, builtin, None, None)
        };
    if let Some(a) = args.algorithm {
        let name: AlgorithmName = a.into();
        if name != builtin.algorithm {
            // Another algorithm than the manifest's: its tuning does not apply.
            builtin.algorithm = name;
            builtin.kpa = None;
            builtin.apa = None;
            builtin.hpa = None;
            builtin.decision_interval = None;
        }
    }
    apply_tuning_flags(args, &mut builtin)?;
    if let Some(d) = args.scale_to_zero_grace {
        builtin.scale_to_zero_grace_period = Some(d);
    }
    if let Some(d) = args.interval {
        if d.is_zero() {
            bail!("--interval must be longer than 0s");
        }
        builtin.decision_interval = Some(d);
    }
    let Some(target) = args.target.or(file_target) else {
        bail!("--target is required without --scaler");
    };
    if !(target.is_finite() && target > 0.0) {
        bail!("the target must be a number > 0, not {target}");
    }
    if let Some(min) = args.min {
        spec.min_replicas = Some(min);
    }
    if let Some(max) = args.max {
        spec.max_replicas = Some(max);
    }
    let (min, max) = (spec.effective_min_replicas(), spec.effective_max_replicas());
    if min < 0 || max < 1 || max < min {
        bail!("replica bounds min {min} max {max}: need 0 ≤ min ≤ max and max ≥ 1");
    }
    let initial = args.initial.unwrap_or(min.max(1)).clamp(0, max);
    Ok(Setup {
        spec,
        builtin,
        target,
        metric: args
            .metric
            .map(MetricKind::from)
            .or(file_kind)
            .unwrap_or_default(),
        initial,
        ready_delay: args.ready_delay.get(),
        max_hold: args.max_hold.get(),
    })
}

/// The spec, `builtin`, and the first metric's target and kind of a Scaler manifest.
fn read_scaler(path: &Path) -> Result<(ScalerSpec, BuiltinAutoscaling, f64, MetricKind)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the Scaler manifest {}", path.display()))?;
    let scaler: Scaler = serde_path_to_yaml(&text)
        .with_context(|| format!("{} is not a Scaler manifest", path.display()))?;
    let where_ = format!("{}: spec.autoscaling.builtin", path.display());
    let Some(builtin) = scaler
        .spec
        .autoscaling
        .as_ref()
        .and_then(|a| a.builtin.clone())
    else {
        bail!("{where_} is not set; simulate replays the builtin autoscaler");
    };
    let Some(first) = builtin.metrics.first() else {
        bail!("{where_}.metrics is empty");
    };
    let (target, kind) = match (&first.prometheus, &first.pods) {
        (Some(p), None) => (p.target, MetricKind::Total),
        (None, Some(p)) => (p.target, MetricKind::PerPod),
        _ => bail!("{where_}.metrics[0] must set exactly one of prometheus or pods"),
    };
    if builtin.metrics.len() > 1 {
        eprintln!(
            "hoist simulate: {where_} has {} metrics; the trace stands for metrics[0] (target {target})",
            builtin.metrics.len()
        );
    }
    Ok((scaler.spec, builtin, target, kind))
}

/// YAML into `T`, with the path of a field that does not fit.
fn serde_path_to_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).context("not YAML")?;
    serde_yaml::from_value(value).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Applies the per-algorithm flags, refusing one that tunes another algorithm.
fn apply_tuning_flags(args: &Args, builtin: &mut BuiltinAutoscaling) -> Result<()> {
    let algorithm = builtin.algorithm;
    let mismatch = |flag: &str, wants: &str| -> Result<()> {
        bail!(
            "--{flag} tunes {wants}, but the algorithm is {}",
            serde_json::to_value(algorithm)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )
    };
    let kpa_flags = [
        ("stable-window", args.stable_window.is_some()),
        (
            "panic-window-percentage",
            args.panic_window_percentage.is_some(),
        ),
        (
            "panic-threshold-percentage",
            args.panic_threshold_percentage.is_some(),
        ),
        ("max-scale-up-rate", args.max_scale_up_rate.is_some()),
        ("max-scale-down-rate", args.max_scale_down_rate.is_some()),
        ("target-utilization", args.target_utilization.is_some()),
    ];
    let apa_flags = [
        ("up-tolerance", args.up_tolerance.is_some()),
        ("down-tolerance", args.down_tolerance.is_some()),
        ("scale-up-cooldown", args.scale_up_cooldown.is_some()),
        ("scale-down-cooldown", args.scale_down_cooldown.is_some()),
    ];
    let hpa_flags = [
        ("tolerance", args.tolerance.is_some()),
        (
            "scale-up-stabilization",
            args.scale_up_stabilization.is_some(),
        ),
        (
            "scale-down-stabilization",
            args.scale_down_stabilization.is_some(),
        ),
    ];
    for (flags, name, wants) in [
        (&kpa_flags[..], AlgorithmName::Kpa, "kpa"),
        (&apa_flags[..], AlgorithmName::Apa, "apa"),
        (&hpa_flags[..], AlgorithmName::Hpa, "hpa"),
    ] {
        if name != algorithm
            && let Some((flag, _)) = flags.iter().find(|(_, set)| *set)
        {
            mismatch(flag, wants)?;
        }
    }
    match algorithm {
        AlgorithmName::Kpa => {
            let t = builtin.kpa.get_or_insert_with(KpaTuning::default);
            set(&mut t.stable_window, args.stable_window);
            set(&mut t.panic_window_percentage, args.panic_window_percentage);
            set(
                &mut t.panic_threshold_percentage,
                args.panic_threshold_percentage,
            );
            set(&mut t.max_scale_up_rate, args.max_scale_up_rate);
            set(&mut t.max_scale_down_rate, args.max_scale_down_rate);
            set(&mut t.target_utilization, args.target_utilization);
        }
        AlgorithmName::Apa => {
            let t = builtin.apa.get_or_insert_with(ApaTuning::default);
            set(&mut t.up_fluctuation_tolerance, args.up_tolerance);
            set(&mut t.down_fluctuation_tolerance, args.down_tolerance);
            set(&mut t.scale_up_cooldown, args.scale_up_cooldown);
            set(&mut t.scale_down_cooldown, args.scale_down_cooldown);
        }
        AlgorithmName::Hpa => {
            let t = builtin.hpa.get_or_insert_with(HpaTuning::default);
            set(&mut t.tolerance, args.tolerance);
            set(&mut t.scale_up_stabilization, args.scale_up_stabilization);
            set(
                &mut t.scale_down_stabilization,
                args.scale_down_stabilization,
            );
        }
    }
    Ok(())
}

fn set<T>(field: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *field = flag;
    }
}

/// Parses the CSV trace (see the module doc); errors name the line.
pub fn parse_trace(text: &str) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows: Vec<Row> = Vec::new();
    let mut first = true;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            anyhow::anyhow!("line {line}: {e}")
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let is_first = std::mem::replace(&mut first, false);
        if is_first && fields.first().is_some_and(|f| f.parse::<f64>().is_err()) {
            continue; // a header
        }
        let [time, value] = fields.as_slice() else {
            bail!(
                "line {line}: expected two columns, time in seconds and the metric value; found {}",
                fields.len()
            );
        };
        let time: f64 = time
            .parse()
            .map_err(|_| anyhow::anyhow!("line {line}: time {time:?} is not a number"))?;
        if !time.is_finite() || time < 0.0 {
            bail!("line {line}: time {time} must be a finite number of seconds ≥ 0");
        }
        let value: Option<f64> = if value.is_empty() {
            None
        } else {
            let v: f64 = value
                .parse()
                .map_err(|_| anyhow::anyhow!("line {line}: value {value:?} is not a number"))?;
            if !v.is_finite() || v < 0.0 {
                bail!(
                    "line {line}: value {v} must be a finite number ≥ 0 (or empty for an outage)"
                );
            }
            Some(v)
        };
        #[allow(clippy::cast_possible_truncation)] // finite, ≥ 0, and bounded below
        let at_ms = if time * 1000.0 < 9.0e15 {
            (time * 1000.0).round() as i64
        } else {
            bail!("line {line}: time {time} is too large");
        };
        if let Some(prev) = rows.last()
            && at_ms <= prev.at_ms
        {
            bail!("line {line}: time {time} is not after the previous row's");
        }
        rows.push(Row { at_ms, value });
    }
    if rows.is_empty() {
        bail!("no rows; write one `time_seconds,value` per line");
    }
    Ok(rows)
}

fn secs(ms: i64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let s = ms as f64 / 1000.0;
    format!("{s}s")
}

/// The printed summary: `key: value` lines.
pub fn summary(setup: &Setup, trace: &[Row], replay: &Replay) -> String {
    let f = replay.figures(setup.initial);
    let mut out = String::new();
    let params = match algorithm(&setup.builtin) {
        Algorithm::Kpa(p) => format!("{p:?}"),
        Algorithm::Apa(p) => format!("{p:?}"),
        Algorithm::Hpa(p) => format!("{p:?}"),
    };
    let name = match setup.builtin.algorithm {
        AlgorithmName::Kpa => "kpa",
        AlgorithmName::Apa => "apa",
        AlgorithmName::Hpa => "hpa",
    };
    let _ = writeln!(out, "algorithm: {name}");
    let _ = writeln!(out, "parameters: {params}");
    let _ = writeln!(
        out,
        "target: {} ({})",
        setup.target,
        match setup.metric {
            MetricKind::Total => "trace values are the total demand",
            MetricKind::PerPod => "trace values are per-pod averages",
        }
    );
    let _ = writeln!(
        out,
        "bounds: min {} max {}",
        setup.spec.effective_min_replicas(),
        setup.spec.effective_max_replicas()
    );
    let span = trace.last().map_or(0, |l| l.at_ms) - trace.first().map_or(0, |r| r.at_ms);
    let _ = writeln!(out, "trace rows: {} over {}", trace.len(), secs(span));
    let _ = writeln!(
        out,
        "decision interval: {}",
        secs(i64::try_from(setup.interval().as_millis()).unwrap_or(i64::MAX))
    );
    let _ = writeln!(
        out,
        "ready delay: {}",
        secs(i64::try_from(setup.ready_delay.as_millis()).unwrap_or(i64::MAX))
    );
    let _ = writeln!(out, "initial replicas: {}", setup.initial);
    let _ = writeln!(out, "decisions: {}", f.decisions);
    let _ = writeln!(out, "scale ups: {}", f.scale_ups);
    let _ = writeln!(out, "scale downs: {}", f.scale_downs);
    let _ = writeln!(out, "min replicas: {}", f.min_replicas);
    let _ = writeln!(out, "max replicas: {}", f.max_replicas);
    let _ = writeln!(out, "final replicas: {}", f.final_replicas);
    let _ = writeln!(out, "decisions on a held value: {}", f.held_value_decisions);
    let _ = writeln!(
        out,
        "decisions without a usable value: {}",
        f.no_value_decisions
    );
    if setup.builtin.algorithm == AlgorithmName::Kpa {
        let interval_ms = i64::try_from(setup.interval().as_millis()).unwrap_or(i64::MAX);
        let panic_ms = i64::try_from(f.panic_decisions)
            .unwrap_or(i64::MAX)
            .saturating_mul(interval_ms);
        let _ = writeln!(
            out,
            "time in panic: {} ({} decisions)",
            secs(panic_ms),
            f.panic_decisions
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup_with(algorithm: AlgorithmArg, f: impl FnOnce(&mut Args)) -> Setup {
        let mut args = test_args(algorithm);
        f(&mut args);
        setup(&args).unwrap()
    }

    #[test]
    fn the_summary_reports_the_replay() {
        // KPA, target 10 × 0.7 = 7 per pod: a burst of 70 asks for ceil(70 / 7) = 10 replicas,
        // in panic (10 wanted ≥ 2 × 1 ready).
        let s = setup_with(AlgorithmArg::Kpa, |a| {
            a.max = Some(20);
            a.ready_delay = hoist_api::Duration::from_secs(4);
        });
        let trace = parse_trace("0,7\n10,70\n20,70\n").unwrap();
        let text = summary(&s, &trace, &replay(&s, &trace));
        assert!(text.contains("algorithm: kpa"), "{text}");
        assert!(text.contains("bounds: min 1 max 20"), "{text}");
        assert!(text.contains("trace rows: 3 over 20s"), "{text}");
        assert!(text.contains("max replicas: 10"), "{text}");
        assert!(text.contains("time in panic: "), "{text}");
        // HPA; the source goes down at 10 s and its value is held for 20 s (decisions at 10 s
        // and 20 s), then no decision is made (30 s, 40 s).
        let s = setup_with(AlgorithmArg::Hpa, |a| {
            a.initial = Some(4);
            a.interval = Some(hoist_api::Duration::from_secs(10));
            a.max_hold = hoist_api::Duration::from_secs(20);
        });
        let trace = parse_trace("0,40\n10,\n40,\n").unwrap();
        let text = summary(&s, &trace, &replay(&s, &trace));
        assert!(text.contains("decisions on a held value: 2"), "{text}");
        assert!(
            text.contains("decisions without a usable value: 2"),
            "{text}"
        );
        assert!(!text.contains("time in panic"), "kpa only: {text}");
    }

    #[test]
    fn flags_make_the_setup() {
        let s = setup_with(AlgorithmArg::Apa, |a| {
            a.min = Some(0);
            a.scale_down_cooldown = Some(hoist_api::Duration::from_secs(0));
            a.metric = Some(MetricArg::PerPod);
        });
        assert_eq!(s.initial, 1, "at least one replica at the start");
        assert_eq!(s.metric, MetricKind::PerPod);
        assert_eq!(s.interval(), std::time::Duration::from_secs(15));
        assert_eq!(
            s.builtin.apa.and_then(|t| t.scale_down_cooldown),
            Some(hoist_api::Duration::from_secs(0))
        );
    }

    #[test]
    fn traces_parse_and_bad_rows_name_their_line() {
        let ok = "time,value\n# comment\n0,1.5\n\n2.5, 3\n10,0\n";
        assert_eq!(
            parse_trace(ok).unwrap(),
            vec![
                Row {
                    at_ms: 0,
                    value: Some(1.5)
                },
                Row {
                    at_ms: 2500,
                    value: Some(3.0)
                },
                Row {
                    at_ms: 10_000,
                    value: Some(0.0)
                },
            ]
        );
        let bad: &[(&str, &str)] = &[
            ("0,1\n1,x\n", "line 2: value \"x\" is not a number"),
            ("0,1\n1\n", "line 2: expected two columns"),
            ("0,1\n1,2,3\n", "line 2: expected two columns"),
            ("0,1\n0,2\n", "line 2: time 0 is not after"),
            ("0,1\n1,-2\n", "line 2: value -2 must be"),
            ("0,1\n1,2,\n", "line 2: expected two columns"),
            ("0,1\n1,NaN\n", "line 2: value NaN must be"),
            ("0,1\n-1,2\n", "line 2: time -1 must be"),
            ("time,value\n", "no rows"),
            ("", "no rows"),
            ("0,1\nabc,2\n", "line 2: time \"abc\" is not a number"),
        ];
        for (text, piece) in bad {
            let e = format!("{:#}", parse_trace(text).unwrap_err());
            assert!(e.contains(piece), "{text:?}: {e:?} lacks {piece:?}");
        }
    }

    #[test]
    fn flags_for_another_algorithm_are_refused() {
        let e = setup(&Args {
            up_tolerance: Some(0.2),
            ..test_args(AlgorithmArg::Kpa)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--up-tolerance tunes apa, but the algorithm is kpa"
        );
        let e = setup(&Args {
            target: None,
            ..test_args(AlgorithmArg::Hpa)
        })
        .unwrap_err();
        assert!(e.to_string().contains("--target is required"), "{e}");
        let e = setup(&Args {
            min: Some(5),
            max: Some(2),
            ..test_args(AlgorithmArg::Hpa)
        })
        .unwrap_err();
        assert!(e.to_string().contains("min 5 max 2"), "{e}");
    }

    fn test_args(algorithm: AlgorithmArg) -> Args {
        Args {
            trace: PathBuf::from("unused.csv"),
            plot: None,
            scaler: None,
            algorithm: Some(algorithm),
            target: Some(10.0),
            metric: None,
            max_hold: hoist_api::Duration::from_secs(300),
            min: None,
            max: None,
            initial: None,
            ready_delay: hoist_api::Duration::from_secs(0),
            interval: None,
            scale_to_zero_grace: None,
            stable_window: None,
            panic_window_percentage: None,
            panic_threshold_percentage: None,
            max_scale_up_rate: None,
            max_scale_down_rate: None,
            target_utilization: None,
            up_tolerance: None,
            down_tolerance: None,
            scale_up_cooldown: None,
            scale_down_cooldown: None,
            tolerance: None,
            scale_up_stabilization: None,
            scale_down_stabilization: None,
        }
    }
}
