//! The small interface the embedded engine's controller drives to run workstations, and its
//! implementations: the simulated cluster (the fallback of the embedded default) and local
//! desktops (`desktop`). Backends report what happens through [`Observation`]s on a channel;
//! they never decide. Cluster mode does not run workstations through this trait: there the
//! cluster is the state, and the kinds of workstation object sit behind
//! `crate::kubernetes::workload`.

pub mod desktop;
pub mod simulated;
mod workstation_page;

use tokio::sync::mpsc;

use crate::domain::{Observation, PoolSpec, SessionId, WorkstationId};

/// What a backend needs to start one workstation.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Name of the workstation.
    pub workstation: WorkstationId,
    /// Its pool's spec at the time of the request.
    pub pool: PoolSpec,
    /// The session waiting for it, if any (none for the warm buffer).
    pub session: Option<SessionId>,
}

/// Where observations go.
pub type ObservationSender = mpsc::UnboundedSender<Observation>;

/// Runs workstations. Calls return at once; results arrive later as observations.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`simulated`, `kubernetes`, `local-desktop`).
    fn name(&self) -> &'static str;
    /// Starts a workstation; reports `Pending`, then `Ready` or `Failed`.
    fn start(&self, request: StartRequest);
    /// Stops a workstation (idempotent); reports `Gone`.
    fn stop(&self, workstation: &WorkstationId);
    /// Stops everything this backend started, for shutdown.
    fn shutdown(&self);
}
