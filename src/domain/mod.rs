//! The functional core: pools, sessions, workstations and every decision about them, as pure
//! functions of `(state, now) -> actions`. No I/O, no clock reads, no randomness: this module must
//! not import kube, axum, hyper or tokio. Controllers, the API and the simulator call it.
//!
//! ```text
//!  request ──► decide_request(state, caller, req, now) ──► [Action] ─┐
//!  backend ──► observe(state, Observation, now)                       ├─► apply(state, action, now)
//!  tick    ──► reconcile(state, now) ─────────────────► [Action] ─────┘        │
//!                                                                  shell runs Start/StopWorkstation
//! ```
#![warn(missing_docs)]

mod apply;
pub mod autoscale;
mod decision;
mod ids;
pub mod memory;
pub mod names;
mod observe;
mod policy;
mod pool;
mod reconcile;
mod request;
pub mod schedule;
mod session;
mod state;
pub mod time;
pub mod wait;

pub use apply::{Action, apply};
pub use autoscale::AutoscaleSpec;
pub use decision::{DECISIONS_KEPT, Decision, DecisionInputs, DecisionKind};
pub use ids::{Caller, PoolName, SessionId, UserId, WorkstationId};
pub use observe::{Observation, observe};
pub use policy::Policy;
pub use pool::{Access, Capacity, ConnectSpec, FieldError, PoolSpec, SessionLimits};
pub use reconcile::{ReconcilePolicy, reconcile, settle};
pub use request::{
    Handover, NewSession, RequestDecision, RequestError, RequestPolicy, check_request, decide_request,
    taken_by_name,
};
pub use schedule::{Day, ScheduleWindow, Zone};
pub use session::{EndReason, Endpoint, Session, SessionPhase, Warning, Workstation, WorkstationPhase};
pub use state::{PoolCounts, State};

#[cfg(test)]
pub(crate) use pool::mk_pool;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;
