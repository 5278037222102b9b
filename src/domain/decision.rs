//! Decisions: what the autoscaler and the culler decided, with the inputs and a one-line
//! reason an admin can read ("warm 2 -> 5: schedule window weekday-peak …"). Reconcile returns
//! them as [`Action::Record`](super::Action::Record) next to the actions they explain; the shell
//! keeps the recent ones per pool (and, in cluster mode, publishes them as Kubernetes Events on
//! the pool, from which any replica reads them back: hence `Deserialize`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{EndReason, PoolName, SessionId};

/// Decisions kept per pool for `GET /api/v1/pools/{name}/decisions`.
pub const DECISIONS_KEPT: usize = 200;

/// What kind of decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum DecisionKind {
    /// The warm buffer target went up.
    ScaleUp,
    /// The warm buffer target went down (after its cooldown).
    ScaleDown,
    /// The target fell below the buffer; the buffer is kept until the cooldown passes.
    Hold,
    /// A session was warned of a forced end.
    Warn,
    /// A session was ended by a limit.
    End,
}

/// One decision about a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Pool decided about.
    #[schema(value_type = String)]
    pub pool: PoolName,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// What kind.
    pub kind: DecisionKind,
    /// One line for people: "warm 2 -> 5: schedule window weekday-peak Mon-Fri 07:30-18:00 …".
    pub reason: String,
    /// The session concerned (warnings and ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub session: Option<SessionId>,
    /// The values the decision was taken on.
    pub inputs: DecisionInputs,
}

/// The values a decision was taken on. Scaling decisions fill the first group, culling
/// decisions the second; absent values are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionInputs {
    /// Warm target before the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_from: Option<u32>,
    /// Warm target after the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_to: Option<u32>,
    /// The schedule window in force (its `describe()` line), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Warm from the schedule (or `capacity.warm`), pre-warming included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_warm: Option<u32>,
    /// Minimum in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The pool's maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Warm that recent demand asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand_warm: Option<u32>,
    /// Requests counted in the demand window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<u32>,
    /// Length of the demand window, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand_window_seconds: Option<u64>,
    /// The start time the buffer must cover, seconds (observed, or the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_seconds: Option<u64>,
    /// Cooldown before a lower target applies, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_seconds: Option<u64>,
    /// Workstations held by sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<u32>,
    /// Unclaimed workstations (warm and starting for the buffer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unclaimed: Option<u32>,
    /// Sessions waiting in the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    /// The limit that forces the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<EndReason>,
    /// The session's last activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_activity: Option<Timestamp>,
    /// When the session's desktop connection dropped, if it is away.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disconnected_at: Option<Timestamp>,
    /// When the session became ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: Option<Timestamp>,
    /// When the session is (or was) to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<Timestamp>,
}
