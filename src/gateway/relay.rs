//! The WebSocket byte relay on its own event loops: each relay thread waits on one epoll set
//! (mio) for the TCP streams of its tunnels (browser side and desktop side) and copies bytes
//! between them, with no async task, lock or allocation per message. This is the loop a
//! desktop's every frame goes through, so it is kept as lean as nginx's worker loop: one
//! readiness wait, one read, one write.
//!
//! - Each thread owns one scratch buffer (64 KiB). A read goes into it and is written on at
//!   once; only what the receiver could not take yet is copied into the tunnel's own pending
//!   buffer, and the side it came from is not read again until that is written (a slow reader
//!   holds the sender back through TCP, nothing piles up in memory). An idle tunnel holds no
//!   buffer.
//! - Readiness is edge-triggered; a short read means the socket was drained, so it is not read
//!   again to hear "would block" (new data raises a new edge). A busy tunnel yields after a
//!   few reads so that one desktop streaming cannot starve the others on its thread.
//! - The first side to close or fail ends the tunnel (as nginx does: WebSocket peers close TCP
//!   only after the closing handshake). A tunnel told to close (the session ended, the broker
//!   stops) sends each side a close frame if its stream is between frames, half-closes it,
//!   reads what is left until the peer closes or [`CLOSE_TIMEOUT`] passes.
//!
//! Tunnels are spread over the threads round-robin; there are as many threads as the tokio
//! runtime has workers, started on first use, and they end when the gateway is dropped.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::Shutdown,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use hyper::body::Bytes;
use mio::{Events, Interest, Poll, Token, Waker, net::TcpStream};
use tokio::sync::oneshot;

use super::{
    activity::Activity,
    websocket::{CLOSE_TIMEOUT, FrameTracker, GOING_AWAY, close_frame, mask},
};

/// The scratch buffer's size: the most read from a socket at once.
const SCRATCH: usize = 64 * 1024;
/// Reads per side before a busy tunnel lets the thread serve others.
const READS_PER_TURN: usize = 16;
const WAKER: Token = Token(usize::MAX);

/// A WebSocket after both handshakes: the two streams and what each side is owed first.
pub(crate) struct Tunnel {
    /// The browser's connection.
    pub client: std::net::TcpStream,
    /// The workstation's connection.
    pub upstream: std::net::TcpStream,
    /// What the browser sent right after its upgrade request (read by the HTTP server).
    pub to_upstream_first: Bytes,
    /// What the workstation sent right after its 101 (a server greeting).
    pub to_client_first: Bytes,
    /// The session's activity, touched on traffic.
    pub activity: Arc<Activity>,
}

/// A tunnel handed to a relay thread. Dropped before it is over (its supervisor was dropped,
/// as when the runtime shuts down), it closes the tunnel (1001, going away).
pub(crate) struct Running {
    id: u64,
    thread: Arc<Thread>,
    finished: oneshot::Receiver<()>,
    over: bool,
}

impl Running {
    /// Resolves when the tunnel is over (both streams closed).
    pub(crate) async fn finished(&mut self) {
        let _ = (&mut self.finished).await;
        self.over = true;
    }

    /// Closes the tunnel: close frames with `code` and `reason` to the browser (and 1001 to the
    /// workstation) where the stream is between frames; [`Running::finished`] resolves when it
    /// is done.
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        self.thread.send(Command::Close { id: self.id, code, reason });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.over {
            self.close(GOING_AWAY, "going away");
        }
    }
}

/// The relay threads of one gateway.
#[derive(Default)]
pub(crate) struct Relays {
    threads: Mutex<Vec<Arc<Thread>>>,
    next: AtomicUsize,
    ids: AtomicU64,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").finish_non_exhaustive()
    }
}

impl Relays {
    /// Hands `tunnel` to a relay thread.
    pub(crate) fn start(&self, tunnel: Tunnel) -> io::Result<Running> {
        let thread = self.pick()?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (done, finished) = oneshot::channel();
        thread.send(Command::Open { id, tunnel: Box::new(tunnel), done });
        Ok(Running { id, thread, finished, over: false })
    }

    fn pick(&self) -> io::Result<Arc<Thread>> {
        let want = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers()).max(1);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.next.fetch_add(1, Ordering::Relaxed) % want;
        while threads.len() <= n {
            let index = threads.len();
            threads.push(Arc::new(Thread::spawn(index)?));
        }
        // A thread that died (a bug) is replaced, so that every n-th WebSocket does not fail.
        if !threads[n].alive.load(Ordering::Relaxed) {
            tracing::error!(thread = n, "gateway: a relay thread ended; starting a new one");
            threads[n] = Arc::new(Thread::spawn(n)?);
        }
        Ok(threads[n].clone())
    }
}

