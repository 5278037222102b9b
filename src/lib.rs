//! cadbroker: hands out GPU-backed cloud workstations.

pub mod auth;
pub mod backend;
pub mod domain;
