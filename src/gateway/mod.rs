//! The connection gateway: `/connect/{session}/…` on the public listener carries a session's
//! desktop (HTTP and WebSocket) to its workstation, which is never exposed (DESIGN.md point 6).
//!
//! ```text
//!  GET /connect/{id}/?ticket=T ──► access: ticket valid, unused, for {id} and its owner, Ready
//!                                  └─► 303 to /connect/{id}/ + Set-Cookie (HttpOnly, Secure,
//!                                      SameSite=Strict, Path=/connect/{id}/)
//!  any /connect/{id}/… + cookie ──► access (the same code path; WebSocket also checks Origin)
//!                                  ├─► HTTP: proxy (streamed both ways)
//!                                  └─► WebSocket: 101 from the desktop, then a byte relay
//!  traffic ──► activity (coalesced) ──► SessionService::record_activity
//!  last desktop WebSocket of a live session closes ──► SessionService::record_disconnect
//!  session ends ──► registry cancels its connections (close 1000); shutdown: close 1012
//! ```
//!
//! Modules: `config` (the `[gateway]` section), `ticket` (signed grants, used-ticket set,
//! connect URLs), `cookie`, `access` (the one authorisation path), `proxy` (HTTP),
//! `websocket` (upgrade and relay), `registry` (connections per session, end watcher),
//! `activity` (coalesced touches). The gateway depends on the `SessionService` trait only.

pub mod access;
pub mod activity;
pub mod config;
pub mod cookie;
pub mod proxy;
pub mod registry;
mod relay;
pub mod ticket;
pub mod websocket;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, http::HeaderValue, response::IntoResponse, routing::any};
use thiserror::Error;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::catch_panic::CatchPanicLayer;

pub use self::config::GatewayConfig;
use self::{
    activity::{ActivityHub, ActivityQueue},
    registry::Registry,
    ticket::{GatewayKey, KeyError, Signer, TicketLinks, UsedTickets, VerifiedCookies},
};
use crate::{
    clock::Clock,
    http::error::ApiError,
    service::{ConnectLinks, SessionService},
    shutdown::Shutdown,
};

/// How long in-flight HTTP answers may still stream after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Why the gateway could not start.
#[derive(Debug, Error)]
pub enum GatewayInitError {
    /// The signing key could not be had.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `gateway.publicUrl` is not usable.
    #[error("gateway.publicUrl: {0}")]
    PublicUrl(String),
}

