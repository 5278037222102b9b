//! The one place the shell reads the time; the domain receives it as a value.

use jiff::Timestamp;

/// A source of the current time (a fixed or stepped one in tests and the simulator).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
