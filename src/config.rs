//! The broker's configuration: `config/cadbroker.toml` (or the copy built into the binary),
//! overridden by flags and environment, validated at start with messages that name the field.

use std::{collections::HashSet, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    auth::AuthConfig,
    backend::{desktop::DesktopConfig, simulated::NodeGroup},
    domain::PoolSpec,
    gateway::GatewayConfig,
    portal::PortalConfig,
};

/// The default config, built into the binary so that `cadbroker serve` works from anywhere.
pub const DEFAULT_CONFIG: &str = include_str!("../config/cadbroker.toml");

/// Everything the broker reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Listeners and HTTP limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Broker-wide session rules.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// Where workstations run.
    pub backend: BackendConfig,
    /// Token issuers and the admin rule.
    pub auth: AuthConfig,
    /// The connection gateway (`/connect/{session}/…`): public URL, origins, tickets, cookies.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The web portal (`/portal/`): OpenID Connect sign-in for browsers.
    #[serde(default)]
    pub portal: PortalConfig,
    /// Capacity pools (non-Kubernetes backends; in cluster mode pools are CapacityPool objects).
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
}

/// Listeners and HTTP limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// Public listener: API, gateway and portal.
    pub listen: SocketAddr,
    /// Admin listener: /livez, /readyz, /metrics. Keep it off the public network.
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests taking longer are answered 503 (not applied to event streams).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Broker-wide session rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerConfig {
    /// Live sessions one user may hold across all pools.
    pub max_sessions_per_user: u32,
    /// How long ended sessions stay readable as the usage record.
    #[serde(with = "humantime_serde")]
    pub session_retention: Duration,
    /// How often the controller re-evaluates limits and buffers even when nothing happened.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_sessions_per_user: 2,
            session_retention: Duration::from_secs(24 * 3600),
            reconcile_interval: Duration::from_secs(1),
        }
    }
}

/// Which backend runs workstations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendConfig {
    /// `auto` (desktop when its programs are installed, else simulated), `desktop`,
    /// `simulated` or `kubernetes`.
    pub kind: BackendKind,
    /// Settings of the simulated backend.
    #[serde(default)]
    pub simulated: SimulatedConfig,
    /// Settings of the local desktop backend.
    #[serde(default)]
    pub desktop: DesktopConfig,
    /// Settings of the Kubernetes backend.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// Settings of the Kubernetes backend (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesConfig {
    /// Namespace of the CapacityPools, WorkstationSessions, workstation pods and the Lease.
    pub namespace: String,
    /// Kubeconfig file; unset: in-cluster credentials or the KUBECONFIG environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Name of the Lease the replicas compete for; its holder allocates.
    pub lease_name: String,
    /// How long the lease lasts without renewal (renewed every third of it).
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How long a create waits for the allocator's decision before answering 202.
    #[serde(with = "humantime_serde")]
    pub create_wait: Duration,
    /// Activity (keepalive, desktop traffic) is written to a session at most this often.
    #[serde(with = "humantime_serde")]
    pub activity_interval: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: "cadbroker".into(),
            kubeconfig: None,
            lease_name: "cadbroker-allocator".into(),
            lease_duration: Duration::from_secs(15),
            create_wait: Duration::from_secs(5),
            activity_interval: Duration::from_secs(30),
        }
    }
}

/// The available backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum BackendKind {
    /// In-process simulated GPU cluster (the embedded default).
    Simulated,
    /// Kubernetes: pools and sessions are custom resources, workstations are pods.
    Kubernetes,
    /// Real desktops as local processes (Xvfb, window manager, LibreCAD, x11vnc, noVNC).
    Desktop,
    /// `desktop` when its programs are installed on this host, otherwise `simulated`.
    Auto,
}

impl BackendKind {
    /// The kind to run: `auto` resolved by looking for the desktop programs (`missing` lists
    /// what is absent, empty when all is there).
    pub fn resolve(self, missing: &[String]) -> Self {
        match self {
            Self::Auto if missing.is_empty() => Self::Desktop,
            Self::Auto => Self::Simulated,
            other => other,
        }
    }
}

/// Settings of the simulated backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulatedConfig {
    /// How long a workstation takes from start to ready.
    #[serde(with = "humantime_serde")]
    pub start_delay: Duration,
    /// The simulated GPU nodes.
    pub nodes: Vec<NodeGroup>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        let nodes = vec![NodeGroup { name: "gpu-node".into(), count: 4, gpus: 4, gpu_model: None }];
        Self { start_delay: Duration::from_secs(3), nodes }
    }
}

/// Why the config could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The TOML did not parse or named unknown fields.
    #[error("config {origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    /// Parsed, but values are wrong; one line per problem.
    #[error("config {origin} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid { origin: String, problems: Vec<String> },
}

