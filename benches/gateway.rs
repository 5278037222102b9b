//! Gateway benchmark: WebSocket round-trip latency (p50, p99), throughput of a desktop-like
//! stream of 64 KiB frames, new WebSocket connections per second, and memory per 1,000 idle
//! connections, side by side in one run, on loopback, against the same upstream: a direct
//! connection, nginx as a WebSocket reverse proxy (configured and started here), and
//! cadbroker's gateway (the whole broker, in its own process).
//!
//! Run: `cargo bench --bench gateway` (add `-- --quick` for a short smoke run, `-- --only
//! connect,idle` for some of `latency`, `throughput`, `connect`, `idle`, `-- --targets
//! cadbroker` to leave nginx out, `-- --rounds N` for the number of rounds, `-- --workers N`
//! for the proxies' threads, `-- --nginx-buffer 64k` to give nginx relay buffers as large as
//! the gateway's). Needs the Debian package `nginx` for the nginx column; without it that
//! column says so and the rest is measured. Every loop is bounded in count and time; the
//! child processes (upstream, broker, nginx) are this binary's own and are stopped by pid at
//! the end.
//!
//! Fairness on a small, shared machine: the latency, throughput and connection phases run in
//! rounds, and within a round the three targets run one after the other in an order that
//! rotates from round to round, so a burst of noise hits all of them alike. Each figure is the
//! median over the rounds, shown with its range (min–max); "added" latency is taken against
//! the direct connection of the same round. Both proxies get the same number of threads
//! (`--workers`, default: the number of cores): nginx `worker_processes`, the broker's tokio
//! worker threads. nginx runs its stock proxy settings (relay buffer `proxy_buffer_size`,
//! one memory page) unless `--nginx-buffer` says otherwise.
//!
//! Processes: this binary runs the clients; it starts itself again as the upstream (a
//! WebSocket echo that also streams frames on request) and as the broker (cadbroker on the
//! simulated backend with one Ready session whose workstation endpoint is the upstream), so
//! each proxy's memory is measured in a process that holds only its own side.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Bytes, Message, client::IntoClientRequest},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const ROLE: &str = "CADBROKER_GATEWAY_BENCH_ROLE";
const FRAME: usize = 64 * 1024;
const IDLE_CONNECTIONS: usize = 1000;

const WORKERS: &str = "CADBROKER_GATEWAY_BENCH_WORKERS";

/// Bounds of one run (per target and round; at most 100 rounds).
#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    latency_messages: usize,
    latency_time: Duration,
    stream_frames: usize,
    connect_time: Duration,
    connect_max: u64,
    connect_concurrency: usize,
}

const FULL: Plan = Plan {
    rounds: 5,
    latency_messages: 3_000,
    latency_time: Duration::from_secs(4),
    stream_frames: 1_600,
    connect_time: Duration::from_secs(1),
    connect_max: 10_000,
    connect_concurrency: 32,
};

const QUICK: Plan = Plan {
    rounds: 1,
    latency_messages: 500,
    latency_time: Duration::from_secs(2),
    stream_frames: 200,
    connect_time: Duration::from_millis(300),
    connect_max: 2_000,
    connect_concurrency: 16,
};

/// What the command line chose.
struct Options {
    plan: Plan,
    quick: bool,
    phases: String,
    targets: String,
    workers: usize,
    nginx_buffer: Option<String>,
}

fn main() {
    let role = std::env::var(ROLE).unwrap_or_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if role == "broker" {
        // The same number of threads as nginx has workers.
        let workers = std::env::var(WORKERS).ok().and_then(|w| w.parse().ok()).unwrap_or(1);
        builder.worker_threads(workers);
    }
    let runtime = builder.enable_all().build().expect("a runtime");
    match role.as_str() {
        "upstream" => runtime.block_on(upstream()),
        "broker" => runtime.block_on(broker()),
        _ => {
            let args: Vec<String> = std::env::args().collect();
            let value =
                |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let quick = args.iter().any(|a| a == "--quick");
            let mut plan = if quick { QUICK } else { FULL };
            if let Some(rounds) = value("--rounds").and_then(|r| r.parse::<usize>().ok()) {
                plan.rounds = rounds.clamp(1, 100);
            }
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let options = Options {
                plan,
                quick,
                phases: value("--only").unwrap_or_else(|| "latency,throughput,connect,idle".to_owned()),
                targets: value("--targets").unwrap_or_else(|| "direct,nginx,cadbroker".to_owned()),
                workers: value("--workers").and_then(|w| w.parse().ok()).unwrap_or(cores).clamp(1, 64),
                nginx_buffer: value("--nginx-buffer"),
            };
            runtime.block_on(bench(options));
        }
    }
}

