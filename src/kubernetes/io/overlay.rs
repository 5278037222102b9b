//! The allocator's own writes, laid over the watch caches until the caches catch up. A pass
//! that runs before the watch event of the previous pass's write arrives would otherwise see
//! the old object and write the same change again (a duplicate status, a claim that conflicts
//! with itself, a second delete). An entry is dropped as soon as the cache holds the written
//! resourceVersion or a later one: resourceVersions are compared as the etcd revisions they
//! are, and an entry whose versions cannot be compared gives way to the cache.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

use crate::{
    crd::{CapacityPool, WorkstationSession},
    kubernetes::snapshot::Snapshot,
};

/// An entry older than this gives way to the cache whatever its version (a watch that fell
/// far behind must not let an old write hide newer changes for long).
const MAX_AGE: Duration = Duration::from_secs(10);

/// What a successful write left in the cluster.
#[derive(Debug, Clone)]
pub enum Written {
    /// A pod as created or patched (or as being deleted).
    Pod(Box<Pod>),
    /// A pod that is gone.
    PodGone(String),
    /// A session as its status was written.
    Session(Box<WorkstationSession>),
    /// A pool as its status was written.
    Pool(Box<CapacityPool>),
}

#[derive(Debug)]
struct Entry<K> {
    object: Option<Arc<K>>,
    at: Instant,
}

/// Recent writes by object name.
#[derive(Debug, Default)]
pub struct Overlay {
    pods: HashMap<String, Entry<Pod>>,
    sessions: HashMap<String, Entry<WorkstationSession>>,
    pools: HashMap<String, Entry<CapacityPool>>,
}

fn version<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

fn name<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

/// Whether `written` is still ahead of what the cache holds (`None`: not cached).
fn ahead<K: Resource>(written: &Entry<K>, cached: Option<&K>, now: Instant) -> bool {
    if now.duration_since(written.at) > MAX_AGE {
        return false;
    }
    match (&written.object, cached) {
        // Written gone; still cached: the delete event is on its way.
        (None, Some(_)) => true,
        (None, None) => false,
        (Some(_), None) => true,
        (Some(w), Some(c)) => matches!((version(w.as_ref()), version(c)), (Some(w), Some(c)) if w > c),
    }
}

fn lay<K: Resource>(entries: &mut HashMap<String, Entry<K>>, cached: &mut Vec<Arc<K>>, now: Instant) {
    entries.retain(|name_, entry| {
        let position = cached.iter().position(|c| name(c.as_ref()) == *name_);
        if !ahead(entry, position.map(|i| cached[i].as_ref()), now) {
            return false;
        }
        match (&entry.object, position) {
            (Some(object), Some(i)) => cached[i] = object.clone(),
            (Some(object), None) => cached.push(object.clone()),
            (None, Some(i)) => {
                cached.swap_remove(i);
            }
            (None, None) => {}
        }
        true
    });
}

impl Overlay {
    /// Records what the writes of a pass left behind.
    pub fn record(&mut self, written: Vec<Written>, now: Instant) {
        for w in written {
            match w {
                Written::Pod(pod) => {
                    self.pods.insert(name(pod.as_ref()), Entry { object: Some(Arc::new(*pod)), at: now });
                }
                Written::PodGone(pod) => {
                    self.pods.insert(pod, Entry { object: None, at: now });
                }
                Written::Session(s) => {
                    self.sessions.insert(name(s.as_ref()), Entry { object: Some(Arc::new(*s)), at: now });
                }
                Written::Pool(p) => {
                    self.pools.insert(name(p.as_ref()), Entry { object: Some(Arc::new(*p)), at: now });
                }
            }
        }
    }

    /// `snapshot` with the writes the caches have not caught up with; forgets the rest.
    pub fn apply(&mut self, mut snapshot: Snapshot, now: Instant) -> Snapshot {
        lay(&mut self.pods, &mut snapshot.pods, now);
        lay(&mut self.sessions, &mut snapshot.sessions, now);
        lay(&mut self.pools, &mut snapshot.pools, now);
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn snapshot(pods: Vec<Pod>) -> Snapshot {
        Snapshot { pods: pods.into_iter().map(Arc::new).collect(), ..Snapshot::default() }
    }

    #[test]
    fn a_write_shows_until_the_cache_has_its_version() {
        let now = Instant::now();
        let mut overlay = Overlay::default();
        overlay.record(vec![Written::Pod(Box::new(pod("a", "12")))], now);
        let seen = overlay.apply(snapshot(vec![pod("a", "10")]), now);
        assert_eq!(seen.pods[0].metadata.resource_version.as_deref(), Some("12"));
        let seen = overlay.apply(snapshot(vec![pod("a", "12")]), now);
        assert_eq!(seen.pods[0].metadata.resource_version.as_deref(), Some("12"));
        assert!(overlay.pods.is_empty(), "caught up: forgotten");
    }

    #[test]
    fn a_newer_cached_object_wins() {
        let now = Instant::now();
        let mut overlay = Overlay::default();
        overlay.record(vec![Written::Pod(Box::new(pod("a", "12")))], now);
        let seen = overlay.apply(snapshot(vec![pod("a", "15")]), now);
        assert_eq!(seen.pods[0].metadata.resource_version.as_deref(), Some("15"));
    }

    #[test]
    fn a_deleted_pod_is_hidden_until_its_delete_event_arrives() {
        let now = Instant::now();
        let mut overlay = Overlay::default();
        overlay.record(vec![Written::PodGone("a".into())], now);
        assert!(overlay.apply(snapshot(vec![pod("a", "10"), pod("b", "3")]), now).pods.len() == 1);
        assert_eq!(overlay.apply(snapshot(vec![pod("b", "3")]), now).pods.len(), 1);
        assert!(overlay.pods.is_empty());
    }

    #[test]
    fn old_entries_give_way_to_the_cache() {
        let then = Instant::now();
        let mut overlay = Overlay::default();
        overlay.record(vec![Written::Pod(Box::new(pod("a", "12")))], then);
        let seen = overlay.apply(snapshot(vec![pod("a", "10")]), then + MAX_AGE + Duration::from_secs(1));
        assert_eq!(seen.pods[0].metadata.resource_version.as_deref(), Some("10"));
    }
}
