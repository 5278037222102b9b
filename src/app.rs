//! Wiring: builds the backend, engine, authenticator, metrics and both listeners from a
//! validated config, and runs them until shutdown. Tests and benchmarks start it on port 0.

use std::{net::SocketAddr, sync::Arc};

use thiserror::Error;
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

use crate::{
    auth::{AuthInitError, Authenticator},
    backend::{Backend, simulated::SimulatedBackend},
    clock::SystemClock,
    config::{BackendKind, Config},
    domain::{ReconcilePolicy, RequestPolicy},
    gateway::{Gateway, GatewayInitError},
    http::{self, admin::AdminState, state::AppState},
    metrics::Metrics,
    service::{
        ConnectLinks, SessionService, controller,
        engine::{Engine, EnginePolicy},
    },
    shutdown::{self, Shutdown, Trigger},
};

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The authenticator could not be built.
    #[error(transparent)]
    Auth(#[from] AuthInitError),
    /// A listener could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The connection gateway could not be set up.
    #[error(transparent)]
    Gateway(#[from] GatewayInitError),
    /// Cluster mode could not start.
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::run::KubeStartError),
}

/// A running broker.
pub struct Running {
    /// Bound public address.
    pub public_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The embedded engine (for tests and the simulator).
    pub engine: Option<Arc<Engine>>,
    /// The connection gateway (for tests and benchmarks).
    pub gateway: Arc<Gateway>,
    trigger: Trigger,
    tasks: JoinSet<()>,
}

impl Running {
    /// Begins shutdown and waits until servers drained and workstations stopped.
    pub async fn stop(mut self) {
        self.trigger.fire();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits for an OS signal, then stops.
    pub async fn run_until_signal(self) {
        shutdown::os_signal().await;
        tracing::info!("shutting down");
        self.stop().await;
    }
}

/// Starts everything described by `config`.
/// Installs the gateway's link builder into the session service.
type SetLinks = Box<dyn Fn(Arc<dyn ConnectLinks>)>;

pub async fn start(config: Config) -> Result<Running, StartError> {
    let Config { server, broker, backend, auth, gateway, pools } = config;
    let auth = Arc::new(Authenticator::new(&auth).await?);
    let (trigger, shutdown) = shutdown::channel();
    let policy = EnginePolicy {
        request: RequestPolicy { max_sessions_per_user: broker.max_sessions_per_user },
        reconcile: ReconcilePolicy { retention: broker.session_retention },
    };
    let clock = Arc::new(SystemClock);
    let mut tasks = JoinSet::new();
    let (engine, sessions, metrics, links): (_, Arc<dyn SessionService>, _, SetLinks) = match backend.kind {
        BackendKind::Simulated => {
            let (observations, observed) = mpsc::unbounded_channel();
            let sim = &backend.simulated;
            let backend: Arc<dyn Backend> =
                Arc::new(SimulatedBackend::new(&sim.nodes, sim.start_delay, observations));
            let engine = Engine::new(pools, backend, clock.clone(), policy);
            let interval = broker.reconcile_interval;
            tasks.spawn(controller::run(engine.clone(), observed, interval, shutdown.clone()));
            let metrics = Arc::new(Metrics::new(engine.clone()));
            let e = engine.clone();
            (
                Some(engine.clone()),
                engine as Arc<dyn SessionService>,
                metrics,
                Box::new(move |l| e.set_connect_links(l)),
            )
        }
        BackendKind::Kubernetes => {
            let k8s = &backend.kubernetes;
            let (service, kube_metrics) =
                crate::kubernetes::run::start(k8s, &broker, policy, &mut tasks, shutdown.clone()).await?;
            let mut metrics = Metrics::new(service.clone());
            kube_metrics.register(&mut metrics.registry);
            let metrics = Arc::new(metrics);
            let s = service.clone();
            (None, service as Arc<dyn SessionService>, metrics, Box::new(move |l| s.set_connect_links(l)))
        }
    };
    let state = AppState {
        sessions: sessions.clone(),
        auth,
        metrics: metrics.http.clone(),
        shutdown: shutdown.clone(),
    };
    let limits =
        http::Limits { max_body_bytes: server.max_body_bytes, request_timeout: server.request_timeout };
    let public = bind(server.listen).await?;
    let admin = bind(server.admin_listen).await?;
    let (public_addr, admin_addr) = (local_addr(&public)?, local_addr(&admin)?);
    // The gateway's routes join after the API's layers (no request timeout on desktop streams).
    let gateway = Gateway::new(&gateway, public_addr, sessions.clone(), clock)?;
    links(gateway.links());
    tasks.spawn(gateway.clone().run(shutdown.clone()));
    tasks.spawn(serve(public, http::router(state, limits).merge(gateway.router()), shutdown.clone()));
    tasks.spawn(serve(admin, http::admin::router(AdminState { sessions, metrics }), shutdown));
    tracing::info!(%public_addr, %admin_addr, "cadbroker listening");
    Ok(Running { public_addr, admin_addr, engine, gateway, trigger, tasks })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
}

async fn serve(listener: TcpListener, router: axum::Router, mut shutdown: Shutdown) {
    // `into_make_service` hands each connection a cheap clone (an `Arc`) of the router; serving
    // the `Router` itself deep-clones its route table per accepted connection.
    let result = axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "server stopped with an error");
    }
}
