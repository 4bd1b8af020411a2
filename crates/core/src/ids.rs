//! Identifiers and roles: who is acting, and what may name a user or a room.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest user id (SPEC §3: 1–64 characters of `[A-Za-z0-9_-]`).
pub const USER_ID_LEN_MAX: usize = 64;

/// Whether `id` is a valid user id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= USER_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `id` could be a server-issued identifier (rooms, gifts, packets):
/// 1–64 characters of `[A-Za-z0-9_-]`. Anything else cannot exist and is a 404.
pub fn is_valid_object_id(id: &str) -> bool {
    is_valid_user_id(id)
}

/// What a signed-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Broadcaster,
    Finance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Broadcaster => "broadcaster",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }

    /// Finance and admin read every financial record.
    pub fn reads_finance(self) -> bool {
        matches!(self, Role::Finance | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "broadcaster" => Ok(Role::Broadcaster),
            "finance" => Ok(Role::Finance),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected viewer, broadcaster, finance or admin)"
            )),
        }
    }
}

/// Checks free text typed by a person (gift messages, acks, room titles):
/// at most `max_chars` Unicode scalar values and no control characters.
pub fn is_valid_text(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(is_valid_user_id("alice_01-x"));
        assert!(is_valid_user_id(&"a".repeat(64)));
        assert!(!is_valid_user_id(&"a".repeat(65)));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("al ice"));
        assert!(!is_valid_user_id("ålice"));
        assert!(!is_valid_user_id("a/b"));
    }

    #[test]
    fn text() {
        assert!(is_valid_text("héllo 👋", 200));
        assert!(is_valid_text(&"é".repeat(200), 200));
        assert!(!is_valid_text(&"é".repeat(201), 200));
        assert!(!is_valid_text("a\nb", 200));
        assert!(!is_valid_text("a\u{0}b", 200));
        assert!(!is_valid_text("a\u{9f}b", 200));
    }

    #[test]
    fn roles() {
        assert_eq!("finance".parse::<Role>(), Ok(Role::Finance));
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin.reads_finance());
        assert!(!Role::Broadcaster.reads_finance());
    }
}
