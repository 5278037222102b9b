//! Read side of cluster mode: reflector caches of CapacityPools, WorkstationSessions and
//! cadbroker's pods (label-selected), a change counter that wakes the allocator and API
//! waiters, and a stream of session changes for event streams. No polling.

use std::{fmt::Debug, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{broadcast, watch},
    task::JoinSet,
};

use crate::{
    crd::{CapacityPool, WorkstationSession},
    kubernetes::{labels, snapshot::Snapshot},
    shutdown::Shutdown,
};

/// The three caches and their change signals.
#[derive(Clone)]
pub struct Stores {
    pools: Store<CapacityPool>,
    sessions: Store<WorkstationSession>,
    pods: Store<Pod>,
    changed: Arc<watch::Sender<u64>>,
    /// How many caches have their first full list (3 = ready).
    synced: Arc<watch::Sender<u8>>,
    session_changes: broadcast::Sender<Arc<WorkstationSession>>,
}

impl Stores {
    /// Starts the watches in `namespace`; the tasks run until the set is dropped or aborted.
    /// The watches end at `shutdown`.
    pub fn start(client: &Client, namespace: &str, tasks: &mut JoinSet<()>, shutdown: &Shutdown) -> Self {
        let changed = Arc::new(watch::channel(0u64).0);
        let synced = Arc::new(watch::channel(0u8).0);
        let (session_changes, _) = broadcast::channel(1024);
        let pools = reflect(
            Api::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            &changed,
            &synced,
            (tasks, shutdown),
            |_| {},
        );
        let tx = session_changes.clone();
        let sessions = reflect(
            Api::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            &changed,
            &synced,
            (tasks, shutdown),
            move |s| {
                let _ = tx.send(s);
            },
        );
        let pods_cfg = watcher::Config::default().labels(&labels::managed_pods());
        let pods = reflect(
            Api::namespaced(client.clone(), namespace),
            pods_cfg,
            &changed,
            &synced,
            (tasks, shutdown),
            |_| {},
        );
        Self { pools, sessions, pods, changed, synced, session_changes }
    }

    /// Resolves once every cache has its first full list.
    pub async fn wait_ready(&self) {
        let _ = self.synced.subscribe().wait_for(|n| *n >= 3).await;
    }

    /// Whether every cache has its first full list.
    pub fn is_ready(&self) -> bool {
        *self.synced.borrow() >= 3
    }

    /// Everything cached now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { pools: self.pools.state(), sessions: self.sessions.state(), pods: self.pods.state() }
    }

    /// A receiver whose value changes on every watch event.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Session objects as they change.
    pub fn session_changes(&self) -> broadcast::Receiver<Arc<WorkstationSession>> {
        self.session_changes.subscribe()
    }

    /// One session from the cache.
    pub fn session(&self, namespace: &str, name: &str) -> Option<Arc<WorkstationSession>> {
        self.sessions.get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// One pool from the cache.
    pub fn pool(&self, namespace: &str, name: &str) -> Option<Arc<CapacityPool>> {
        self.pools.get(&reflector::ObjectRef::new(name).within(namespace))
    }
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<watch::Sender<u64>>,
    synced: &Arc<watch::Sender<u8>>,
    (tasks, shutdown): (&mut JoinSet<()>, &Shutdown),
    on_apply: impl Fn(Arc<K>) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let synced = synced.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer);
    let mut shutdown = shutdown.clone();
    tasks.spawn(async move {
        futures::pin_mut!(stream);
        let mut first_list = true;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = shutdown.wait() => None,
            };
            let Some(event) = event else { break };
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    changed.send_modify(|n| *n += 1);
                    on_apply(Arc::new(obj));
                }
                Ok(watcher::Event::InitDone) => {
                    if std::mem::take(&mut first_list) {
                        synced.send_modify(|n| *n += 1);
                    }
                    changed.send_modify(|n| *n += 1);
                }
                Ok(_) => changed.send_modify(|n| *n += 1),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}
