//! Reading the decisions back: the one list call behind `GET /api/v1/pools/{name}/decisions`,
//! answered alike by every replica from the pool's decision Events (built and parsed in
//! [`crate::kubernetes::build::event`]).

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};

use crate::{
    domain::{Decision, PoolName},
    kubernetes::{build::event::newest_first, labels},
};

/// Events read per list request.
const PAGE: u32 = 500;
/// Most Events read for one answer: a bound on the work of one admin request, far above the
/// decisions a pool makes within the Events' lifetime.
const MAX_READ: usize = 5_000;

/// Lists `pool`'s decision Events (label-selected, paged, bounded) and returns its decisions,
/// newest first.
pub async fn read(events: &Api<Event>, pool: &PoolName) -> Result<Vec<Decision>, kube::Error> {
    let selector = format!("{}={}", labels::DECISION_POOL, pool);
    let mut params = ListParams::default().labels(&selector).limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page = events.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() && items.len() < MAX_READ => {
                params = params.continue_token(&token)
            }
            _ => break,
        }
    }
    Ok(newest_first(&items, pool))
}
