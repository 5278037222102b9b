//! The `[gateway]` section of the broker's config: where the broker is reached from browsers,
//! which origins may open desktop WebSockets, ticket and cookie lifetimes, the signing key's
//! source and how often desktop traffic counts as activity. Plain serde types and `validate()`,
//! which names every bad field; no IO here (the key file is read at start, in `ticket`).

use std::{path::PathBuf, time::Duration};

use axum::http::Uri;
use serde::{Deserialize, Serialize};

/// Environment variable holding the gateway's signing key (base64 of at least 32 bytes). It
/// wins over `gateway.keyFile`.
pub const KEY_ENV: &str = "CADBROKER_GATEWAY_KEY";

/// Settings of the connection gateway (`/connect/{session}/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// The broker's URL as browsers reach it (`https://cad.example.org`): scheme, host and
    /// optional port, no path. Connect URLs are built on it and its origin is always allowed to
    /// open WebSockets. Unset: `http://` plus the public listener's bound address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Further origins (`https://portal.example.org`) allowed to open desktop WebSockets, besides
    /// the public URL's own. A WebSocket upgrade from any other origin, or without one, gets 403.
    pub allowed_origins: Vec<String>,
    /// How long a connect ticket (in a connect URL) stays valid. Single-use. 5 s to 10 min.
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// How long the session cookie a ticket is exchanged for stays valid. The cookie only works
    /// while its session is Ready. At least `ticketTtl`, at most 7 days.
    #[serde(with = "humantime_serde")]
    pub cookie_ttl: Duration,
    /// Desktop traffic records activity on its session at most once per this interval. 1 s to 10 min.
    #[serde(with = "humantime_serde")]
    pub activity_interval: Duration,
    /// File holding the key that signs tickets and cookies (base64 of at least 32 random bytes).
    /// Every replica must use the same key. Unset (and no `CADBROKER_GATEWAY_KEY`): a random key
    /// per process, fine for one replica; its tickets and cookies die with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            allowed_origins: Vec::new(),
            ticket_ttl: Duration::from_secs(60),
            cookie_ttl: Duration::from_secs(12 * 3600),
            activity_interval: Duration::from_secs(30),
            key_file: None,
        }
    }
}

const TICKET_TTL: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(600));
const COOKIE_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
const ACTIVITY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));

impl GatewayConfig {
    /// Every problem with the values, each naming its field (`gateway.ticketTtl: …`).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.public_url {
            match parse_public_url(url) {
                Ok(_) => {}
                Err(why) => problems.push(format!("gateway.publicUrl: '{url}' {why}")),
            }
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if let Err(why) = normalise_origin(origin) {
                problems.push(format!("gateway.allowedOrigins[{i}]: '{origin}' {why}"));
            }
        }
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.ticket_ttl < TICKET_TTL.0 || self.ticket_ttl > TICKET_TTL.1 {
            problems.push(format!(
                "gateway.ticketTtl: must be between {} and {}",
                human(TICKET_TTL.0),
                human(TICKET_TTL.1)
            ));
        }
        if self.cookie_ttl < self.ticket_ttl || self.cookie_ttl > COOKIE_TTL_MAX {
            problems.push(format!(
                "gateway.cookieTtl: must be at least gateway.ticketTtl and at most {}",
                human(COOKIE_TTL_MAX)
            ));
        }
        if self.activity_interval < ACTIVITY.0 || self.activity_interval > ACTIVITY.1 {
            problems.push(format!(
                "gateway.activityInterval: must be between {} and {}",
                human(ACTIVITY.0),
                human(ACTIVITY.1)
            ));
        }
        if self.key_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            problems.push("gateway.keyFile: must not be empty (leave it out for a random key)".to_owned());
        }
        problems
    }
}

