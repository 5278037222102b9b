//! The tiny desktop stand-in each simulated workstation serves on its own loopback port, so a
//! connect URL leads somewhere real: a page, and a WebSocket echo at `/websockify` (where
//! noVNC's stream would be), so the gateway has a real WebSocket behind it.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::{Html, Response},
    routing::get,
};
use tokio::net::TcpListener;

/// Binds `127.0.0.1:0` for a page naming the workstation. Returns the address and the future
/// that serves it; dropping the future closes the listener.
pub async fn bind(
    workstation: &str,
    pool: &str,
    node: &str,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let page = Html(render(workstation, pool, node));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/websockify", get(websocket_echo))
        .fallback(move || {
            let page = page.clone();
            async move { page }
        });
    let serve = async move {
        let _ = axum::serve(listener, app).await;
    };
    Ok((addr, serve))
}

/// Echoes every text and binary message back until the client closes.
async fn websocket_echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                // The protocol layer replies to a close; the next `recv` ends the loop.
                Message::Close(_) => continue,
                // Pings are answered by the protocol layer.
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

fn render(workstation: &str, pool: &str, node: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cadbroker workstation {ws}</title></head>\
         <body><h1>Simulated workstation {ws}</h1><p>Pool <b>{pool}</b>, node <b>{node}</b>.</p>\
         <p>This is cadbroker's simulated backend: a real desktop (noVNC) would be served here; \
         <code>websockify</code> beside this page echoes WebSocket messages.</p></body></html>",
        ws = esc(workstation),
        pool = esc(pool),
        node = esc(node),
    )
}
