//! The local desktop backend: each workstation is a real desktop on this host (Xvfb, a window
//! manager, LibreCAD, x11vnc and noVNC through websockify on a loopback port). The host offers
//! a configured number of GPU slots; a workstation takes its pool's `gpusPerWorkstation` of
//! them, and waits as Pending while they are taken. Like every backend it reports through
//! observations and decides nothing; its processes end when their workstation stops.

pub mod config;
pub mod process;
mod web;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::config::{DesktopConfig, INSTALL_HINT};
use self::{
    process::{Desktop, LaunchError, Placement},
    web::WebDir,
};
use super::{Backend, ObservationSender, StartRequest};
use crate::domain::{Endpoint, Observation, WorkstationId};

/// The node name desktops report: they all run here.
const NODE: &str = "localhost";
/// How often a running desktop's processes are checked.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Starts tried per workstation when a display or port was taken meanwhile.
const ATTEMPTS: usize = 3;

type Cell = Arc<Mutex<Option<Desktop>>>;

struct Slot {
    gpus: u32,
    display: u32,
    cancel: CancellationToken,
    desktop: Cell,
    task: Option<JoinHandle<()>>,
}

struct Host {
    free: u32,
    running: HashMap<WorkstationId, Slot>,
    pending: VecDeque<StartRequest>,
    displays: BTreeSet<u32>,
}

struct Inner {
    config: DesktopConfig,
    web: WebDir,
    events: ObservationSender,
    host: Mutex<Host>,
}

/// The local desktop backend. Cheap to clone.
#[derive(Clone)]
pub struct DesktopBackend {
    inner: Arc<Inner>,
}

impl DesktopBackend {
    /// A backend running desktops as `config` says. Fails only when noVNC's folder cannot be
    /// linked into the served folder.
    pub fn new(config: DesktopConfig, events: ObservationSender) -> std::io::Result<Self> {
        let web = WebDir::create(&config.novnc_dir)?;
        let host = Host {
            free: config.slots,
            running: HashMap::new(),
            pending: VecDeque::new(),
            displays: BTreeSet::new(),
        };
        let inner = Arc::new(Inner { config, web, events, host: Mutex::new(host) });
        Ok(Self { inner })
    }

    /// Process group ids of the desktops running now (for tests and diagnostics).
    pub fn process_groups(&self) -> Vec<i32> {
        let host = self.inner.lock();
        host.running.values().filter_map(|s| s.desktop.lock().ok()?.as_ref().map(Desktop::pgid)).collect()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Host> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, observation: Observation) {
        let _ = self.events.send(observation);
    }

    /// Starts `req` if enough slots are free; otherwise it waits as Pending.
    fn place(self: &Arc<Self>, host: &mut Host, req: StartRequest) {
        let gpus = req.pool.gpus_per_workstation;
        if host.free < gpus {
            let message = format!(
                "0/1 nodes are available: insufficient GPU slots on {NODE} (needs {gpus}, {} of {} free)",
                host.free, self.config.slots
            );
            self.send(Observation::Pending { workstation: req.workstation.clone(), node: None, message });
            host.pending.push_back(req);
            return;
        }
        host.free -= gpus;
        let display = next_display(&host.displays, self.config.first_display);
        host.displays.insert(display);
        let cancel = CancellationToken::new();
        let desktop = Cell::default();
        let task =
            tokio::spawn(self.clone().run(req.workstation.clone(), display, cancel.clone(), desktop.clone()));
        let slot = Slot { gpus, display, cancel, desktop, task: Some(task) };
        host.running.insert(req.workstation, slot);
    }