/// Checks a public URL and returns it without a trailing slash.
pub(crate) fn parse_public_url(url: &str) -> Result<String, String> {
    let trimmed = url.strip_suffix('/').unwrap_or(url);
    let origin = normalise_origin(trimmed)?;
    let uri: Uri = trimmed.parse().map_err(|_| "is not a URL".to_owned())?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return Err("must be https:// (the gateway's cookie is Secure, so browsers drop it over plain \
                    http except on loopback)"
            .to_owned());
    }
    Ok(origin)
}

/// An origin as browsers send it in `Origin`: lower-case scheme and host, the port only when
/// it is not the scheme's default, no path. Errors say what is wrong, for config messages.
pub(crate) fn normalise_origin(origin: &str) -> Result<String, String> {
    let uri: Uri = origin.parse().map_err(|_| "is not a URL".to_owned())?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err("must start with http:// or https://".to_owned()),
    };
    let Some(authority) = uri.authority() else { return Err("has no host".to_owned()) };
    if authority.as_str().contains('@') {
        return Err("must not contain user information".to_owned());
    }
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    if !(path_and_query.is_empty() || path_and_query == "/") || origin.ends_with('/') {
        return Err("must be scheme://host[:port] only, without a path, query or trailing slash".to_owned());
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    Ok(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_like_browsers_send_them() {
        assert_eq!(normalise_origin("HTTPS://Cad.Example.org:443").unwrap(), "https://cad.example.org");
        assert_eq!(normalise_origin("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalise_origin("http://[::1]:80").unwrap(), "http://[::1]");
        for bad in ["cad.example.org", "ftp://x", "https://x/", "https://x/path", "https://u@x"] {
            assert!(normalise_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_url_must_be_https_unless_loopback() {
        assert_eq!(parse_public_url("https://cad.example.org/").unwrap(), "https://cad.example.org");
        assert!(parse_public_url("http://localhost:8080").is_ok());
        assert!(parse_public_url("http://127.0.0.1:8080").is_ok());
        let err = parse_public_url("http://cad.example.org").unwrap_err();
        assert!(err.contains("must be https://"), "{err}");
        assert!(parse_public_url("https://cad.example.org/broker").is_err());
    }

    #[test]
    fn the_documented_section_is_valid_when_uncommented() {
        let text = crate::config::DEFAULT_CONFIG;
        let start = text.find("# [gateway]").expect("the default config documents [gateway]");
        let end = start + text[start..].find("\n\n").expect("a blank line after the section");
        let section: String = text[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{l}\n"))
            .collect();
        let uncommented = format!("{}\n{section}", &text[..start]);
        let config = crate::config::Config::parse("test", &uncommented).unwrap();
        let g = config.gateway;
        assert_eq!(g.public_url.as_deref(), Some("https://cad.example.org"));
        assert_eq!(g.allowed_origins, ["https://portal.example.org"]);
        assert_eq!((g.ticket_ttl, g.activity_interval), (Duration::from_secs(60), Duration::from_secs(30)));
        assert_eq!(g.cookie_ttl, GatewayConfig::default().cookie_ttl);
        assert!(g.key_file.is_some());
    }

    #[test]
    fn every_bad_field_is_named() {
        let config = GatewayConfig {
            public_url: Some("cad".into()),
            allowed_origins: vec!["https://ok.example".into(), "https://bad.example/x".into()],
            ticket_ttl: Duration::from_secs(1),
            cookie_ttl: Duration::from_millis(500),
            activity_interval: Duration::ZERO,
            key_file: Some(PathBuf::new()),
        };
        let problems = config.validate().join("\n");
        for field in [
            "gateway.publicUrl: 'cad'",
            "gateway.allowedOrigins[1]: 'https://bad.example/x'",
            "gateway.ticketTtl: must be between 5s and 10m",
            "gateway.cookieTtl",
            "gateway.activityInterval",
            "gateway.keyFile",
        ] {
            assert!(problems.contains(field), "{field} missing in:\n{problems}");
        }
        assert!(!problems.contains("allowedOrigins[0]"), "{problems}");
        assert!(GatewayConfig::default().validate().is_empty());
    }
}
