//! The Lua scripts the Redis boards run, and the decoding of their replies.
//!
//! The script text lives in `.lua` files beside this one so it can be read
//! (and linted) as Lua; `include_str!` puts it into the binary unchanged.

use crate::model::{BoardError, Status};

use super::round_trip::protocol;

/// Applies the parts of several updates that live in one hash-tag slot.
///
/// Applies parts of updates (a room part or a global part each).
///
/// KEYS: [names hash if ARGV[2] == '1'], then per part: marker, boards…
/// ARGV: ttl, has_names, n, then per part: n_boards, mark, member, amount,
/// name_field (empty: no name), name, expire_at per board (0 = none).
/// Returns one status per part: 0 duplicate, 1 applied, 2 overflow.
///
/// Amounts and expiry times are passed to Redis as the original strings:
/// a Lua number converted back to a string keeps only 14 digits. CAP is
/// [`crate::TOTAL_MINOR_MAX`]; a part that would push a total past it is undone
/// in the same script and reported (no ZSCORE pre-check: half the calls).
pub(super) const APPLY_LUA: &str = include_str!("apply.lua");

/// Releases the rebuild lock only if this process still holds it.
pub(super) const UNLOCK_LUA: &str = include_str!("unlock.lua");

/// The status [`APPLY_LUA`] returns for one part.
pub(super) fn status_of(code: i64) -> Result<Status, BoardError> {
    match code {
        0 => Ok(Status::Duplicate),
        1 => Ok(Status::Applied),
        2 => Ok(Status::Overflowed),
        other => Err(protocol(format!("apply status {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_cap_is_the_total_cap() {
        let cap = format!("local CAP = {}\n", crate::TOTAL_MINOR_MAX);
        assert!(APPLY_LUA.contains(&cap), "apply.lua must use {cap:?}");
    }

    #[test]
    fn script_statuses_decode_and_unknown_ones_are_refused() {
        assert_eq!(status_of(0).unwrap(), Status::Duplicate);
        assert_eq!(status_of(1).unwrap(), Status::Applied);
        assert_eq!(status_of(2).unwrap(), Status::Overflowed);
        assert!(matches!(
            status_of(3),
            Err(BoardError::Protocol {
                backend: "redis",
                ..
            })
        ));
    }
}
