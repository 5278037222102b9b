//! Logging: a tracing subscriber filtered by `--log` / `CADBROKER_LOG` (EnvFilter syntax),
//! human-readable or JSON.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
