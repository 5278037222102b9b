//! Desktop traffic as the idle-culling signal, coalesced: every read on a proxied connection
//! calls [`Activity::touch`], which costs a clock read and an atomic load, and at most once per
//! `gateway.activityInterval` per session sends the session to a single task that records it
//! through the service. No write per frame, no lock on the data path.
//!
//! The same queue carries "the desktop went away" (the session's last WebSocket closed, not
//! because the session ended or the broker stops): the recorder reports it through
//! `SessionService::record_disconnect` (the pool's reconnect grace starts) unless a desktop
//! connection is open again by then. The first desktop connection after such a report is
//! recorded at once, not coalesced, so a reconnect clears the disconnect without delay. One
//! queue, in order: a disconnect and the reconnect after it reach the service in that order.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use crate::{domain::SessionId, service::SessionService};

/// Reports waiting to be recorded; when full, a touch is dropped and the next interval's
/// touch records it instead (a dropped disconnect leaves the session to the idle timeout).
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
    queue: mpsc::Sender<Report>,
    sessions: Mutex<HashMap<SessionId, Arc<Activity>>>,
}

/// What the recorder is told about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Desktop traffic (coalesced).
    Active(SessionId),
    /// The session's last desktop connection closed.
    Away(SessionId),
}

/// Where coalesced touches and disconnects arrive; [`record`] drains it.
#[derive(Debug)]
pub struct ActivityQueue(pub(super) mpsc::Receiver<Report>);

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
            away: AtomicBool::new(false),
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
    /// Whether a disconnect was reported and no desktop connection opened since.
    away: AtomicBool,
    queue: mpsc::Sender<Report>,
    epoch: Instant,
    interval_ms: u64,
}

impl Activity {
    /// Notes traffic now; records it unless the session was recorded within the interval.
    pub fn touch(&self) {
        let now = self.now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < self.interval_ms {
            return;
        }
        // Of several connections touching at once, one wins and sends.
        if self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let _ = self.queue.try_send(Report::Active(self.session.clone()));
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A desktop connection opened: after a reported disconnect, records activity at once
    /// (the reconnect clears the disconnect), else touches as usual. Called by the registry
    /// under its lock, so it is queued after any disconnect reported before it.
    pub(crate) fn desktop_opened(&self) {
        if self.away.swap(false, Ordering::Relaxed) {
            self.last_ms.store(self.now_ms(), Ordering::Relaxed);
            let _ = self.queue.try_send(Report::Active(self.session.clone()));
        } else {
            self.touch();
        }
    }

    /// The session's last desktop connection closed (called by the registry under its lock).
    pub(crate) fn desktop_gone(&self) {
        self.away.store(true, Ordering::Relaxed);
        if self.queue.try_send(Report::Away(self.session.clone())).is_err() {
            tracing::debug!(session = %self.session, "gateway: disconnect not reported (queue full)");
        }
    }
}

/// Records queued touches and disconnects through the service until `stop`. A disconnect is
/// dropped when `registry` shows a desktop connection of the session open again.
pub async fn record(
    service: Arc<dyn SessionService>,
    mut queue: ActivityQueue,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    loop {
        let report = tokio::select! {
            next = queue.0.recv() => match next {
                Some(report) => report,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        match report {
            Report::Active(session) => {
                if let Err(e) = service.record_activity(&session).await {
                    // An ended session's last frames: nothing to keep alive.
                    tracing::debug!(%session, error = %e, "gateway activity not recorded");
                }
            }
            Report::Away(session) if registry.desktops(&session) == 0 => {
                tracing::debug!(%session, "gateway: the desktop disconnected");
                if let Err(e) = service.record_disconnect(&session).await {
                    tracing::debug!(%session, error = %e, "gateway disconnect not recorded");
                }
            }
            Report::Away(_) => {}
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
        assert_eq!(first, [Report::Active("a".into()), Report::Active("b".into())]);
        assert!(queue.0.try_recv().is_err(), "one touch per session per interval");
        tokio::time::sleep(Duration::from_millis(250)).await;
        a.touch();
        assert_eq!(queue.0.try_recv().unwrap(), Report::Active("a".into()));
        // A new handle for the same session (a later request) shares the coalescing.
        hub.session(&SessionId::from("a")).touch();
        assert!(queue.0.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_reconnect_after_a_disconnect_is_recorded_at_once() {
        let (hub, mut queue) = ActivityHub::new(Duration::from_secs(60));
        let a = hub.session(&SessionId::from("a"));
        a.desktop_opened();
        assert_eq!(queue.0.try_recv().unwrap(), Report::Active("a".into()));
        a.desktop_opened();
        assert!(queue.0.try_recv().is_err(), "a second connection is coalesced");
        a.desktop_gone();
        assert_eq!(queue.0.try_recv().unwrap(), Report::Away("a".into()));
        a.touch();
        assert!(queue.0.try_recv().is_err(), "traffic stays coalesced");
        a.desktop_opened();
        assert_eq!(queue.0.try_recv().unwrap(), Report::Active("a".into()), "not coalesced");
        a.desktop_opened();
        assert!(queue.0.try_recv().is_err());
    }
}
