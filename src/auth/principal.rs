//! `Principal`: who a verified token says the caller is, and its reduction to the domain's
//! `Caller`. Holds no token and no key material, so it is safe to log with `Debug`.

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::domain::{Caller, UserId};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Configured name of the issuer that vouched for the caller.
    pub issuer_name: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// Stable user key (issuer + subject, or Entra tenant + object id); never an e-mail.
    pub user: UserId,
    /// Display name, for display only.
    pub name: Option<String>,
    /// The token's `tid`, if any.
    pub tenant: Option<String>,
    /// Groups; `None` when the token has no groups claim (unknown, e.g. an Entra overage).
    pub groups: Option<BTreeSet<String>>,
    /// Roles (empty when the token has none).
    pub roles: BTreeSet<String>,
    /// Whether a configured admin group or role matched.
    pub admin: bool,
    /// The token's `exp`: nothing derived from this token (a session cookie, a connect ticket)
    /// should outlive it (SECURITY.md A27).
    pub expires_at: Timestamp,
}

impl Principal {
    /// The caller as the domain sees it.
    pub fn caller(&self) -> Caller {
        Caller { user: self.user.clone(), groups: self.groups.clone(), admin: self.admin }
    }
}
