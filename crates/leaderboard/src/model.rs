//! The board vocabulary shared by both twins: updates, windows, entries,
//! errors, validation, the key layout and the tie-breaking member encoding.
//!
//! Both twins derive every key name and every "which boards does this update
//! touch" decision from [`plan`], so the in-memory twin and Redis cannot drift
//! apart on window boundaries or expiry.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use applause_core::ids::is_valid_user_id;
use applause_core::money::AMOUNT_MINOR_MAX;
use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

/// Largest total any board keeps, in minor units: 2^52 − 1 (≈ 45 trillion
/// dollars at 2 decimals). Redis scores are IEEE doubles, exact for integers
/// up to 2^53; with totals capped at 2^52 and single amounts at 10^15 every
/// increment — and the undo of a refused one — stays below 2^53 and exact.
/// An update that would push a total past the cap is refused by both twins,
/// so totals never silently lose precision.
pub const TOTAL_MINOR_MAX: i64 = (1 << 52) - 1;

// The exactness argument above, checked at compile time.
const _: () = assert!(TOTAL_MINOR_MAX + AMOUNT_MINOR_MAX < (1 << 53));

/// Most entries one `top` read returns.
pub const TOP_LIMIT_MAX: usize = 100;

/// Longest `update_id` accepted, in bytes (a gift id, or `refund:<gift id>`).
pub const UPDATE_ID_LEN_MAX: usize = 128;

/// Display names are cut to this many characters before they are stored.
pub const NAME_CHARS_MAX: usize = 64;

/// How long a day or week board outlives its window, in seconds: late updates
/// (a gift committed at 23:59:59 applied after midnight) still land, and
/// yesterday's final board stays readable for two days.
pub const PERIOD_GRACE_SECS: i64 = 2 * 86_400;

/// Latest accepted `at_ms`: the end of year 9999, the range chrono formats.
pub const AT_MS_MAX: i64 = 253_402_300_799_999;

const DAY_MS: i64 = 86_400_000;

/// One gift (or refund) to count on the boards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardUpdate {
    /// The gift id, or `refund:<gift id>` for a refund: the idempotency key.
    pub update_id: String,
    pub room_id: String,
    pub broadcaster_id: String,
    pub sender_id: String,
    /// The sender's display name at the time of the gift.
    pub sender_name: String,
    /// Gross gift amount in minor units; negative for a refund.
    pub amount_minor: i64,
    /// The gift's commit time (Unix ms); it alone decides the day and week.
    pub at_ms: i64,
}

/// A ranking window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// Everything sent to this room (a room is one stream session).
    Live,
    /// The UTC date of `now`.
    Day,
    /// The ISO week (UTC) of `now`.
    Week,
    /// Since the beginning.
    All,
}

impl Window {
    pub const ALL: [Window; 4] = [Window::Live, Window::Day, Window::Week, Window::All];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Live => "live",
            Window::Day => "day",
            Window::Week => "week",
            Window::All => "all",
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Window {
    type Err = BoardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Window::Live),
            "day" => Ok(Window::Day),
            "week" => Ok(Window::Week),
            "all" => Ok(Window::All),
            other => Err(BoardError::invalid(
                "window",
                format!("{other:?} is not live|day|week|all"),
            )),
        }
    }
}

/// One ranked line of a board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position: totals descending, then user id ascending.
    pub rank: u32,
    pub user_id: String,
    /// The latest display name seen for this user, if any gift carried one.
    /// Broadcasters on the global board have a name only if they ever sent a
    /// gift themselves; the caller renders the rest from its profile store.
    pub name: Option<String>,
    pub amount_minor: i64,
}

/// What one `apply_batch` call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Updates counted now (by their room part).
    pub applied: u32,
    /// Updates already counted before (same `update_id`): ignored.
    pub duplicates: u32,
    /// Updates refused because a total would leave ±[`TOTAL_MINOR_MAX`].
    pub overflowed: Vec<String>,
}

/// What one `rebuild` call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// The generation now being served.
    pub generation: String,
    /// Updates given.
    pub updates: usize,
    pub applied: u32,
    pub duplicates: u32,
    pub overflowed: Vec<String>,
    /// Keys (Redis) or boards (memory) of older generations removed.
    pub removed: u64,
}

