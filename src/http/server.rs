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
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;

/// Pause after an accept error that is not about one connection (such as too many open files),
/// so a full file table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown`, then waits for open connections to finish
/// their current request. Upgraded connections are handed over and no longer waited for.
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: Shutdown) {
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
        connections.spawn(serve_connection(tcp, router.clone(), shutdown.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(tcp: TcpStream, router: Router, mut shutdown: Shutdown) {
    // No Nagle delay: a desktop stream through the gateway is many small writes, and a small
    // frame must not wait for the previous one's ACK. nginx does the same on proxied WebSockets.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
    }
    let service = TowerToHyperService::new(router);
    let connection = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades();
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
