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
//! **Replay**: a decision every `decisionInterval` from the first row's time to the last's,
//! through the same tick the operator runs (`hoist_decide::modes::builtin::tick`: the algorithm,
//! the bounds, the scale-to-zero grace). Replicas asked for become ready `--ready-delay` later;
//! removed replicas go at once (not-yet-ready ones first).
//!
//! **Output**: a summary on stdout (decisions, scale changes, max/min replicas, decisions on a
//! held value and held back for want of one, time in panic for kpa), and with `--plot` an SVG of the metric, the desired count (what the metric alone
//! asks for), the replicas written and the ready replicas over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hoist_api::autoscaling::{
    Algorithm as AlgorithmName, ApaTuning, Autoscaling, BuiltinAutoscaling, BuiltinMetric,
    HpaTuning, KpaTuning, PrometheusMetric,
};
use hoist_api::{Scaler, ScalerSpec};
use hoist_decide::autoscale::{Algorithm, Metric, Timestamp};
use hoist_decide::modes::builtin::{
    Memory, MetricsHealth, TickDecision, TickInput, algorithm, tick,
};

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

/// How the trace's values are to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricKind {
    /// The total demand across the target (a Prometheus query).
    #[default]
    Total,
    /// An average per ready pod (a pods metric).
    PerPod,
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
    pub metric: Option<MetricKind>,
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
    let setup = Setup::from_args(args)?;
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading the trace {}", args.trace.display()))?;
    let trace = parse_trace(&text).with_context(|| format!("trace {}", args.trace.display()))?;
    let replay = replay(&setup, &trace)?;
    print!("{}", summary(&setup, &trace, &replay));
    if let Some(out) = &args.plot {
        plot(&setup, &replay, out).with_context(|| format!("drawing {}", out.display()))?;
        println!("plot: {}", out.display());
    }
    Ok(())
}

/// Everything a replay needs besides the trace.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The Scaler spec the tick sees (bounds; `autoscaling.builtin`).
    spec: ScalerSpec,
    /// `spec.autoscaling.builtin`.
    builtin: BuiltinAutoscaling,
    /// Per-replica target.
    target: f64,
    /// How the trace is read.
    metric: MetricKind,
    /// Replicas at the start.
    initial: i32,
    /// Delay before a new replica is ready.
    ready_delay: Duration,
    /// Time between decisions.
    interval: Duration,
    /// How long a value is held through an outage.
    max_hold: Duration,
}

impl Setup {
    fn from_args(args: &Args) -> Result<Self> {
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
        // The tick reads the metric's target from the readings; keep one metric in the spec
        // so `builtin` stays a valid member.
        builtin.metrics = vec![BuiltinMetric {
            prometheus: Some(PrometheusMetric {
                address: "http://simulated".to_owned(),
                query: "trace".to_owned(),
                target,
            }),
            pods: None,
        }];
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
        spec.paused = false;
        spec.pause_scale_in = false;
        spec.pause_scale_out = false;
        spec.autoscaling = Some(Autoscaling {
            builtin: Some(builtin.clone()),
            ..Autoscaling::default()
        });
        let initial = args.initial.unwrap_or(min.max(1)).clamp(0, max);
        let interval = builtin.effective_decision_interval().get();
        Ok(Self {
            spec,
            builtin,
            target,
            metric: args.metric.or(file_kind).unwrap_or_default(),
            initial,
            ready_delay: args.ready_delay.get(),
            interval,
            max_hold: args.max_hold.get(),
        })
    }
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

/// One trace row: time in milliseconds, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Milliseconds from the trace's origin.
    pub at_ms: i64,
    /// The metric; `None`: the source is down from this time.
    pub value: Option<f64>,
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

/// The state of the simulated workload and autoscaler at one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds from the trace's origin.
    pub at_ms: i64,
    /// The metric at this time (`None`: the source is down).
    pub value: Option<f64>,
    /// The source is down and the decision used its last value.
    pub held_value: bool,
    /// What the metric alone asked for (`None` when the algorithm held).
    pub desired: Option<i32>,
    /// Replicas after this decision.
    pub replicas: i32,
    /// Ready replicas after this decision.
    pub ready: i32,
    /// KPA: panicking at this decision.
    pub panicking: bool,
    /// Whether this decision changed the replicas.
    pub changed: bool,
}

/// The replay: one sample per decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The samples, in time order.
    pub samples: Vec<Sample>,
}

