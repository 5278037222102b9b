//! Capacity pools: what an admin defines (the spec) and the pure checks on it. Shared by the
//! config file, the admin API and (later) the CapacityPool custom resource.

use std::{collections::BTreeSet, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AutoscaleSpec, Caller, PoolName, ScheduleWindow};

/// A capacity pool: one kind of workstation, its size limits, who may use it and its session limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    /// DNS-1123 label naming the pool (`drafting-2d`).
    #[schema(value_type = String, example = "drafting-2d")]
    pub name: PoolName,
    /// Name shown to drafters.
    #[serde(default)]
    pub display_name: String,
    /// One or two sentences for the portal.
    #[serde(default)]
    pub description: String,
    /// Whole GPUs each workstation asks for (0 for a CPU-only pool).
    #[serde(default = "default_gpus")]
    pub gpus_per_workstation: u32,
    /// GPU model the workstations run on (a node label value), if the pool pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Size limits and warm buffer.
    pub capacity: Capacity,
    /// Who may request workstations from this pool (admins always may).
    #[serde(default)]
    pub access: Access,
    /// Idle and lifetime limits of a session.
    #[serde(default)]
    pub limits: SessionLimits,
    /// Where the desktop listens inside a workstation.
    #[serde(default)]
    pub connect: ConnectSpec,
    /// Time-zone-aware windows that override `capacity.warm` and `capacity.min`; the first
    /// active one wins (docs/autoscaling.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleWindow>,
    /// How the warm buffer follows demand, and its cooldown.
    #[serde(default)]
    pub autoscale: AutoscaleSpec,
}

/// Size limits of a pool. Invariant (checked by [`PoolSpec::validate`]): `min <= max`, `warm <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capacity {
    /// Workstations kept running at all times, used or not.
    #[serde(default)]
    pub min: u32,
    /// Hard cap on workstations of this pool (in use + warm + starting).
    pub max: u32,
    /// Idle, ready workstations kept waiting for the next request.
    #[serde(default)]
    pub warm: u32,
}

/// Access list of a pool. Default deny: a pool with no groups and no users is for admins only,
/// unless `allAuthenticated` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Access {
    /// Groups (token groups claim values) whose members may use the pool.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Individual users (stable user keys) who may use the pool.
    #[serde(default)]
    pub users: BTreeSet<String>,
    /// Any authenticated user may use the pool.
    #[serde(default)]
    pub all_authenticated: bool,
}

/// Limits on a session's life; each forced end is announced `warnBefore` ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionLimits {
    /// End a session after this long without activity (keepalive or desktop traffic).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "30m")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// End a session this long after it became ready, whatever its activity.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "10h")]
    #[schemars(with = "String")]
    pub max_lifetime: Duration,
    /// How long before a forced end the user is warned.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "5m")]
    #[schemars(with = "String")]
    pub warn_before: Duration,
    /// How long a dropped desktop connection may stay away before it counts as idle.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "2m")]
    #[schemars(with = "String")]
    pub reconnect_grace: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_lifetime: Duration::from_secs(10 * 3600),
            warn_before: Duration::from_secs(5 * 60),
            reconnect_grace: Duration::from_secs(2 * 60),
        }
    }
}

/// How the desktop inside a workstation is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectSpec {
    /// TCP port the desktop (noVNC, KasmVNC, Selkies …) listens on inside the workstation.
    pub port: u16,
    /// Path of the desktop's entry page.
    pub path: String,
}

impl Default for ConnectSpec {
    fn default() -> Self {
        Self { port: 6080, path: "/".to_owned() }
    }
}

fn default_gpus() -> u32 {
    1
}

/// One problem with a pool spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted field path relative to the pool (`capacity.warm`).
    pub field: &'static str,
    /// What is wrong, in words an admin understands.
    pub message: String,
}

impl PoolSpec {
    /// Every problem with this spec; empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut bad = |field, message: String| errors.push(FieldError { field, message });
        if let Err(why) = super::names::check_dns_label(self.name.as_str()) {
            bad("name", why);
        }
        let Capacity { min, max, warm } = self.capacity;
        if max == 0 {
            bad("capacity.max", "must be at least 1".into());
        }
        if min > max {
            bad("capacity.min", format!("{min} is more than capacity.max ({max})"));
        }
        if warm > max {
            bad("capacity.warm", format!("{warm} is more than capacity.max ({max})"));
        }
        let l = self.limits;
        if l.idle_timeout.is_zero() {
            bad("limits.idleTimeout", "must be more than 0".into());
        }
        if l.max_lifetime.is_zero() {
            bad("limits.maxLifetime", "must be more than 0".into());
        }
        if l.warn_before >= l.idle_timeout.min(l.max_lifetime) {
            bad(
                "limits.warnBefore",
                "must be shorter than both limits.idleTimeout and limits.maxLifetime".into(),
            );
        }
        if self.connect.port == 0 {
            bad("connect.port", "must be a TCP port (1-65535)".into());
        }
        if !self.connect.path.starts_with('/') {
            bad("connect.path", "must start with '/'".into());
        }
        super::schedule::validate_all(&self.schedules, max, &mut errors);
        self.autoscale.validate(max, &mut errors);
        errors
    }

    /// Whether `caller` may request a workstation from this pool. Unknown groups never match.
    pub fn may_use(&self, caller: &Caller) -> bool {
        if caller.admin || self.access.all_authenticated || self.access.users.contains(caller.user.as_str()) {
            return true;
        }
        caller.groups.as_ref().is_some_and(|groups| groups.iter().any(|g| self.access.groups.contains(g)))
    }
}

#[cfg(test)]
pub(crate) fn mk_pool(name: &str, min: u32, max: u32, warm: u32) -> PoolSpec {
    PoolSpec {
        name: PoolName::from(name),
        display_name: name.to_owned(),
        description: String::new(),
        gpus_per_workstation: 1,
        gpu_model: None,
        capacity: Capacity { min, max, warm },
        access: Access { all_authenticated: true, ..Access::default() },
        limits: SessionLimits::default(),
        connect: ConnectSpec::default(),
        schedules: Vec::new(),
        autoscale: AutoscaleSpec::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn caller(groups: Option<&[&str]>) -> Caller {
        Caller {
            user: UserId::from("iss#alice"),
            groups: groups.map(|g| g.iter().map(|s| s.to_string()).collect()),
            admin: false,
        }
    }

    #[test]
    fn warm_above_max_is_named_in_the_error() {
        let mut pool = mk_pool("p", 0, 2, 3);
        pool.capacity.min = 5;
        let fields: Vec<_> = pool.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["capacity.min", "capacity.warm"]);
    }

    #[test]
    fn unknown_groups_never_grant_group_access() {
        let mut pool = mk_pool("p", 0, 2, 1);
        pool.access = Access { groups: ["drafters".into()].into(), ..Access::default() };
        assert!(!pool.may_use(&caller(None)));
        assert!(!pool.may_use(&caller(Some(&[]))));
        assert!(pool.may_use(&caller(Some(&["drafters"]))));
    }

    #[test]
    fn a_pool_without_access_entries_is_for_admins_only() {
        let mut pool = mk_pool("p", 0, 2, 1);
        pool.access = Access::default();
        assert!(!pool.may_use(&caller(Some(&["drafters"]))));
        assert!(pool.may_use(&Caller { admin: true, ..caller(None) }));
    }
}
