//! Starting cluster mode: a client from the configured kubeconfig (or in-cluster), a check
//! that the CRDs are installed, the watch caches, the lease and the allocator.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config,
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
};
use thiserror::Error;
use tokio::{sync::watch, task::JoinSet};

use super::{
    controller,
    events::Events,
    execute::Writer,
    lease::{self, LeaseConfig},
    metrics::KubeMetrics,
    service::{KubeSessionService, ServiceSettings},
    store::Stores,
};
use crate::{
    config::{BrokerConfig, KubernetesConfig},
    domain::{Handover, ReconcilePolicy, RequestPolicy},
    metrics::StatsSource,
    service::engine::{EnginePolicy, EngineStats},
    shutdown::Shutdown,
};

/// Why cluster mode could not start.
#[derive(Debug, Error)]
pub enum KubeStartError {
    /// No usable kubeconfig or in-cluster credentials.
    #[error("failed to configure the Kubernetes client: {0}")]
    Config(String),
    /// The API server did not answer.
    #[error("failed to reach the Kubernetes API server: {0}")]
    Unreachable(String),
    /// A CRD is missing.
    #[error(
        "the CRD {0} is not installed: install charts/cadbroker-crds (or `cadbroker crds | kubectl apply --server-side -f -`)"
    )]
    MissingCrd(String),
}

/// A Kubernetes client for `cfg` whose every write is counted in `metrics`.
pub async fn client(cfg: &KubernetesConfig, metrics: &Arc<KubeMetrics>) -> Result<Client, KubeStartError> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| KubeStartError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeStartError::Config(e.to_string()))?
        }
        None => Config::infer().await.map_err(|e| KubeStartError::Config(e.to_string()))?,
    };
    let builder = ClientBuilder::try_from(config).map_err(|e| KubeStartError::Config(e.to_string()))?;
    Ok(builder.with_layer(&metrics.layer()).build())
}

/// Fails with an install hint unless every CRD exists.
pub async fn check_crds(client: &Client) -> Result<(), KubeStartError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["capacitypools.cadbroker.io", "workstationsessions.cadbroker.io"] {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(KubeStartError::MissingCrd(name.into())),
            Err(e) => return Err(KubeStartError::Unreachable(e.to_string())),
        }
    }
    Ok(())
}

/// Starts the caches, the lease and the allocator; returns the API's service.
pub async fn start(
    cfg: &KubernetesConfig,
    broker: &BrokerConfig,
    policy: EnginePolicy,
    tasks: &mut JoinSet<()>,
    shutdown: Shutdown,
) -> Result<(Arc<KubeSessionService>, Arc<KubeMetrics>), KubeStartError> {
    // Only a request's named create hands a buffer pod over (docs/cluster-mode.md).
    let handover = Handover::NamedRequestOnly;
    let policy = EnginePolicy {
        request: RequestPolicy { handover, ..policy.request },
        reconcile: ReconcilePolicy { handover, ..policy.reconcile },
    };
    let metrics = Arc::new(KubeMetrics::default());
    let client = client(cfg, &metrics).await?;
    check_crds(&client).await?;
    let stores = Stores::start(&client, &cfg.namespace, tasks, &shutdown);
    let settings = ServiceSettings {
        create_wait: cfg.create_wait,
        max_sessions_per_user: broker.max_sessions_per_user,
        activity_interval: cfg.activity_interval,
    };
    let service = KubeSessionService::new(&client, &cfg.namespace, stores.clone(), settings, metrics.clone());
    let (leading_tx, leading) = watch::channel(false);
    // Unique per start, also for two brokers in one process: a shared identity would let both
    // believe they hold the Lease.
    let identity =
        format!("{}-{}-{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let events = Events::new(&client, &cfg.namespace, identity.clone(), stores.clone());
    let lease_cfg = LeaseConfig { name: cfg.lease_name.clone(), identity, duration: cfg.lease_duration };
    let lease = lease::run(
        client.clone(),
        cfg.namespace.clone(),
        lease_cfg,
        leading_tx,
        metrics.clone(),
        shutdown.clone(),
    );
    tasks.spawn(lease);
    let writer = Writer::new(&client, &cfg.namespace, metrics.clone(), events.clone());
    let allocator = controller::Allocator {
        stores,
        writer,
        events,
        namespace: cfg.namespace.clone(),
        policy,
        interval: broker.reconcile_interval,
    };
    tasks.spawn(controller::run(allocator, leading, shutdown));
    Ok((service, metrics))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cadbroker".into())
}

impl std::fmt::Debug for KubeSessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSessionService").finish_non_exhaustive()
    }
}

impl StatsSource for KubeSessionService {
    fn stats(&self) -> EngineStats {
        EngineStats::of(&self.state())
    }
}