/// One relay thread, seen from outside: its inbox and the waker of its poll.
struct Thread {
    inbox: Option<mpsc::Sender<Command>>,
    waker: Waker,
    /// Cleared when the thread's loop ends.
    alive: Arc<AtomicBool>,
}

enum Command {
    Open {
        id: u64,
        tunnel: Box<Tunnel>,
        done: oneshot::Sender<()>,
    },
    Close {
        id: u64,
        code: u16,
        reason: &'static str,
    },
    /// Ends the loop as a failure would (for the test that a dead thread is replaced).
    #[cfg(test)]
    Die,
}

impl Thread {
    fn spawn(index: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (inbox, commands) = mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let ended = Ended(alive.clone());
        std::thread::Builder::new()
            .name(format!("cadbroker-relay-{index}"))
            .spawn(move || Loop::new(ended, poll, commands).run())?;
        Ok(Self { inbox: Some(inbox), waker, alive })
    }

    fn send(&self, command: Command) {
        if let Some(inbox) = &self.inbox {
            // A send fails only when the thread is gone; dropping the command then drops the
            // tunnel's `done`, which ends its supervisor.
            let _ = inbox.send(command);
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "gateway: could not wake a relay thread");
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        // Closing the inbox and waking the loop ends the thread.
        self.inbox.take();
        let _ = self.waker.wake();
    }
}

/// Clears the flag when dropped: when the loop returns or unwinds.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// One side of a tunnel: its stream and what is known of its readiness.
struct Side {
    stream: TcpStream,
    readable: bool,
    writable: bool,
    /// The peer closed its end (or the stream failed): reads are due until they say so.
    read_closed: bool,
    /// While closing: our end is shut; the peer's end has been read to its close; both.
    shut: bool,
    eof: bool,
    done: bool,
}

impl Side {
    fn new(stream: TcpStream) -> Self {
        // Assume ready: an operation that would block clears it, and the edge arrives later.
        Self {
            stream,
            readable: true,
            writable: true,
            read_closed: false,
            shut: false,
            eof: false,
            done: false,
        }
    }
}

/// Bytes read from one side that the other side has not taken yet, and that stream's framing.
#[derive(Default)]
struct Flow {
    pending: Vec<u8>,
    offset: usize,
    frames: FrameTracker,
}

impl Flow {
    fn owing(pending: Vec<u8>) -> Self {
        Self { pending, ..Self::default() }
    }

    fn is_empty(&self) -> bool {
        self.offset >= self.pending.len()
    }
}

struct Relay {
    client: Side,
    upstream: Side,
    /// Browser → workstation.
    up: Flow,
    /// Workstation → browser.
    down: Flow,
    activity: Arc<Activity>,
    done: oneshot::Sender<()>,
    /// Set once the tunnel is closing: until when it may take.
    closing: Option<Instant>,
}

/// What driving a tunnel left it as.
#[derive(PartialEq, Eq)]
enum Turn {
    /// Waiting for readiness.
    Waiting,
    /// Still has work, yielded to other tunnels.
    Busy,
    /// Over: both streams are to be closed.
    Over,
}

struct Loop {
    /// First, so that it is dropped first: the thread counts as dead before its tunnels end.
    _ended: Ended,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    relays: HashMap<u64, Relay>,
    scratch: Box<[u8]>,
    /// Tunnels to drive in the next turn without waiting for readiness.
    busy: Vec<u64>,
    /// Closing tunnels and until when they may take.
    closing: Vec<(Instant, u64)>,
}

