//! The `/connect/{id}/…` handler: parses the path, authorises (one code path for HTTP and
//! WebSocket), exchanges a ticket for the session cookie, and forwards plain HTTP to the
//! session's workstation with bodies streamed both ways (never buffered whole; hyper only polls
//! the upstream body when the client can take more, so a slow client slows the desktop, not
//! the broker's memory). WebSocket upgrades continue in `websocket`.
//!
//! What the workstation sees: the path below `/connect/{id}`, the query without `ticket`, the
//! request headers without hop-by-hop headers and without the gateway cookie, plus
//! `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-Prefix`. What the client sees of
//! the workstation: its answer without hop-by-hop headers, without any attempt to set the
//! gateway cookie, with `Location` rewritten under `/connect/{id}`.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header},
    response::{IntoResponse, Response},
};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio_util::sync::CancellationToken;

use super::{
    Gateway,
    access::{self, Access, Via},
    cookie,
    registry::ConnectionGuard,
    websocket,
};
use crate::{
    domain::{Endpoint, SessionId},
    http::error::ApiError,
};

/// Time to open a TCP connection to a workstation.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest session id accepted in a path (a Kubernetes object name is at most 253).
const MAX_SESSION_ID: usize = 253;

/// The pooled HTTP/1.1 client to workstations.
pub type HttpClient = Client<HttpConnector, Body>;

/// A client with short connect timeouts, no Nagle delay and a small idle pool per workstation.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(16)
        .build(connector)
}

/// Every request under `/connect/`.
pub async fn handle(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    match serve(gateway, req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn serve(gateway: Arc<Gateway>, req: Request) -> Result<Response, ApiError> {
    let (session, rest) = split_path(req.uri().path())?;
    let (ticket, query) = split_ticket(req.uri().query());
    if rest.is_empty() {
        // `/connect/{id}` → `/connect/{id}/`, so relative links and the cookie path match.
        return Ok(redirect(StatusCode::PERMANENT_REDIRECT, &session, "/", req.uri().query()));
    }
    let websocket = websocket::is_upgrade(req.headers());
    if websocket {
        // Before the ticket is spent: a refused origin must not burn the user's ticket.
        access::check_origin(&gateway, req.headers())?;
    }
    // Registered before the check, so an end between the check and now is not missed.
    let guard = gateway.registry.register(&session);
    let access = access::authorise(&gateway, &session, ticket, req.headers()).await?;
    if guard.cancel.is_cancelled() {
        return Err(ApiError::from(crate::service::ServiceError::SessionEnded(session)));
    }
    guard.activity.touch();
    let path_and_query = match &query {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    if access.via == Via::Ticket && !websocket {
        let grant =
            gateway.signer.mint_cookie(&session, &access.user, gateway.clock.now(), gateway.cookie_ttl);
        let mut response = redirect(StatusCode::SEE_OTHER, &session, rest, query.as_deref());
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookie::set_cookie(&grant, &session, gateway.cookie_ttl));
        return Ok(response);
    }
    if websocket {
        websocket::forward(gateway, access, guard, req, path_and_query).await
    } else {
        forward(gateway, access, guard, req, path_and_query).await
    }
}

/// `/connect/<id><rest>`: the session id (checked) and the raw rest of the path (empty for
/// `/connect/<id>`, else starting with `/`).
fn split_path(path: &str) -> Result<(SessionId, &str), ApiError> {
    let not_found = || ApiError::not_found("no such route");
    let after = path.strip_prefix("/connect/").ok_or_else(not_found)?;
    let (id, rest) = after.find('/').map_or((after, ""), |i| after.split_at(i));
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if id.is_empty() || id.len() > MAX_SESSION_ID || !id.bytes().all(valid) {
        return Err(not_found());
    }
    Ok((SessionId(id.to_owned()), rest))
}

/// The `ticket` query parameter, and the query without it.
fn split_ticket(query: Option<&str>) -> (Option<&str>, Option<String>) {
    let Some(query) = query else { return (None, None) };
    let mut ticket = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("ticket=") {
            Some(value) if ticket.is_none() => ticket = Some(value),
            Some(_) => {}
            None if pair.is_empty() => {}
            None => rest.push(pair),
        }
    }
    (ticket, (!rest.is_empty()).then(|| rest.join("&")))
}

fn redirect(status: StatusCode, session: &SessionId, rest: &str, query: Option<&str>) -> Response {
    let location = match query {
        Some(q) => format!("/connect/{session}{rest}?{q}"),
        None => format!("/connect/{session}{rest}"),
    };
    let mut response = status.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    // The ticket URL must not linger in caches or leak through Referer.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// 502 for a workstation that does not answer; the cause is logged, never sent.
pub(crate) fn upstream_unavailable(session: &SessionId, cause: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%session, error = %cause, "gateway: the workstation did not answer");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        "The desktop is not answering right now; try again in a moment.",
    )
}

