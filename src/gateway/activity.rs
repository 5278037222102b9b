//! Desktop traffic as the idle-culling signal, coalesced: every read on a proxied connection
//! calls [`Activity::touch`], which costs a clock read and an atomic load, and at most once per
//! `gateway.activityInterval` per session sends the session to a single task that records it
//! through the service. No write per frame, no lock on the data path.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{domain::SessionId, service::SessionService};

/// Sessions waiting to be recorded; when full, a touch is dropped and the next interval's
/// touch records it instead.
const QUEUE: usize = 1024;
const NEVER: u64 = u64::MAX;

/// What every session's [`Activity`] shares: the interval and the queue to the recorder. It
/// keeps each session's handle beyond its connections (short HTTP requests come and go), and
/// forgets handles whose session has no connection and was last recorded an interval ago (the
/// next touch would be recorded anyway).
#[derive(Debug)]
pub struct ActivityHub {
    epoch: Instant,
    interval_ms: u64,
    queue: mpsc::Sender<SessionId>,
    sessions: Mutex<HashMap<SessionId, Arc<Activity>>>,
}

/// Where coalesced touches arrive; [`record`] drains it.
#[derive(Debug)]
pub struct ActivityQueue(mpsc::Receiver<SessionId>);

impl ActivityHub {
    /// A hub coalescing to one touch per session per `interval`, and its queue.
    pub fn new(interval: Duration) -> (Arc<Self>, ActivityQueue) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let hub = Self { epoch: Instant::now(), interval_ms, queue, sessions: Mutex::default() };
        (Arc::new(hub), ActivityQueue(rx))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The activity handle of one session (shared by all its connections and requests).
    pub fn session(self: &Arc<Self>, session: &SessionId) -> Arc<Activity> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(activity) = sessions.get(session) {
            return activity.clone();
        }
        if sessions.len() >= PRUNE_ABOVE {
            let now = self.now_ms();
            sessions.retain(|_, a| {
                let last = a.last_ms.load(Ordering::Relaxed);
                Arc::strong_count(a) > 1 || (last != NEVER && now.saturating_sub(last) < self.interval_ms)
            });
        }
        let activity = Arc::new(Activity {
            session: session.clone(),
            last_ms: AtomicU64::new(NEVER),
            queue: self.queue.clone(),
            epoch: self.epoch,
            interval_ms: self.interval_ms,
        });
        sessions.insert(session.clone(), activity.clone());
        activity
    }
}

/// Handles kept before forgotten ones are pruned.
const PRUNE_ABOVE: usize = 256;

/// One session's activity; touched by traffic on any of its connections.
#[derive(Debug)]
pub struct Activity {
    session: SessionId,
    /// Milliseconds since the hub's epoch of the last recorded touch, or `NEVER`.
    last_ms: AtomicU64,
    queue: mpsc::Sender<SessionId>,
    epoch: Instant,
    interval_ms: u64,
}

impl Activity {
    /// Notes traffic now; records it unless the session was recorded within the interval.
    pub fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < self.interval_ms {
            return;
        }
        // Of several connections touching at once, one wins and sends.
        if self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let _ = self.queue.try_send(self.session.clone());
        }
    }
}

/// Records queued touches through the service until `stop`.
pub async fn record(service: Arc<dyn SessionService>, mut queue: ActivityQueue, stop: CancellationToken) {
    loop {
        let session = tokio::select! {
            next = queue.0.recv() => match next {
                Some(session) => session,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        if let Err(e) = service.record_activity(&session).await {
            // An ended session's last frames: nothing to keep alive.
            tracing::debug!(%session, error = %e, "gateway activity not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn touches_are_coalesced_per_session_and_interval() {
        let (hub, mut queue) = ActivityHub::new(Duration::from_millis(200));
        let a = hub.session(&SessionId::from("a"));
        let b = hub.session(&SessionId::from("b"));
        for _ in 0..10_000 {
            a.touch();
            b.touch();
        }
        let first: Vec<_> = [queue.0.try_recv().unwrap(), queue.0.try_recv().unwrap()].into();
        assert_eq!(first, [SessionId::from("a"), SessionId::from("b")]);
        assert!(queue.0.try_recv().is_err(), "one touch per session per interval");
        tokio::time::sleep(Duration::from_millis(250)).await;
        a.touch();
        assert_eq!(queue.0.try_recv().unwrap(), SessionId::from("a"));
        // A new handle for the same session (a later request) shares the coalescing.
        hub.session(&SessionId::from("a")).touch();
        assert!(queue.0.try_recv().is_err());
    }
}
