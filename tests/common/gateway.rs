//! Gateway test harness: the gateway alone on 127.0.0.1:0 in front of a fake session service
//! (sessions with any owner and endpoint, ended on demand, activity counted), and a real
//! upstream on 127.0.0.1:0 (HTTP routes and WebSocket echoes) standing in for a desktop.
//!
//! Include with `#[path = "common/gateway.rs"] mod gateway;`.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{
        Query, Request, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use cadbroker::{
    clock::SystemClock,
    domain::{Caller, Endpoint, PoolName, PoolSpec, SessionId, SessionPhase, UserId},
    gateway::{
        Gateway, GatewayConfig,
        ticket::{GatewayKey, Signer},
    },
    service::{
        ConnectTarget, CreateSession, Created, PoolView, ServiceError, SessionEvent, SessionService,
        SessionView,
    },
    shutdown::{self, Trigger},
};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::broadcast, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, client::IntoClientRequest},
};

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Sessions the gateway asks about, set up by the test.
pub struct FakeSessions {
    sessions: Mutex<HashMap<SessionId, ConnectTarget>>,
    events: broadcast::Sender<SessionEvent>,
    /// Every `record_activity` call, in order.
    pub touches: Mutex<Vec<(SessionId, Instant)>>,
    /// Every `record_disconnect` call, in order.
    pub disconnects: Mutex<Vec<(SessionId, Instant)>>,
}

impl FakeSessions {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::default(),
            events: broadcast::channel(64).0,
            touches: Mutex::default(),
            disconnects: Mutex::default(),
        })
    }

    /// A Ready session of `user` whose desktop is at `endpoint`.
    pub fn add(&self, id: &str, user: &str, endpoint: SocketAddr) {
        let endpoint = Endpoint { host: endpoint.ip().to_string(), port: endpoint.port() };
        let target =
            ConnectTarget { user: UserId::from(user), phase: SessionPhase::Ready, endpoint: Some(endpoint) };
        self.sessions.lock().unwrap().insert(SessionId::from(id), target);
    }

    /// Ends a session: phase Ending, and an event as the engine would publish it.
    pub fn end(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap();
        let target = sessions.get_mut(&SessionId::from(id)).expect("a known session");
        target.phase = SessionPhase::Ending;
        let view = view(id, &target.user, SessionPhase::Ending);
        let _ = self.events.send(SessionEvent { session: Arc::new(view) });
    }

    /// How many times activity was recorded for `id`.
    pub fn touches_of(&self, id: &str) -> usize {
        self.touches.lock().unwrap().iter().filter(|(s, _)| s.as_str() == id).count()
    }

    /// How many times a disconnect was recorded for `id`.
    pub fn disconnects_of(&self, id: &str) -> usize {
        self.disconnects.lock().unwrap().iter().filter(|(s, _)| s.as_str() == id).count()
    }
}

fn view(id: &str, user: &UserId, phase: SessionPhase) -> SessionView {
    SessionView {
        id: id.to_owned(),
        user: user.to_string(),
        pool: "cad".to_owned(),
        phase,
        queue_position: None,
        estimated_wait_seconds: None,
        requested_at: jiff::Timestamp::now(),
        ready_at: None,
        last_activity: None,
        warning: None,
        ended_at: None,
        end_reason: None,
        connect_url: None,
        workstation: None,
        node: None,
        message: None,
    }
}

fn unused() -> ServiceError {
    ServiceError::Unavailable("not used by gateway tests".into())
}

#[async_trait]
impl SessionService for FakeSessions {
    async fn create(&self, _: &Caller, _: CreateSession) -> Result<Created, ServiceError> {
        Err(unused())
    }
    async fn list(&self, _: &Caller) -> Result<Vec<SessionView>, ServiceError> {
        Err(unused())
    }
    async fn get(&self, _: &Caller, _: &SessionId) -> Result<SessionView, ServiceError> {
        Err(unused())
    }
    async fn end(&self, _: &Caller, _: &SessionId) -> Result<SessionView, ServiceError> {
        Err(unused())
    }
    async fn keepalive(&self, _: &Caller, _: &SessionId) -> Result<SessionView, ServiceError> {
        Err(unused())
    }
    async fn watch(
        &self,
        _: &Caller,
        _: &SessionId,
    ) -> Result<(SessionView, broadcast::Receiver<SessionEvent>), ServiceError> {
        Err(unused())
    }
    async fn pools(&self, _: &Caller) -> Result<Vec<PoolView>, ServiceError> {
        Err(unused())
    }
    async fn put_pool(&self, _: &Caller, _: PoolSpec) -> Result<(PoolView, bool), ServiceError> {
        Err(unused())
    }
    async fn delete_pool(&self, _: &Caller, _: &PoolName) -> Result<(), ServiceError> {
        Err(unused())
    }
    fn ready(&self) -> bool {
        true
    }
    async fn connect_target(&self, id: &SessionId) -> Result<ConnectTarget, ServiceError> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::SessionNotFound(id.clone()))
    }
    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError> {
        self.touches.lock().unwrap().push((id.clone(), Instant::now()));
        Ok(())
    }
    async fn record_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        self.disconnects.lock().unwrap().push((id.clone(), Instant::now()));
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }
}