// === child processes ===

/// Exits when the parent closes our stdin (or dies), so no child outlives the benchmark.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
}

/// WebSocket echo; the text `stream <count> <size>` makes it send that many binary frames, then `done`.
async fn upstream() {
    exit_with_parent();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("READY {}", listener.local_addr().unwrap());
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            while let Some(Ok(message)) = ws.next().await {
                let result = match message {
                    Message::Text(t) if t.starts_with("stream ") => {
                        let mut parts = t.split(' ').skip(1).map(|n| n.parse::<usize>().unwrap_or(0));
                        let (count, size) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                        let frame = Bytes::from(vec![0x5a; size.min(1 << 20)]);
                        let mut sent = Ok(());
                        for _ in 0..count.min(100_000) {
                            sent = ws.feed(Message::Binary(frame.clone())).await;
                            if sent.is_err() {
                                break;
                            }
                        }
                        match sent {
                            Ok(()) => ws.send(Message::text("done")).await,
                            err => err,
                        }
                    }
                    Message::Text(_) | Message::Binary(_) => ws.send(message).await,
                    _ => Ok(()),
                };
                if result.is_err() {
                    return;
                }
            }
        });
    }
}

/// cadbroker on the simulated backend with one Ready session pointed at the upstream. Prints
/// `READY <public address> <connect URL>`.
async fn broker() {
    use cadbroker::{
        app,
        auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
        config::Config,
        domain::{Endpoint, Observation, WorkstationId},
    };
    exit_with_parent();
    let upstream: SocketAddr = std::env::var("UPSTREAM").expect("UPSTREAM").parse().expect("an address");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::load(None).expect("built-in config");
    config.backend.kind = cadbroker::config::BackendKind::Simulated;
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.backend.simulated.start_delay = Duration::ZERO;
    for issuer in &mut config.auth.issuers {
        issuer.key_file = Some(dir.path().join("bench-key.pem"));
    }
    let pool = "name = \"bench\"\ngpuModel = \"nvidia-l4\"\ncapacity = { min = 0, max = 2, warm = 1 }\n\
                access = { allAuthenticated = true }";
    config.pools = vec![toml::from_str(pool).unwrap()];
    let issuer = config.auth.development_issuer().unwrap().clone();
    let running = app::start(config).await.expect("the broker starts");
    let key = load_or_create_dev_key(&issuer.effective_key_file()).unwrap();
    let token = mint_dev_token(&issuer, &key, &MintRequest::new("bench"), jiff::Timestamp::now()).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", running.public_addr);
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/sessions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "pool": "bench" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("a session").to_owned();
    let get = || async {
        let r = http.get(format!("{base}/api/v1/sessions/{id}")).bearer_auth(&token).send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    let mut session = created;
    for _ in 0..200 {
        if session["phase"] == "Ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        session = get().await;
    }
    assert_eq!(session["phase"], "Ready", "{session}");
    // The session's workstation now answers at the shared upstream, as a pod would at its IP.
    let engine = running.engine.clone().expect("the simulated backend has an engine");
    engine.observe(&[Observation::Ready {
        workstation: WorkstationId(session["workstation"].as_str().unwrap().to_owned()),
        node: session["node"].as_str().unwrap_or("bench").to_owned(),
        endpoint: Endpoint { host: upstream.ip().to_string(), port: upstream.port() },
    }]);
    let url = get().await["connectUrl"].as_str().expect("a connect URL").to_owned();
    println!("READY {} {url}", running.public_addr);
    std::future::pending::<()>().await;
}

/// A child process of ours, stopped (by its pid) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary in `role`; returns it and the words of its READY line.
fn spawn_role(role: &str, env: &[(&str, String)]) -> (ChildGuard, Vec<String>) {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.env(ROLE, role).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn a child role");
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a READY line");
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words.first().map(String::as_str), Some("READY"), "{role} said {line:?}");
    (guard, words[1..].to_vec())
}

