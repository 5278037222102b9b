//! The simulation's configuration: pools (exactly as in the broker's `[[pools]]`), the broker's
//! session rules, and `[simulate]` settings (virtual backend delays, GPU price, clock). A broker
//! config file works as is: its `server`, `backend` and `auth` tables are accepted and, apart
//! from `backend.simulated.startDelay`, ignored.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    config::BrokerConfig,
    domain::{PoolName, PoolSpec, Zone},
};

/// A simulation config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SimFile {
    #[serde(default)]
    simulate: Option<SimulateSettings>,
    #[serde(default)]
    broker: Option<BrokerConfig>,
    #[serde(default)]
    pools: Vec<PoolSpec>,
    /// Accepted so that a broker config can be simulated; not used.
    #[serde(default)]
    #[allow(dead_code)]
    server: Option<serde::de::IgnoredAny>,
    /// Accepted; `backend.simulated.startDelay` is the default start delay.
    #[serde(default)]
    backend: Option<toml::Value>,
    /// Accepted so that a broker config can be simulated; not used.
    #[serde(default)]
    #[allow(dead_code)]
    auth: Option<serde::de::IgnoredAny>,
}

/// `[simulate]`: how the virtual cluster and the report behave.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulateSettings {
    /// Time from asking for a workstation to its desktop answering (default: the broker
    /// config's `backend.simulated.startDelay`, else 90 s).
    #[serde(default, with = "humantime_serde")]
    pub start_delay: Option<Duration>,
    /// Per-pool start delays, overriding `startDelay`.
    #[serde(default)]
    pub start_delays: BTreeMap<String, HumanDuration>,
    /// Time from asking a workstation to stop to it being gone.
    #[serde(default = "default_stop_delay", with = "humantime_serde")]
    pub stop_delay: Duration,
    /// Reconcile interval in virtual time (default: `broker.reconcileInterval`).
    #[serde(default, with = "humantime_serde")]
    pub tick: Option<Duration>,
    /// How often an active drafter's desktop counts as activity (keepalive or traffic).
    #[serde(default = "default_activity", with = "humantime_serde")]
    pub activity_interval: Duration,
    /// Price of one GPU for one hour, in any currency.
    #[serde(default)]
    pub gpu_price_per_hour: f64,
    /// Currency symbol or code printed with costs.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Time zone of the report's clock and chart, and of trace times written without an offset.
    #[serde(default = "default_zone")]
    pub time_zone: Zone,
    /// `--compare`: warm of the fixed-buffer baseline (default: the largest warm of the pool's
    /// schedules and `capacity.warm`).
    #[serde(default)]
    pub fixed_warm: Option<u32>,
}

/// A duration written like "90s" in a map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

fn default_stop_delay() -> Duration {
    Duration::from_secs(10)
}

fn default_activity() -> Duration {
    Duration::from_secs(60)
}

fn default_currency() -> String {
    "€".to_owned()
}

fn default_zone() -> Zone {
    Zone::parse("UTC").expect("UTC is always in the database")
}

impl Default for SimulateSettings {
    fn default() -> Self {
        Self {
            start_delay: None,
            start_delays: BTreeMap::new(),
            stop_delay: default_stop_delay(),
            tick: None,
            activity_interval: default_activity(),
            gpu_price_per_hour: 0.0,
            currency: default_currency(),
            time_zone: default_zone(),
            fixed_warm: None,
        }
    }
}

/// A validated simulation config.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Pools to simulate.
    pub pools: Vec<PoolSpec>,
    /// Broker-wide session rules.
    pub broker: BrokerConfig,
    /// `[simulate]` settings.
    pub settings: SimulateSettings,
    /// Start delay of each pool.
    pub start_delays: BTreeMap<PoolName, Duration>,
    /// Reconcile interval in virtual time.
    pub tick: Duration,
}

impl SimConfig {
    /// Reads and validates a simulation (or broker) config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let file: SimFile = toml::from_str(text).map_err(|e| format!("config {origin} is not valid: {e}"))?;
        let SimFile { simulate, broker, pools, server: _, backend, auth: _ } = file;
        let settings = simulate.unwrap_or_default();
        let broker = broker.unwrap_or_default();
        let mut problems = Vec::new();
        if pools.is_empty() {
            problems.push("pools: at least one [[pools]] entry is needed".to_owned());
        }
        for (i, pool) in pools.iter().enumerate() {
            if pools[..i].iter().any(|p| p.name == pool.name) {
                problems.push(format!("pools[{i}].name: '{}' is defined twice", pool.name));
            }
            for e in pool.validate() {
                problems.push(format!("pools[{i}].{} ({}): {}", e.field, pool.name, e.message));
            }
        }
        let backend_delay = backend
            .as_ref()
            .and_then(|b| b.get("simulated")?.get("startDelay")?.as_str().map(str::to_owned))
            .and_then(|s| humantime::parse_duration(&s).ok());
        let default_delay = settings.start_delay.or(backend_delay).unwrap_or(Duration::from_secs(90));
        for name in settings.start_delays.keys() {
            if !pools.iter().any(|p| p.name.as_str() == name) {
                problems.push(format!("simulate.startDelays: no pool named '{name}'"));
            }
        }
        let start_delays = pools
            .iter()
            .map(|p| {
                let d = settings.start_delays.get(p.name.as_str()).map_or(default_delay, |d| d.0);
                (p.name.clone(), d)
            })
            .collect();
        let tick = settings.tick.unwrap_or(broker.reconcile_interval);
        if tick.is_zero() || tick > Duration::from_secs(300) {
            problems.push("simulate.tick: must be between 1ms and 5m".to_owned());
        }
        if settings.activity_interval.is_zero() {
            problems.push("simulate.activityInterval: must be more than 0".to_owned());
        }
        if !(settings.gpu_price_per_hour.is_finite() && settings.gpu_price_per_hour >= 0.0) {
            problems.push("simulate.gpuPricePerHour: must be a number of at least 0".to_owned());
        }
        if !problems.is_empty() {
            return Err(format!(
                "config {origin} has {} problem(s):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            ));
        }
        Ok(Self { pools, broker, settings, start_delays, tick })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_simulation_config_is_valid() {
        let text = include_str!("../../config/simulate-example.toml");
        let config = SimConfig::parse("example", text).unwrap();
        assert_eq!(config.pools.len(), 1);
        assert!(!config.pools[0].schedules.is_empty());
        assert!(config.settings.gpu_price_per_hour > 0.0);
    }

    #[test]
    fn the_broker_default_config_can_be_simulated() {
        let config = SimConfig::parse("default", crate::config::DEFAULT_CONFIG).unwrap();
        assert_eq!(config.pools.len(), 2);
        assert_eq!(config.start_delays[&PoolName::from("drafting-2d")], Duration::from_secs(3));
    }

    #[test]
    fn unknown_start_delay_pools_and_bad_pools_are_named() {
        let text = r#"
            [simulate]
            startDelays = { gis = "2m" }
            [[pools]]
            name = "cad"
            capacity = { max = 2, warm = 3 }
        "#;
        let err = SimConfig::parse("t", text).unwrap_err();
        assert!(err.contains("simulate.startDelays: no pool named 'gis'"), "{err}");
        assert!(err.contains("pools[0].capacity.warm (cad): 3 is more than capacity.max (2)"), "{err}");
    }
}