/// The gateway on its own listener, with its key known to the test.
pub struct GatewayUnderTest {
    pub gateway: Arc<Gateway>,
    pub sessions: Arc<FakeSessions>,
    /// `http://127.0.0.1:<port>`, also the allowed origin.
    pub base: String,
    pub addr: SocketAddr,
    /// Signs with the gateway's key (for hand-made tickets).
    pub signer: Signer,
    pub http: reqwest::Client,
    trigger: Option<Trigger>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl GatewayUnderTest {
    /// Starts a gateway with the default config as changed by `tweak`, served by the broker's
    /// own listener loop (WebSockets go to the relay threads).
    pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = STANDARD.encode(rand_bytes());
        let key_file = dir.path().join("gateway.key");
        std::fs::write(&key_file, &key).unwrap();
        let mut config = GatewayConfig { key_file: Some(key_file), ..GatewayConfig::default() };
        tweak(&mut config);
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = FakeSessions::new();
        let gateway = Gateway::new(&config, addr, sessions.clone(), Arc::new(SystemClock)).unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let router = gateway.router();
        let serve_shutdown = shutdown.clone();
        let server = tokio::spawn(cadbroker::http::server::serve(listener, router, serve_shutdown));
        let runner = tokio::spawn(gateway.clone().run(shutdown));
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            gateway,
            sessions,
            base: format!("http://{addr}"),
            addr,
            signer: Signer::new(GatewayKey::decode(&key).unwrap()),
            http,
            trigger: Some(trigger),
            tasks: vec![server, runner],
            _dir: dir,
        }
    }

    /// A fresh ticket of `user` for `session`.
    pub fn ticket(&self, session: &str, user: &str) -> String {
        let url = self.gateway.links().connect_url(&SessionId::from(session), &UserId::from(user), "/");
        url.split_once("ticket=").unwrap().1.to_owned()
    }

    /// Exchanges a fresh ticket for the session cookie; returns `name=value` for a Cookie header.
    pub async fn cookie(&self, session: &str, user: &str) -> String {
        let url = format!("{}/connect/{session}/?ticket={}", self.base, self.ticket(session, user));
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "ticket exchange");
        cookie_pair(resp.headers())
    }

    /// A WebSocket request to `path` under the session, from the allowed origin, with `cookie`.
    pub fn ws_request(
        &self,
        session: &str,
        path: &str,
        cookie: Option<&str>,
    ) -> tungstenite::handshake::client::Request {
        let url = format!("ws://{}/connect/{session}{path}", self.addr);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(header::ORIGIN, self.base.parse().unwrap());
        if let Some(cookie) = cookie {
            req.headers_mut().insert(header::COOKIE, cookie.parse().unwrap());
        }
        req
    }

    /// Opens a WebSocket to `path` under the session with a fresh cookie.
    pub async fn ws(&self, session: &str, user: &str, path: &str) -> Ws {
        let cookie = self.cookie(session, user).await;
        let (ws, resp) =
            tokio_tungstenite::connect_async(self.ws_request(session, path, Some(&cookie))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws
    }

    /// Begins shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }

    /// Shuts down and waits for the server and the gateway to finish.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.begin_stop();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("gateway stops").unwrap();
        }
        started.elapsed()
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    key
}

