//! Identifiers and the caller as the domain sees them. Plain values: no parsing of tokens here.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A stable user key: the token issuer and subject (or Entra tenant and object id), never an e-mail.
    UserId
);
string_id!(
    /// A session's name; chosen by the imperative shell (random), never by the domain.
    SessionId
);
string_id!(
    /// A workstation's name (a pod name in cluster mode).
    WorkstationId
);
string_id!(
    /// A capacity pool's name (DNS-1123 label).
    PoolName
);

/// Who is asking, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Stable user key.
    pub user: UserId,
    /// Group memberships; `None` means "unknown" (the token carried no groups claim, e.g. an
    /// Entra group overage), which never grants group-based access.
    pub groups: Option<BTreeSet<String>>,
    /// Whether the caller is a broker admin (by configured group or role).
    pub admin: bool,
}