/// Replays `trace` through the tick the operator runs.
pub fn replay(setup: &Setup, trace: &[Row]) -> Result<Replay> {
    let (Some(first), Some(last)) = (trace.first(), trace.last()) else {
        bail!("the trace has no rows");
    };
    let interval_ms = i64::try_from(setup.interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let delay_ms = i64::try_from(setup.ready_delay.as_millis()).unwrap_or(i64::MAX);
    // Every replica's ready time; the workload's count is the length.
    let mut pods: Vec<i64> = vec![first.at_ms; usize::try_from(setup.initial).unwrap_or(0)];
    let mut memory = Memory::default();
    let mut samples = Vec::new();
    let mut row = 0usize;
    let mut now = first.at_ms;
    while now <= last.at_ms {
        while row + 1 < trace.len() && trace[row + 1].at_ms <= now {
            row += 1;
        }
        let value = trace[row].value;
        let ready = count_ready(&pods, now);
        let current = i32::try_from(pods.len()).unwrap_or(i32::MAX);
        let metric = value.map(|v| match setup.metric {
            MetricKind::Total => Metric::total(v, setup.target),
            MetricKind::PerPod => Metric::per_pod(v, setup.target),
        });
        let readings = [metric.ok_or_else(|| "the trace has no value (source down)".to_owned())];
        let outcome = tick(
            &mut memory,
            &TickInput {
                spec: &setup.spec,
                builtin: &setup.builtin,
                now: Timestamp::from_unix_millis(now),
                current_replicas: current,
                ready_replicas: ready,
                readings: &readings,
                max_hold: setup.max_hold,
            },
        );
        // The tick says whether it decided on a held value, and whether the algorithm panicked.
        let held_value = matches!(outcome.report.metrics, MetricsHealth::Held { .. });
        let (desired, panicking) = match outcome.report.decision {
            TickDecision::Recommended {
                desired, panicking, ..
            } => (Some(desired), panicking),
            TickDecision::Held(_) | TickDecision::Paused => (None, false),
        };
        let changed = if let Some(n) = outcome.write {
            let n = usize::try_from(n.max(0)).unwrap_or(0);
            if n > pods.len() {
                pods.resize(n, now.saturating_add(delay_ms));
            } else {
                // Not-yet-ready replicas go first, as a ReplicaSet removes them first.
                pods.sort_unstable();
                pods.truncate(n);
            }
            true
        } else {
            false
        };
        samples.push(Sample {
            at_ms: now,
            value,
            held_value,
            desired,
            replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
            ready: count_ready(&pods, now),
            panicking,
            changed,
        });
        now = now.saturating_add(interval_ms);
    }
    Ok(Replay { samples })
}

fn count_ready(pods: &[i64], now: i64) -> i32 {
    i32::try_from(pods.iter().filter(|&&at| at <= now).count()).unwrap_or(i32::MAX)
}

/// Figures of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Decisions made.
    pub decisions: usize,
    /// Decisions that changed the replicas.
    pub scale_ups: usize,
    /// Decisions that lowered the replicas.
    pub scale_downs: usize,
    /// Fewest replicas after any decision.
    pub min_replicas: i32,
    /// Most replicas after any decision.
    pub max_replicas: i32,
    /// Replicas at the end.
    pub final_replicas: i32,
    /// Decisions taken in panic mode (kpa).
    pub panic_decisions: usize,
    /// Decisions made on a held value (the source down).
    pub held_value_decisions: usize,
    /// Decisions not made: no usable value (the source down longer than --max-hold).
    pub no_value_decisions: usize,
}

