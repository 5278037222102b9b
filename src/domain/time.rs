//! Time arithmetic on `jiff::Timestamp` with std durations, saturating instead of panicking.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `t + d`, saturating at the largest representable time.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// `t - d`, saturating at the smallest representable time.
pub fn before(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_sub(d).ok()).unwrap_or(Timestamp::MIN)
}

/// How long from `earlier` to `later`; zero when `later` is not after `earlier`.
pub fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}
