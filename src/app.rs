//! Wiring: builds the backend, engine, authenticator, metrics and both listeners from a
//! validated config, and runs them until shutdown. Tests and benchmarks start it on port 0.

use std::{net::SocketAddr, sync::Arc};

use thiserror::Error;
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

use crate::{
    auth::{AuthInitError, Authenticator},
    backend::{
        Backend,
        desktop::{DesktopBackend, INSTALL_HINT},
        simulated::SimulatedBackend,
    },
    clock::SystemClock,
    config::{BackendConfig, BackendKind, Config},
    domain::{Handover, Policy},
    gateway::{Gateway, GatewayInitError},
    http::{self, admin::AdminState, state::AppState},
    metrics::Metrics,
    portal::{Portal, PortalInitError},
    service::{ConnectLinks, SessionService, controller, engine::Engine},
    shutdown::{self, Trigger},
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
    Kubernetes(#[from] crate::kubernetes::KubeStartError),
    /// The web portal could not be set up.
    #[error(transparent)]
    Portal(#[from] PortalInitError),
    /// `backend.kind = "desktop"`, but programs it needs are not installed.
    #[error("backend.kind is \"desktop\" but {missing} not installed; install with: {hint}",
        missing = .0.join(", "), hint = INSTALL_HINT)]
    DesktopMissing(Vec<String>),
    /// The desktop backend could not prepare its noVNC folder.
    #[error("failed to prepare the desktop backend: {0}")]
    Desktop(std::io::Error),
}

/// A running broker.
pub struct Running {
    /// Bound public address.
    pub public_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The embedded engine (for tests and the simulator).
    pub engine: Option<Arc<Engine>>,
    /// The backend that runs workstations (`simulated`, `desktop` or `kubernetes`).
    pub backend: &'static str,
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
    let Config { server, broker, backend, auth: auth_config, gateway, portal, pools } = config;
    let auth = Arc::new(Authenticator::new(&auth_config).await?);
    let (trigger, shutdown) = shutdown::channel();
    // The in-memory backends' state has one writer, so their allocator hands warm
    // workstations over; in cluster mode only a request's named create may (docs/cluster-mode.md).
    let policy = |handover| Policy::new(handover, broker.max_sessions_per_user, broker.session_retention);
    let clock = Arc::new(SystemClock);
    let mut tasks = JoinSet::new();
    let kind = resolve_backend(&backend)?;
    let (engine, sessions, metrics, links): (_, Arc<dyn SessionService>, _, SetLinks) = match kind {
        BackendKind::Simulated | BackendKind::Desktop | BackendKind::Auto => {
            let (observations, observed) = mpsc::unbounded_channel();
            let backend = embedded_backend(kind, &backend, observations)?;
            let engine = Engine::new(pools, backend, clock.clone(), policy(Handover::Allocator));
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
            let runtime = crate::kubernetes::Runtime {
                policy: policy(Handover::NamedRequestOnly),
                clock: clock.clone(),
                tasks: &mut tasks,
                shutdown: shutdown.clone(),
            };
            let (service, kube_metrics) = crate::kubernetes::start(k8s, &broker, runtime).await?;
            let mut metrics = Metrics::new(service.clone());
            kube_metrics.register(&mut metrics.registry);
            let metrics = Arc::new(metrics);
            let s = service.clone();
            (None, service as Arc<dyn SessionService>, metrics, Box::new(move |l| s.set_connect_links(l)))
        }
    };
    let limits =
        http::Limits { max_body_bytes: server.max_body_bytes, request_timeout: server.request_timeout };
    let public = bind(server.listen).await?;
    let admin = bind(server.admin_listen).await?;
    let (public_addr, admin_addr) = (local_addr(&public)?, local_addr(&admin)?);
    // The gateway's routes join after the API's layers (no request timeout on desktop streams).
    let gateway = Gateway::new(&gateway, public_addr, sessions.clone(), clock)?;
    links(gateway.links());
    let portal = Arc::new(Portal::new(&portal, &auth_config, gateway.public_url())?);
    let state = AppState {
        sessions: sessions.clone(),
        auth,
        metrics: metrics.http.clone(),
        shutdown: shutdown.clone(),
        portal,
    };
    tasks.spawn(gateway.clone().run(shutdown.clone()));
    tasks.spawn(http::server::serve(
        public,
        http::router(state, limits).merge(gateway.router()),
        shutdown.clone(),
    ));
    tasks.spawn(http::server::serve(admin, http::admin::router(AdminState { sessions, metrics }), shutdown));
    let backend = backend_name(kind);
    tracing::info!(%public_addr, %admin_addr, backend, "cadbroker listening; portal at http://{public_addr}/portal/");
    Ok(Running { public_addr, admin_addr, engine, backend, gateway, trigger, tasks })
}

/// The backend to run: `auto` becomes `desktop` when its programs are installed, else
/// `simulated` (said loudly, with the install command); `desktop` without them is an error.
fn resolve_backend(config: &BackendConfig) -> Result<BackendKind, StartError> {
    let wants_desktop = matches!(config.kind, BackendKind::Auto | BackendKind::Desktop);
    let missing = if wants_desktop { config.desktop.missing() } else { Vec::new() };
    let kind = config.kind.resolve(&missing);
    match (config.kind, kind) {
        (BackendKind::Desktop, _) if !missing.is_empty() => return Err(StartError::DesktopMissing(missing)),
        (BackendKind::Auto, BackendKind::Simulated) => tracing::warn!(
            missing = %missing.join(", "),
            "backend: the local desktop programs are not installed, so workstations are SIMULATED \
             (a placeholder page, no real desktop). For real desktops: {INSTALL_HINT}"
        ),
        (_, BackendKind::Desktop) => tracing::info!(
            slots = config.desktop.slots,
            application = %config.desktop.application.join(" "),
            "backend: local desktops (Xvfb, x11vnc, noVNC)"
        ),
        _ => {}
    }
    Ok(kind)
}

/// The in-process backend of `kind` (`desktop` or `simulated`).
fn embedded_backend(
    kind: BackendKind,
    config: &BackendConfig,
    observations: crate::backend::ObservationSender,
) -> Result<Arc<dyn Backend>, StartError> {
    if kind == BackendKind::Desktop {
        let desktop =
            DesktopBackend::new(config.desktop.clone(), observations).map_err(StartError::Desktop)?;
        return Ok(Arc::new(desktop));
    }
    let sim = &config.simulated;
    Ok(Arc::new(SimulatedBackend::new(&sim.nodes, sim.start_delay, observations)))
}

fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Desktop => "desktop",
        BackendKind::Kubernetes => "kubernetes",
        BackendKind::Simulated | BackendKind::Auto => "simulated",
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
}
