//! What every handler can reach: the session service, the authenticator, metrics and the
//! shutdown signal. No generic parameters (axum's dependency-injection guidance).

use std::sync::Arc;

use crate::{
    auth::Authenticator, metrics::HttpMetrics, portal::Portal, service::SessionService, shutdown::Shutdown,
};

/// Shared state of the public router.
#[derive(Clone)]
pub struct AppState {
    /// The broker.
    pub sessions: Arc<dyn SessionService>,
    /// Token validation.
    pub auth: Arc<Authenticator>,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// Ends open event streams on shutdown.
    pub shutdown: Shutdown,
    /// The web portal's sign-ins (its cookie is accepted in place of a bearer token).
    pub portal: Arc<Portal>,
}
