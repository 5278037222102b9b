//! Sessions and workstations as values, and their phases. Transitions live in `apply`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PoolName, SessionId, UserId, WorkstationId};

/// Where a session is in its life. `Ended` and `Failed` are terminal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    schemars::JsonSchema,
)]
pub enum SessionPhase {
    /// Waiting for capacity in a full pool.
    Queued,
    /// A workstation is being started for it.
    Starting,
    /// Its workstation is up; the connect URL works.
    Ready,
    /// Its workstation is being stopped.
    Ending,
    /// Over; kept for the retention period as the usage record.
    Ended,
    /// Its workstation failed or was lost.
    Failed,
}

impl SessionPhase {
    /// All phases, in life order (for metrics).
    pub const ALL: [SessionPhase; 6] =
        [Self::Queued, Self::Starting, Self::Ready, Self::Ending, Self::Ended, Self::Failed];

    /// Whether the session still holds or waits for a workstation.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Queued | Self::Starting | Self::Ready)
    }

    /// Whether the phase can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Ended | Self::Failed)
    }

    /// The phase's name as used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Starting => "Starting",
            Self::Ready => "Ready",
            Self::Ending => "Ending",
            Self::Ended => "Ended",
            Self::Failed => "Failed",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub enum EndReason {
    /// The user ended it.
    UserEnded,
    /// No activity for the pool's idle timeout.
    IdleTimeout,
    /// The pool's maximum lifetime was reached.
    MaxLifetime,
    /// An admin ended it.
    AdminEnded,
    /// Its workstation failed.
    PodFailed,
    /// Its workstation's node went away.
    NodeLost,
    /// Its pool was deleted.
    PoolDeleted,
    /// Refused when it was decided: the user already held as many live sessions as allowed.
    UserLimit,
    /// Refused when it was decided: the user may not use the pool.
    NotEntitled,
    /// Refused when it was decided: its Idempotency-Key was used before for another pool.
    IdempotencyConflict,
}

/// A warning that the session will be ended, recorded once per forced end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// What will end the session.
    pub reason: EndReason,
    /// When the warning was given.
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// When the session will be ended unless the warning is lifted (activity lifts an idle warning).
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub ends_at: Timestamp,
}

/// A drafter's claim on one workstation of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Name.
    pub id: SessionId,
    /// Owner.
    pub user: UserId,
    /// Pool it was requested from.
    pub pool: PoolName,
    /// Current phase.
    pub phase: SessionPhase,
    /// When it was requested.
    pub requested_at: Timestamp,
    /// The workstation it holds or waits for.
    pub workstation: Option<WorkstationId>,
    /// When it became Ready.
    pub ready_at: Option<Timestamp>,
    /// Last keepalive or desktop traffic (starts at Ready).
    pub last_activity: Option<Timestamp>,
    /// When its last desktop connection dropped, while none is open (the gateway reports it;
    /// activity clears it). After the pool's `reconnectGrace` the session counts as idle.
    pub disconnected_at: Option<Timestamp>,
    /// Pending warning of a forced end.
    pub warning: Option<Warning>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// The client's Idempotency-Key, if it sent one.
    pub idempotency_key: Option<String>,
    /// Human-readable detail (for example why a start is pending).
    pub message: Option<String>,
}

impl Session {
    /// A new session in `phase`, requested now.
    pub fn new(
        id: SessionId,
        user: UserId,
        pool: PoolName,
        now: Timestamp,
        idempotency_key: Option<String>,
    ) -> Self {
        Self {
            id,
            user,
            pool,
            phase: SessionPhase::Queued,
            requested_at: now,
            workstation: None,
            ready_at: None,
            last_activity: None,
            disconnected_at: None,
            warning: None,
            ended_at: None,
            end_reason: None,
            idempotency_key,
            message: None,
        }
    }
}

/// Where a workstation is in its life. A stopped workstation is removed from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum WorkstationPhase {
    /// Asked for; not serving yet (scheduling, pulling, booting).
    Starting,
    /// Serving its desktop.
    Ready,
    /// Being stopped.
    Stopping,
}

/// Network address of a workstation's desktop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host or IP (a pod IP in cluster mode, loopback in the simulator).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// One running (or starting) desktop of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workstation {
    /// Name.
    pub id: WorkstationId,
    /// Pool it belongs to.
    pub pool: PoolName,
    /// Current phase.
    pub phase: WorkstationPhase,
    /// The session holding it (claimed or reserved while starting); `None` = warm.
    pub session: Option<SessionId>,
    /// Node it runs on, once placed.
    pub node: Option<String>,
    /// Where its desktop listens, once Ready.
    pub endpoint: Option<Endpoint>,
    /// When it was asked for.
    pub created_at: Timestamp,
    /// When it became Ready.
    pub ready_at: Option<Timestamp>,
    /// Why it is not ready yet (for example the scheduler's reason).
    pub message: Option<String>,
}
