//! The portal as an OpenID Connect client: the provider's endpoints from its discovery
//! document (fetched on first use, cached) and the code-for-token exchange. The access token
//! it gets is checked by the broker's own `Authenticator`, exactly like an API caller's.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{PortalError, config::PortalOidcConfig};
use crate::auth::IssuerConfig;

const MAX_BODY: usize = 256 * 1024;

/// Endpoints from the discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `authorization_endpoint`.
    pub authorization: Url,
    /// `token_endpoint`.
    pub token: Url,
}

/// The OIDC client of the portal. Its `Debug` leaves out the client secret.
pub struct OidcClient {
    /// Client settings.
    pub config: PortalOidcConfig,
    discovery_url: String,
    client_secret: Option<String>,
    http: reqwest::Client,
    endpoints: OnceCell<Endpoints>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// What the token endpoint answered (never logged).
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The access token for the broker's API.
    pub access_token: String,
    /// The ID token, whose `nonce` is checked.
    #[serde(default)]
    pub id_token: Option<String>,
}

impl OidcClient {
    /// A client for `config` against `issuer` (its discovery URL and timeout).
    pub fn new(config: PortalOidcConfig, issuer: &IssuerConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(issuer.effective_http_timeout())
            .build()
            .map_err(|e| e.to_string())?;
        let client_secret = std::env::var("CADBROKER_PORTAL_CLIENT_SECRET").ok().or_else(|| {
            let file = config.client_secret_file.as_ref()?;
            std::fs::read_to_string(file).ok().map(|s| s.trim().to_owned())
        });
        Ok(Self {
            discovery_url: issuer.effective_discovery_url(),
            config,
            client_secret,
            http,
            endpoints: OnceCell::new(),
        })
    }

    /// The provider's endpoints (fetched once; a failure is retried on the next sign-in).
    pub async fn endpoints(&self) -> Result<&Endpoints, PortalError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, PortalError> {
        #[derive(Deserialize)]
        struct Discovery {
            authorization_endpoint: String,
            token_endpoint: String,
        }
        let url = checked_url(&self.discovery_url)?;
        let body = self.read(self.http.get(url)).await?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| PortalError::Provider(format!("discovery document: {e}")))?;
        Ok(Endpoints {
            authorization: checked_url(&doc.authorization_endpoint)?,
            token: checked_url(&doc.token_endpoint)?,
        })
    }

    /// Exchanges `code` (with the PKCE `verifier`) for tokens.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenAnswer, PortalError> {
        let endpoints = self.endpoints().await?;
        let mut form = Url::parse("http://form.invalid/").expect("constant URL");
        form.query_pairs_mut()
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("client_id", &self.config.client_id)
            .append_pair("code_verifier", verifier);
        if let Some(secret) = &self.client_secret {
            form.query_pairs_mut().append_pair("client_secret", secret);
        }
        let request = self
            .http
            .post(endpoints.token.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form.query().unwrap_or_default().to_owned());
        let body = self.read(request).await?;
        serde_json::from_slice(&body).map_err(|e| PortalError::Provider(format!("token answer: {e}")))
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, PortalError> {
        let provider = |e: reqwest::Error| PortalError::Provider(e.without_url().to_string());
        let response = request.send().await.map_err(provider)?;
        let status = response.status();
        let body = response.bytes().await.map_err(provider)?;
        if body.len() > MAX_BODY {
            return Err(PortalError::Provider("answer too large".into()));
        }
        if !status.is_success() {
            // The provider's error code (RFC 6749 §5.2) is safe to show; its description may not be.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.as_u16().to_string());
            return Err(PortalError::Provider(format!("the provider refused: {code}")));
        }
        Ok(body.to_vec())
    }
}

/// `https`, or `http` on a loopback host only (as for the issuers in `[auth]`).
fn checked_url(raw: &str) -> Result<Url, PortalError> {
    let url = Url::parse(raw).map_err(|e| PortalError::Provider(format!("{raw:?} is not a URL: {e}")))?;
    let loopback = url.host_str().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(PortalError::Provider(format!("{raw:?} must use https"))),
    }
}

/// The `nonce` claim of an ID token, read without checking the signature: the token came
/// straight from the token endpoint over a connection we opened (OIDC Core §3.1.3.7), and the
/// access token that grants anything is fully verified separately.
pub fn id_token_nonce(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["nonce"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_must_be_https_unless_loopback() {
        assert!(checked_url("https://login.example/authorize").is_ok());
        assert!(checked_url("http://127.0.0.1:9/token").is_ok());
        assert!(checked_url("http://login.example/token").is_err());
        assert!(checked_url("ftp://x/").is_err());
    }

    #[test]
    fn the_nonce_is_read_from_the_id_token() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"nonce":"n1","sub":"a"}"#);
        assert_eq!(id_token_nonce(&format!("h.{payload}.s")), Some("n1".into()));
        assert_eq!(id_token_nonce("garbage"), None);
    }
}