/// Why a board operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The caller passed something no board can hold (a bug upstream).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Another process holds the rebuild lock.
    #[error("a leaderboard rebuild is already running")]
    RebuildInProgress,
    /// The store behind the boards failed or is unreachable; the operation
    /// may be retried. `backend` names the store (`"redis"`), `source` is its
    /// own error, kept for the log.
    #[error("{backend}: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store answered something the boards never ask for (a reply of the
    /// wrong shape): a bug or a foreign writer, not an outage.
    #[error("unexpected reply from {backend}: {detail}")]
    Protocol {
        backend: &'static str,
        detail: String,
    },
}

impl BoardError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        BoardError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

pub(crate) fn check_limit(limit: usize) -> Result<(), BoardError> {
    if (1..=TOP_LIMIT_MAX).contains(&limit) {
        Ok(())
    } else {
        Err(BoardError::invalid(
            "limit",
            format!("{limit} is not within 1..={TOP_LIMIT_MAX}"),
        ))
    }
}

pub(crate) fn check_id(field: &'static str, id: &str) -> Result<(), BoardError> {
    if is_valid_user_id(id) {
        Ok(())
    } else {
        Err(BoardError::invalid(
            field,
            format!("{id:?} is not 1-64 characters of [A-Za-z0-9_-]"),
        ))
    }
}

pub(crate) fn check_now(now_ms: i64) -> Result<(), BoardError> {
    if (0..=AT_MS_MAX).contains(&now_ms) {
        Ok(())
    } else {
        Err(BoardError::invalid(
            "now",
            format!("{now_ms} ms is out of range"),
        ))
    }
}

/// Checks everything a key name or a score depends on. Ids are restricted to
/// `[A-Za-z0-9_-]` (SPEC §3), which keeps hash tags and SCAN patterns intact.
pub fn validate(update: &BoardUpdate) -> Result<(), BoardError> {
    let id = &update.update_id;
    if id.is_empty()
        || id.len() > UPDATE_ID_LEN_MAX
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':')
    {
        return Err(BoardError::invalid(
            "update_id",
            format!("{id:?} is not 1-{UPDATE_ID_LEN_MAX} characters of [A-Za-z0-9_:-]"),
        ));
    }
    check_id("room_id", &update.room_id)?;
    check_id("broadcaster_id", &update.broadcaster_id)?;
    check_id("sender_id", &update.sender_id)?;
    if update.amount_minor.unsigned_abs() > AMOUNT_MINOR_MAX.unsigned_abs() {
        return Err(BoardError::invalid(
            "amount_minor",
            format!("{} exceeds ±{AMOUNT_MINOR_MAX}", update.amount_minor),
        ));
    }
    if !(0..=AT_MS_MAX).contains(&update.at_ms) {
        return Err(BoardError::invalid(
            "at_ms",
            format!("{} ms is out of range", update.at_ms),
        ));
    }
    Ok(())
}

/// The display name as stored: at most [`NAME_CHARS_MAX`] characters.
pub(crate) fn stored_name(name: &str) -> &str {
    match name.char_indices().nth(NAME_CHARS_MAX) {
        Some((cut, _)) => &name[..cut],
        None => name,
    }
}

// ---------------------------------------------------------------------------
// Tie-breaking member encoding.
//
// Redis orders equal scores by member, and ZREVRANGE reverses that: equal
// totals would come out by member *descending*. We want user id *ascending*,
// so members are stored order-reversed: every byte b becomes 0x9F − b (which
// maps the id alphabet [-0-9A-Z_a-z], 0x2D..=0x7A, onto 0x25..=0x72, still
// printable) followed by the terminator '~' (0x7E). '~' sorts above every
// mapped byte, so a proper prefix of an id — smaller as an id — becomes the
// larger member. Hence for ids a < b: enc(a) > enc(b), and ZREVRANGE /
// ZREVRANK give exactly (total desc, user id asc), with O(log n) reads.
// ---------------------------------------------------------------------------

const MEMBER_END: u8 = b'~';
const MEMBER_FLIP: u8 = 0x9F;

/// The sorted-set member for a (validated) user id.
pub fn encode_member(user_id: &str) -> String {
    let mut out = String::with_capacity(user_id.len() + 1);
    out.extend(user_id.bytes().map(|b| char::from(MEMBER_FLIP - b)));
    out.push(char::from(MEMBER_END));
    out
}

