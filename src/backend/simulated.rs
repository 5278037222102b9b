//! The simulated cluster, the embedded default: GPU nodes from the config, first-fit placement,
//! a configurable start delay, and a real page on a loopback port per workstation. Workstations
//! that fit on no node wait (Pending, with the scheduler-like reason) until GPUs free up.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{Backend, ObservationSender, StartRequest, workstation_page};
use crate::domain::{Endpoint, Observation, WorkstationId};

/// A group of identical simulated GPU nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroup {
    /// Name prefix; nodes are called `<name>-0`, `<name>-1`, …
    pub name: String,
    /// How many nodes.
    pub count: u32,
    /// GPUs per node.
    pub gpus: u32,
    /// GPU model label of these nodes (matched against a pool's `gpuModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
}

struct Node {
    name: String,
    gpus: u32,
    used: u32,
    model: Option<String>,
}

struct Running {
    node: usize,
    gpus: u32,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Cluster {
    nodes: Vec<Node>,
    running: HashMap<WorkstationId, Running>,
    pending: VecDeque<StartRequest>,
}

/// The simulated backend. Cheap to clone.
#[derive(Clone)]
pub struct SimulatedBackend {
    cluster: Arc<Mutex<Cluster>>,
    events: ObservationSender,
    start_delay: Duration,
}

impl SimulatedBackend {
    /// A cluster of `groups` whose workstations take `start_delay` to boot.
    pub fn new(groups: &[NodeGroup], start_delay: Duration, events: ObservationSender) -> Self {
        let nodes = groups
            .iter()
            .flat_map(|g| {
                (0..g.count).map(move |i| Node {
                    name: format!("{}-{i}", g.name),
                    gpus: g.gpus,
                    used: 0,
                    model: g.gpu_model.clone(),
                })
            })
            .collect();
        let cluster = Arc::new(Mutex::new(Cluster { nodes, ..Cluster::default() }));
        Self { cluster, events, start_delay }
    }

    /// Places and boots `req` if a node has room; otherwise queues it as pending.
    fn place(&self, cluster: &mut Cluster, req: StartRequest) {
        let gpus = req.pool.gpus_per_workstation;
        let model = req.pool.gpu_model.as_deref();
        let fits = |n: &Node| n.gpus - n.used >= gpus && (model.is_none() || n.model.as_deref() == model);
        let Some(index) = cluster.nodes.iter().position(fits) else {
            let message = format!(
                "0/{} nodes are available: insufficient nvidia.com/gpu (needs {gpus}{})",
                cluster.nodes.len(),
                model.map(|m| format!(" of model {m}")).unwrap_or_default()
            );
            let _ = self.events.send(Observation::Pending {
                workstation: req.workstation.clone(),
                node: None,
                message,
            });
            cluster.pending.push_back(req);
            return;
        };
        let node = &mut cluster.nodes[index];
        node.used += gpus;
        let task = tokio::spawn(boot(req.clone(), node.name.clone(), self.start_delay, self.events.clone()));
        cluster.running.insert(req.workstation, Running { node: index, gpus, task });
    }
}

async fn boot(req: StartRequest, node: String, delay: Duration, events: ObservationSender) {
    let _ = events.send(Observation::Pending {
        workstation: req.workstation.clone(),
        node: Some(node.clone()),
        message: format!("starting on {node}"),
    });
    tokio::time::sleep(delay).await;
    match workstation_page::bind(req.workstation.as_str(), req.pool.name.as_str(), &node).await {
        Ok((addr, serve)) => {
            let endpoint = Endpoint { host: addr.ip().to_string(), port: addr.port() };
            let _ = events.send(Observation::Ready { workstation: req.workstation, node, endpoint });
            serve.await;
        }
        Err(e) => {
            let message = format!("could not bind a loopback port: {e}");
            let _ = events.send(Observation::Failed { workstation: req.workstation, message });
        }
    }
}

impl Backend for SimulatedBackend {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn start(&self, request: StartRequest) {
        let mut cluster = self.cluster.lock().expect("simulated cluster lock");
        if cluster.running.contains_key(&request.workstation) {
            return;
        }
        self.place(&mut cluster, request);
    }

    fn stop(&self, workstation: &WorkstationId) {
        let mut cluster = self.cluster.lock().expect("simulated cluster lock");
        cluster.pending.retain(|r| &r.workstation != workstation);
        if let Some(run) = cluster.running.remove(workstation) {
            run.task.abort();
            cluster.nodes[run.node].used -= run.gpus;
        }
        let _ = self.events.send(Observation::Gone { workstation: workstation.clone(), lost: false });
        // Freed GPUs: give waiting workstations another try, in order.
        let waiting: Vec<_> = cluster.pending.drain(..).collect();
        for req in waiting {
            self.place(&mut cluster, req);
        }
    }

    fn shutdown(&self) {
        let mut cluster = self.cluster.lock().expect("simulated cluster lock");
        for (_, run) in cluster.running.drain() {
            run.task.abort();
        }
        cluster.pending.clear();
    }
}
