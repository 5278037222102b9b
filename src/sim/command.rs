//! `cadbroker simulate` and `cadbroker simulate generate-trace`: reading files, running the
//! policies, printing the report and writing the chart. Errors are sentences for the terminal.

use std::path::{Path, PathBuf};

use super::{
    SimConfig, Trace,
    generate::{WorkdaySpec, workday},
    policies,
    progress::Progress,
    report, simulate, svg,
};
use crate::{
    cli::{GenerateTraceArgs, SimulateArgs, SimulateCommand},
    domain::{PoolName, Zone},
};

/// Runs `simulate` with the config at `config` (default: config/cadbroker.toml if it exists,
/// else the built-in default).
pub fn run(config: Option<&Path>, args: &SimulateArgs) -> Result<(), String> {
    if let Some(SimulateCommand::GenerateTrace(what)) = &args.generate {
        return out(&generate_trace(what)?);
    }
    let mut config = load(config)?;
    if let Some(price) = args.gpu_price {
        if !(price.is_finite() && price >= 0.0) {
            return Err(format!("--gpu-price {price}: must be a number of at least 0"));
        }
        config.settings.gpu_price_per_hour = price;
    }
    let path = args.trace.as_ref().ok_or("--trace is needed (a CSV of time,user,pool,duration)")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pools: Vec<PoolName> = config.pools.iter().map(|p| p.name.clone()).collect();
    let origin = path.display().to_string();
    let trace = Trace::parse(&origin, &text, &pools, &config.settings.time_zone)?;
    let outcomes: Vec<_> = policies(&config, args.compare)
        .iter()
        .map(|policy| {
            let mut bar = Progress::new(&policy.name);
            simulate(&config, policy, &trace, &mut |done| bar.set(done))
        })
        .collect();
    let mut text = report::render(&config, &origin, &trace, &outcomes);
    if args.decisions {
        text.push('\n');
        text.push_str(&report::decisions(&config, &outcomes[0]));
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::chart(&config, &outcomes))
            .map_err(|e| format!("cannot write the chart to {}: {e}", path.display()))?;
        text.push_str(&format!("\nchart: {}\n", path.display()));
    }
    out(&text)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn out(text: &str) -> Result<(), String> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write to stdout: {e}")),
        _ => Ok(()),
    }
}

fn load(config: Option<&Path>) -> Result<SimConfig, String> {
    let default = PathBuf::from("config/cadbroker.toml");
    match config {
        Some(path) => SimConfig::load(path),
        None if default.exists() => SimConfig::load(&default),
        None => SimConfig::parse("(built-in default)", crate::config::DEFAULT_CONFIG),
    }
}

/// The CSV of a generated working day.
pub fn generate_trace(args: &GenerateTraceArgs) -> Result<String, String> {
    let zone = Zone::parse(&args.time_zone).map_err(|e| format!("--time-zone: {e}"))?;
    crate::domain::names::check_dns_label(&args.pool).map_err(|e| format!("--pool: {e}"))?;
    let spec = WorkdaySpec {
        drafters: args.drafters,
        seed: args.seed,
        date: args.date,
        zone: zone.clone(),
        pool: PoolName(args.pool.clone()),
    };
    let comment = format!(
        "A working day of {} drafters on {} ({}), pool {}, seed {}.\nMade by: cadbroker simulate generate-trace --drafters {} --seed {} --date {} --time-zone {} --pool {}\nThe model is described in src/sim/generate.rs and docs/autoscaling.md.",
        args.drafters,
        args.date,
        zone.name(),
        args.pool,
        args.seed,
        args.drafters,
        args.seed,
        args.date,
        zone.name(),
        args.pool
    );
    Ok(workday(&spec).to_csv(&comment, &zone))
}
