//! The accept loop of the broker's listeners: HTTP/1.1 connections served by hyper, with
//! upgrades, TCP_NODELAY, and graceful shutdown (no new connections once shutdown begins; each
//! open connection finishes the request it is answering, then closes).
//!
//! Written out rather than `axum::serve` so that a connection's I/O is the plain
//! `TokioIo<TcpStream>`: an upgraded connection (a desktop WebSocket through the gateway) can
//! then be taken back as the raw TCP stream and relayed without any HTTP layer in the way.
//! Browsers speak HTTP/1.1 to a plain-text listener (HTTP/2 needs TLS, which a fronting load
//! balancer terminates), so the listener serves HTTP/1.1 only.

use std::{io, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;

/// How long a client may take to send a request's head (also how long an idle keep-alive
/// connection stays open): a client that stalls mid-head must not hold a connection, nor
/// graceful shutdown, forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after an accept error that is not about one connection (such as too many open files),
/// so a full file table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown`, then waits for open connections to finish
/// their current request. Upgraded connections are handed over and no longer waited for.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) {
    serve_with(listener, router, shutdown, HEADER_READ_TIMEOUT).await;
}

/// [`serve`] with another header read timeout.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    mut shutdown: Shutdown,
    header_read_timeout: Duration,
) {
    let connections = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        connections.spawn(serve_connection(tcp, router.clone(), shutdown.clone(), header_read_timeout));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    mut shutdown: Shutdown,
    header_read_timeout: Duration,
) {
    // No Nagle delay: a desktop stream through the gateway is many small writes, and a small
    // frame must not wait for the previous one's ACK. nginx does the same on proxied WebSockets.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
    }
    let service = TowerToHyperService::new(router);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Errors that concern only the connection being accepted (it was reset before we took it).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::shutdown;

    async fn start(
        timeout: Duration,
    ) -> (std::net::SocketAddr, shutdown::Trigger, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let router = Router::new().route("/", get(|| async { "hello" }));
        let server = tokio::spawn(serve_with(listener, router, shutdown, timeout));
        (addr, trigger, server)
    }

    async fn read_all(tcp: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_client_stalling_mid_head_is_dropped_and_does_not_hold_shutdown() {
        let (addr, trigger, server) = start(Duration::from_millis(300)).await;
        let mut fine = TcpStream::connect(addr).await.unwrap();
        fine.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        assert!(read_all(&mut fine).await.ends_with("hello"));
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let started = Instant::now();
        let answer = read_all(&mut stalled).await;
        assert!(!answer.contains("hello"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "the connection was closed");
        // Shutdown with another stalled client: it is not waited for beyond the timeout.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"GET / HT").await.unwrap();
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_then_stops_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(started_tx)));
        let router = Router::new().route(
            "/slow",
            get(move || {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }
            }),
        );
        let server = tokio::spawn(serve(listener, router, shutdown));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        started_rx.await.unwrap();
        trigger.fire();
        assert!(read_all(&mut tcp).await.ends_with("done"), "the answer in flight is complete");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