/// `host:port` of a workstation (IPv6 hosts in brackets).
pub(crate) fn authority(endpoint: &Endpoint) -> String {
    if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, those the `Connection` header names, and `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request headers as the workstation gets them.
pub(crate) fn upstream_headers(
    gateway: &Gateway,
    mut headers: HeaderMap,
    session: &SessionId,
    endpoint: &Endpoint,
) -> HeaderMap {
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    cookie::strip_request(&mut headers);
    if let Ok(host) = HeaderValue::from_str(&authority(endpoint)) {
        headers.insert(header::HOST, host);
    }
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), gateway.public_scheme.clone());
    if let Ok(prefix) = HeaderValue::from_str(&format!("/connect/{session}")) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }
    headers
}

/// The workstation's answer headers as the client gets them.
pub(crate) fn downstream_headers(headers: &mut HeaderMap, session: &SessionId, endpoint: &Endpoint) {
    strip_hop_by_hop(headers);
    cookie::strip_response(headers);
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else { return };
    let own = format!("http://{}", authority(endpoint));
    let path = match location.strip_prefix(own.as_str()) {
        Some(path) if path.is_empty() || path.starts_with('/') => Some(path),
        Some(_) => None,
        None if location.starts_with('/') && !location.starts_with("//") => Some(location),
        None => None,
    };
    if let Some(path) = path {
        let path = if path.is_empty() { "/" } else { path };
        if let Ok(value) = HeaderValue::from_str(&format!("/connect/{session}{path}")) {
            headers.insert(header::LOCATION, value);
        }
    }
}

/// Forwards a plain HTTP request and streams the answer back.
async fn forward(
    gateway: Arc<Gateway>,
    access: Access,
    guard: ConnectionGuard,
    req: Request,
    path_and_query: String,
) -> Result<Response, ApiError> {
    let session = guard.session.clone();
    let (parts, body) = req.into_parts();
    let uri: Uri =
        format!("http://{}{path_and_query}", authority(&access.endpoint)).parse().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", "The request path is not valid.")
        })?;
    let mut upstream = axum::http::Request::new(body);
    *upstream.method_mut() = parts.method.clone();
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = upstream_headers(&gateway, parts.headers, &session, &access.endpoint);
    let answer = tokio::select! {
        answer = gateway.client.request(upstream) => answer.map_err(|e| upstream_unavailable(&session, e))?,
        () = guard.cancel.cancelled() => {
            return Err(ApiError::from(crate::service::ServiceError::SessionEnded(session)));
        }
        () = gateway.cut.cancelled() => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "The broker is restarting; try again."));
        }
    };
    let (mut parts, body) = answer.into_parts();
    downstream_headers(&mut parts.headers, &session, &access.endpoint);
    let stopped = stop_signal(&guard.cancel, &gateway.cut);
    Ok(Response::from_parts(parts, Body::new(GuardedBody { inner: body, stopped, guard })))
}

fn stop_signal(
    session: &CancellationToken,
    cut: &CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
    let (session, cut) = (session.clone(), cut.clone());
    Box::pin(async move {
        tokio::select! {
            () = session.cancelled() => {}
            () = cut.cancelled() => {}
        }
    })
}

/// A workstation's answer body, streamed; it keeps its connection registered (so shutdown
/// waits for it and activity counts) and ends abruptly when the session ends or the drain
/// grace runs out.
struct GuardedBody {
    inner: Incoming,
    stopped: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    guard: ConnectionGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the session ended or the broker is stopping".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.guard.activity.touch();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_session_and_keep_the_rest_raw() {
        let (id, rest) = split_path("/connect/abc123/vnc.html").unwrap();
        assert_eq!((id.as_str(), rest), ("abc123", "/vnc.html"));
        assert_eq!(split_path("/connect/abc/").unwrap().1, "/");
        assert_eq!(split_path("/connect/abc").unwrap().1, "");
        assert_eq!(split_path("/connect/abc/a%2Fb?x").unwrap().1, "/a%2Fb?x");
        for bad in ["/connect/", "/connect//x", "/connect/a%20b/", "/other/abc/"] {
            assert!(split_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ticket_is_taken_out_of_the_query() {
        assert_eq!(split_ticket(Some("ticket=t.s")), (Some("t.s"), None));
        assert_eq!(split_ticket(Some("a=1&ticket=t&b=2")), (Some("t"), Some("a=1&b=2".to_owned())));
        assert_eq!(split_ticket(Some("tickets=1")), (None, Some("tickets=1".to_owned())));
        assert_eq!(split_ticket(None), (None, None));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::ACCEPT]);
    }

    #[test]
    fn redirects_of_the_desktop_stay_under_its_prefix() {
        let endpoint = Endpoint { host: "127.0.0.1".into(), port: 6080 };
        let session = SessionId::from("s1");
        for (from, to) in [
            ("/vnc.html", "/connect/s1/vnc.html"),
            ("http://127.0.0.1:6080/a?b", "/connect/s1/a?b"),
            ("http://127.0.0.1:6080", "/connect/s1/"),
            ("https://elsewhere.example/", "https://elsewhere.example/"),
            ("//elsewhere.example/", "//elsewhere.example/"),
            ("relative", "relative"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, HeaderValue::from_str(from).unwrap());
            downstream_headers(&mut headers, &session, &endpoint);
            assert_eq!(headers[header::LOCATION], to, "{from}");
        }
    }
}
