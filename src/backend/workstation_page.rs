//! The tiny desktop stand-in each simulated workstation serves on its own loopback port, so a
//! connect URL leads somewhere real.

use std::net::SocketAddr;

use axum::{Router, response::Html, routing::get};
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
    let app = Router::new().route("/healthz", get(|| async { "ok" })).fallback(move || {
        let page = page.clone();
        async move { page }
    });
    let serve = async move {
        let _ = axum::serve(listener, app).await;
    };
    Ok((addr, serve))
}

fn render(workstation: &str, pool: &str, node: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cadbroker workstation {ws}</title></head>\
         <body><h1>Simulated workstation {ws}</h1><p>Pool <b>{pool}</b>, node <b>{node}</b>.</p>\
         <p>This is cadbroker's simulated backend: a real desktop (noVNC) would be served here.</p></body></html>",
        ws = esc(workstation),
        pool = esc(pool),
        node = esc(node),
    )
}