/// `name=value` of the gateway cookie in a `Set-Cookie` answer.
pub fn cookie_pair(headers: &HeaderMap) -> String {
    let set = headers.get(header::SET_COOKIE).expect("a Set-Cookie").to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// What the upstream saw and did.
#[derive(Default)]
pub struct UpstreamStats {
    /// Bytes produced by `/stream`.
    pub produced: AtomicU64,
    /// Bytes `/ws-flood` has handed to its WebSocket (each send waits until it is written).
    pub flooded: AtomicU64,
    /// WebSocket upgrades that reached the upstream.
    pub upgrades: AtomicU64,
}

/// A desktop stand-in on 127.0.0.1:0.
pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: Arc<UpstreamStats>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts the upstream: `/headers`, `/stream`, `/slow`, `/upload`, `/redirect`, `/ws`
    /// (echo; text `close:<code>` makes it close), `/ws-greet` (greets, then echoes),
    /// `/ws-flood` (sends 64 KiB binary frames as fast as they are taken, up to 6 GiB).
    pub async fn start() -> Self {
        let stats = Arc::new(UpstreamStats::default());
        let app = Router::new()
            .route("/headers", get(echo_headers))
            .route("/stream", get(stream))
            .route("/slow", get(slow))
            .route("/upload", post(upload))
            .route("/redirect", get(redirect))
            .route(
                "/ws",
                get(|State(stats): State<Arc<UpstreamStats>>, ws: WebSocketUpgrade| async move {
                    stats.upgrades.fetch_add(1, Ordering::Relaxed);
                    ws.on_upgrade(|s| echo(s, None))
                }),
            )
            .route(
                "/ws-flood",
                get(|State(stats): State<Arc<UpstreamStats>>, ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|s| flood(s, stats))
                }),
            )
            .route(
                "/ws-greet",
                get(|ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|s| echo(s, Some("hello from the desktop")))
                }),
            )
            .with_state(stats.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, stats, task }
    }
}

/// An address on loopback where nothing listens.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn echo_headers(req: Request) -> Json<Value> {
    let headers: HashMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    Json(json!({ "uri": req.uri().to_string(), "method": req.method().as_str(), "headers": headers }))
}

#[derive(Deserialize)]
struct StreamParams {
    chunks: u64,
    size: usize,
}

/// `chunks` chunks of `size` bytes (byte `i % 251` at offset `i`), produced as fast as the
/// reader takes them.
async fn stream(State(stats): State<Arc<UpstreamStats>>, Query(p): Query<StreamParams>) -> Response {
    let size = p.size;
    let body = futures::stream::iter(0..p.chunks).map(move |c| {
        stats.produced.fetch_add(size as u64, Ordering::Relaxed);
        let start = c * size as u64;
        let chunk: Vec<u8> = (0..size as u64).map(|i| ((start + i) % 251) as u8).collect();
        Ok::<_, std::io::Error>(Bytes::from(chunk))
    });
    Body::from_stream(body).into_response()
}

/// Five chunks, 100 ms apart.
async fn slow() -> Response {
    let body = futures::stream::iter(0..5u8).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(Bytes::from(vec![b'0' + i]))
    });
    Body::from_stream(body).into_response()
}

/// Counts the streamed request body: `{"bytes": n, "sum": Σ bytes}`.
async fn upload(body: Body) -> Json<Value> {
    let mut stream = body.into_data_stream();
    let (mut bytes, mut sum) = (0u64, 0u64);
    while let Some(Ok(chunk)) = stream.next().await {
        bytes += chunk.len() as u64;
        sum += chunk.iter().map(|b| u64::from(*b)).sum::<u64>();
    }
    Json(json!({ "bytes": bytes, "sum": sum }))
}

async fn redirect() -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, "/landing".parse().unwrap());
    h.append(header::SET_COOKIE, "cadbroker_connect=planted; Path=/".parse().unwrap());
    h.append(header::SET_COOKIE, "desk=1; Path=/".parse().unwrap());
    resp
}

async fn echo(mut socket: WebSocket, greeting: Option<&'static str>) {
    if let Some(text) = greeting
        && socket.send(Message::Text(text.into())).await.is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(t) if t.starts_with("close:") => {
                let code = t["close:".len()..].parse().unwrap_or(4000);
                let frame = CloseFrame { code, reason: "desktop says bye".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                continue;
            }
            Message::Text(_) | Message::Binary(_) => message,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// 64 KiB binary frames, counted once each send (which waits for the socket) completes.
async fn flood(mut socket: WebSocket, stats: Arc<UpstreamStats>) {
    let frame = Bytes::from(vec![0x5a; 64 * 1024]);
    for _ in 0..100_000 {
        if socket.send(Message::Binary(frame.clone())).await.is_err() {
            return;
        }
        stats.flooded.fetch_add(frame.len() as u64, Ordering::Relaxed);
    }
}

/// Sends `message` and returns the next data message (skipping pings and pongs).
pub async fn round_trip(ws: &mut Ws, message: tungstenite::Message) -> tungstenite::Message {
    ws.send(message).await.unwrap();
    next_message(ws).await.expect("an answer")
}

/// The next message that is not a ping or pong, or `None` when the stream ends (5 s limit).
pub async fn next_message(ws: &mut Ws) -> Option<tungstenite::Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("no answer within 5 s") {
            Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The JSON error of a refused WebSocket handshake: status and `error.code`.
pub fn refused(err: tungstenite::Error) -> (StatusCode, String) {
    match err {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("a JSON body");
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}
