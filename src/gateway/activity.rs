//! Desktop traffic as the idle-culling signal, coalesced: every read on a proxied connection
//! calls [`Activity::touch`], which costs a clock read and an atomic load, and at most once per
//! `gateway.activityInterval` per session sends the session to a single task that records it
//! through the service. No write per frame, no lock on the data path.

use std::{
    sync::{
        Arc,
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

/// What every session's [`Activity`] shares: the interval and the queue to the recorder.
#[derive(Debug)]
pub struct ActivityHub {
    epoch: Instant,
    interval_ms: u64,
    queue: mpsc::Sender<SessionId>,
}

/// Where coalesced touches arrive; [`record`] drains it.
#[derive(Debug)]
pub struct ActivityQueue(mpsc::Receiver<SessionId>);

impl ActivityHub {
    /// A hub coalescing to one touch per session per `interval`, and its queue.
    pub fn new(interval: Duration) -> (Arc<Self>, ActivityQueue) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        (Arc::new(Self { epoch: Instant::now(), interval_ms, queue }), ActivityQueue(rx))
    }

    /// The activity handle of one session (shared by all its connections).
    pub fn session(self: &Arc<Self>, session: SessionId) -> Activity {
        Activity { session, last_ms: AtomicU64::new(NEVER), hub: self.clone() }
    }
}

/// One session's activity; touched by traffic on any of its connections.
#[derive(Debug)]
pub struct Activity {
    session: SessionId,
    /// Milliseconds since the hub's epoch of the last recorded touch, or `NEVER`.
    last_ms: AtomicU64,
    hub: Arc<ActivityHub>,
}

impl Activity {
    /// Notes traffic now; records it unless the session was recorded within the interval.
    pub fn touch(&self) {
        let now = u64::try_from(self.hub.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < self.hub.interval_ms {
            return;
        }
        // Of several connections touching at once, one wins and sends.
        if self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let _ = self.hub.queue.try_send(self.session.clone());
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
        let a = hub.session(SessionId::from("a"));
        let b = hub.session(SessionId::from("b"));
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
    }
}
