//! cadbroker hands out GPU-backed cloud workstations: drafters ask for one from a capacity
//! pool and get a desktop in the browser; admins define the pools.
//!
//! ```text
//!  cli ─► commands ─► app (wiring; config, telemetry, shutdown, clock)
//!  http (API, admin) ─► portal ─┐     gateway (proxy ─► websocket ─► relay) ─┐
//!        └───────────► auth     ├─────────────► service::SessionService ◄───┘
//!  metrics ─► domain            │        ┌──────────────┴──────────────┐
//!                               │  service::engine ─► backend    kubernetes (service, io,
//!                               │        │   (simulated, desktop)  pass, build, workload) ─► crd
//!                               │        └──────► domain (pure) ◄───────┘
//!  sim (simulator, planner) ─► domain
//! ```
//!
//! docs/architecture.md walks through every module and the paths of a request and of a
//! desktop connection; `make cycles` keeps the arrows pointing one way.

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
