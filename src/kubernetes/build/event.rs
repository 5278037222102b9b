//! The Event objects cadbroker writes, pure: a decision of the autoscaler or the culler as a
//! Kubernetes Event on its CapacityPool (events.k8s.io/v1, type Normal) and back. The note is
//! the decision's one-line reason for `kubectl describe capacitypool`, a label names the pool
//! and an annotation holds the whole decision, so that `GET /api/v1/pools/{name}/decisions` on
//! any replica, and on a restarted broker, reads back exactly what the leader decided. They
//! live as long as the API server keeps Events (`--event-ttl`, one hour by default).

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};

use crate::domain::{DECISIONS_KEPT, Decision, DecisionKind, PoolName};
use crate::kubernetes::labels;

/// Longest note the Events API accepts is 1 kB; keep well inside it.
const MAX_NOTE: usize = 900;

/// The Event reason of a decision kind: fixed words for `kubectl get events --field-selector`.
pub fn reason_of(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::ScaleUp | DecisionKind::ScaleDown => "WarmTargetChanged",
        DecisionKind::Hold => "WarmTargetHeld",
        DecisionKind::Warn => "SessionWarned",
        DecisionKind::End => "SessionCulled",
    }
}

fn action_of(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::ScaleUp | DecisionKind::ScaleDown | DecisionKind::Hold => "Scale",
        DecisionKind::Warn | DecisionKind::End => "Cull",
    }
}

/// The Event that records `decision`, the `seq`-th of its pass: on the pool (`regarding`),
/// naming the session it concerns (`related`), reported by `instance` of the cadbroker
/// controller. `note` is the decision's reason, cut to what the Events API accepts.
pub fn build_decision_event(
    decision: &Decision,
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    seq: usize,
    instance: &str,
) -> Event {
    let at = decision.at;
    // Unique per decision and ordered by time within a pool (fixed-width hex).
    let name = format!("{}.{:016x}{seq:04x}", decision.pool, at.as_nanosecond().max(0));
    let json = serde_json::to_string(decision).unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            labels: Some([(labels::DECISION_POOL.to_owned(), decision.pool.to_string())].into()),
            annotations: Some([(labels::DECISION.to_owned(), json)].into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(at)),
        type_: Some("Normal".into()),
        reason: Some(reason_of(decision.kind).into()),
        action: Some(action_of(decision.kind).into()),
        note: Some(truncate(decision.reason.clone())),
        regarding: Some(regarding),
        related,
        reporting_controller: Some("cadbroker".into()),
        reporting_instance: Some(instance.to_owned()),
        ..Default::default()
    }
}

/// The decision an Event records, if it is one of ours.
pub fn decision_of(event: &Event) -> Option<Decision> {
    let json = event.metadata.annotations.as_ref()?.get(labels::DECISION)?;
    serde_json::from_str(json).ok()
}

/// `pool`'s decisions among `events`, newest first, at most [`DECISIONS_KEPT`].
pub fn newest_first(events: &[Event], pool: &PoolName) -> Vec<Decision> {
    let mut found: Vec<(Timestamp, &str, Decision)> = events
        .iter()
        .filter_map(|e| Some((e.metadata.name.as_deref().unwrap_or_default(), decision_of(e)?)))
        .filter(|(_, d)| d.pool == *pool)
        .map(|(name, d)| (d.at, name, d))
        .collect();
    found.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    found.into_iter().take(DECISIONS_KEPT).map(|(_, _, d)| d).collect()
}

/// `note` cut to what the Events API accepts, on a character boundary.
pub fn truncate(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DecisionInputs, SessionId};

    fn decision(kind: DecisionKind, second: i64, reason: &str) -> Decision {
        Decision {
            pool: PoolName("cad".into()),
            at: Timestamp::from_second(1_800_000_000 + second).unwrap(),
            kind,
            reason: reason.into(),
            session: (kind == DecisionKind::End).then(|| SessionId("s1".into())),
            inputs: DecisionInputs { warm_from: Some(1), warm_to: Some(5), ..Default::default() },
        }
    }

    fn pool_ref() -> ObjectReference {
        ObjectReference {
            api_version: Some("cadbroker.io/v1alpha1".into()),
            kind: Some("CapacityPool".into()),
            name: Some("cad".into()),
            namespace: Some("ns".into()),
            uid: Some("pool-uid".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_decision_is_a_normal_event_on_its_pool_and_reads_back_whole() {
        let d = decision(DecisionKind::ScaleUp, 0, "warm 1 -> 5: schedule window weekday-peak opens");
        let event = build_decision_event(&d, pool_ref(), None, 3, "broker-1");
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.reason.as_deref(), Some("WarmTargetChanged"));
        assert_eq!(event.note.as_deref(), Some(d.reason.as_str()));
        assert_eq!(event.regarding.as_ref().unwrap().kind.as_deref(), Some("CapacityPool"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(event.metadata.labels.as_ref().unwrap()[labels::DECISION_POOL], "cad");
        assert_eq!(decision_of(&event), Some(d));
    }

    #[test]
    fn decisions_read_back_newest_first_for_their_pool_only() {
        let mut events: Vec<Event> =
            [(DecisionKind::ScaleUp, 10), (DecisionKind::End, 30), (DecisionKind::Hold, 20)]
                .iter()
                .enumerate()
                .map(|(i, (k, s))| build_decision_event(&decision(*k, *s, "r"), pool_ref(), None, i, "b"))
                .collect();
        let mut other = decision(DecisionKind::ScaleUp, 40, "other pool");
        other.pool = PoolName("gis".into());
        events.push(build_decision_event(&other, pool_ref(), None, 0, "b"));
        events.push(Event::default());
        let kinds: Vec<DecisionKind> =
            newest_first(&events, &PoolName("cad".into())).iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [DecisionKind::End, DecisionKind::Hold, DecisionKind::ScaleUp]);
    }

    #[test]
    fn event_names_sort_by_time_and_stay_unique_within_a_pass() {
        let a = build_decision_event(&decision(DecisionKind::Warn, 5, "r"), pool_ref(), None, 0, "b");
        let b = build_decision_event(&decision(DecisionKind::End, 5, "r"), pool_ref(), None, 1, "b");
        let c = build_decision_event(&decision(DecisionKind::Warn, 6, "r"), pool_ref(), None, 0, "b");
        let names: Vec<String> = [a, b, c].into_iter().map(|e| e.metadata.name.unwrap()).collect();
        assert!(names[0] < names[1] && names[1] < names[2], "{names:?}");
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(1000);
        let cut = truncate(note);
        assert!(cut.len() <= MAX_NOTE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
