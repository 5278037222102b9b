//! Open gateway connections per session, each holding its session's cancellation token and
//! activity handle, and the watcher that cancels a session's connections when it ends.
//!
//! The watcher subscribes to the service's session events only while connections are open (an
//! idle gateway costs the engine nothing), re-checks every registered session right after
//! subscribing and after a lag, and cancels on any non-live phase (Ending, Ended, Failed) or a
//! session that is gone. Connections register *before* they are authorised, so an end that
//! happens between the check and the registration is still seen.
//!
//! WebSocket relays also count as the session's desktop connections: when the last one closes
//! while the session is live and the broker is not stopping, the session's activity reports
//! the disconnect (reconnect grace); the first one to open after that records activity at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, ActivityHub};
use crate::{domain::SessionId, service::SessionService};

/// Connections by session.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    /// Whether any connection is open; wakes the watcher.
    busy: watch::Sender<bool>,
    activity: Arc<ActivityHub>,
    /// Fired when the broker stops: connections closing then are not the user leaving.
    closing: CancellationToken,
}

#[derive(Debug)]
struct Entry {
    cancel: CancellationToken,
    activity: Arc<Activity>,
    connections: usize,
    /// Of `connections`, the WebSocket relays (desktop connections).
    desktops: usize,
}

/// One open connection (or proxied request) of a session; deregisters on drop.
#[derive(Debug)]
pub struct ConnectionGuard {
    registry: Arc<Registry>,
    /// The session.
    pub session: SessionId,
    /// Cancelled when the session ends.
    pub cancel: CancellationToken,
    /// The session's activity.
    pub activity: Arc<Activity>,
    /// Whether this is a desktop connection (see [`ConnectionGuard::open_desktop`]).
    desktop: bool,
}

impl Registry {
    /// An empty registry whose sessions touch `activity`; `closing` fires when the broker stops.
    pub fn new(activity: Arc<ActivityHub>, closing: CancellationToken) -> Arc<Self> {
        Arc::new(Self { sessions: Mutex::default(), busy: watch::Sender::new(false), activity, closing })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection of `session`.
    pub fn register(self: &Arc<Self>, session: &SessionId) -> ConnectionGuard {
        let mut sessions = self.lock();
        let entry = sessions.entry(session.clone()).or_insert_with(|| Entry {
            cancel: CancellationToken::new(),
            activity: self.activity.session(session),
            connections: 0,
            desktops: 0,
        });
        entry.connections += 1;
        let guard = ConnectionGuard {
            registry: self.clone(),
            session: session.clone(),
            cancel: entry.cancel.clone(),
            activity: entry.activity.clone(),
            desktop: false,
        };
        self.busy.send_if_modified(|busy| !std::mem::replace(busy, true));
        guard
    }

    /// Closes every connection of `session`.
    pub fn end(&self, session: &SessionId) {
        if let Some(entry) = self.lock().get(session) {
            entry.cancel.cancel();
        }
    }

    /// Sessions with open connections.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.lock().keys().cloned().collect()
    }

    /// Open desktop connections (WebSocket relays) of `session`.
    pub fn desktops(&self, session: &SessionId) -> usize {
        self.lock().get(session).map_or(0, |e| e.desktops)
    }

    /// Open connections, all sessions together.
    pub fn connections(&self) -> usize {
        self.lock().values().map(|e| e.connections).sum()
    }

    /// Resolves once no connection is open.
    pub async fn idle(&self) {
        let _ = self.busy.subscribe().wait_for(|busy| !*busy).await;
    }

