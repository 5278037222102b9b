//! Command line: `serve`, `token`, `check-config`, `simulate`. Flags override the config file and can be
//! given as environment variables (shown in `--help`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// cadbroker hands out GPU-backed cloud workstations from capacity pools.
///
/// Start with `cadbroker serve` (the embedded simulated cluster, no Kubernetes needed), mint a
/// development token with `cadbroker token --user alice --group drafters`, then request a
/// workstation: `curl -H "Authorization: Bearer $TOKEN" -d '{"pool":"drafting-2d"}'
/// -H 'content-type: application/json' http://127.0.0.1:8080/api/v1/sessions`.
#[derive(Debug, Parser)]
#[command(name = "cadbroker", version, about, long_about)]
pub struct Cli {
    /// Config file. Default: config/cadbroker.toml if it exists, else the built-in default.
    #[arg(long, global = true, env = "CADBROKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax, e.g. "info,cadbroker=debug").
    #[arg(long, global = true, env = "CADBROKER_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "CADBROKER_LOG_JSON")]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: API on the public listener, health and metrics on the admin listener.
    Serve(ServeArgs),
    /// Mint a development token signed with the development issuer's key.
    Token(TokenArgs),
    /// Validate the config and print a summary.
    CheckConfig,
    /// Print the CustomResourceDefinitions (CapacityPool, WorkstationSession) as YAML.
    Crds,
    /// Replay a trace of requests against the autoscaling policy in virtual time and report
    /// instant-serve share, waits, queue, workstation-hours and cost (docs/autoscaling.md).
    Simulate(SimulateArgs),
}

/// `simulate`: a trace and what to report; or `simulate generate-trace`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SimulateArgs {
    /// Make a synthetic trace instead of simulating one.
    #[command(subcommand)]
    pub generate: Option<SimulateCommand>,
    /// Trace of requests: CSV lines `time,user,pool,duration`.
    #[arg(long, value_name = "CSV", required = true)]
    pub trace: Option<PathBuf>,
    /// Also run two baselines on the same trace: a fixed buffer, and the schedules alone.
    #[arg(long)]
    pub compare: bool,
    /// Write a chart of demand, warm and in-use over the day to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Price of one GPU-hour (overrides simulate.gpuPricePerHour).
    #[arg(long, value_name = "PRICE")]
    pub gpu_price: Option<f64>,
    /// Print every scaling and culling decision of the cadbroker policy.
    #[arg(long)]
    pub decisions: bool,
}

/// Subcommands of `simulate`.
#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Print a synthetic working day of drafters as a trace (CSV on stdout), deterministic for a seed.
    GenerateTrace(GenerateTraceArgs),
}

/// What `simulate generate-trace` makes.
#[derive(Debug, Args)]
pub struct GenerateTraceArgs {
    /// How many drafters.
    #[arg(long, default_value_t = 200)]
    pub drafters: u32,
    /// Seed of the random numbers; the same seed gives the same trace.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The working day (a local date).
    #[arg(long, default_value = "2026-03-10")]
    pub date: jiff::civil::Date,
    /// The drafters' IANA time zone.
    #[arg(long, default_value = "Europe/Amsterdam")]
    pub time_zone: String,
    /// The pool the drafters use.
    #[arg(long, default_value = "drafting-2d")]
    pub pool: String,
}

/// Overrides for `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public listener address (API).
    #[arg(long, env = "CADBROKER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listener address (/livez, /readyz, /metrics).
    #[arg(long, env = "CADBROKER_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Simulated backend: time from start to ready (e.g. "500ms", "3s").
    #[arg(long, env = "CADBROKER_START_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub start_delay: Option<Duration>,
    /// Backend: auto (local desktops when installed, else simulated), desktop, simulated or
    /// kubernetes.
    #[arg(long, env = "CADBROKER_BACKEND", value_enum)]
    pub backend: Option<crate::config::BackendKind>,
}

/// What to put in a development token.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (the user's id at the issuer).
    #[arg(long, value_name = "SUBJECT")]
    pub user: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// A group (repeat for several).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// A role (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Add the first configured admin group, making the user a broker admin.
    #[arg(long)]
    pub admin: bool,
    /// Leave out the groups claim entirely ("groups unknown", as with an Entra group overage).
    #[arg(long, conflicts_with_all = ["groups", "admin"])]
    pub no_groups_claim: bool,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Development issuer to sign with (by name). Default: the first development issuer.
    #[arg(long)]
    pub issuer: Option<String>,
}

impl Cli {
    /// Loads the config this invocation names.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let default = PathBuf::from("config/cadbroker.toml");
        let path = self.config.clone().or_else(|| default.exists().then_some(default));
        Config::load(path.as_deref())
    }
}

impl ServeArgs {
    /// Applies the overrides and re-validates.
    pub fn apply(&self, mut config: Config) -> Result<Config, ConfigError> {
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.server.admin_listen = admin;
        }
        if let Some(kind) = self.backend {
            config.backend.kind = kind;
        }
        if let Some(delay) = self.start_delay {
            config.backend.simulated.start_delay = delay;
        }
        config
            .validate()
            .map_err(|problems| ConfigError::Invalid { origin: "flags and environment".into(), problems })?;
        Ok(config)
    }
}
