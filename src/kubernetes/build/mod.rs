//! The objects cadbroker writes, built as values, pure: workstation pods from a pool's
//! template, placeholder pods, session objects and their status, and the Events that record
//! decisions. No client here; the I/O side ([`super::io`], [`super::service`]) sends them.

pub mod event;
pub mod placeholder;
pub mod pod;
pub mod session;
