//! API benchmark on the simulated backend: requests per second and p50/p99 latency of session
//! create (a warm claim) and get, at 1, 16 and 64 concurrent clients, over loopback HTTP.
//!
//! Run: `cargo bench --bench api` (add `-- --seconds 10` for longer phases). Client and broker
//! share the machine, so the figures include the load generator's own cost.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cadbroker::{
    app,
    auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
    backend::simulated::NodeGroup,
    config::Config,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Per phase and client, so a phase always ends even on a very fast machine.
const MAX_ITERATIONS_PER_CLIENT: usize = 20_000;

#[derive(Default)]
struct Samples {
    create: Vec<Duration>,
    get: Vec<Duration>,
    /// The broker's own time (its Server-Timing header) for the same requests.
    create_server: Vec<Duration>,
    get_server: Vec<Duration>,
    warm: usize,
    cold: usize,
    errors: usize,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::load(None).expect("built-in config");
    config.backend.kind = cadbroker::config::BackendKind::Simulated;
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.broker.max_sessions_per_user = 2;
    config.backend.simulated.start_delay = Duration::from_millis(0);
    config.backend.simulated.nodes =
        vec![NodeGroup { name: "bench".into(), count: 8, gpus: 64, gpu_model: Some("nvidia-l4".into()) }];
    for issuer in &mut config.auth.issuers {
        issuer.key_file = Some(dir.join("bench-key.pem"));
    }
    let pool = r#"name = "bench"
gpuModel = "nvidia-l4"
capacity = { min = 0, max = 512, warm = 160 }
access = { allAuthenticated = true }"#;
    config.pools = vec![toml::from_str(pool).unwrap()];
    config
}

async fn client_loop(http: reqwest::Client, base: Arc<str>, token: String, until: Instant) -> Samples {
    let mut s = Samples::default();
    for _ in 0..MAX_ITERATIONS_PER_CLIENT {
        if Instant::now() >= until {
            break;
        }
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(&token)
            .json(&json!({"pool": "bench"}))
            .send()
            .await;
        let Ok(resp) = resp else {
            s.errors += 1;
            continue;
        };
        let status = resp.status();
        let server = server_time(&resp);
        let body: Value = resp.json().await.unwrap_or_default();
        let elapsed = started.elapsed();
        match status {
            StatusCode::CREATED => {
                s.warm += 1;
                s.create.push(elapsed);
                s.create_server.extend(server);
            }
            StatusCode::ACCEPTED => s.cold += 1,
            _ => {
                s.errors += 1;
                continue;
            }
        }
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        match http.get(format!("{base}/api/v1/sessions/{id}")).bearer_auth(&token).send().await {
            Ok(r) if r.status() == StatusCode::OK => {
                s.get_server.extend(server_time(&r));
                let _ = r.bytes().await;
                s.get.push(started.elapsed());
            }
            _ => s.errors += 1,
        }
        let _ = http.delete(format!("{base}/api/v1/sessions/{id}")).bearer_auth(&token).send().await;
    }
    s
}

/// The broker's own time from `Server-Timing: app;dur=<ms>`.
fn server_time(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get("server-timing")?.to_str().ok()?;
    let ms: f64 = value.split("dur=").nth(1)?.parse().ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

async fn wait_warm(http: &reqwest::Client, base: &str, token: &str, at_least: u64) {
    for _ in 0..500 {
        let pools: Value = http
            .get(format!("{base}/api/v1/pools"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if pools[0]["availability"]["warm"].as_u64().unwrap_or(0) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 =
        std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let issuer = config.auth.development_issuer().unwrap().clone();
    let key = load_or_create_dev_key(&issuer.effective_key_file()).unwrap();
    let running = app::start(config).await.expect("broker starts");
    let base: Arc<str> = format!("http://{}", running.public_addr).into();
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(128).build().unwrap();
    let mint =
        |user: &str| mint_dev_token(&issuer, &key, &MintRequest::new(user), jiff::Timestamp::now()).unwrap();
    let watcher = mint("watcher");
    println!(
        "cadbroker API benchmark: simulated backend, pool warm buffer 160, {seconds} s per phase, loopback HTTP/1.1"
    );
    println!(
        "client = seen by the client (queueing on the shared cores included); broker = the broker's own time (Server-Timing)"
    );
    println!(
        "{:>8} | {:>18} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6}",
        "clients",
        "op",
        "req/s",
        "client p50",
        "client p99",
        "client max",
        "broker p50",
        "broker p99",
        "samples",
        "warm %"
    );
    for clients in CONCURRENCY {
        wait_warm(&http, &base, &watcher, 150).await;
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                tokio::spawn(client_loop(
                    http.clone(),
                    base.clone(),
                    mint(&format!("bench-{clients}-{i}")),
                    until,
                ))
            })
            .collect();
        let mut all = Samples::default();
        for t in tasks {
            let s = t.await.unwrap();
            all.create.extend(s.create);
            all.get.extend(s.get);
            all.create_server.extend(s.create_server);
            all.get_server.extend(s.get_server);
            all.warm += s.warm;
            all.cold += s.cold;
            all.errors += s.errors;
        }
        let wall = started.elapsed().as_secs_f64();
        let warm_share = 100.0 * all.warm as f64 / (all.warm + all.cold).max(1) as f64;
        let ops = [
            ("create (warm claim)", &mut all.create, &mut all.create_server),
            ("get", &mut all.get, &mut all.get_server),
        ];
        for (op, samples, server) in ops {
            samples.sort();
            server.sort();
            println!(
                "{clients:>8} | {op:>18} | {:>9.0} | {:>10.3} | {:>10.3} | {:>10.3} | {:>10.3} | {:>10.3} | {:>9} | {:>6.1}",
                samples.len() as f64 / wall,
                pct(samples, 0.50),
                pct(samples, 0.99),
                samples.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
                pct(server, 0.50),
                pct(server, 0.99),
                samples.len(),
                warm_share,
            );
        }
        if all.errors > 0 {
            println!("{clients:>8} | errors: {}", all.errors);
        }
    }
    running.stop().await;
}
