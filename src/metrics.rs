//! Prometheus metrics: each subsystem's metrics register themselves; broker state (sessions by
//! phase and pool, queue lengths, workstations) is read at scrape time from its source.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::service::engine::EngineStats;

/// Labels of an HTTP request measurement. `route` is the matched route template, never the raw
/// path, so that cardinality stays bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/v1/sessions/{id}`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// HTTP request metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Request duration in seconds.
    pub duration: Family<RequestLabels, Histogram>,
}

impl HttpMetrics {
    /// Registers the metrics under `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms to about 8 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "HTTP request duration", duration.clone());
        Self { duration }
    }
}

/// Reads broker state for a scrape.
pub trait StatsSource: Send + Sync + fmt::Debug + 'static {
    /// The counts now.
    fn stats(&self) -> EngineStats;
}

#[derive(Debug)]
struct StateCollector(Arc<dyn StatsSource>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    pool: String,
    phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkstationLabels {
    pool: String,
    state: String,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.stats();
        let sessions = Family::<PhaseLabels, Gauge>::default();
        for (pool, phase, n) in &stats.sessions {
            let labels = PhaseLabels { pool: pool.clone(), phase: phase.as_str().to_owned() };
            sessions.get_or_create(&labels).set(*n as i64);
        }
        let queues = Family::<PoolLabels, Gauge>::default();
        for (pool, n) in &stats.queues {
            queues.get_or_create(&PoolLabels { pool: pool.clone() }).set(*n as i64);
        }
        let workstations = Family::<WorkstationLabels, Gauge>::default();
        for (pool, state, n) in &stats.workstations {
            let labels = WorkstationLabels { pool: pool.clone(), state: (*state).to_owned() };
            workstations.get_or_create(&labels).set(*n as i64);
        }
        encode(
            &mut encoder,
            "sessions",
            "Sessions by pool and phase (ended ones while retained)",
            &sessions,
        )?;
        encode(&mut encoder, "queue_length", "Sessions waiting in each pool's queue", &queues)?;
        encode(&mut encoder, "workstations", "Workstations by pool and state", &workstations)
    }
}

fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// The registry with everything registered.
#[derive(Debug)]
pub struct Metrics {
    /// The registry the admin listener encodes.
    pub registry: Registry,
    /// HTTP metrics, shared with the middleware.
    pub http: Arc<HttpMetrics>,
}

impl Metrics {
    /// All metrics, with broker state read from `source` at scrape time.
    pub fn new(source: Arc<dyn StatsSource>) -> Self {
        let mut registry = Registry::with_prefix("cadbroker");
        let http = Arc::new(HttpMetrics::register(&mut registry));
        registry.register_collector(Box::new(StateCollector(source)));
        Self { registry, http }
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
