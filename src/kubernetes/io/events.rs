//! Kubernetes Events on cadbroker's objects: failures (Warning) on the session or pool they
//! concern, and the autoscaler's decisions (Normal) on their pool, so that `kubectl describe`
//! tells an admin what the broker did and why. Publishing is best effort: an Event that
//! cannot be written is logged, never retried, and never blocks allocation for long.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::store::Stores;
use crate::{
    domain::Decision,
    kubernetes::build::event::{self, truncate},
};

/// How long one Event write may take before it is given up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes Events about the objects in one namespace.
#[derive(Clone)]
pub struct Events {
    recorder: std::sync::Arc<Recorder>,
    stores: Stores,
    namespace: String,
    /// Decision Events, written as they are (see `pool_decision`).
    decisions: Api<k8s_openapi::api::events::v1::Event>,
    instance: String,
}

impl Events {
    /// Events reported as `instance` of the cadbroker controller.
    pub fn new(client: &Client, namespace: &str, instance: String, stores: Stores) -> Self {
        let reporter = Reporter { controller: "cadbroker".into(), instance: Some(instance.clone()) };
        Self {
            recorder: std::sync::Arc::new(Recorder::new(client.clone(), reporter)),
            stores,
            namespace: namespace.to_owned(),
            decisions: Api::namespaced(client.clone(), namespace),
            instance,
        }
    }

    /// A Warning on a session (skipped when the session is not cached: nothing to attach to).
    pub async fn warn_session(&self, name: &str, reason: &str, note: String) {
        if let Some(session) = self.stores.session(&self.namespace, name) {
            self.publish(session.object_ref(&()), EventType::Warning, reason, "Allocate", note).await;
        }
    }

    /// A Warning on a pool.
    pub async fn warn_pool(&self, name: &str, reason: &str, note: String) {
        if let Some(pool) = self.stores.pool(&self.namespace, name) {
            self.publish(pool.object_ref(&()), EventType::Warning, reason, "Reconcile", note).await;
        }
    }

    /// A Normal Event on a pool recording one of the autoscaler's or the culler's decisions
    /// (the `seq`-th of its pass), with the session it concerns as the related object. Written
    /// directly rather than through the recorder: the recorder folds Events with the same
    /// reason into one series and keeps the first note, and every decision must stay readable
    /// on its own (`decisions::read`).
    pub async fn pool_decision(&self, decision: &Decision, seq: usize) {
        let Some(pool) = self.stores.pool(&self.namespace, decision.pool.as_str()) else { return };
        let session =
            decision.session.as_ref().and_then(|s| self.stores.session(&self.namespace, s.as_str()));
        let event = event::build_decision_event(
            decision,
            pool.object_ref(&()),
            session.map(|s| s.object_ref(&())),
            seq,
            &self.instance,
        );
        let params = PostParams::default();
        let create = self.decisions.create(&params, &event);
        match tokio::time::timeout(PUBLISH_TIMEOUT, create).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, pool = %decision.pool, "decision event not published"),
            Err(_) => tracing::debug!(pool = %decision.pool, "decision event not published in time"),
        }
    }

    async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note)),
            action: action.to_owned(),
            secondary: None,
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.recorder.publish(&event, &regarding)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, reason, "event not published"),
            Err(_) => tracing::debug!(reason, "event not published in time"),
        }
    }
}

/// The API server's message of an error, without the client's wrapping.
pub fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