    /// One workstation's life: start, report Ready, watch until stopped or broken, clean up.
    async fn run(self: Arc<Self>, id: WorkstationId, display: u32, cancel: CancellationToken, cell: Cell) {
        let message = format!("starting a desktop on display :{display}");
        self.send(Observation::Pending { workstation: id.clone(), node: Some(NODE.into()), message });
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Outcome::Stopped,
            started = self.start_desktop(&id, display) => match started {
                Ok(desktop) => {
                    let endpoint = Endpoint { host: "127.0.0.1".into(), port: desktop.placement.port };
                    *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(desktop);
                    self.send(Observation::Ready { workstation: id.clone(), node: NODE.into(), endpoint });
                    watch(&cell, &cancel).await
                }
                Err(e) => Outcome::Failed(e.to_string()),
            },
        };
        let desktop = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(desktop) = desktop {
            // Stopping waits for the processes to end; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || desktop.stop()).await;
        }
        self.release(&id);
        match outcome {
            Outcome::Stopped => self.send(Observation::Gone { workstation: id, lost: false }),
            Outcome::Failed(message) => {
                tracing::warn!(workstation = %id, %message, "desktop failed");
                self.send(Observation::Failed { workstation: id, message });
            }
        }
    }

    /// Launches on `display`, moving to another display or port when one was taken meanwhile.
    async fn start_desktop(&self, id: &WorkstationId, mut display: u32) -> Result<Desktop, LaunchError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let port =
                free_port().map_err(|source| LaunchError::Spawn { program: "websockify".into(), source })?;
            match process::launch(&self.config, Placement { display, port }, self.web.path()).await {
                Ok(desktop) => return Ok(desktop),
                Err(e @ (LaunchError::DisplayTaken(_) | LaunchError::Exited("websockify"))) => {
                    tracing::debug!(workstation = %id, error = %e, "retrying the desktop start");
                    display = self.move_display(id, display);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LaunchError::Timeout(self.config.start_timeout)))
    }

    fn move_display(&self, id: &WorkstationId, old: u32) -> u32 {
        let mut host = self.lock();
        let new = next_display(&host.displays, old + 1);
        host.displays.insert(new);
        host.displays.remove(&old);
        if let Some(slot) = host.running.get_mut(id) {
            slot.display = new;
        }
        new
    }

    /// Frees the workstation's slots and display; waiting workstations get another try.
    fn release(self: &Arc<Self>, id: &WorkstationId) {
        let mut host = self.lock();
        if let Some(slot) = host.running.remove(id) {
            host.free += slot.gpus;
            host.displays.remove(&slot.display);
        }
        let waiting: Vec<_> = host.pending.drain(..).collect();
        for req in waiting {
            self.place(&mut host, req);
        }
    }
}

enum Outcome {
    Stopped,
    Failed(String),
}

/// Waits until the workstation is stopped, or one of its core processes ends.
async fn watch(cell: &Cell, cancel: &CancellationToken) -> Outcome {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Outcome::Stopped,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let exited = cell.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(Desktop::exited);
        if let Some(name) = exited {
            return Outcome::Failed(format!("{name} ended unexpectedly"));
        }
    }
}

/// The lowest display at or above `from` that we do not use and that looks free on the host.
fn next_display(taken: &BTreeSet<u32>, from: u32) -> u32 {
    (from..from + 1000).find(|n| !taken.contains(n) && process::display_free(*n)).unwrap_or(from)
}

/// A loopback port that was free a moment ago (websockify binds it next; a lost race is retried).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Backend for DesktopBackend {
    fn name(&self) -> &'static str {
        "desktop"
    }

    fn start(&self, request: StartRequest) {
        let mut host = self.inner.lock();
        if host.running.contains_key(&request.workstation)
            || host.pending.iter().any(|r| r.workstation == request.workstation)
        {
            return;
        }
        self.inner.place(&mut host, request);
    }

    fn stop(&self, workstation: &WorkstationId) {
        let mut host = self.inner.lock();
        if let Some(slot) = host.running.get(workstation) {
            // The workstation's task stops the processes and then reports Gone.
            slot.cancel.cancel();
            return;
        }
        host.pending.retain(|r| &r.workstation != workstation);
        self.inner.send(Observation::Gone { workstation: workstation.clone(), lost: false });
    }

    fn shutdown(&self) {
        let mut desktops = Vec::new();
        {
            let mut host = self.inner.lock();
            host.pending.clear();
            for slot in host.running.values_mut() {
                slot.cancel.cancel();
                if let Some(task) = slot.task.take() {
                    task.abort();
                }
                desktops.extend(slot.desktop.lock().unwrap_or_else(|p| p.into_inner()).take());
            }
        }
        // Called once at shutdown from the controller task: blocking here (about a second while
        // the processes end) is what makes "nothing left running" true when the broker exits.
        for desktop in desktops {
            desktop.stop();
        }
    }
}
