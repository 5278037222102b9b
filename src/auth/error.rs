//! Errors of the auth module. `AuthError` is what a rejected token tells the client: a stable
//! code, an HTTP status and a message that never contains the token, claims or key material.
//! `AuthInitError`, `DevKeyError` and `MintError` are for the operator at startup and in the CLI.

use std::{fmt, path::PathBuf};

/// Why a token was rejected. Every variant is a 401 except [`AuthError::Unavailable`] (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was presented.
    #[error("a bearer token is required")]
    Missing,
    /// The token is longer than `maxTokenBytes`; nothing of it was parsed.
    #[error("the token is larger than {limit} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The token is malformed, unsigned, badly signed or breaks a header rule.
    #[error("the token is not valid: {0}")]
    Invalid(Invalid),
    /// `exp` (or `iat` + `maxTokenAge`) has passed, beyond the leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future, beyond the leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` is missing or names no audience of this service.
    #[error("the token is not meant for this service")]
    Audience,
    /// `iss` (or the tenant) is not a configured issuer.
    #[error("the token issuer is not accepted")]
    Issuer,
    /// The token carries none of the issuer's `requiredScopes`.
    #[error("the token lacks a required scope")]
    Scope,
    /// The issuer's signing keys have never been fetched (the IdP is unreachable); retry later.
    #[error("signing keys for issuer {issuer} are not available yet")]
    Unavailable {
        /// Configured name of the issuer (not a secret).
        issuer: String,
    },
}

/// The rule an [`AuthError::Invalid`] token broke. Safe to show: a fixed phrase, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url segments holding JSON objects.
    Malformed,
    /// A JSON object in the header or claims repeats a member name (RFC 8725 §2.6).
    DuplicateMember,
    /// Five segments: an encrypted token (JWE), which the broker never accepts.
    Encrypted,
    /// `alg: none` or an empty signature.
    Unsigned,
    /// A header the broker refuses: `jku`, `x5u`, `jwk`, `crit`, `cty` or a JWE parameter.
    ForbiddenHeader,
    /// `typ` is not `JWT`/`at+jwt` (e.g. a connect ticket presented as an API token).
    TokenType,
    /// `alg` is not pinned for this issuer, or does not fit the key.
    Algorithm,
    /// `kid` is not a short printable string.
    KeyId,
    /// No key of this issuer has this `kid`.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// A required claim is missing or has the wrong type (e.g. `exp` as a string).
    Claims,
}

impl Invalid {
    /// A short phrase for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::DuplicateMember => "duplicate JSON member",
            Self::Encrypted => "encrypted tokens are not accepted",
            Self::Unsigned => "unsigned tokens are not accepted",
            Self::ForbiddenHeader => "header parameter not accepted",
            Self::TokenType => "token type not accepted",
            Self::Algorithm => "algorithm not accepted",
            Self::KeyId => "malformed key id",
            Self::UnknownKey => "unknown signing key",
            Self::Signature => "signature does not verify",
            Self::Claims => "missing or malformed claim",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Invalid> for AuthError {
    fn from(reason: Invalid) -> Self {
        Self::Invalid(reason)
    }
}

impl AuthError {
    /// Stable machine-readable code for the API error body and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::TooLarge { .. } => "token_too_large",
            Self::Invalid(_) => "token_invalid",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Audience => "token_audience",
            Self::Issuer => "token_issuer",
            Self::Scope => "token_scope",
            Self::Unavailable { .. } => "auth_unavailable",
        }
    }

    /// HTTP status: 503 when the keys are unavailable, 401 for everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unavailable { .. } => 503,
            _ => 401,
        }
    }

    /// A `WWW-Authenticate` value for a 401 (RFC 6750 §3).
    pub fn www_authenticate(&self) -> String {
        match self {
            Self::Missing => "Bearer".to_owned(),
            _ => format!("Bearer error=\"invalid_token\", error_description=\"{}\"", self.code()),
        }
    }
}

/// Why the [`Authenticator`](super::Authenticator) could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthInitError {
    /// The `[auth]` section is invalid; one message per problem.
    #[error("invalid auth config:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The JWT crypto backend failed its sign-and-verify self-test (missing or doubled backend).
    #[error("the JWT crypto self-test failed: {0}")]
    SelfTest(String),
    /// A development issuer's key could not be loaded or created.
    #[error("failed to load the development key for issuer {issuer}")]
    DevKey {
        /// Issuer name.
        issuer: String,
        /// What went wrong.
        #[source]
        source: DevKeyError,
    },
    /// The HTTP client for OIDC discovery could not be built.
    #[error("failed to build the OIDC HTTP client: {0}")]
    HttpClient(String),
}

/// Why the development key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// Reading, creating or linking the key file failed.
    #[error("failed to access key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error("key file {path} has mode {mode:o}; run chmod 600 on it")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a PKCS#8 PEM Ed25519 private key.
    #[error("key file {path} is not a PKCS#8 PEM Ed25519 private key")]
    Format {
        /// The key file.
        path: PathBuf,
    },
    /// Generating a key failed.
    #[error("failed to generate an Ed25519 key")]
    Generate,
}

/// Why `mint_dev_token` refused.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Only `development` issuers mint tokens.
    #[error("issuer {0} is not a development issuer")]
    NotDevelopment(String),
    /// The subject is empty.
    #[error("the subject must be non-empty")]
    EmptySubject,
    /// The lifetime is zero or longer than the maximum.
    #[error("the token lifetime must be between 1s and {max_days} days")]
    Lifetime {
        /// Maximum lifetime in days.
        max_days: u64,
    },
    /// Signing failed.
    #[error("failed to sign the token: {0}")]
    Sign(String),
}
