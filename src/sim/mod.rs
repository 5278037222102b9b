//! `cadbroker simulate`: replays a trace of requests against the production policy in virtual
//! time. The domain code runs unchanged (`decide_request`, `apply`, `observe`, `settle`); only the
//! backend and the clock are virtual. `--compare` runs two baselines on the same trace: a fixed
//! buffer and the schedules alone. See docs/autoscaling.md.
//!
//! ```text
//!  trace.csv ─► Trace ─┐                      ┌─► Outcome ─► report (text), chart (SVG)
//!  config ────► Policy ┴─► run::simulate ─────┘
//!                           (virtual backend, virtual clock, domain::settle each tick)
//! ```

pub mod command;
pub mod config;
pub mod generate;
pub mod progress;
pub mod report;
pub mod run;
pub mod svg;
pub mod trace;

pub use config::SimConfig;
pub use run::{Outcome, Policy, simulate};
pub use trace::Trace;

/// The policies to run: the config as is and, with `compare`, the two baselines.
pub fn policies(config: &SimConfig, compare: bool) -> Vec<Policy> {
    let mut out = vec![Policy {
        name: "cadbroker".to_owned(),
        description: "the config as is: schedules, raised by demand, lowered after the cooldown".to_owned(),
        pools: config.pools.clone(),
    }];
    if compare {
        let fixed = config
            .pools
            .iter()
            .map(|p| {
                let mut p = p.clone();
                let peak = p.schedules.iter().filter_map(|w| w.warm).fold(p.capacity.warm, u32::max);
                p.capacity.warm = config.settings.fixed_warm.unwrap_or(peak).min(p.capacity.max);
                p.schedules.clear();
                p.autoscale.instant_percent = 0;
                p
            })
            .collect::<Vec<_>>();
        let warms: Vec<_> = fixed.iter().map(|p| format!("{} {}", p.name, p.capacity.warm)).collect();
        out.push(Policy {
            name: "fixed buffer".to_owned(),
            description: format!("warm fixed all day ({}), no schedules, no demand", warms.join(", ")),
            pools: fixed,
        });
        let schedule_only = config
            .pools
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.autoscale.instant_percent = 0;
                p
            })
            .collect();
        out.push(Policy {
            name: "schedule only".to_owned(),
            description: "the schedules and cooldown, not raised by demand".to_owned(),
            pools: schedule_only,
        });
    }
    out
}
