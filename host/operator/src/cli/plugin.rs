//! `hoist plugin check|run|pack`: a plugin author's tools, no cluster needed.
//!
//! - `check FILE`: verify a component and print its digest, exports and WIT version.
//! - `run FILE --hook pre-scale --context CTX.json [--allow-host H]...`: run one hook against a
//!   context file and print the outcome as JSON.
//! - `pack FILE --name NAME [--namespace NS]`: print a `ConfigMap` YAML holding the component.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hoist_sandbox::{
    AllowList, CallIdentity, CallOptions, FailedStage, FailureInfo, HookContext, HookOutcome,
    HookRunner, LoadSource, Plugin, Sandbox, SandboxConfig, SandboxError,
};
use serde_json::json;

use crate::plugin_configmap;

/// Plugin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a plugin component and print its digest, exports and WIT version.
    Check {
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Run one hook of a plugin locally against a context file; print the outcome as JSON.
    Run(RunArgs),
    /// Print a `ConfigMap` (YAML) holding the plugin, for `kubectl apply -f -`.
    Pack {
        /// The component (`.wasm`).
        file: PathBuf,
        /// `ConfigMap` name, also the `hoist.dev/plugin` label value.
        #[arg(long)]
        name: String,
        /// Namespace of the `ConfigMap` (omitted: kubectl's current namespace).
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// Sandbox settings shared by `check` and `run`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Directory for precompiled plugins, so a second check or run does not compile again.
    #[arg(long, env = "HOIST_PLUGIN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Memory limit of the plugin instance (all its memories together), in MiB.
    #[arg(long, default_value_t = 128)]
    memory_limit_mib: u64,
    /// CPU time the plugin's compilation may take (in a worker process), in seconds.
    #[arg(long, default_value_t = 60)]
    compile_cpu_seconds: u64,
    /// Address space the plugin's compilation may use (in a worker process), in MiB.
    #[arg(long, default_value_t = 1024)]
    compile_memory_mib: u64,
}

/// Hooks `run` can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookArg {
    /// `pre-scale(ctx)`
    PreScale,
    /// `post-scale(ctx)`
    PostScale,
    /// `on-failure(ctx, failure)`
    OnFailure,
    /// `validate-config(ctx.config)`
    ValidateConfig,
}

/// Failure stages for `run --hook on-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageArg {
    /// Pre-scaling failed.
    PreScaling,
    /// Scaling failed.
    Scaling,
    /// Post-scaling failed.
    PostScaling,
}

