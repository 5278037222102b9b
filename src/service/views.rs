//! What the API shows of sessions and pools. Built from the domain state under the engine's
//! lock; plain serialisable values afterwards.

use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::ConnectLinks;
use crate::domain::{
    Caller, Capacity, EndReason, PoolCounts, PoolSpec, Session, SessionLimits, SessionPhase, State, Warning,
};

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Session name.
    pub id: String,
    /// Owner (stable user key).
    pub user: String,
    /// Pool.
    pub pool: String,
    /// Current phase.
    pub phase: SessionPhase,
    /// 1-based position in the pool's queue while Queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// While Queued or Starting: the estimated seconds until Ready, from the pool's recent
    /// start times and session lengths (docs/autoscaling.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    /// When it was requested.
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: Timestamp,
    /// When it became Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: Option<Timestamp>,
    /// Last recorded activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_activity: Option<Timestamp>,
    /// A pending warning of a forced end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<Warning>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// Why it ended (also set while Ending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// The gateway link to the desktop, `<publicUrl>/connect/<id>/…?ticket=…`: shown to the
    /// owner once Ready, with a fresh single-use ticket (about 60 s) on every answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Workstation name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workstation: Option<String>,
    /// Node the workstation runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Detail, for example why a start is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SessionView {
    /// The view of `session` in `state`, without a connect URL (as published to event streams).
    pub fn of(state: &State, session: &Session) -> Self {
        let ws = session.workstation.as_ref().and_then(|w| state.workstation(w));
        // Workstations are never exposed: the only way in is the gateway's ticketed link, which
        // `for_viewer` adds for the session's owner.
        let connect_url = None;
        Self {
            id: session.id.to_string(),
            user: session.user.to_string(),
            pool: session.pool.to_string(),
            phase: session.phase,
            queue_position: state.queue_position(session),
            estimated_wait_seconds: None,
            requested_at: session.requested_at,
            ready_at: session.ready_at,
            last_activity: session.last_activity,
            warning: session.warning,
            ended_at: session.ended_at,
            end_reason: session.end_reason,
            connect_url,
            workstation: session.workstation.as_ref().map(ToString::to_string),
            node: ws.and_then(|w| w.node.clone()),
            message: session.message.clone(),
        }
    }
}

impl SessionView {
    /// Adds the estimated wait of a Queued or Starting session at `now`.
    pub fn with_estimated_wait(mut self, state: &State, session: &Session, now: Timestamp) -> Self {
        self.estimated_wait_seconds =
            crate::domain::wait::estimated_wait(state, session, now).map(|d| d.as_secs());
        self
    }

    /// The view of `session` as `viewer` sees it: with a connect URL (a fresh ticket bound to the
    /// session and its owner) when the session is Ready and `viewer` owns it. Admins looking at
    /// someone else's session get no link into that desktop.
    pub fn for_viewer(
        state: &State,
        session: &Session,
        viewer: &Caller,
        links: Option<&dyn ConnectLinks>,
    ) -> Self {
        let mut view = Self::of(state, session);
        let ws = session.workstation.as_ref().and_then(|w| state.workstation(w));
        let reachable = session.phase == SessionPhase::Ready && ws.is_some_and(|w| w.endpoint.is_some());
        if let Some(links) = links.filter(|_| reachable && viewer.user == session.user) {
            let path = state.pool(&session.pool).map(|p| p.connect.path.as_str()).unwrap_or("/");
            view.connect_url = Some(links.connect_url(&session.id, &session.user, path));
        }
        view
    }
}

/// How much of a pool is free right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    /// Ready and waiting: a request now is served at once.
    pub warm: u32,
    /// Starting, for the buffer or for waiting sessions.
    pub starting: u32,
    /// Held by sessions.
    pub in_use: u32,
    /// Requests waiting in the queue.
    pub queued: u32,
    /// Workstations that can still be started before the pool is full.
    pub free: u32,
}

impl Availability {
    fn of(spec: &PoolSpec, c: &PoolCounts) -> Self {
        Self {
            warm: c.warm,
            starting: c.starting_unclaimed + c.starting_reserved,
            in_use: c.in_use,
            queued: c.queued,
            free: spec.capacity.max.saturating_sub(c.total()),
        }
    }
}

/// A pool as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Name shown to drafters.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// GPUs per workstation.
    pub gpus_per_workstation: u32,
    /// GPU model, if pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Size limits.
    pub capacity: Capacity,
    /// Session limits.
    pub limits: SessionLimits,
    /// What is free now.
    pub availability: Availability,
    /// The full spec, for admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PoolSpec>,
}

impl PoolView {
    /// The view of `spec` in `state`; `admin` adds the full spec.
    pub fn of(state: &State, spec: &PoolSpec, admin: bool) -> Self {
        let counts = state.counts(&spec.name);
        Self {
            name: spec.name.to_string(),
            display_name: spec.display_name.clone(),
            description: spec.description.clone(),
            gpus_per_workstation: spec.gpus_per_workstation,
            gpu_model: spec.gpu_model.clone(),
            capacity: spec.capacity,
            limits: spec.limits,
            availability: Availability::of(spec, &counts),
            spec: admin.then(|| spec.clone()),
        }
    }
}