impl Config {
    /// Reads and validates the file at `path`, or the built-in default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
                (p.display().to_string(), text)
            }
            None => ("(built-in default)".to_owned(), DEFAULT_CONFIG.to_owned()),
        };
        Self::parse(&origin, &text)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        config.validate().map_err(|problems| ConfigError::Invalid { origin: origin.to_owned(), problems })?;
        Ok(config)
    }

    /// Every problem with the values, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.server.listen == self.server.admin_listen && self.server.listen.port() != 0 {
            problems.push("server.adminListen: must differ from server.listen".to_owned());
        }
        if self.server.max_body_bytes < 1024 {
            problems.push("server.maxBodyBytes: must be at least 1024".to_owned());
        }
        if self.broker.max_sessions_per_user == 0 {
            problems.push("broker.maxSessionsPerUser: must be at least 1".to_owned());
        }
        if self.broker.reconcile_interval.is_zero() {
            problems.push("broker.reconcileInterval: must be more than 0".to_owned());
        }
        self.validate_simulated(&mut problems);
        if let Err(auth) = self.auth.validate() {
            problems.extend(auth);
        }
        problems.extend(self.gateway.validate());
        problems.extend(self.portal.validate(&self.auth));
        let mut seen = HashSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            if !seen.insert(pool.name.clone()) {
                problems.push(format!("pools[{i}].name: '{}' is defined twice", pool.name));
            }
            for e in pool.validate() {
                problems.push(format!("pools[{i}].{} ({}): {}", e.field, pool.name, e.message));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn validate_simulated(&self, problems: &mut Vec<String>) {
        if self.backend.kind == BackendKind::Kubernetes {
            let k = &self.backend.kubernetes;
            if crate::domain::names::check_dns_label(&k.namespace).is_err() {
                problems
                    .push(format!("backend.kubernetes.namespace: '{}' is not a namespace name", k.namespace));
            }
            if k.lease_duration < Duration::from_secs(3) {
                problems.push("backend.kubernetes.leaseDuration: must be at least 3s".to_owned());
            }
            if !self.pools.is_empty() {
                problems.push(
                    "pools: in kubernetes mode pools are CapacityPool objects; remove [[pools]]".to_owned(),
                );
            }
            return;
        }
        if matches!(self.backend.kind, BackendKind::Desktop | BackendKind::Auto) {
            self.validate_desktop(problems);
        }
        if self.backend.kind == BackendKind::Desktop {
            return;
        }
        let sim = &self.backend.simulated;
        if sim.nodes.is_empty() {
            problems.push("backend.simulated.nodes: at least one node group is needed".to_owned());
        }
        for (i, g) in sim.nodes.iter().enumerate() {
            if g.count == 0 {
                problems.push(format!("backend.simulated.nodes[{i}].count: must be at least 1"));
            }
        }
        for (i, pool) in self.pools.iter().enumerate() {
            let fits = sim.nodes.iter().any(|g| {
                g.gpus >= pool.gpus_per_workstation
                    && (pool.gpu_model.is_none() || g.gpu_model == pool.gpu_model)
            });
            if !fits {
                problems.push(format!(
                    "pools[{i}].gpusPerWorkstation ({}): no simulated node group has {} GPUs{}",
                    pool.name,
                    pool.gpus_per_workstation,
                    pool.gpu_model.as_deref().map(|m| format!(" of model {m}")).unwrap_or_default()
                ));
            }
        }
    }
}

impl Config {
    fn validate_desktop(&self, problems: &mut Vec<String>) {
        let desktop = &self.backend.desktop;
        problems.extend(desktop.validate());
        for (i, pool) in self.pools.iter().enumerate() {
            if pool.gpus_per_workstation > desktop.slots {
                problems.push(format!(
                    "pools[{i}].gpusPerWorkstation ({}): needs {} GPU slots, backend.desktop.slots is {}",
                    pool.name, pool.gpus_per_workstation, desktop.slots
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_default_is_valid_and_has_a_2d_and_a_3d_pool() {
        let config = Config::load(None).unwrap();
        let gpus: Vec<_> = config.pools.iter().map(|p| (p.name.as_str(), p.gpus_per_workstation)).collect();
        assert_eq!(gpus, [("drafting-2d", 1), ("visualisation-3d", 2)]);
    }

    #[test]
    fn problems_name_their_field() {
        let text = DEFAULT_CONFIG.replace(
            "capacity = { min = 0, max = 8, warm = 2 }",
            "capacity = { min = 9, max = 8, warm = 12 }",
        );
        let err = Config::parse("test", &text).unwrap_err().to_string();
        assert!(
            err.contains("pools[0].capacity.min (drafting-2d): 9 is more than capacity.max (8)"),
            "{err}"
        );
        assert!(err.contains("pools[0].capacity.warm (drafting-2d)"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let text = DEFAULT_CONFIG.replace("[broker]", "[broker]\nmaxSession = 3");
        let err = Config::parse("test", &text).unwrap_err().to_string();
        assert!(err.contains("unknown field `maxSession`"), "{err}");
    }

    #[test]
    fn a_pool_that_fits_no_simulated_node_is_refused() {
        let text = DEFAULT_CONFIG.replace("gpusPerWorkstation = 2", "gpusPerWorkstation = 4");
        let err = Config::parse("test", &text).unwrap_err().to_string();
        assert!(
            err.contains(
                "pools[1].gpusPerWorkstation (visualisation-3d): no simulated node group has 4 GPUs"
            ),
            "{err}"
        );
    }

    #[test]
    fn auto_means_desktop_only_when_nothing_is_missing() {
        assert_eq!(BackendKind::Auto.resolve(&[]), BackendKind::Desktop);
        assert_eq!(BackendKind::Auto.resolve(&["Xvfb".into()]), BackendKind::Simulated);
        assert_eq!(BackendKind::Simulated.resolve(&[]), BackendKind::Simulated);
    }

    #[test]
    fn a_pool_larger_than_the_desktop_host_is_refused() {
        let text = DEFAULT_CONFIG.replace("slots = 4", "slots = 1");
        let err = Config::parse("test", &text).unwrap_err().to_string();
        assert!(err.contains("pools[1].gpusPerWorkstation (visualisation-3d): needs 2 GPU slots"), "{err}");
    }

    #[test]
    fn duplicate_pools_and_equal_listeners_are_refused() {
        let mut config = Config::load(None).unwrap();
        config.pools.push(config.pools[0].clone());
        config.server.admin_listen = config.server.listen;
        let problems = config.validate().unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with("server.adminListen")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("pools[2].name: 'drafting-2d' is defined twice")),
            "{problems:?}"
        );
    }
}
