//! The reconnect grace in cluster mode, pure: when a session's last desktop connection closes,
//! the API replica that carried it annotates the WorkstationSession with
//! `cadbroker.io/disconnected-at`; the leader reads it back on every pass and applies it as
//! the domain's `Disconnect` at that time. It counts while it is later than the session's
//! `cadbroker.io/last-activity` annotation: a reconnect is recorded as activity at once (the
//! service writes activity whenever a disconnect is pending, whatever its write interval), so
//! a later activity lifts it. No client required.

use jiff::Timestamp;

use crate::kubernetes::{labels, snapshot::Snapshot};
use crate::{crd::WorkstationSession, domain::SessionId};

fn annotation(cr: &WorkstationSession, key: &str) -> Option<Timestamp> {
    cr.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// When the session's desktop went away, if it has not come back since.
///
/// Both annotations carry the clock of the replica that wrote them. A replica whose clock is
/// behind could write a reconnect's activity as earlier than the disconnect; its next write
/// (activity is written on every report while a disconnect is pending) lifts it.
pub fn away_since(cr: &WorkstationSession) -> Option<Timestamp> {
    let gone = annotation(cr, labels::DISCONNECTED_AT)?;
    annotation(cr, labels::LAST_ACTIVITY).is_none_or(|active| gone > active).then_some(gone)
}

/// Sessions whose desktop is away, with the time it went.
pub fn disconnects(snapshot: &Snapshot) -> Vec<(SessionId, Timestamp)> {
    snapshot
        .sessions
        .iter()
        .filter_map(|cr| Some((SessionId(cr.metadata.name.clone()?), away_since(cr)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(annotations: &[(&str, &str)]) -> WorkstationSession {
        let annotations: serde_json::Map<String, serde_json::Value> =
            annotations.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cadbroker.io/v1alpha1", "kind": "WorkstationSession",
            "metadata": { "name": "s1", "namespace": "ns", "annotations": annotations },
            "spec": { "user": "iss#alice", "pool": "cad", "requestedAt": "2026-03-10T08:00:00Z" }
        }))
        .unwrap()
    }

    #[test]
    fn a_disconnect_counts_until_later_activity() {
        let gone = "2026-03-10T09:00:00Z";
        assert_eq!(away_since(&session(&[(labels::DISCONNECTED_AT, gone)])), Some(gone.parse().unwrap()));
        let before =
            session(&[(labels::DISCONNECTED_AT, gone), (labels::LAST_ACTIVITY, "2026-03-10T08:59:00Z")]);
        assert_eq!(away_since(&before), Some(gone.parse().unwrap()));
        let back =
            session(&[(labels::DISCONNECTED_AT, gone), (labels::LAST_ACTIVITY, "2026-03-10T09:00:05Z")]);
        assert_eq!(away_since(&back), None);
        assert_eq!(away_since(&session(&[(labels::DISCONNECTED_AT, "yesterday")])), None);
    }
}
