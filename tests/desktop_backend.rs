//! The local desktop backend on this host: a workstation becomes a real desktop (Xvfb, window
//! manager, LibreCAD, x11vnc, noVNC through websockify on a loopback port), and stopping it, or
//! shutting the backend down, leaves no process of it running. Skipped with a message when the
//! desktop programs are not installed, except in CI (`CI=true`), where that is a failure.

use std::time::Duration;

use cadbroker::{
    backend::{
        Backend, StartRequest,
        desktop::{DesktopBackend, DesktopConfig, INSTALL_HINT, process::group_members},
    },
    domain::{Observation, PoolSpec, WorkstationId},
};
use tokio::sync::mpsc;

fn installed() -> Option<DesktopConfig> {
    let config = DesktopConfig { geometry: "1024x768".into(), ..DesktopConfig::default() };
    let missing = config.missing();
    if missing.is_empty() {
        return Some(config);
    }
    let message = format!("desktop programs missing ({}); install with: {INSTALL_HINT}", missing.join(", "));
    assert!(std::env::var("CI").is_err(), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

fn pool(gpus: u32) -> PoolSpec {
    let toml = format!(
        "name = \"desk\"\ngpusPerWorkstation = {gpus}\ncapacity = {{ max = 4 }}\naccess = {{ allAuthenticated = true }}\n"
    );
    toml::from_str(&toml).unwrap()
}

fn start(backend: &DesktopBackend, name: &str, gpus: u32) {
    backend.start(StartRequest { workstation: WorkstationId::from(name), pool: pool(gpus), session: None });
}

/// Observations in arrival order; desktops start in parallel, so their Ready may come in any
/// order, and one not asked for yet is kept for later.
struct Observer {
    rx: mpsc::UnboundedReceiver<Observation>,
    kept: Vec<Observation>,
}

fn about(obs: &Observation) -> Option<&str> {
    match obs {
        Observation::Ready { workstation, .. }
        | Observation::Failed { workstation, .. }
        | Observation::Gone { workstation, .. } => Some(workstation.as_str()),
        Observation::Pending { .. } => None,
    }
}

impl Observer {
    /// The next observation about `name` that is not Pending.
    async fn settled(&mut self, name: &str) -> Observation {
        if let Some(i) = self.kept.iter().position(|o| about(o) == Some(name)) {
            return self.kept.remove(i);
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), self.rx.recv());
            let obs = next.await.expect("an observation in time").expect("the backend is alive");
            match about(&obs) {
                Some(n) if n == name => return obs,
                Some(_) => self.kept.push(obs),
                None => {}
            }
        }
    }
}

async fn wait_gone(pgid: i32) {
    for _ in 0..100 {
        if group_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("processes of group {pgid} still running: {:?}", group_members(pgid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_serves_novnc_on_loopback_and_stopping_it_leaves_nothing_running() {
    let Some(config) = installed() else { return };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut seen = Observer { rx, kept: Vec::new() };
    let backend = DesktopBackend::new(config, tx).unwrap();
    start(&backend, "ws-a", 1);
    let Observation::Ready { endpoint, node, .. } = seen.settled("ws-a").await else {
        panic!("the desktop did not become ready");
    };
    assert_eq!(node, "localhost");
    assert_eq!(endpoint.host, "127.0.0.1");
    let groups = backend.process_groups();
    assert_eq!(groups.len(), 1);
    let members = group_members(groups[0]);
    assert!(members.len() >= 4, "Xvfb, window manager, LibreCAD, x11vnc and websockify run: {members:?}");

    let base = format!("http://127.0.0.1:{}", endpoint.port);
    let index = http().get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(index.contains("vnc.html?autoconnect=true"), "{index}");
    let vnc = http().get(format!("{base}/vnc.html")).send().await.unwrap();
    assert!(vnc.status().is_success());

    backend.stop(&WorkstationId::from("ws-a"));
    assert!(matches!(seen.settled("ws-a").await, Observation::Gone { lost: false, .. }));
    wait_gone(groups[0]).await;
    assert!(http().get(format!("{base}/")).send().await.is_err(), "the port is closed");
    assert!(backend.process_groups().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_shared_displays_differ_and_shutdown_stops_everything() {
    let Some(config) = installed() else { return };
    let config = DesktopConfig { slots: 2, ..config };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut seen = Observer { rx, kept: Vec::new() };
    let backend = DesktopBackend::new(config, tx).unwrap();
    start(&backend, "ws-1", 1);
    start(&backend, "ws-2", 1);
    start(&backend, "ws-3", 1);
    let mut ports = Vec::new();
    for name in ["ws-1", "ws-2"] {
        let Observation::Ready { endpoint, .. } = seen.settled(name).await else { panic!("{name} failed") };
        ports.push(endpoint.port);
    }
    assert_ne!(ports[0], ports[1]);
    let groups = backend.process_groups();
    assert_eq!(groups.len(), 2, "the third waits for a slot");

    // Freeing a slot starts the waiting one.
    backend.stop(&WorkstationId::from("ws-1"));
    assert!(matches!(seen.settled("ws-1").await, Observation::Gone { .. }));
    assert!(matches!(seen.settled("ws-3").await, Observation::Ready { .. }));

    let all = backend.process_groups();
    backend.shutdown();
    for pgid in groups.iter().chain(&all) {
        wait_gone(*pgid).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[test]
fn desktops_die_with_the_runtime_even_without_a_shutdown() {
    let Some(config) = installed() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (pgid, display_files) = runtime.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut seen = Observer { rx, kept: Vec::new() };
        let backend = DesktopBackend::new(config, tx).unwrap();
        start(&backend, "ws-orphan", 1);
        assert!(matches!(seen.settled("ws-orphan").await, Observation::Ready { .. }));
        let pgid = backend.process_groups()[0];
        let lock = std::fs::read_dir("/tmp")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-lock"))
            .find(|p| std::fs::read_to_string(p).is_ok_and(|pid| pid.trim() == pgid.to_string()))
            .expect("our Xvfb's lock file");
        (pgid, lock)
    });
    // Dropping the runtime drops the workstation tasks, and with them the desktops.
    drop(runtime);
    for _ in 0..100 {
        if group_members(pgid).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(group_members(pgid).is_empty(), "left running: {:?}", group_members(pgid));
    assert!(!display_files.exists(), "the killed Xvfb's lock file {} is removed", display_files.display());
}
