//! WebSocket through the gateway: the (already authorised) upgrade request is forwarded to the
//! workstation over a fresh TCP connection; when it answers 101, the same 101 goes to the
//! client and both connections are joined by a byte relay (STYLE.md pattern 11). No
//! frame is decoded or re-encoded: messages, binary and large frames, pings and close frames
//! pass as they are, so the desktop and the browser run the WebSocket protocol end to end.
//!
//! The relay runs on the gateway's relay threads ([`super::relay`]): the broker's listener
//! ([`crate::http::server`]) hands the upgraded connection over as its TCP stream. A task here
//! supervises each tunnel and closes it when the session ends (close code 1000) or the broker
//! stops (1012, "service restart": reconnect). The frame-boundary tracker and close frames used
//! when closing are defined here.

use std::{io, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use hyper::{body::Bytes, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    Gateway,
    access::Access,
    proxy::{self, CONNECT_TIMEOUT},
    registry::ConnectionGuard,
    relay::Tunnel,
};
use crate::http::error::ApiError;

/// How long the workstation may take to answer the upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing may take (close frames out, peers' close replies in).
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_millis(800);
/// Close code and reason when the session ended (normal closure: do not reconnect).
const SESSION_ENDED: (u16, &str) = (1000, "session ended");
/// Close code and reason when the broker stops (service restart: reconnect).
const BROKER_STOPPING: (u16, &str) = (1012, "broker restarting");
/// Close code towards the workstation when the gateway ends the connection (going away).
pub(crate) const GOING_AWAY: u16 = 1001;

/// Whether the request asks for a WebSocket (`Connection: upgrade` and `Upgrade: websocket`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Forwards an authorised upgrade; on the workstation's 101 answers 101 and starts the relay.
pub async fn forward(
    gateway: Arc<Gateway>,
    access: Access,
    guard: ConnectionGuard,
    mut req: Request,
    path_and_query: String,
) -> Result<Response, ApiError> {
    let session = guard.session.clone();
    let Some(client_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "upgrade_unsupported",
            "WebSocket needs an HTTP/1.1 upgrade request.",
        ));
    };
    let mut headers =
        proxy::upstream_headers(&gateway, std::mem::take(req.headers_mut()), &session, &access.endpoint);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let head = request_head(&path_and_query, &headers);
    let (tcp, answer) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&access, &head))
        .await
        .map_err(|_| proxy::upstream_unavailable(&session, "upgrade timed out"))?
        .map_err(|e| proxy::upstream_unavailable(&session, e))?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = answer.status;
    let mut headers = answer.headers;
    proxy::downstream_headers(&mut headers, &session, &access.endpoint);
    if answer.status != StatusCode::SWITCHING_PROTOCOLS {
        // The desktop refused the upgrade: pass its status and headers on (browsers do not show
        // a refused handshake's body to scripts, so it is not relayed).
        headers.remove(header::CONTENT_LENGTH);
        *response.headers_mut() = headers;
        return Ok(response);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    *response.headers_mut() = headers;
    let relay_gateway = gateway.clone();
    gateway.tunnels.spawn(async move {
        let mut guard = guard;
        let client = match client_upgrade.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(session = %guard.session, error = %e, "gateway: upgrade did not complete");
                return;
            }
        };
        // Now a desktop connection: the session's disconnect is reported when the last closes.
        guard.open_desktop();
        // cadbroker's own listener hands the upgraded connection over as its plain TCP stream,
        // which goes to a relay thread.
        let parts = match client.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!(
                    session = %guard.session,
                    "gateway: WebSocket upgraded by a server other than http::server::serve; closed"
                );
                return;
            }
        };
        match tunnel(parts, tcp, answer.rest, &guard) {
            Ok(tunnel) => supervise(&relay_gateway, &guard, tunnel).await,
            Err(e) => tracing::debug!(session = %guard.session, error = %e, "gateway: WebSocket not relayed"),
        }
    });
    Ok(response)
}

/// The tunnel of an upgraded connection taken back from the HTTP server.
fn tunnel(
    client: hyper::upgrade::Parts<TokioIo<TcpStream>>,
    upstream: TcpStream,
    greeting: Bytes,
    guard: &ConnectionGuard,
) -> io::Result<Tunnel> {
    Ok(Tunnel {
        client: client.io.into_inner().into_std()?,
        upstream: upstream.into_std()?,
        to_upstream_first: client.read_buf,
        to_client_first: greeting,
        activity: guard.activity.clone(),
    })
}

/// Runs a tunnel on a relay thread until it is over; closes it when the session ends (1000)
/// or the broker stops (1012).
async fn supervise(gateway: &Gateway, guard: &ConnectionGuard, tunnel: Tunnel) {
    let mut running = match gateway.relays.start(tunnel) {
        Ok(running) => running,
        Err(e) => {
            tracing::warn!(session = %guard.session, error = %e, "gateway: no relay thread for a WebSocket");
            return;
        }
    };
    let ending = tokio::select! {
        biased;
        () = running.finished() => None,
        () = guard.cancel.cancelled() => Some(SESSION_ENDED),
        () = gateway.closing.cancelled() => Some(BROKER_STOPPING),
    };
    if let Some((code, reason)) = ending {
        tracing::debug!(session = %guard.session, code, reason, "gateway: closing a WebSocket");
        running.close(code, reason);
        running.finished().await;
    }
}

