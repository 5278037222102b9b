//! The Kubernetes backend (cluster mode): pools are CapacityPool objects, sessions are
//! WorkstationSession objects, workstations are pods. Nothing is stored anywhere else: every
//! allocator pass rebuilds the domain state from the watch caches (`restore`), lets the domain
//! decide, and writes the difference (`plan`). Every replica serves the API; only the holder
//! of the Lease allocates.

pub mod allocate;
pub mod claims;
pub mod controller;
pub mod decisions;
pub mod disconnect;
pub mod events;
pub mod execute;
pub mod labels;
pub mod lease;
pub mod metrics;
pub mod overlay;
pub mod placeholder;
pub mod plan;
pub mod pod;
pub mod restore;
pub mod run;
pub mod scale_memory;
pub mod service;
pub mod store;
