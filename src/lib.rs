//! cadbroker hands out GPU-backed cloud workstations: drafters ask for one from a capacity
//! pool and get a desktop in the browser; admins define the pools.
//!
//! ```text
//!  http (API) ──► service::SessionService ──► service::engine ──► backend (simulated, …)
//!                                                 │     ▲               │ observations
//!                                                 ▼     └───────────────┘
//!                                              domain (pure: decide, reconcile, apply)
//! ```

pub mod app;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crd;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod portal;
pub mod service;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
