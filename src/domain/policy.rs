//! The broker-wide rules the domain decides by, set once where a broker starts: the request
//! rules and the reconcile rules, which share one handover mode (how a workstation started for
//! the warm buffer reaches a session), so the two can never disagree.

use std::time::Duration;

use super::{Handover, ReconcilePolicy, RequestPolicy};

/// The rules of one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Rules for requests.
    pub request: RequestPolicy,
    /// Rules for reconcile.
    pub reconcile: ReconcilePolicy,
}

impl Policy {
    /// Rules with one `handover` for requests and reconcile.
    pub const fn new(handover: Handover, max_sessions_per_user: u32, retention: Duration) -> Self {
        Self {
            request: RequestPolicy { max_sessions_per_user, handover },
            reconcile: ReconcilePolicy { retention, handover },
        }
    }

    /// How warm workstations reach sessions under these rules.
    pub const fn handover(&self) -> Handover {
        self.request.handover
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_reconcile_share_the_handover() {
        let p = Policy::new(Handover::NamedRequestOnly, 3, Duration::from_secs(60));
        assert_eq!(p.request.handover, p.reconcile.handover);
        assert_eq!(p.handover(), Handover::NamedRequestOnly);
        assert_eq!(p.request.max_sessions_per_user, 3);
    }
}