/// The upgrade request as the workstation gets it (HTTP/1.1, origin form).
fn request_head(path_and_query: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(path_and_query.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The workstation's answer to the upgrade: status, headers, and bytes that followed them.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    rest: Bytes,
}

/// Largest answer head accepted from a workstation.
const MAX_ANSWER_HEAD: usize = 64 * 1024;
/// Most headers accepted in it.
const MAX_ANSWER_HEADERS: usize = 64;

/// Connects to the workstation, sends `head` and reads the answer's head. Done by hand on the
/// TCP stream (no HTTP client connection, task or upgrade hand-off), so the relay gets the
/// plain stream: this is most of what a new desktop connection costs.
async fn handshake(access: &Access, head: &[u8]) -> io::Result<(TcpStream, Answer)> {
    let addr = (access.endpoint.host.as_str(), access.endpoint.port);
    let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    tcp.write_all(head).await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering"));
        }
        if let Some(answer) = parse_answer(&buf)? {
            return Ok((tcp, answer));
        }
        if buf.len() > MAX_ANSWER_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer head too large"));
        }
        buf.reserve(1024);
    }
}

/// The answer in `buf`, or `None` while its head is incomplete.
fn parse_answer(buf: &[u8]) -> io::Result<Option<Answer>> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let mut slots = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf).map_err(|e| invalid(&e.to_string()))? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status =
        parsed.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| invalid("bad status"))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name =
            header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| invalid("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Answer { status, headers, rest: Bytes::copy_from_slice(&buf[len..]) }))
}

/// Follows WebSocket framing (RFC 6455 §5.2) on one direction's bytes, to know whether the
/// peer's stream is between two frames.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameTracker {
    header: [u8; 14],
    have: usize,
    need: usize,
    remaining: u64,
}

impl FrameTracker {
    /// Follows `data`, the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(data.len());
                self.remaining -= k as u64;
                data = &data[k..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == 2 {
                let masked = self.header[1] & 0x80 != 0;
                let extended = match self.header[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                self.need = 2 + extended + if masked { 4 } else { 0 };
            }
            if self.have >= 2 && self.have == self.need {
                self.remaining = match self.header[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                    127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
                    len => u64::from(len),
                };
                self.have = 0;
                self.need = 0;
            }
        }
    }

    /// Whether the stream is between frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// A close frame with `code` and `reason`; masked with `mask` when sent as a client (to the
/// workstation), unmasked as a server (to the browser).
pub(crate) fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    let mut frame = vec![0x88, payload.len() as u8];
    if let Some(mask) = mask {
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

pub(crate) fn mask() -> [u8; 4] {
    let mut mask = [0u8; 4];
    // Masking keys must be unpredictable (RFC 6455 §5.3); a failed draw still yields a valid frame.
    let _ = aws_lc_rs::rand::fill(&mut mask);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn the_tracker_knows_frame_boundaries_in_any_chunking() {
        let stream: Vec<u8> =
            [frame(5, false), frame(300, true), frame(70_000, false), frame(0, true)].concat();
        let boundaries = [0, 7, 7 + 308, 7 + 308 + 70_010, stream.len()];
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut t = FrameTracker::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                t.feed(piece);
                at += piece.len();
                assert_eq!(t.at_boundary(), boundaries.contains(&at), "chunk {chunk} at {at}");
            }
        }
    }

    #[test]
    fn close_frames_are_well_formed() {
        assert_eq!(close_frame(1000, "bye", None), [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
        let masked = close_frame(1001, "", Some([1, 2, 3, 4]));
        assert_eq!(masked, [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe9 ^ 2]);
        assert_eq!(close_frame(1000, &"x".repeat(200), None).len(), 2 + 125);
    }

    #[test]
    fn the_answer_head_is_parsed_and_what_follows_it_kept() {
        let partial = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
        assert!(parse_answer(partial).unwrap().is_none());
        let full = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02hi";
        let answer = parse_answer(full).unwrap().unwrap();
        assert_eq!(answer.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(answer.headers["sec-websocket-accept"], "x");
        assert_eq!(&answer.rest[..], b"\x81\x02hi");
        assert!(parse_answer(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn the_request_head_is_http_1_1_in_origin_form() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:6080"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let head = String::from_utf8(request_head("/websockify?a=1", &headers)).unwrap();
        assert_eq!(
            head,
            "GET /websockify?a=1 HTTP/1.1\r\nhost: 127.0.0.1:6080\r\nupgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn upgrades_are_recognised_by_their_tokens() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&h));
    }
}