/// Arguments of `hoist plugin run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// Which hook to call.
    #[arg(long, value_enum)]
    hook: HookArg,
    /// The hook context as JSON (fields as in wit/types.wit, camelCase: namespace, scaler,
    /// target, operationId, fromReplicas, toReplicas, direction, podsRemoved, podsAdded,
    /// allPods, config, savedState, attempt, elapsedInStage).
    #[arg(long)]
    context: PathBuf,
    /// A host (or host:port) the plugin may send HTTP requests to; repeatable.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Deadline of the call, like `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    deadline: Duration,
    /// Replace the context's `config` with the contents of this JSON file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// For `on-failure`: the stage that failed.
    #[arg(long, value_enum, default_value = "pre-scaling")]
    failure_stage: StageArg,
    /// For `on-failure`: the failure's reason.
    #[arg(long, default_value = "ManualTest")]
    failure_reason: String,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Parse `250ms`, `10s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Check { file, sandbox } => check(&file, &sandbox),
        Command::Run(args) => run_hook(&args),
        Command::Pack {
            file,
            name,
            namespace,
        } => pack(&file, &name, namespace.as_deref()),
    }
}

fn new_sandbox(args: &SandboxArgs) -> anyhow::Result<Sandbox> {
    Sandbox::new(SandboxConfig {
        // As `hoist run`: the directory may be shared (an emptyDir); the cache is private in it.
        cache_dir: args
            .cache_dir
            .as_deref()
            .map(hoist_sandbox::private_cache_dir),
        // Compiled in a bounded worker process, as `hoist run` does.
        compile: crate::cli::compile_in_worker(crate::cli::compile_limits(
            args.compile_cpu_seconds,
            args.compile_memory_mib,
        ))?,
        memory_limit_bytes: args.memory_limit_mib.saturating_mul(1024 * 1024),
        max_concurrent_calls: 4,
        ..SandboxConfig::default()
    })
    .context("starting the plugin sandbox")
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn load(
    sandbox: &Sandbox,
    file: &Path,
) -> anyhow::Result<(std::sync::Arc<Plugin>, LoadSource, Duration)> {
    let bytes = read(file)?;
    let started = Instant::now();
    let (plugin, source) = sandbox.load_with_source(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a usable hoist plugin ({}): {e}",
            file.display(),
            e.reason()
        )
    })?;
    Ok((plugin, source, started.elapsed()))
}

fn check(file: &Path, args: &SandboxArgs) -> anyhow::Result<()> {
    let sandbox = new_sandbox(args)?;
    let (plugin, source, took) = load(&sandbox, file)?;
    println!("plugin:  {}", file.display());
    println!("sha256:  {}", plugin.digest());
    println!("size:    {} bytes", plugin.size());
    println!("wit:     hoist:hooks@{}", plugin.wit_version());
    println!("exports: {}", plugin.exports().join(", "));
    let ms = took.as_secs_f64() * 1000.0;
    match (&args.cache_dir, source) {
        (Some(dir), LoadSource::DiskCache) => {
            println!("load:    cache hit in {ms:.1} ms ({})", dir.display());
        }
        (Some(dir), _) => println!(
            "load:    compiled in {ms:.1} ms, cached in {}",
            dir.display()
        ),
        (None, _) => println!("load:    compiled in {ms:.1} ms (no cache dir)"),
    }
    println!("ok");
    Ok(())
}

fn run_hook(args: &RunArgs) -> anyhow::Result<()> {
    // Guest logs and the sandbox's own warnings go to stderr; stdout is the JSON outcome.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let context_text = std::fs::read_to_string(&args.context)
        .with_context(|| format!("reading context {}", args.context.display()))?;
    let mut ctx: HookContext = serde_json::from_str(&context_text)
        .with_context(|| format!("{} is not a hook context", args.context.display()))?;
    if let Some(path) = &args.config {
        ctx.config = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
    }
    let sandbox = new_sandbox(&args.sandbox)?;
    let (plugin, _, _) = load(&sandbox, &args.file)?;
    let options = CallOptions::new(
        args.deadline,
        AllowList::new(&args.allow_hosts),
        CallIdentity {
            namespace: ctx.namespace.clone(),
            scaler: ctx.scaler.clone(),
            operation: ctx.operation_id.clone(),
            attempt: ctx.attempt,
        },
    );
    let failure = FailureInfo {
        stage: match args.failure_stage {
            StageArg::PreScaling => FailedStage::PreScaling,
            StageArg::Scaling => FailedStage::Scaling,
            StageArg::PostScaling => FailedStage::PostScaling,
        },
        reason: args.failure_reason.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let result: Result<serde_json::Value, SandboxError> = runtime.block_on(async {
        match args.hook {
            HookArg::PreScale => sandbox
                .pre_scale(&plugin, &ctx, &options)
                .await
                .map(|o| outcome_json(&o)),
            HookArg::PostScale => sandbox
                .post_scale(&plugin, &ctx, &options)
                .await
                .map(|o| outcome_json(&o)),
            HookArg::OnFailure => sandbox
                .on_failure(&plugin, &ctx, &failure, &options)
                .await
                .map(|()| json!({"outcome": "ok"})),
            HookArg::ValidateConfig => sandbox
                .validate_config(&plugin, &ctx.config, &options)
                .await
                .map(|()| json!({"outcome": "ok"})),
        }
    });
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(mut value) => {
            value["elapsedMs"] = json!(elapsed_ms);
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Err(err) => {
            let value = json!({"outcome": "error", "reason": err.reason(), "message": err.to_string(), "elapsedMs": elapsed_ms});
            println!("{}", serde_json::to_string_pretty(&value)?);
            bail!("{} {}: {err}", args.file.display(), err.reason())
        }
    }
}

fn outcome_json(outcome: &HookOutcome) -> serde_json::Value {
    match outcome {
        HookOutcome::Done { message } => json!({"outcome": "done", "message": message}),
        HookOutcome::InProgress {
            state,
            retry_after,
            message,
        } => json!({
            "outcome": "inProgress",
            "state": state,
            "retryAfterMs": u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            "message": message,
        }),
    }
}

fn pack(file: &Path, name: &str, namespace: Option<&str>) -> anyhow::Result<()> {
    let bytes = read(file)?;
    // Refuse to package something the operator would reject.
    let sandbox = new_sandbox(&SandboxArgs {
        cache_dir: None,
        memory_limit_mib: 128,
        compile_cpu_seconds: 60,
        compile_memory_mib: 1024,
    })?;
    sandbox.load(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a usable hoist plugin ({}): {e}",
            file.display(),
            e.reason()
        )
    })?;
    let cm = plugin_configmap::build(name, namespace, &bytes)
        .with_context(|| format!("packing {} as ConfigMap {name}", file.display()))?;
    let yaml = serde_yaml::to_string(&cm).context("rendering the ConfigMap as YAML")?;
    print!("{yaml}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