/// nginx as a WebSocket reverse proxy to `upstream`, from a config written to a temp dir.
struct Nginx {
    master: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// Stops nginx by its pids: TERM to the master (which stops its workers), then KILL to any
    /// that are left after 3 s. A killed master would leave its workers running.
    fn drop(&mut self) {
        let master = self.master.id();
        let workers = children(master);
        let _ = Command::new("kill").arg("-TERM").arg(master.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !matches!(self.master.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
        for pid in workers {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn start_nginx(upstream: SocketAddr, workers: usize, buffer: Option<&str>) -> Result<Nginx, String> {
    let binary = nginx_binary().ok_or("nginx is not installed (Debian: apt-get install -y nginx)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let d = dir.path().display();
    // As many workers as the broker has runtime threads; the usual WebSocket proxy settings
    // (stock relay buffers unless `buffer`); no access log.
    // nginx relays an upgraded connection through one `proxy_buffer_size` buffer per direction;
    // the busy-buffers size must be at least that buffer.
    let buffer = buffer
        .map(|b| format!("      proxy_buffer_size {b};\n      proxy_buffers 4 {b};\n      proxy_busy_buffers_size {b};\n"))
        .unwrap_or_default();
    let conf = format!(
        "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 16384; multi_accept on; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
           upstream desktop {{ server {upstream}; }}\n\
           server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n\
               proxy_pass http://desktop;\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n\
               proxy_set_header Host $host;\n      proxy_read_timeout 1h;\n      proxy_send_timeout 1h;\n{buffer}    }}\n  }}\n}}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(&binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx did not start: {e}"))?;
    let mut master = child;
    for _ in 0..100 {
        if let Ok(Some(status)) = master.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited ({status}): {log}"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Nginx { master, port, _dir: dir });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = master.kill();
    let _ = master.wait();
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    Err(format!("nginx did not listen: {log}"))
}

fn nginx_version() -> String {
    nginx_binary()
        .and_then(|b| Command::new(b).arg("-v").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_else(|| "not installed".to_owned())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time used so far by all threads of a process, in nanoseconds (scheduler statistics).
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let total = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(total)
}

/// Pids of the children of `parent` (nginx's workers).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                // Field 4 (after the parenthesised name, which may contain spaces) is the ppid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

// === clients ===

/// One way to reach the upstream.
struct Target {
    name: &'static str,
    url: String,
    origin: Option<String>,
    cookie: Option<String>,
    /// Processes that hold this target's connections (none for direct).
    pids: Box<dyn Fn() -> Vec<u32> + Send + Sync>,
}

impl Target {
    /// Resident memory of the target's processes, KiB.
    fn rss_kib(&self) -> Option<u64> {
        let pids = (self.pids)();
        (!pids.is_empty()).then(|| pids.iter().filter_map(|p| rss_kib(*p)).sum())
    }

    /// CPU time used by the target's processes, ns.
    fn cpu_ns(&self) -> Option<u64> {
        let pids = (self.pids)();
        (!pids.is_empty()).then(|| pids.iter().filter_map(|p| cpu_ns(*p)).sum())
    }

    fn request(&self) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut req = self.url.as_str().into_client_request().expect("a ws URL");
        if let Some(o) = &self.origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        if let Some(c) = &self.cookie {
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        req
    }

    async fn connect(&self) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(self.request()).await?;
        Ok(ws)
    }

    /// The upgrade request as bytes, for the connection-rate phase's minimal client (a fixed
    /// `Sec-WebSocket-Key` is fine: each handshake is still complete and checked).
    fn raw_request(&self) -> (SocketAddr, Vec<u8>) {
        let rest = self.url.strip_prefix("ws://").expect("a ws:// URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in [("Origin", &self.origin), ("Cookie", &self.cookie)] {
            if let Some(v) = value {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        (authority.parse().expect("host:port"), head.into_bytes())
    }
}

/// One WebSocket handshake with a minimal client: connect, send the upgrade, read the answer's
/// head, check it is `101` with the expected accept key; then close.
async fn handshake_once(addr: SocketAddr, request: &[u8]) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(request).await?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf[len..]).await?;
        if n == 0 || len + n == buf.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
    }
    let head = &buf[..len];
    // The accept key of the fixed request key (RFC 6455 §1.3's example).
    let accepted = head.windows(28).any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    if !head.starts_with(b"HTTP/1.1 101") || !accepted {
        return Err(std::io::Error::other(String::from_utf8_lossy(head).into_owned()));
    }
    Ok(())
}

/// One target's figures, a value per round.
#[derive(Default, Clone)]
struct Samples {
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    /// The proxy's own CPU time per echo round trip, µs.
    echo_cpu_us: Vec<f64>,
    /// Over the direct connection's figure of the same round.
    added_p50_us: Vec<f64>,
    added_p99_us: Vec<f64>,
    mb_per_s: Vec<f64>,
    connects_per_s: Vec<f64>,
    connect_errors: u64,
    /// The proxy's own CPU time per new connection, µs.
    connect_cpu_us: Vec<f64>,
    idle_mib_per_1000: Option<f64>,
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Some((median, v[0], v[v.len() - 1]))
}

fn median(values: &[f64]) -> f64 {
    spread(values).map_or(f64::NAN, |(m, _, _)| m)
}

/// `median (min–max)` with `decimals`, or `–`.
fn cell(values: &[f64], decimals: usize) -> String {
    match spread(values) {
        None => "–".to_owned(),
        Some((m, _, _)) if values.len() == 1 => format!("{m:.decimals$}"),
        Some((m, lo, hi)) => format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})"),
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

async fn next_data(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.ok()?? {
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(m) => return Some(m),
            Err(_) => return None,
        }
    }
}

/// p50 and p99 of the round trip, µs, and the proxy's CPU time per round trip, µs.
async fn latency(t: &Target, plan: Plan) -> (f64, f64, Option<f64>) {
    let mut ws = t.connect().await.expect("connect for latency");
    let payload = Bytes::from(vec![7u8; 64]);
    for _ in 0..200 {
        ws.send(Message::Binary(payload.clone())).await.unwrap();
        next_data(&mut ws).await.expect("warm-up echo");
    }
    let mut samples = Vec::with_capacity(plan.latency_messages);
    let cpu_before = t.cpu_ns();
    let until = Instant::now() + plan.latency_time;
    for _ in 0..plan.latency_messages {
        if Instant::now() >= until {
            break;
        }
        let started = Instant::now();
        ws.send(Message::Binary(payload.clone())).await.unwrap();
        next_data(&mut ws).await.expect("echo");
        samples.push(started.elapsed());
    }
    let cpu = cpu_before
        .zip(t.cpu_ns())
        .map(|(b, a)| a.saturating_sub(b) as f64 / 1e3 / samples.len().max(1) as f64);
    samples.sort();
    let _ = ws.close(None).await;
    (pct(&samples, 0.50), pct(&samples, 0.99), cpu)
}

async fn throughput(t: &Target, plan: Plan) -> f64 {
    let mut ws = t.connect().await.expect("connect for throughput");
    // A short warm-up stream, so buffers have grown as they would in a running desktop.
    ws.send(Message::text(format!("stream 16 {FRAME}"))).await.unwrap();
    while !matches!(next_data(&mut ws).await, Some(Message::Text(t)) if t == "done") {}
    let started = Instant::now();
    ws.send(Message::text(format!("stream {} {FRAME}", plan.stream_frames))).await.unwrap();
    let mut bytes = 0usize;
    loop {
        match next_data(&mut ws).await {
            Some(Message::Binary(b)) => bytes += b.len(),
            Some(Message::Text(t)) if t == "done" => break,
            other => panic!("stream ended early: {other:?}"),
        }
    }
    assert_eq!(bytes, plan.stream_frames * FRAME);
    let rate = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    let _ = ws.close(None).await;
    rate
}

async fn connects(t: &Arc<Target>, plan: Plan) -> (f64, u64, Option<f64>) {
    let cpu_before = t.cpu_ns();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let until = started + plan.connect_time;
    let mut tasks = Vec::new();
    for _ in 0..plan.connect_concurrency {
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        let (addr, request) = t.raw_request();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                match handshake_once(addr, &request).await {
                    Ok(()) => {
                        if done.fetch_add(1, Ordering::Relaxed) + 1 >= plan.connect_max {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        if errors.fetch_add(1, Ordering::Relaxed) > 1000 {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    // Tunnels of the last connections wind down after their clients left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu =
        cpu_before.zip(t.cpu_ns()).map(|(b, a)| (a.saturating_sub(b)) as f64 / 1e3 / done.max(1) as f64);
    (done as f64 / elapsed, errors.load(Ordering::Relaxed), cpu)
}

async fn idle_memory(t: &Target) -> Option<f64> {
    t.rss_kib()?;
    // Let the previous phase's connections wind down before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = t.rss_kib()?;
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let mut ws = t.connect().await.expect("connect an idle connection");
        // One message each way, so both directions of the relay have run once.
        ws.send(Message::text("hi")).await.unwrap();
        next_data(&mut ws).await.expect("echo");
        held.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = t.rss_kib()?;
    drop(held);
    Some(after.saturating_sub(before) as f64 / 1024.0 * (1000.0 / IDLE_CONNECTIONS as f64))
}

async fn bench(o: Options) {
    let plan = o.plan;
    let run = |phase: &str| o.phases.split(',').any(|p| p.trim() == phase);
    let (_upstream, words) = spawn_role("upstream", &[]);
    let upstream: SocketAddr = words[0].parse().unwrap();
    let (broker, words) =
        spawn_role("broker", &[("UPSTREAM", upstream.to_string()), (WORKERS, o.workers.to_string())]);
    let (broker_addr, connect_url) = (words[0].clone(), words[1].clone());
    let broker_pid = broker.0.id();
    // Exchange the connect URL's ticket for the session cookie, as a browser does.
    let http =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let exchange = http.get(&connect_url).send().await.expect("the gateway answers");
    assert_eq!(exchange.status(), reqwest::StatusCode::SEE_OTHER, "ticket exchange");
    let cookie = exchange.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let session_path = exchange.headers()["location"].to_str().unwrap().to_owned();

    let mut targets = vec![Target {
        name: "direct",
        url: format!("ws://{upstream}/desktop"),
        origin: None,
        cookie: None,
        pids: Box::new(Vec::new),
    }];
    let nginx = start_nginx(upstream, o.workers, o.nginx_buffer.as_deref());
    let nginx_note = match &nginx {
        Ok(n) => {
            let master = n.master.id();
            targets.push(Target {
                name: "nginx",
                url: format!("ws://127.0.0.1:{}/desktop", n.port),
                origin: None,
                cookie: None,
                // The workers hold the connections (the master only supervises).
                pids: Box::new(move || children(master)),
            });
            nginx_version()
        }
        Err(why) => {
            eprintln!("nginx column skipped: {why}");
            format!("skipped: {why}")
        }
    };
    targets.push(Target {
        name: "cadbroker",
        url: format!("ws://{broker_addr}{session_path}desktop"),
        origin: Some(format!("http://{broker_addr}")),
        cookie: Some(cookie),
        pids: Box::new(move || vec![broker_pid]),
    });
    let wanted = |name: &str| o.targets.split(',').any(|t| t.trim() == name);
    // Direct stays first: the other rows are compared with it.
    let targets: Vec<Arc<Target>> =
        targets.into_iter().filter(|t| t.name == "direct" || wanted(t.name)).map(Arc::new).collect();
    let n = targets.len();
    let mut rows = vec![Samples::default(); n];

    let nginx_pid = nginx.as_ref().map_or(0, |n| n.master.id());
    eprintln!("broker pid {broker_pid}, nginx master pid {nginx_pid}, {} worker(s) each", o.workers);
    for round in 0..plan.rounds {
        // Each round runs the targets in another order, so slow spells hit them alike.
        let order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        eprintln!("round {}/{} …", round + 1, plan.rounds);
        if run("latency") {
            let mut got = vec![(f64::NAN, f64::NAN, None); n];
            for &i in &order {
                got[i] = latency(&targets[i], plan).await;
            }
            for (row, (p50, p99, cpu)) in rows.iter_mut().zip(&got) {
                row.echo_cpu_us.extend(*cpu);
                row.p50_us.push(*p50);
                row.p99_us.push(*p99);
                row.added_p50_us.push(p50 - got[0].0);
                row.added_p99_us.push(p99 - got[0].1);
            }
        }
        if run("throughput") {
            for &i in &order {
                let rate = throughput(&targets[i], plan).await;
                rows[i].mb_per_s.push(rate);
            }
        }
        if run("connect") {
            for &i in &order {
                let (rate, errors, cpu) = connects(&targets[i], plan).await;
                rows[i].connects_per_s.push(rate);
                rows[i].connect_errors += errors;
                rows[i].connect_cpu_us.extend(cpu);
                // Let sockets in TIME_WAIT and closing tunnels settle between targets.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    if run("idle") {
        eprintln!("idle connections …");
        for (t, row) in targets.iter().zip(rows.iter_mut()) {
            row.idle_mib_per_1000 = idle_memory(t).await;
        }
    }
    report(&targets, &rows, &nginx_note, &o);
    drop(nginx);
    drop(broker);
}

fn report(targets: &[Arc<Target>], rows: &[Samples], nginx: &str, o: &Options) {
    println!("\n## Gateway benchmark{}\n", if o.quick { " (quick)" } else { "" });
    println!(
        "nginx: {nginx}; cores: {}; proxy workers: {} (nginx worker_processes, broker tokio worker threads); \
         nginx proxy_buffer_size: {}; rounds: {}; per round: {} echo messages of 64 B (at most {:?}), \
         {} frames of 64 KiB, {:?} of new connections ({} at a time)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.workers,
        o.nginx_buffer.as_deref().unwrap_or("stock (one page)"),
        o.plan.rounds,
        o.plan.latency_messages,
        o.plan.latency_time,
        o.plan.stream_frames,
        o.plan.connect_time,
        o.plan.connect_concurrency,
    );
    println!("Medians over the rounds, (min–max) across rounds.\n");
    println!(
        "| path | RTT p50 µs | RTT p99 µs | added p50 µs | added p99 µs | proxy CPU µs per echo | 64 KiB stream MB/s | new WebSockets/s | proxy CPU µs per connection | MiB per 1,000 idle |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (t, r) in targets.iter().zip(rows) {
        let direct = t.name == "direct";
        let added = |v: &[f64]| if direct { "–".to_owned() } else { cell(v, 1) };
        let errors =
            if r.connect_errors > 0 { format!(" ({} errors)", r.connect_errors) } else { String::new() };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {}{errors} | {} | {} |",
            t.name,
            cell(&r.p50_us, 1),
            cell(&r.p99_us, 1),
            added(&r.added_p50_us),
            added(&r.added_p99_us),
            cell(&r.echo_cpu_us, 1),
            cell(&r.mb_per_s, 0),
            cell(&r.connects_per_s, 0),
            cell(&r.connect_cpu_us, 0),
            r.idle_mib_per_1000.map_or("–".to_owned(), |m| format!("{m:.1}")),
        );
    }
    let find = |name: &str| targets.iter().position(|t| t.name == name).map(|i| &rows[i]);
    if let (Some(gw), nginx) = (find("cadbroker"), find("nginx")) {
        println!();
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let rounds_won = |a: &[f64], b: &[f64], better: fn(f64, f64) -> bool| {
            let won = a.iter().zip(b).filter(|(x, y)| better(**x, **y)).count();
            format!("cadbroker at least as good in {won} of {} rounds", a.len().min(b.len()))
        };
        if let Some(ng) = nginx {
            let (added_gw, added_ng) = (median(&gw.added_p50_us), median(&ng.added_p50_us));
            // Judged on the rounds' paired differences: both proxies of a round ran minutes
            // apart at most, so a noisy spell shifts both, and the pair cancels it.
            let paired: Vec<f64> = gw.added_p50_us.iter().zip(&ng.added_p50_us).map(|(a, b)| a - b).collect();
            println!(
                "- latency added (p50) {added_gw:.1} µs vs nginx {added_ng:.1} µs; p99 {:.1} vs {:.1}; \
                 per round cadbroker − nginx: median {:+.1} µs: {} ({})",
                median(&gw.added_p99_us),
                median(&ng.added_p99_us),
                median(&paired),
                verdict(median(&paired) <= 0.0),
                rounds_won(&gw.added_p50_us, &ng.added_p50_us, |a, b| a <= b),
            );
            let (mb_gw, mb_ng) = (median(&gw.mb_per_s), median(&ng.mb_per_s));
            println!(
                "- throughput {mb_gw:.0} MB/s vs nginx {mb_ng:.0} MB/s: {} ({})",
                verdict(mb_gw >= mb_ng),
                rounds_won(&gw.mb_per_s, &ng.mb_per_s, |a, b| a >= b),
            );
        } else {
            println!("- nginx comparison not available");
        }
        let cps = median(&gw.connects_per_s);
        println!("- new connections {cps:.0}/s (target 3,000/s): {}", verdict(cps >= 3000.0));
    }
}