    /// Cancels the connections of sessions that end, until `stop`.
    pub async fn watch_ends(self: Arc<Self>, service: Arc<dyn SessionService>, stop: CancellationToken) {
        let mut busy = self.busy.subscribe();
        loop {
            tokio::select! {
                open = async { busy.wait_for(|busy| *busy).await.is_ok() } => if !open { return },
                () = stop.cancelled() => return,
            }
            let mut events = service.subscribe();
            self.recheck(service.as_ref()).await;
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) if !event.session.phase.is_live() => {
                            self.end(&SessionId(event.session.id.clone()));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => self.recheck(service.as_ref()).await,
                        Err(RecvError::Closed) => return,
                    },
                    idle = async { busy.wait_for(|busy| !*busy).await.is_ok() } => {
                        if !idle { return }
                        break;
                    }
                    () = stop.cancelled() => return,
                }
            }
        }
    }

    /// Cancels registered sessions that are gone or no longer live.
    async fn recheck(&self, service: &dyn SessionService) {
        for session in self.sessions() {
            let live = service.connect_target(&session).await.is_ok_and(|t| t.phase.is_live());
            if !live {
                self.end(&session);
            }
        }
    }
}

impl ConnectionGuard {
    /// Marks this connection as a desktop connection (a WebSocket relay that has started).
    pub fn open_desktop(&mut self) {
        if self.desktop {
            return;
        }
        let mut sessions = self.registry.lock();
        if let Some(entry) = sessions.get_mut(&self.session) {
            entry.desktops += 1;
            self.desktop = true;
            if entry.desktops == 1 {
                entry.activity.desktop_opened();
            }
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        if let Some(entry) = sessions.get_mut(&self.session) {
            if self.desktop {
                entry.desktops -= 1;
                // The user left (not the session ending, not the broker stopping).
                if entry.desktops == 0
                    && !entry.cancel.is_cancelled()
                    && !self.registry.closing.is_cancelled()
                {
                    entry.activity.desktop_gone();
                }
            }
            entry.connections -= 1;
            if entry.connections == 0 {
                sessions.remove(&self.session);
            }
        }
        if sessions.is_empty() {
            self.registry.busy.send_if_modified(|busy| std::mem::replace(busy, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn connections_of_one_session_share_its_token_and_leave_no_trace() {
        let (hub, _queue) = ActivityHub::new(Duration::from_secs(30));
        let registry = Registry::new(hub, CancellationToken::new());
        let (a, b) = (SessionId::from("a"), SessionId::from("b"));
        let a1 = registry.register(&a);
        let a2 = registry.register(&a);
        let b1 = registry.register(&b);
        assert_eq!(registry.connections(), 3);
        registry.end(&a);
        assert!(a1.cancel.is_cancelled() && a2.cancel.is_cancelled());
        assert!(!b1.cancel.is_cancelled());
        drop((a1, a2, b1));
        assert_eq!(registry.connections(), 0);
        assert!(registry.sessions().is_empty());
        assert!(!*registry.busy.borrow());
        assert!(!registry.register(&a).cancel.is_cancelled(), "a new entry starts uncancelled");
    }

    #[test]
    fn the_last_desktop_connection_closing_reports_a_disconnect_unless_the_session_ended() {
        use super::super::activity::Report;
        let (hub, mut queue) = ActivityHub::new(Duration::from_secs(30));
        let registry = Registry::new(hub, CancellationToken::new());
        let s = SessionId::from("s");
        let http = registry.register(&s);
        let (mut one, mut two) = (registry.register(&s), registry.register(&s));
        one.open_desktop();
        two.open_desktop();
        assert_eq!(registry.desktops(&s), 2);
        while queue.0.try_recv().is_ok() {}
        drop((http, one));
        assert!(queue.0.try_recv().is_err(), "a desktop connection is still open");
        drop(two);
        assert_eq!(queue.0.try_recv().unwrap(), Report::Away(s.clone()));
        assert_eq!(registry.desktops(&s), 0);
        // A session that ends closes its connections: not a disconnect.
        let mut three = registry.register(&s);
        three.open_desktop();
        while queue.0.try_recv().is_ok() {}
        registry.end(&s);
        drop(three);
        assert!(queue.0.try_recv().is_err());
    }
}