impl Loop {
    fn new(ended: Ended, poll: Poll, commands: mpsc::Receiver<Command>) -> Self {
        Self {
            _ended: ended,
            poll,
            commands,
            relays: HashMap::new(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            busy: Vec::new(),
            closing: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut due = Vec::new();
        loop {
            let timeout = if self.busy.is_empty() { self.next_deadline() } else { Some(Duration::ZERO) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "gateway: relay thread cannot wait for its sockets");
                return;
            }
            due.clear();
            due.append(&mut self.busy);
            for event in &events {
                if event.token() == WAKER {
                    if !self.take_commands(&mut due) {
                        return;
                    }
                    continue;
                }
                let id = (event.token().0 >> 1) as u64;
                let Some(relay) = self.relays.get_mut(&id) else { continue };
                let side = if event.token().0 & 1 == 0 { &mut relay.client } else { &mut relay.upstream };
                let failed = event.is_error();
                side.readable |= event.is_readable() || failed;
                side.writable |= event.is_writable() || failed;
                side.read_closed |= event.is_read_closed() || failed;
                due.push(id);
            }
            due.sort_unstable();
            due.dedup();
            for &id in &due {
                self.drive(id);
            }
            self.expire();
        }
    }

    /// Takes queued commands; `false` when the gateway is gone.
    fn take_commands(&mut self, due: &mut Vec<u64>) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Open { id, tunnel, done }) => {
                    if self.open(id, *tunnel, done) {
                        due.push(id);
                    }
                }
                Ok(Command::Close { id, code, reason }) => {
                    if let Some(relay) = self.relays.get_mut(&id) {
                        if let Some(deadline) = relay.begin_close(code, reason) {
                            self.closing.push((deadline, id));
                        }
                        due.push(id);
                    }
                }
                #[cfg(test)]
                Ok(Command::Die) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Registers a tunnel's streams; `false` (and the tunnel dropped, which ends its
    /// supervisor) when they cannot be watched.
    fn open(&mut self, id: u64, tunnel: Tunnel, done: oneshot::Sender<()>) -> bool {
        let Tunnel { client, upstream, to_upstream_first, to_client_first, activity } = tunnel;
        if let Err(e) = client.set_nonblocking(true).and_then(|()| upstream.set_nonblocking(true)) {
            tracing::warn!(error = %e, "gateway: a WebSocket could not be relayed");
            return false;
        }
        let mut client = TcpStream::from_std(client);
        let mut upstream = TcpStream::from_std(upstream);
        let token = usize::try_from(id).unwrap_or(usize::MAX >> 2) << 1;
        let registry = self.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = registry
            .register(&mut client, Token(token), interest)
            .and_then(|()| registry.register(&mut upstream, Token(token | 1), interest));
        if let Err(e) = registered {
            tracing::warn!(error = %e, "gateway: a WebSocket could not be relayed");
            return false;
        }
        let relay = Relay {
            client: Side::new(client),
            upstream: Side::new(upstream),
            up: Flow::owing(to_upstream_first.to_vec()),
            down: Flow::owing(to_client_first.to_vec()),
            activity,
            done,
            closing: None,
        };
        self.relays.insert(id, relay);
        true
    }

    fn drive(&mut self, id: u64) {
        let Some(relay) = self.relays.get_mut(&id) else { return };
        let turn = if relay.closing.is_some() {
            relay.close_turn(&mut self.scratch)
        } else {
            relay.turn(&mut self.scratch)
        };
        match turn {
            Turn::Waiting => {}
            Turn::Busy => self.busy.push(id),
            Turn::Over => self.finish(id),
        }
    }

    fn finish(&mut self, id: u64) {
        if let Some(mut relay) = self.relays.remove(&id) {
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut relay.client.stream);
            let _ = registry.deregister(&mut relay.upstream.stream);
            let _ = relay.done.send(());
            if relay.closing.is_some() {
                self.closing.retain(|(_, closing)| *closing != id);
            }
        }
    }

    fn next_deadline(&self) -> Option<Duration> {
        if self.closing.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.closing.iter().map(|(at, _)| *at).min().map(|at| at.saturating_duration_since(now))
    }

    /// Ends tunnels whose closing took too long.
    fn expire(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let now = Instant::now();
        let late: Vec<u64> = self.closing.iter().filter(|(at, _)| *at <= now).map(|(_, id)| *id).collect();
        for id in late {
            self.finish(id);
        }
    }
}

impl Relay {
    /// Relays both ways until neither side can go on without waiting.
    fn turn(&mut self, scratch: &mut [u8]) -> Turn {
        let up = pump(&mut self.client, &mut self.upstream, &mut self.up, scratch, &self.activity);
        let down = pump(&mut self.upstream, &mut self.client, &mut self.down, scratch, &self.activity);
        match (up, down) {
            (Err(_), _) | (_, Err(_)) | (Ok(Turn::Over), _) | (_, Ok(Turn::Over)) => Turn::Over,
            (Ok(Turn::Busy), _) | (_, Ok(Turn::Busy)) => Turn::Busy,
            _ => Turn::Waiting,
        }
    }

