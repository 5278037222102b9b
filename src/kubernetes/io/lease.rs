//! Leader election with a coordination.k8s.io Lease: take it when free or expired, renew it
//! with a compare-and-swap on its resourceVersion, and step down the moment a renewal fails.
//! A lease is not a fence: claims are compare-and-swaps on pods, so two leaders for a moment
//! still cannot hand one pod to two users.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

use super::metrics::{Category, KubeMetrics};
use crate::{clock::Clock, shutdown::Shutdown};

/// Who competes for which lease.
#[derive(Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name or host and pid).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// Where renewals read the time (the Lease records wall-clock times).
    pub clock: Arc<dyn Clock>,
}

/// What to do with the lease we just read.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Create,
    Renew,
    TakeOver,
    Follow,
}

fn decide(lease: Option<&Lease>, me: &str, duration: Duration, now: Timestamp) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() { Step::TakeOver } else { Step::Create };
    };
    if spec.holder_identity.as_deref() == Some(me) {
        return Step::Renew;
    }
    let held_for = spec.lease_duration_seconds.map_or(duration, |s| Duration::from_secs(s.max(1) as u64));
    let expired = spec.renew_time.as_ref().is_none_or(|t| crate::domain::time::after(t.0, held_for) < now);
    if spec.holder_identity.is_none() || expired { Step::TakeOver } else { Step::Follow }
}

fn spec_for(me: &str, duration: Duration, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Competes for the lease until shutdown, publishing whether we lead on `leading`.
pub async fn run(
    client: Client,
    namespace: String,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    metrics: Arc<KubeMetrics>,
    mut shutdown: Shutdown,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let every = cfg.duration / 3;
    loop {
        let held = try_hold(&api, &cfg, &metrics).await;
        if *leading.borrow() != held {
            tracing::info!(identity = %cfg.identity, leader = held, "leadership changed");
        }
        leading.send_replace(held);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => break,
        }
    }
    leading.send_replace(false);
}

async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig, metrics: &KubeMetrics) -> bool {
    let now = cfg.clock.now();
    let current = match api.get_opt(&cfg.name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading the lease failed");
            metrics.error(Category::Lease);
            return false;
        }
    };
    let step = decide(current.as_ref(), &cfg.identity, cfg.duration, now);
    let result = match (step, current) {
        (Step::Follow, _) => return false,
        (Step::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.name.clone()), ..Default::default() },
                spec: Some(spec_for(&cfg.identity, cfg.duration, now, 0)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (step, Some(mut lease)) => {
            let old = lease.spec.clone().unwrap_or_default();
            let mut spec = spec_for(&cfg.identity, cfg.duration, now, old.lease_transitions.unwrap_or(0));
            if step == Step::Renew {
                spec.acquire_time = old.acquire_time;
            } else {
                spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
            }
            lease.spec = Some(spec);
            // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
            api.replace(&cfg.name, &PostParams::default(), &lease).await
        }
        (_, None) => return false,
    };
    match result {
        Ok(_) => true,
        // Another replica renewed or took it between our read and write: follow it.
        Err(kube::Error::Api(s)) if s.code == 409 => false,
        Err(e) => {
            tracing::warn!(error = %e, "writing the lease failed");
            metrics.error(Category::Lease);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_live_lease_of_another_replica_is_followed_and_an_expired_one_taken() {
        let d = Duration::from_secs(15);
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "a", d, now), Step::Create);
        assert_eq!(decide(Some(&lease(Some("a"), 995)), "a", d, now), Step::Renew);
        assert_eq!(decide(Some(&lease(Some("b"), 995)), "a", d, now), Step::Follow);
        assert_eq!(decide(Some(&lease(Some("b"), 900)), "a", d, now), Step::TakeOver);
        assert_eq!(decide(Some(&lease(None, 995)), "a", d, now), Step::TakeOver);
    }
}
