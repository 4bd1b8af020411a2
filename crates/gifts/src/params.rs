//! The schemas of path and query parameters, for the OpenAPI description.
//! The handlers read these parameters as text and check them themselves
//! (so every failure is the API's JSON error); the enums here list the
//! values those checks accept, and the tests below hold the two together.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

pub use applause_web::openapi::ObjectId;

/// A room leaderboard's window: this stream session (`live`), the UTC day,
/// the ISO week (UTC), or all time.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a description: the handlers parse the text
pub enum RoomWindow {
    Live,
    Day,
    Week,
    All,
}

/// The broadcaster board's window (no `live`: it spans every room).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum BoardWindow {
    Day,
    Week,
    All,
}

/// What the revenue report's rows are grouped by.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum GroupBy {
    Day,
    Channel,
    Broadcaster,
    Sticker,
}

/// The format of a report: JSON (default) or a CSV download.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Format {
    Json,
    Csv,
}

/// A funding channel.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Channel {
    Apple,
    Google,
    Web,
}

/// How a red packet's total is shared.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Mode {
    Equal,
    Random,
    Fixed,
}

/// A calendar day `YYYY-MM-DD` (UTC).
pub struct Day;

impl utoipa::PartialSchema for Day {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
            .examples(["2026-01-01"])
            .into()
    }
}

impl ToSchema for Day {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Day")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<T: utoipa::PartialSchema>() -> Vec<String> {
        let v = serde_json::to_value(T::schema()).unwrap();
        v["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_described_values_are_the_accepted_ones() {
        use applause_leaderboard::Window;
        let room = values::<RoomWindow>();
        assert_eq!(room, ["live", "day", "week", "all"]);
        for w in &room {
            let q = crate::decode::board_query(&format!("window={w}"), true).unwrap();
            assert!(q.is_ok(), "{w}");
        }
        let board = values::<BoardWindow>();
        assert_eq!(board, ["day", "week", "all"]);
        for w in &board {
            assert!(w.parse::<Window>().is_ok());
            let q = crate::decode::board_query(&format!("window={w}"), false).unwrap();
            assert!(q.is_ok(), "{w}");
        }
        assert!(crate::decode::board_query("window=live", false)
            .unwrap()
            .is_err());
        for g in values::<GroupBy>() {
            assert!(g.parse::<applause_ledger::GroupBy>().is_ok(), "{g}");
        }
        for c in values::<Channel>() {
            assert!(c.parse::<applause_core::Channel>().is_ok(), "{c}");
        }
        assert_eq!(values::<Channel>().len(), applause_core::Channel::ALL.len());
        for m in values::<Mode>() {
            assert!(m.parse::<applause_core::redpacket::Mode>().is_ok(), "{m}");
        }
        for f in values::<Format>() {
            let q = format!("from=2026-01-01&to=2026-01-02&format={f}");
            assert!(crate::decode::revenue_query(&q).unwrap().is_ok(), "{f}");
        }
    }
}
