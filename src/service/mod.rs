//! The application layer the HTTP API, the portal and the gateway depend on: one trait,
//! [`SessionService`], its views and errors, and the reads every implementation answers alike
//! ([`read`]). Two implementations, both deciding through the domain: the embedded engine
//! ([`engine::Engine`]: the domain state in memory, workstations run by a `backend`), and cluster
//! mode's `kubernetes::service::KubeSessionService` (the state rebuilt from watch caches,
//! workstations of any workload kind behind `kubernetes::workload`). A new kind of workstation
//! is a backend (embedded) or a workload kind (cluster), never a third service.

pub mod controller;
pub mod engine;
pub mod read;
mod views;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::broadcast;

pub use views::{Availability, PoolView, SessionView};

use crate::domain::{
    Caller, Decision, Endpoint, FieldError, PoolName, PoolSpec, RequestError, SessionId, SessionPhase, UserId,
};

/// A create request from the API.
#[derive(Debug, Clone)]
pub struct CreateSession {
    /// Pool asked for.
    pub pool: PoolName,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<String>,
}

/// The result of a create: the session, and whether this call created it.
#[derive(Debug, Clone)]
pub struct Created {
    /// The session as it is now.
    pub session: SessionView,
    /// `false` when an existing live session (or the Idempotency-Key's session) was returned.
    pub created: bool,
}

/// What the service refuses, mapped to one API error each.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The request was refused by policy.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No such session visible to the caller (other users' sessions are not revealed).
    #[error("there is no session '{0}'")]
    SessionNotFound(SessionId),
    /// No such pool.
    #[error("there is no pool named '{0}'")]
    PoolNotFound(PoolName),
    /// Admin-only operation.
    #[error("only broker admins may do this")]
    AdminOnly,
    /// The session is over; the operation needs a live one.
    #[error("session '{0}' has ended")]
    SessionEnded(SessionId),
    /// A pool spec with problems.
    #[error("the pool spec is not valid")]
    InvalidPool(Vec<FieldError>),
    /// The backend cannot serve right now.
    #[error("the broker is not ready: {0}")]
    Unavailable(String),
}

/// A change to a session, for event streams.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// The session as it is after the change.
    pub session: Arc<SessionView>,
}

/// What the gateway needs to reach a session's desktop: its owner, phase and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// The session's owner.
    pub user: UserId,
    /// Its phase now.
    pub phase: SessionPhase,
    /// Where its workstation's desktop listens (once Ready).
    pub endpoint: Option<Endpoint>,
}

/// Builds the URL a session's owner opens to reach the desktop (the gateway's link, with a
/// fresh single-use ticket bound to the session and the user).
pub trait ConnectLinks: Send + Sync + 'static {
    /// The connect URL of `session` for `user`; `entry_path` is the pool's `connect.path`.
    fn connect_url(&self, session: &SessionId, user: &UserId, entry_path: &str) -> String;
}

/// Everything the API can ask of the broker. Handlers call this and never a backend.
#[async_trait]
pub trait SessionService: Send + Sync + 'static {
    /// Requests a workstation (or returns the caller's live session in that pool).
    async fn create(&self, caller: &Caller, req: CreateSession) -> Result<Created, ServiceError>;
    /// The caller's sessions (all sessions for admins), newest first.
    async fn list(&self, caller: &Caller) -> Result<Vec<SessionView>, ServiceError>;
    /// One session the caller may see.
    async fn get(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError>;
    /// Ends a session (the owner's or, for admins, anyone's).
    async fn end(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError>;
    /// Records activity on a live session.
    async fn keepalive(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError>;
    /// The session now and a stream of its later changes.
    async fn watch(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<(SessionView, broadcast::Receiver<SessionEvent>), ServiceError>;
    /// Pools the caller may use (all for admins), with availability.
    async fn pools(&self, caller: &Caller) -> Result<Vec<PoolView>, ServiceError>;
    /// Creates or replaces a pool (admins). Returns the pool and whether it is new.
    async fn put_pool(&self, caller: &Caller, spec: PoolSpec) -> Result<(PoolView, bool), ServiceError>;
    /// Deletes a pool (admins); its sessions end with reason PoolDeleted.
    async fn delete_pool(&self, caller: &Caller, name: &PoolName) -> Result<(), ServiceError>;
    /// Whether the service can take requests (caches synced, backend up).
    fn ready(&self) -> bool;
    /// The pool's recent scaling and culling decisions, newest first (admins).
    async fn decisions(&self, caller: &Caller, pool: &PoolName) -> Result<Vec<Decision>, ServiceError> {
        let _ = pool;
        if caller.admin { Ok(Vec::new()) } else { Err(ServiceError::AdminOnly) }
    }
    /// The session's last desktop connection closed (the gateway reports it); after the pool's
    /// `reconnectGrace` without activity the session counts as idle. Activity clears it.
    async fn record_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        let _ = id;
        Ok(())
    }
    /// The gateway's view of a session, whoever asks (the gateway authorises by its own grant).
    async fn connect_target(&self, id: &SessionId) -> Result<ConnectTarget, ServiceError>;
    /// Records desktop traffic as activity on a Ready session (the gateway coalesces calls).
    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError>;
    /// Every later change to any session (the gateway closes connections of ended sessions).
    fn subscribe(&self) -> broadcast::Receiver<SessionEvent>;
}