    /// Starts closing: what was not relayed yet is dropped; each side gets a close frame if its
    /// stream is between frames.
    /// Returns the deadline when closing starts now.
    fn begin_close(&mut self, code: u16, reason: &str) -> Option<Instant> {
        if self.closing.is_some() {
            return None;
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        self.closing = Some(deadline);
        tracing::debug!(code, reason, "gateway: closing a WebSocket");
        let to_client = self.down.frames.at_boundary().then(|| close_frame(code, reason, None));
        let to_upstream = self.up.frames.at_boundary().then(|| close_frame(GOING_AWAY, "", Some(mask())));
        self.down = Flow::owing(to_client.unwrap_or_default());
        self.up = Flow::owing(to_upstream.unwrap_or_default());
        Some(deadline)
    }

    /// While closing: writes the close frames, half-closes, reads (and drops) until the peers close.
    fn close_turn(&mut self, scratch: &mut [u8]) -> Turn {
        let client = close_side(&mut self.client, &mut self.down, scratch);
        let upstream = close_side(&mut self.upstream, &mut self.up, scratch);
        if self.client.done && self.upstream.done {
            Turn::Over
        } else if client == Turn::Busy || upstream == Turn::Busy {
            Turn::Busy
        } else {
            Turn::Waiting
        }
    }
}

/// Copies from `from` to `to`: first what `to` still owes, then fresh reads, until one of
/// them would block, `from` ends, or the turn's reads are spent.
fn pump(
    from: &mut Side,
    to: &mut Side,
    flow: &mut Flow,
    scratch: &mut [u8],
    activity: &Activity,
) -> io::Result<Turn> {
    if !write_pending(to, flow)? {
        return Ok(Turn::Waiting);
    }
    for _ in 0..READS_PER_TURN {
        if !from.readable {
            return Ok(Turn::Waiting);
        }
        let n = match (&from.stream).read(scratch) {
            Ok(0) => return Ok(Turn::Over),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                from.readable = false;
                return Ok(Turn::Waiting);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // A short read drained the socket; unless the peer has closed (its end still has to
        // be read as such), the next edge says when there is more.
        if n < scratch.len() && !from.read_closed {
            from.readable = false;
        }
        activity.touch();
        let written = write_some(to, &scratch[..n])?;
        flow.frames.feed(&scratch[..written]);
        if written < n {
            flow.pending.clear();
            flow.pending.extend_from_slice(&scratch[written..n]);
            flow.offset = 0;
            return Ok(Turn::Waiting);
        }
    }
    Ok(if from.readable { Turn::Busy } else { Turn::Waiting })
}

/// Writes what `flow` holds to `to`; `true` when all of it went (and the buffer is released).
fn write_pending(to: &mut Side, flow: &mut Flow) -> io::Result<bool> {
    if flow.is_empty() {
        return Ok(true);
    }
    let written = write_some(to, &flow.pending[flow.offset..])?;
    flow.frames.feed(&flow.pending[flow.offset..flow.offset + written]);
    flow.offset += written;
    if flow.is_empty() {
        flow.pending = Vec::new();
        flow.offset = 0;
        return Ok(true);
    }
    Ok(false)
}

/// Writes as much of `data` as `to` takes without blocking.
fn write_some(to: &mut Side, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() && to.writable {
        match (&to.stream).write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// One side's part of closing: its close frame out, our end shut, its end read to the close.
fn close_side(side: &mut Side, owed: &mut Flow, scratch: &mut [u8]) -> Turn {
    if side.done {
        return Turn::Waiting;
    }
    match write_pending(side, owed) {
        Ok(true) if !side.shut => {
            let _ = side.stream.shutdown(Shutdown::Write);
            side.shut = true;
        }
        Ok(_) => {}
        Err(_) => {
            side.done = true;
            return Turn::Waiting;
        }
    }
    for _ in 0..READS_PER_TURN {
        if side.eof || !side.readable {
            side.done = side.eof && side.shut;
            return Turn::Waiting;
        }
        match (&side.stream).read(scratch) {
            Ok(0) => side.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => side.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                side.done = true;
                return Turn::Waiting;
            }
        }
    }
    Turn::Busy
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::{domain::SessionId, gateway::activity::ActivityHub};

    /// Two connected loopback sockets: (the peer's end, the relay's end).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (peer, ours)
    }

    struct Setup {
        browser: TcpStream,
        desktop: TcpStream,
        running: Running,
        _relays: Relays,
    }

    fn setup(to_upstream_first: &'static [u8], to_client_first: &'static [u8]) -> Setup {
        let relays = Relays::default();
        let (browser, desktop, running) = open(&relays, to_upstream_first, to_client_first);
        Setup { browser, desktop, running, _relays: relays }
    }

    /// A tunnel on `relays` between a browser's and a desktop's ends: (browser, desktop, it).
    fn open(
        relays: &Relays,
        to_upstream_first: &'static [u8],
        to_client_first: &'static [u8],
    ) -> (TcpStream, TcpStream, Running) {
        let (browser, client) = pair();
        let (desktop, upstream) = pair();
        let (hub, _queue) = ActivityHub::new(Duration::from_secs(60));
        let activity = hub.session(&SessionId("s1".into()));
        let tunnel = Tunnel {
            client,
            upstream,
            to_upstream_first: Bytes::from_static(to_upstream_first),
            to_client_first: Bytes::from_static(to_client_first),
            activity,
        };
        (browser, desktop, relays.start(tunnel).unwrap())
    }

    fn read_n(from: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        from.read_exact(&mut buf).unwrap();
        buf
    }

    fn read_to_end(from: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        from.read_to_end(&mut buf).unwrap();
        buf
    }

    async fn finished_within(mut running: Running, limit: Duration) {
        tokio::time::timeout(limit, running.finished()).await.expect("the tunnel ends");
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_first_bytes_first_and_the_first_close_ends_the_tunnel() {
        let Setup { mut browser, mut desktop, running, _relays } = setup(b"early", b"greeting");
        assert_eq!(read_n(&mut browser, 8), b"greeting");
        assert_eq!(read_n(&mut desktop, 5), b"early");
        // More than the scratch buffer and the socket buffers hold: relayed in many turns.
        let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let mut writer = browser.try_clone().unwrap();
        let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        assert_eq!(read_n(&mut desktop, big.len()), big);
        writing.join().unwrap();
        desktop.write_all(b"and back").unwrap();
        assert_eq!(read_n(&mut browser, 8), b"and back");
        drop(desktop);
        finished_within(running, Duration::from_secs(5)).await;
        assert!(read_to_end(&mut browser).is_empty(), "the browser's side is closed too");
    }

    #[tokio::test]
    async fn a_relay_thread_that_died_is_replaced_for_the_next_tunnel() {
        let Setup { mut browser, desktop, running, _relays: relays } = setup(b"", b"");
        running.thread.send(Command::Die);
        finished_within(running, Duration::from_secs(5)).await;
        assert!(read_to_end(&mut browser).is_empty(), "its tunnels are closed");
        drop(desktop);
        // One worker, so one thread: the next tunnel goes where the dead one was.
        let (mut browser, mut desktop, _running) = open(&relays, b"", b"");
        browser.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut desktop, 4), b"ping");
        desktop.write_all(b"pong").unwrap();
        assert_eq!(read_n(&mut browser, 4), b"pong");
    }

    #[tokio::test]
    async fn a_tunnel_whose_supervisor_is_dropped_is_closed() {
        let Setup { mut browser, mut desktop, running, _relays } = setup(b"", b"");
        drop(running);
        assert_eq!(read_to_end(&mut browser), close_frame(GOING_AWAY, "going away", None));
        assert_eq!(read_to_end(&mut desktop)[0], 0x88);
    }

    #[tokio::test]
    async fn closing_sends_close_frames_between_frames_and_half_closes() {
        let Setup { mut browser, mut desktop, running, _relays } = setup(b"", b"");
        // One whole frame each way: both streams are between frames.
        browser.write_all(&[0x82, 0x82, 1, 2, 3, 4, 7 ^ 1, 8 ^ 2]).unwrap();
        assert_eq!(read_n(&mut desktop, 8)[0], 0x82);
        desktop.write_all(&[0x82, 2, 7, 8]).unwrap();
        assert_eq!(read_n(&mut browser, 4), [0x82, 2, 7, 8]);
        running.close(1000, "session ended");
        assert_eq!(read_to_end(&mut browser), close_frame(1000, "session ended", None));
        let to_desktop = read_to_end(&mut desktop);
        assert_eq!(&to_desktop[..2], [0x88, 0x82], "a masked close frame, 2 bytes of payload");
        assert_eq!(to_desktop.len(), 8);
        drop((browser, desktop));
        finished_within(running, Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_gets_no_close_frame_and_peers_that_never_close_are_left() {
        let Setup { mut browser, mut desktop, running, _relays } = setup(b"", b"");
        // The desktop announces 100 bytes and sends 10: the browser's stream is inside a frame.
        desktop.write_all(&[0x82, 100]).unwrap();
        desktop.write_all(&[9; 10]).unwrap();
        assert_eq!(read_n(&mut browser, 12).len(), 12);
        running.close(1000, "session ended");
        assert!(read_to_end(&mut browser).is_empty(), "only the end of the stream");
        assert_eq!(read_to_end(&mut desktop)[0], 0x88, "the desktop is between frames");
        // Neither peer closes its end: the tunnel gives up after the close timeout.
        let started = Instant::now();
        finished_within(running, Duration::from_secs(5)).await;
        assert!(started.elapsed() < CLOSE_TIMEOUT + Duration::from_secs(1));
        drop((browser, desktop));
    }
}
