//! Starting cluster mode: a client from the configured kubeconfig (or in-cluster), a check
//! that the CRDs are installed, the watch caches, the lease, the allocator and the session
//! service.

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
    store::Stores,
};
use crate::{
    clock::Clock,
    config::{BrokerConfig, KubernetesConfig},
    domain::{Handover, Policy},
    kubernetes::service::{KubeSessionService, ServiceSettings},
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

/// What cluster mode runs on, besides its config.
pub struct Runtime<'a> {
    /// The domain's rules; cluster mode needs `Handover::NamedRequestOnly` (only a request's
    /// named create hands a buffer workstation over, docs/cluster-mode.md).
    pub policy: Policy,
    /// Where the service and the allocator read the time.
    pub clock: Arc<dyn Clock>,
    /// The broker's background tasks.
    pub tasks: &'a mut JoinSet<()>,
    /// Ends the caches, the lease and the allocator.
    pub shutdown: Shutdown,
}

/// Starts the caches, the lease and the allocator; returns the API's service.
pub async fn start(
    cfg: &KubernetesConfig,
    broker: &BrokerConfig,
    runtime: Runtime<'_>,
) -> Result<(Arc<KubeSessionService>, Arc<KubeMetrics>), KubeStartError> {
    let Runtime { policy, clock, tasks, shutdown } = runtime;
    if policy.handover() != Handover::NamedRequestOnly {
        return Err(KubeStartError::Config(
            "cluster mode hands warm workstations over by named request only".into(),
        ));
    }
    let metrics = Arc::new(KubeMetrics::default());
    let client = client(cfg, &metrics).await?;
    check_crds(&client).await?;
    let stores = Stores::start(&client, &cfg.namespace, tasks, &shutdown);
    let settings = ServiceSettings {
        create_wait: cfg.create_wait,
        request: policy.request,
        activity_interval: cfg.activity_interval,
    };
    let service = KubeSessionService::new(
        &client,
        &cfg.namespace,
        stores.clone(),
        settings,
        metrics.clone(),
        clock.clone(),
    );
    let (leading_tx, leading) = watch::channel(false);
    // Unique per start, also for two brokers in one process: a shared identity would let both
    // believe they hold the Lease.
    let identity =
        format!("{}-{}-{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let events = Events::new(&client, &cfg.namespace, identity.clone(), stores.clone());
    let lease_cfg = LeaseConfig {
        name: cfg.lease_name.clone(),
        identity,
        duration: cfg.lease_duration,
        clock: clock.clone(),
    };
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
        clock,
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