/// The gateway: its keys, its connections and its client to workstations.
pub struct Gateway {
    pub(crate) service: Arc<dyn SessionService>,
    pub(crate) signer: Arc<Signer>,
    pub(crate) used: UsedTickets,
    pub(crate) cookies: VerifiedCookies,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) allowed_origins: HashSet<String>,
    pub(crate) public_url: String,
    pub(crate) public_scheme: HeaderValue,
    pub(crate) ticket_ttl: Duration,
    pub(crate) cookie_ttl: Duration,
    pub(crate) registry: Arc<Registry>,
    pub(crate) client: proxy::HttpClient,
    /// Fired when shutdown begins: WebSockets close (1012).
    pub(crate) closing: CancellationToken,
    /// Fired when the drain grace is over: HTTP answers still streaming are cut.
    pub(crate) cut: CancellationToken,
    /// Running WebSocket relays.
    pub(crate) tunnels: TaskTracker,
    /// The threads that relay WebSocket bytes.
    pub(crate) relays: relay::Relays,
    activity: Mutex<Option<ActivityQueue>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway as `config` describes it, for a public listener bound at `public_addr`. Reads
    /// the key (`CADBROKER_GATEWAY_KEY`, `gateway.keyFile`, or a random one).
    pub fn new(
        config: &GatewayConfig,
        public_addr: SocketAddr,
        service: Arc<dyn SessionService>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, GatewayInitError> {
        let GatewayConfig {
            public_url,
            allowed_origins,
            ticket_ttl,
            cookie_ttl,
            activity_interval,
            key_file,
        } = config;
        let (key, key_origin) = GatewayKey::load(key_file.as_deref())?;
        let public_url = match public_url {
            Some(url) => config::parse_public_url(url).map_err(GatewayInitError::PublicUrl)?,
            None => derived_public_url(public_addr),
        };
        let mut origins = HashSet::from([public_url.clone()]);
        for origin in allowed_origins {
            origins.insert(config::normalise_origin(origin).map_err(GatewayInitError::PublicUrl)?);
        }
        let public_scheme =
            HeaderValue::from_static(if public_url.starts_with("https:") { "https" } else { "http" });
        let (hub, queue) = ActivityHub::new(*activity_interval);
        let closing = CancellationToken::new();
        tracing::info!(%public_url, key = %key_origin, "gateway ready on /connect/");
        Ok(Arc::new(Self {
            service,
            signer: Arc::new(Signer::new(key)),
            used: UsedTickets::default(),
            cookies: VerifiedCookies::default(),
            clock,
            allowed_origins: origins,
            public_url,
            public_scheme,
            ticket_ttl: *ticket_ttl,
            cookie_ttl: *cookie_ttl,
            registry: Registry::new(hub, closing.clone()),
            client: proxy::client(),
            closing,
            cut: CancellationToken::new(),
            tunnels: TaskTracker::new(),
            relays: relay::Relays::default(),
            activity: Mutex::new(Some(queue)),
        }))
    }

    /// The broker's public URL (no trailing slash).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Open gateway connections (WebSockets and HTTP requests in flight).
    pub fn connections(&self) -> usize {
        self.registry.connections()
    }

    /// What builds connect URLs with tickets of this gateway (for the session service).
    pub fn links(&self) -> Arc<dyn ConnectLinks> {
        Arc::new(TicketLinks {
            signer: self.signer.clone(),
            public_url: self.public_url.clone(),
            ttl: self.ticket_ttl,
            clock: self.clock.clone(),
        })
    }

    /// The `/connect/…` routes. Merge them into the public router after its layers: the
    /// request timeout must not apply to desktop streams, and the API's request log (which
    /// records URIs) must not see the query that carries a ticket (SECURITY.md A28). The
    /// gateway logs its own events, by session, never with a ticket or cookie. Serve it with
    /// [`crate::http::server::serve`]: WebSockets are relayed from the TCP streams that loop
    /// hands over (another server's upgrades are closed after the 101, with an error logged).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/connect/{id}", any(proxy::handle))
            .route("/connect/{id}/", any(proxy::handle))
            .route("/connect/{id}/{*rest}", any(proxy::handle))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::internal("gateway handler panicked").into_response()
            }))
            .with_state(self.clone())
    }

    /// Runs the end watcher and the activity recorder; on shutdown closes WebSockets at once,
    /// lets HTTP answers finish for up to [`DRAIN_GRACE`], then returns.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(self.registry.clone().watch_ends(self.service.clone(), stop.clone()));
        let queue = self.activity.lock().unwrap_or_else(|p| p.into_inner()).take();
        let recorder = queue.map(|q| {
            tokio::spawn(activity::record(self.service.clone(), q, self.registry.clone(), stop.clone()))
        });
        shutdown.wait().await;
        self.closing.cancel();
        self.tunnels.close();
        if tokio::time::timeout(DRAIN_GRACE, self.registry.idle()).await.is_err() {
            tracing::warn!(open = self.connections(), "gateway: drain grace over, cutting what is left");
        }
        self.cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tunnels.wait()).await;
        stop.cancel();
        let _ = watcher.await;
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
    }
}

/// `http://<bound address>`, with loopback for an unspecified address.
fn derived_public_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    if addr.ip().is_unspecified() {
        tracing::warn!(
            "gateway.publicUrl is not set and the public listener has no specific address; connect URLs use {host}: set gateway.publicUrl"
        );
    }
    format!("http://{host}:{}", addr.port())
}