impl Replay {
    /// The figures the summary prints.
    pub fn figures(&self, initial: i32) -> Figures {
        let mut f = Figures {
            decisions: self.samples.len(),
            scale_ups: 0,
            scale_downs: 0,
            min_replicas: i32::MAX,
            max_replicas: 0,
            final_replicas: initial,
            panic_decisions: 0,
            held_value_decisions: 0,
            no_value_decisions: 0,
        };
        let mut prev = initial;
        for s in &self.samples {
            if s.replicas > prev {
                f.scale_ups += 1;
            } else if s.replicas < prev {
                f.scale_downs += 1;
            }
            prev = s.replicas;
            f.min_replicas = f.min_replicas.min(s.replicas);
            f.max_replicas = f.max_replicas.max(s.replicas);
            f.final_replicas = s.replicas;
            f.panic_decisions += usize::from(s.panicking);
            f.held_value_decisions += usize::from(s.held_value);
            f.no_value_decisions += usize::from(s.desired.is_none());
        }
        if f.min_replicas == i32::MAX {
            f.min_replicas = initial;
        }
        f
    }
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
        secs(i64::try_from(setup.interval.as_millis()).unwrap_or(i64::MAX))
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
        let interval_ms = i64::try_from(setup.interval.as_millis()).unwrap_or(i64::MAX);
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

/// Picks one series' value from a sample.
type Pick<'a> = &'a dyn Fn(&Sample) -> Option<f64>;

/// Draws the replay into an SVG: the metric on the left axis, replicas on the right.
fn plot(setup: &Setup, replay: &Replay, out: &Path) -> Result<()> {
    use plotters::prelude::*;

    let to_s = |ms: i64| {
        #[allow(clippy::cast_precision_loss)] // plotting
        let s = ms as f64 / 1000.0;
        s
    };
    let samples = &replay.samples;
    let t0 = samples.first().map_or(0.0, |s| to_s(s.at_ms));
    let t1 = samples.last().map_or(1.0, |s| to_s(s.at_ms)).max(t0 + 1.0);
    let metric_max = samples
        .iter()
        .filter_map(|s| s.value)
        .fold(setup.target, f64::max)
        * 1.1;
    let replicas_max = samples
        .iter()
        .flat_map(|s| [s.replicas, s.ready, s.desired.unwrap_or(0)])
        .max()
        .unwrap_or(1)
        .max(1);
    let replicas_top = f64::from(replicas_max) * 1.1 + 0.5;

    let root = SVGBackend::new(out, (1200, 600)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let name = match setup.builtin.algorithm {
        AlgorithmName::Kpa => "kpa",
        AlgorithmName::Apa => "apa",
        AlgorithmName::Hpa => "hpa",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("hoist simulate: {name}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0.0..metric_max)
        .map_err(|e| err(&e))?
        .set_secondary_coord(t0..t1, 0.0..replicas_top);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("metric")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("replicas")
        .draw()
        .map_err(|e| err(&e))?;

    // Steps: a value holds until the next sample.
    let steps = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        let mut points = Vec::with_capacity(samples.len() * 2);
        for (i, s) in samples.iter().enumerate() {
            let Some(y) = f(s) else { continue };
            points.push((to_s(s.at_ms), y));
            let next = samples.get(i + 1).map_or(t1, |n| to_s(n.at_ms));
            points.push((next, y));
        }
        points
    };
    let metric_color = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(steps(&|s| s.value), &metric_color))
        .map_err(|e| err(&e))?
        .label("metric")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], metric_color));
    let series: [(&str, RGBColor, Pick<'_>); 3] = [
        ("desired", RGBColor(230, 120, 0), &|s| {
            s.desired.map(f64::from)
        }),
        ("replicas", RGBColor(0, 90, 200), &|s| {
            Some(f64::from(s.replicas))
        }),
        ("ready", RGBColor(0, 160, 60), &|s| Some(f64::from(s.ready))),
    ];
    for (label, color, f) in series {
        chart
            .draw_secondary_series(LineSeries::new(steps(f), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(algorithm: AlgorithmArg, f: impl FnOnce(&mut Args)) -> Setup {
        let mut args = test_args(algorithm);
        f(&mut args);
        Setup::from_args(&args).unwrap()
    }

    fn rows(points: &[(i64, f64)]) -> Vec<Row> {
        points
            .iter()
            .map(|&(s, value)| Row {
                at_ms: s * 1000,
                value: Some(value),
            })
            .collect()
    }

    /// (time s, replicas, ready) at each decision.
    fn track(replay: &Replay) -> Vec<(i64, i32, i32)> {
        replay
            .samples
            .iter()
            .map(|s| (s.at_ms / 1000, s.replicas, s.ready))
            .collect()
    }

    #[test]
    fn replays_follow_the_algorithm_and_the_ready_delay() {
        struct Case {
            name: &'static str,
            setup: Setup,
            trace: Vec<Row>,
            want: Vec<(i64, i32, i32)>,
        }
        let cases = [
            Case {
                // HPA: 40 over 1 ready pod is 4× the target: ceil(1 × 4) = 4 at once, ready
                // 20 s later. At 10 s the ratio is still 4 (one ready pod), the rate policy
                // allows 1 + 4 = 5 within its 15 s period; at 20 s four are ready (ratio 1).
                name: "hpa scales up, replicas ready after the delay",
                setup: setup(AlgorithmArg::Hpa, |a| {
                    a.interval = Some(hoist_api::Duration::from_secs(10));
                    a.ready_delay = hoist_api::Duration::from_secs(20);
                }),
                trace: rows(&[(0, 40.0), (30, 40.0)]),
                want: vec![(0, 4, 1), (10, 5, 1), (20, 5, 4), (30, 5, 5)],
            },
            Case {
                // HPA: the 150 s scale-down window keeps the 4 of t=0 until it leaves the window at
                // 150 s: the first decision after that (200 s) scales down.
                name: "hpa scale-down waits for its window",
                setup: setup(AlgorithmArg::Hpa, |a| {
                    a.initial = Some(4);
                    a.interval = Some(hoist_api::Duration::from_secs(100));
                    a.scale_down_stabilization = Some(hoist_api::Duration::from_secs(150));
                }),
                trace: rows(&[(0, 40.0), (100, 10.0), (400, 10.0)]),
                want: vec![
                    (0, 4, 4),
                    (100, 4, 4),
                    (200, 1, 1),
                    (300, 1, 1),
                    (400, 1, 1),
                ],
            },
            Case {
                // APA at min 0: zero is reached after the scale-to-zero grace (tick's rule);
                // demand brings one replica back.
                name: "apa to zero after the grace and back",
                setup: setup(AlgorithmArg::Apa, |a| {
                    a.min = Some(0);
                    a.initial = Some(1);
                    a.interval = Some(hoist_api::Duration::from_secs(10));
                    a.scale_down_cooldown = Some(hoist_api::Duration::from_secs(0));
                    a.scale_to_zero_grace = Some(hoist_api::Duration::from_secs(20));
                }),
                trace: rows(&[(0, 0.0), (40, 5.0), (50, 5.0)]),
                want: vec![
                    (0, 1, 1),
                    (10, 1, 1),
                    (20, 0, 0),
                    (30, 0, 0),
                    (40, 1, 1),
                    (50, 1, 1),
                ],
            },
        ];
        for case in cases {
            let replay = replay(&case.setup, &case.trace).unwrap();
            assert_eq!(track(&replay), case.want, "{}", case.name);
        }
    }

    #[test]
    fn kpa_panics_on_a_burst_and_reports_it() {
        // Target 10 × 0.7 = 7 per pod. A burst of 70 against 1 ready pod: panic (10 pods
        // wanted ≥ 2 × 1 ready).
        let s = setup(AlgorithmArg::Kpa, |a| {
            a.max = Some(20);
            a.ready_delay = hoist_api::Duration::from_secs(4);
        });
        let replay = replay(&s, &rows(&[(0, 7.0), (10, 70.0), (20, 70.0)])).unwrap();
        let first_burst = replay.samples.iter().find(|x| x.at_ms == 10_000).unwrap();
        assert!(first_burst.panicking, "{first_burst:?}");
        assert_eq!(first_burst.ready, 1, "new replicas are not ready yet");
        // Once the panic window (6 s) holds only the burst: ceil(70 / 7) = 10, kept while
        // panicking.
        let late = replay.samples.iter().find(|x| x.at_ms == 20_000).unwrap();
        assert_eq!(
            (late.desired, late.replicas, late.ready),
            (Some(10), 10, 10)
        );
        let f = replay.figures(s.initial);
        assert_eq!(f.max_replicas, 10);
        assert!(f.panic_decisions > 0);
        let text = summary(&s, &rows(&[(0, 7.0), (20, 70.0)]), &replay);
        assert!(text.contains("max replicas: 10"), "{text}");
        assert!(text.contains("time in panic: "), "{text}");
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
    fn an_outage_holds_the_last_value_then_stops_deciding() {
        // HPA at target (40 over 4 pods of target 10); the source goes down at 10 s. The value
        // is held for --max-hold (20 s: decisions at 10 s and 20 s), then no decision is made
        // and the replicas stay as they are — never scaled to zero or the minimum.
        let s = setup(AlgorithmArg::Hpa, |a| {
            a.initial = Some(4);
            a.interval = Some(hoist_api::Duration::from_secs(10));
            a.max_hold = hoist_api::Duration::from_secs(20);
        });
        let trace = parse_trace("0,40\n10,\n40,\n").unwrap();
        assert_eq!(trace[1].value, None);
        let r = replay(&s, &trace).unwrap();
        let seen: Vec<(i64, bool, Option<i32>, i32)> = r
            .samples
            .iter()
            .map(|x| (x.at_ms / 1000, x.held_value, x.desired, x.replicas))
            .collect();
        assert_eq!(
            seen,
            [
                (0, false, Some(4), 4),
                (10, true, Some(4), 4),
                (20, true, Some(4), 4),
                (30, false, None, 4),
                (40, false, None, 4),
            ]
        );
        let f = r.figures(s.initial);
        assert_eq!((f.held_value_decisions, f.no_value_decisions), (2, 2));
        let text = summary(&s, &trace, &r);
        assert!(text.contains("decisions on a held value: 2"), "{text}");
        assert!(
            text.contains("decisions without a usable value: 2"),
            "{text}"
        );
    }

    #[test]
    fn flags_for_another_algorithm_are_refused() {
        let e = Setup::from_args(&Args {
            up_tolerance: Some(0.2),
            ..test_args(AlgorithmArg::Kpa)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--up-tolerance tunes apa, but the algorithm is kpa"
        );
        let e = Setup::from_args(&Args {
            target: None,
            ..test_args(AlgorithmArg::Hpa)
        })
        .unwrap_err();
        assert!(e.to_string().contains("--target is required"), "{e}");
        let e = Setup::from_args(&Args {
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