/// The user id behind a member written by [`encode_member`].
pub fn decode_member(member: &str) -> Option<String> {
    let body = member.strip_suffix(char::from(MEMBER_END))?;
    let id: String = body
        .bytes()
        .map(|b| char::from(MEMBER_FLIP.wrapping_sub(b)))
        .collect();
    is_valid_user_id(&id).then_some(id)
}

// ---------------------------------------------------------------------------
// Periods and key names (relative to the generation prefix).
// ---------------------------------------------------------------------------

/// The day and week a time falls into, with the Unix second each board of
/// that period expires at (window end + grace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Periods {
    pub day: String,
    pub day_expire_s: i64,
    pub week: String,
    pub week_expire_s: i64,
}

pub(crate) fn periods(at_ms: i64) -> Periods {
    let day_index = at_ms.div_euclid(DAY_MS);
    // Validated times are within chrono's range, so this never falls back.
    let date = DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .date_naive();
    let iso = date.iso_week();
    let monday_index = day_index - i64::from(date.weekday().num_days_from_monday());
    Periods {
        // `%Y%m%d` without chrono's format parser (years are 1970..=9999).
        day: format!("{:04}{:02}{:02}", date.year(), date.month(), date.day()),
        day_expire_s: (day_index + 1) * 86_400 + PERIOD_GRACE_SECS,
        week: format!("{:04}W{:02}", iso.year(), iso.week()),
        week_expire_s: (monday_index + 7) * 86_400 + PERIOD_GRACE_SECS,
    }
}

/// The hash tag slot of a broadcaster: the room live boards, the fan boards
/// and their markers share it, so one script per broadcaster is cluster-safe.
fn fan_tag(broadcaster_id: &str) -> String {
    format!("{{b:{broadcaster_id}}}")
}

/// The slot of the global boards, their markers and the names hash.
pub(crate) const GLOBAL_TAG: &str = "{g}";

pub(crate) fn names_key() -> String {
    format!("{GLOBAL_TAG}:names")
}

/// The key of a room's board for `window` at `now_ms`.
/// The key of a room's board in `window`, after checking the query's ids
/// and time (what `top` and `me` of every backend check first).
pub(crate) fn checked_room_board_key(
    room_id: &str,
    broadcaster_id: &str,
    window: Window,
    now_ms: i64,
) -> Result<String, BoardError> {
    check_id("room_id", room_id)?;
    check_id("broadcaster_id", broadcaster_id)?;
    check_now(now_ms)?;
    Ok(room_board_key(room_id, broadcaster_id, window, now_ms))
}

/// Checks a rebuild's time and every update, before anything is written.
pub(crate) fn validate_rebuild(updates: &[BoardUpdate], now_ms: i64) -> Result<(), BoardError> {
    check_now(now_ms)?;
    updates.iter().try_for_each(validate)
}

pub(crate) fn room_board_key(
    room_id: &str,
    broadcaster_id: &str,
    window: Window,
    now_ms: i64,
) -> String {
    let tag = fan_tag(broadcaster_id);
    match window {
        Window::Live => format!("{tag}:live:{room_id}"),
        Window::Day => format!("{tag}:d:{}", periods(now_ms).day),
        Window::Week => format!("{tag}:w:{}", periods(now_ms).week),
        Window::All => format!("{tag}:all"),
    }
}

/// The key of the global broadcaster board; `live` has none.
pub(crate) fn global_board_key(window: Window, now_ms: i64) -> Result<String, BoardError> {
    match window {
        Window::Live => Err(BoardError::invalid(
            "window",
            "the global board has day, week and all windows only",
        )),
        Window::Day => Ok(format!("{GLOBAL_TAG}:d:{}", periods(now_ms).day)),
        Window::Week => Ok(format!("{GLOBAL_TAG}:w:{}", periods(now_ms).week)),
        Window::All => Ok(format!("{GLOBAL_TAG}:all")),
    }
}

/// The boards one part of an update touches, all in one hash-tag slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartPlan {
    pub marker: String,
    pub member: String,
    /// (key, expire-at Unix second or 0 for none).
    pub boards: Vec<(String, i64)>,
}

