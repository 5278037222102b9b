//! The Kubernetes backend (cluster mode): pools are CapacityPool objects, sessions are
//! WorkstationSession objects, workstations are objects of the pool's workload kind (pods
//! today). Nothing is stored anywhere else: every allocator pass rebuilds the domain state from
//! the watch caches, lets the domain decide, and writes the difference. Every replica serves
//! the API; only the holder of the Lease allocates.
//!
//! Grouped by pipeline step:
//!
//! ```text
//!  io::store ─► snapshot ─► pass (pure: restore, decide, reconcile, plan) ─► [Write] ─► io::execute
//!     ▲                       │ uses build (pure object builders) and workload (the seam)    │
//!     └────────────── watch events ◄──────────── API server ◄─────────────────────────────────┘
//!  service (the API's SessionService): reads the caches through pass::restore, writes session
//!  objects built by build::session; claims a warm workstation by creating its session by name.
//! ```
//!
//! - [`snapshot`]: what the caches hold, as one value.
//! - [`workload`]: the workstation seam: the kinds of object that back a workstation.
//! - [`pass`]: the allocator's pass, pure (no kube client).
//! - [`build`]: the objects cadbroker writes, pure.
//! - [`io`]: caches, lease, allocator loop, executor, Events, startup.
//! - [`service`]: the session service every replica answers the API with.

pub mod build;
pub mod io;
pub mod labels;
pub mod pass;
pub mod service;
pub mod snapshot;
pub mod workload;

pub use io::run::{KubeStartError, Runtime, start};
