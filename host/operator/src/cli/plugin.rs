//! `hoist plugin check|run|pack`: a plugin author's tools, no cluster needed.
//!
//! - `check FILE`: verify a component and print its digest, exports and WIT version.
//! - `run FILE --hook pre-scale --context CTX.json [--allow-host H]...`: run one hook against a
//!   context file and print the outcome as JSON.
//! - `pack FILE --name NAME [--namespace NS]`: print a `ConfigMap` YAML holding the component.
//! - `new NAME --lang rust`: scaffold a plugin project (`plugin_new.rs`).
//! - `push FILE oci://REGISTRY/REPOSITORY[:TAG]`: publish it as a Wasm OCI artifact; print the
//!   pinned reference for `spec.hooks.plugin.oci.reference` and the component's sha256.

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
    /// Publish the plugin to an OCI registry (HTTPS); print the pinned reference and the
    /// component's sha256.
    Push(PushArgs),
    /// Create a plugin project from a template (hook, build recipe, context file, README).
    New(crate::cli::plugin_new::NewArgs),
}

/// Arguments of `hoist plugin push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// Where to: `oci://REGISTRY/REPOSITORY[:TAG]` (tag `latest` when omitted).
    destination: String,
    /// Registry user (anonymous without it).
    #[arg(long, env = "HOIST_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Read the registry password from standard input (else from `HOIST_REGISTRY_PASSWORD`).
    #[arg(long)]
    password_stdin: bool,
    /// PEM file of CA certificates trusted besides the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Sandbox settings shared by `check` and `run`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Directory for precompiled plugins, so a second check or run does not compile again
    /// (default `~/.cache/hoist/plugins`).
    #[arg(long, env = "HOIST_PLUGIN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
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
    /// For `pre-scale` and `post-scale`: while the hook answers `inProgress`, wait its
    /// `retryAfter` and call again with its `state` as `savedState` (the attempt and the
    /// elapsed time advancing as in the operator); print one JSON line per call.
    #[arg(long)]
    until_done: bool,
    /// With `--until-done`: most calls before giving up.
    #[arg(long, default_value_t = 100)]
    max_calls: u32,
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
        Command::Push(args) => push(&args),
        Command::New(args) => crate::cli::plugin_new::run(&args),
    }
}

fn push(args: &PushArgs) -> anyhow::Result<()> {
    let reference = args.destination.strip_prefix("oci://").with_context(|| {
        format!(
            "{:?}: the destination is oci://REGISTRY/REPOSITORY[:TAG]",
            args.destination
        )
    })?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    // A component starts with the Wasm magic and the component-model layer (0x0d 0x00 0x01 0x00).
    if !bytes.starts_with(b"\0asm\x0d\x00\x01\x00") {
        bail!(
            "{} is not a WebAssembly component (a core module or something else); build it for wasm32-wasip2",
            args.file.display()
        );
    }
    let auth = match &args.username {
        None => oci_client::secrets::RegistryAuth::Anonymous,
        Some(user) => {
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            } else {
                std::env::var("HOIST_REGISTRY_PASSWORD").context(
                    "--username needs a password: --password-stdin or HOIST_REGISTRY_PASSWORD",
                )?
            };
            oci_client::secrets::RegistryAuth::Basic(user.clone(), password)
        }
    };
    let mut extra_ca_pem = Vec::new();
    if let Some(path) = &args.ca_file {
        extra_ca_pem
            .push(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let settings = crate::plugin_oci::RegistrySettings {
        extra_ca_pem,
        max_bytes: u64::MAX,
    };
    let digest = hoist_types::Digest::of(&bytes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pushed = runtime
        .block_on(crate::plugin_oci::push(&settings, reference, bytes, &auth))
        .map_err(anyhow::Error::msg)?;
    println!("{}", pushed.pinned);
    println!("sha256 {digest}");
    Ok(())
}

impl SandboxArgs {
    /// The cache directory in effect: the flag's, else the default, none with `--no-cache`.
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        Some(
            self.cache_dir
                .clone()
                .unwrap_or_else(crate::cli::run::default_cache_dir),
        )
    }
}

fn new_sandbox(args: &SandboxArgs) -> anyhow::Result<Sandbox> {
    Sandbox::new(SandboxConfig {
        // As `hoist run`: the directory may be shared (an emptyDir); the cache is private in it.
        cache_dir: args
            .cache_dir()
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
    match (&args.cache_dir(), source) {
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
    if args.until_done {
        if !matches!(args.hook, HookArg::PreScale | HookArg::PostScale) {
            bail!("--until-done replays pre-scale and post-scale only");
        }
        return runtime.block_on(replay(args, &sandbox, &plugin, ctx, options));
    }
    let started = Instant::now();
    let result: Result<serde_json::Value, SandboxError> = runtime.block_on(async {
        match args.hook {
            HookArg::PreScale | HookArg::PostScale => {
                call_stage_hook(args.hook, &sandbox, &plugin, &ctx, &options)
                    .await
                    .map(|o| outcome_json(&o))
            }
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

/// `pre-scale` or `post-scale`, as `hook` says.
async fn call_stage_hook(
    hook: HookArg,
    sandbox: &Sandbox,
    plugin: &Plugin,
    ctx: &HookContext,
    options: &CallOptions,
) -> Result<HookOutcome, SandboxError> {
    if hook == HookArg::PostScale {
        sandbox.post_scale(plugin, ctx, options).await
    } else {
        sandbox.pre_scale(plugin, ctx, options).await
    }
}

/// `--until-done`: calls the stage hook until it is done, fails or `--max-calls` is reached,
/// handing each `inProgress` state to the next call as the operator does.
async fn replay(
    args: &RunArgs,
    sandbox: &Sandbox,
    plugin: &Plugin,
    mut ctx: HookContext,
    mut options: CallOptions,
) -> anyhow::Result<()> {
    let stage_started = Instant::now();
    for call in 1..=args.max_calls {
        let started = Instant::now();
        let result = call_stage_hook(args.hook, sandbox, plugin, &ctx, &options).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(outcome) => {
                let mut value = outcome_json(&outcome);
                value["call"] = json!(call);
                value["elapsedMs"] = json!(elapsed_ms);
                println!("{}", serde_json::to_string(&value)?);
                match outcome {
                    HookOutcome::Done { .. } => return Ok(()),
                    HookOutcome::InProgress {
                        state, retry_after, ..
                    } => {
                        tokio::time::sleep(retry_after).await;
                        ctx.saved_state = Some(state);
                        ctx.attempt = ctx.attempt.saturating_add(1);
                        ctx.elapsed_in_stage = stage_started.elapsed();
                        options.identity.attempt = ctx.attempt;
                    }
                }
            }
            Err(err) => {
                let value = json!({"outcome": "error", "call": call, "reason": err.reason(), "message": err.to_string(), "elapsedMs": elapsed_ms});
                println!("{}", serde_json::to_string(&value)?);
                bail!("{} {}: {err}", args.file.display(), err.reason())
            }
        }
    }
    bail!(
        "{}: still in progress after {} calls (--max-calls)",
        args.file.display(),
        args.max_calls
    )
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
        no_cache: true,
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