/// An update split per slot: the broadcaster's part (room live board and fan
/// boards) and the global part (top broadcasters). Each part is counted once
/// on its own marker. Period boards that have already expired at `now_s`
/// are left out: nobody can read them any more, and writing them would only
/// recreate a key Redis deletes at once.
pub(crate) fn plan(update: &BoardUpdate, now_s: i64) -> (PartPlan, PartPlan) {
    let p = periods(update.at_ms);
    let tag = fan_tag(&update.broadcaster_id);
    let mut room = PartPlan {
        marker: format!("{tag}:m:{}", update.update_id),
        member: encode_member(&update.sender_id),
        boards: vec![(format!("{tag}:live:{}", update.room_id), 0)],
    };
    let mut global = PartPlan {
        marker: format!("{GLOBAL_TAG}:m:{}", update.update_id),
        member: encode_member(&update.broadcaster_id),
        boards: Vec::with_capacity(3),
    };
    if p.day_expire_s > now_s {
        room.boards
            .push((format!("{tag}:d:{}", p.day), p.day_expire_s));
        global
            .boards
            .push((format!("{GLOBAL_TAG}:d:{}", p.day), p.day_expire_s));
    }
    if p.week_expire_s > now_s {
        room.boards
            .push((format!("{tag}:w:{}", p.week), p.week_expire_s));
        global
            .boards
            .push((format!("{GLOBAL_TAG}:w:{}", p.week), p.week_expire_s));
    }
    room.boards.push((format!("{tag}:all"), 0));
    global.boards.push((format!("{GLOBAL_TAG}:all"), 0));
    (room, global)
}

/// What happened to one part of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Duplicate,
    Applied,
    Overflowed,
}

/// The rebuild's input: first occurrence of each update id (the ledger has
/// unique ids; a repeat would be counted once anyway), and whether each sets
/// a marker — only updates recent enough to still be retried do, so a
/// rebuild of a long history does not fill Redis with markers.
pub(crate) fn rebuild_input(
    updates: &[BoardUpdate],
    now_ms: i64,
    marker_ttl_secs: u64,
) -> (Vec<BoardUpdate>, Vec<bool>) {
    let ttl_ms = i64::try_from(marker_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut seen = HashSet::with_capacity(updates.len());
    let unique: Vec<BoardUpdate> = updates
        .iter()
        .filter(|u| seen.insert(u.update_id.as_str()))
        .cloned()
        .collect();
    let marks = unique
        .iter()
        .map(|u| u.at_ms >= now_ms.saturating_sub(ttl_ms))
        .collect();
    (unique, marks)
}

pub(crate) fn tally(updates: &[BoardUpdate], statuses: &[(Status, Status)]) -> ApplyReport {
    let mut report = ApplyReport::default();
    for (update, (room, global)) in updates.iter().zip(statuses) {
        match room {
            Status::Applied => report.applied += 1,
            Status::Duplicate => report.duplicates += 1,
            Status::Overflowed => report.overflowed.push(update.update_id.clone()),
        }
        if *global == Status::Overflowed && *room != Status::Overflowed {
            report.overflowed.push(update.update_id.clone());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn member_encoding_reverses_order_and_round_trips() {
        let ids = ["a", "aa", "ab", "b", "A", "Z", "_", "-", "0", "9", "zz-9_Q"];
        for a in ids {
            assert_eq!(decode_member(&encode_member(a)).as_deref(), Some(a));
            for b in ids {
                assert_eq!(
                    a.cmp(b),
                    encode_member(b).cmp(&encode_member(a)),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn periods_follow_utc_days_and_iso_weeks() {
        // 2026-01-01 is a Thursday in ISO week 2026-W01 (Mon 2025-12-29).
        let p = periods(ms("2026-01-01T23:59:59.999Z"));
        assert_eq!(p.day, "20260101");
        assert_eq!(p.week, "2026W01");
        assert_eq!(
            p.day_expire_s,
            ms("2026-01-02T00:00:00Z") / 1000 + PERIOD_GRACE_SECS
        );
        assert_eq!(
            p.week_expire_s,
            ms("2026-01-05T00:00:00Z") / 1000 + PERIOD_GRACE_SECS
        );
        let p = periods(ms("2027-01-03T12:00:00Z"));
        assert_eq!(p.week, "2026W53");
        assert_eq!(periods(ms("2027-01-04T00:00:00Z")).week, "2027W01");
    }

    #[test]
    fn names_are_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        assert_eq!(stored_name(&long).chars().count(), NAME_CHARS_MAX);
        assert_eq!(stored_name("Ann"), "Ann");
    }
}
