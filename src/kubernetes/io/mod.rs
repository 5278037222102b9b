//! The I/O side of cluster mode: everything that talks to the API server, in the order a
//! broker uses it. `run` starts it all: the watch caches (`store`), the lease (`lease`), the
//! allocator loop (`controller`: snapshot from the caches, laid under its own recent writes
//! (`overlay`), one pure pass, then `execute`), the Events it publishes (`events`), the
//! decisions read back (`decisions`) and the client's metrics (`metrics`).

pub mod controller;
pub mod decisions;
pub mod events;
pub mod execute;
pub mod lease;
pub mod metrics;
pub mod overlay;
pub mod run;
pub mod store;
