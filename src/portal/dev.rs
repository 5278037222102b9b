//! The development sign-in: on a broker whose `[auth]` has a `development` issuer, the portal
//! can mint that issuer's token for a name and groups the person types (the same token
//! `cadbroker token` prints). It exists only when such an issuer is configured: without one
//! there is no key to mint with and the route answers 404.

use std::{collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use serde::Deserialize;

use super::PortalError;
use crate::auth::{AuthConfig, DevKey, IssuerConfig, MintRequest, load_or_create_dev_key, mint_dev_token};

/// Longest user name accepted.
const MAX_USER: usize = 64;
/// Most groups accepted.
const MAX_GROUPS: usize = 16;

/// Body of `POST /portal/dev-login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevLoginBody {
    /// The user name (becomes `sub`).
    pub user: String,
    /// Groups to put in the token.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Add the configured admin group (or role).
    #[serde(default)]
    pub admin: bool,
}

/// What the development sign-in mints with.
#[derive(Debug)]
pub struct DevLogin {
    issuer: IssuerConfig,
    key: DevKey,
    admin_group: Option<String>,
    admin_role: Option<String>,
}

impl DevLogin {
    /// The development sign-in of `auth`, or `None` when it has no development issuer.
    pub fn from_auth(auth: &AuthConfig) -> Result<Option<Self>, String> {
        let Some(issuer) = auth.development_issuer() else { return Ok(None) };
        let key = load_or_create_dev_key(&issuer.effective_key_file()).map_err(|e| e.to_string())?;
        Ok(Some(Self {
            issuer: issuer.clone(),
            key,
            admin_group: auth.admin_groups.iter().next().cloned(),
            admin_role: auth.admin_roles.iter().next().cloned(),
        }))
    }

    /// A token for `body`, valid for `ttl` from `now`.
    pub fn mint(&self, body: &DevLoginBody, ttl: Duration, now: Timestamp) -> Result<String, PortalError> {
        let user = body.user.trim();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_USER
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        };
        if !name_ok(user) {
            return Err(PortalError::Invalid(format!(
                "user must be 1 to {MAX_USER} letters, digits or . _ - @"
            )));
        }
        if body.groups.len() > MAX_GROUPS || !body.groups.iter().all(|g| name_ok(g.trim())) {
            return Err(PortalError::Invalid(format!(
                "groups: at most {MAX_GROUPS}, each 1 to {MAX_USER} letters, digits or . _ - @"
            )));
        }
        let mut groups: BTreeSet<String> = body.groups.iter().map(|g| g.trim().to_owned()).collect();
        let mut roles = BTreeSet::new();
        if body.admin {
            match (&self.admin_group, &self.admin_role) {
                (Some(group), _) => {
                    groups.insert(group.clone());
                }
                (None, Some(role)) => {
                    roles.insert(role.clone());
                }
                (None, None) => {
                    return Err(PortalError::Invalid("no admin group or role is configured".into()));
                }
            }
        }
        let request = MintRequest {
            subject: user.to_owned(),
            name: Some(user.to_owned()),
            groups: Some(groups),
            roles,
            ttl,
        };
        mint_dev_token(&self.issuer, &self.key, &request, now).map_err(|e| PortalError::Mint(e.to_string()))
    }
}
