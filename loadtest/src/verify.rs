//! The end-of-run verifier: every purchased gift reached every viewer that was
//! connected throughout exactly once and in `seq` order; the finance summary
//! and the leaderboards equal the load generator's own tallies.
//!
//! Viewers check order inline with a [`SeqTracker`] (O(1) memory per viewer
//! plus the seqs it is still missing) and cross-check gift ids through a shared
//! per-room log (seq → gift fingerprint); the pure functions here turn those
//! records into [`Problem`]s after the run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::scan::fingerprint;

/// Problems listed one by one per viewer; the rest are counted by kind.
pub const PROBLEMS_PER_VIEWER_MAX: usize = 20;
/// The widest gap recorded seq by seq; a larger jump is one anomaly.
const GAP_SEQS_MAX: u64 = 100_000;

/// Something one connection saw that the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// A seq seen a second time.
    Duplicate(u64),
    /// A seq that arrived after a later one.
    Reordered(u64),
    /// A gift frame at this seq names another gift than other viewers saw.
    WrongGift(u64),
    /// Seq jumped by more than [`GAP_SEQS_MAX`].
    HugeGap { from: u64, to: u64 },
    /// The room's epoch changed under the connection.
    EpochChanged { from: u64, to: u64 },
}

/// Tracks one connection's seq stream.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// First seq this connection should receive (welcome seq + 1).
    pub first: Option<u64>,
    /// The next seq expected in order.
    next: Option<u64>,
    /// Highest seq seen.
    pub last: Option<u64>,
    /// Seqs skipped over and not (yet) received.
    pub missing: BTreeSet<u64>,
    pub anomalies: Vec<Anomaly>,
    epoch: Option<u64>,
}

impl SeqTracker {
    /// The welcome frame: events after `seq` are due.
    pub fn welcome(&mut self, seq: u64, epoch: Option<u64>) {
        self.first = Some(seq + 1);
        self.next = Some(seq + 1);
        self.last = Some(seq);
        self.epoch = epoch;
    }

    /// A room event with `seq`; returns false when it was a duplicate (the
    /// caller then does not count the delivery).
    pub fn observe(&mut self, seq: u64, epoch: Option<u64>) -> bool {
        if let (Some(old), Some(new)) = (self.epoch, epoch) {
            if old != new {
                self.anomalies
                    .push(Anomaly::EpochChanged { from: old, to: new });
                self.epoch = Some(new);
            }
        }
        let Some(next) = self.next else {
            // No welcome seen: the first event sets the base.
            self.first = Some(seq);
            self.next = Some(seq + 1);
            self.last = Some(seq);
            return true;
        };
        if seq == next {
            self.next = Some(seq + 1);
            self.last = Some(seq);
            true
        } else if seq > next {
            if seq - next > GAP_SEQS_MAX {
                self.anomalies.push(Anomaly::HugeGap {
                    from: next,
                    to: seq,
                });
            } else {
                self.missing.extend(next..seq);
            }
            self.next = Some(seq + 1);
            self.last = Some(seq);
            true
        } else if self.missing.remove(&seq) {
            self.anomalies.push(Anomaly::Reordered(seq));
            true
        } else {
            self.anomalies.push(Anomaly::Duplicate(seq));
            false
        }
    }
}

/// What the verifier knows about one viewer connection after the run.
#[derive(Debug, Clone)]
pub struct ViewerRecord {
    pub viewer: usize,
    pub room: usize,
    /// Connected (welcomed) before the first purchase and open until the end.
    pub throughout: bool,
    pub tracker: SeqTracker,
}

/// One gift the load generator bought (a 201).
#[derive(Debug, Clone)]
pub struct PurchasedGift {
    pub gift_id: String,
    pub room: usize,
    pub sender_id: String,
    pub amount_minor: i64,
    pub seq: Option<u64>,
}

/// A verification failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Lost {
        viewer: usize,
        seq: u64,
        gift_id: Option<String>,
    },
    Duplicate {
        viewer: usize,
        seq: u64,
    },
    Reordered {
        viewer: usize,
        seq: u64,
    },
    WrongGift {
        viewer: usize,
        seq: u64,
    },
    Stream {
        viewer: usize,
        what: String,
    },
    NeverDelivered {
        gift_id: String,
        seq: Option<u64>,
    },
    DuplicateGiftId {
        gift_id: String,
    },
    AmountMismatch {
        gift_id: String,
        expected: i64,
        got: i64,
    },
    Finance {
        expected: i64,
        got: i64,
    },
    /// The revenue report's gross for one of this run's broadcasters.
    FinanceRevenue {
        broadcaster: String,
        expected: i64,
        got: i64,
    },
    FinanceUnavailable {
        error: String,
    },
    Leaderboard {
        room_id: String,
        user_id: String,
        expected: Option<i64>,
        got: Option<i64>,
    },
    LeaderboardOrder {
        room_id: String,
    },
    LeaderboardUnavailable {
        room_id: String,
        error: String,
    },
    UnknownOutcome {
        count: u64,
    },
    /// More problems of one kind for one viewer than are listed singly.
    Elided {
        viewer: usize,
        kind: &'static str,
        count: u64,
    },
}

impl Problem {
    /// A short stable name for grouping in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Lost { .. } => "lost",
            Problem::Duplicate { .. } => "duplicate",
            Problem::Reordered { .. } => "reordered",
            Problem::WrongGift { .. } => "wrong_gift",
            Problem::Stream { .. } => "stream",
            Problem::NeverDelivered { .. } => "never_delivered",
            Problem::DuplicateGiftId { .. } => "duplicate_gift_id",
            Problem::AmountMismatch { .. } => "amount_mismatch",
            Problem::Finance { .. } | Problem::FinanceRevenue { .. } => "finance_mismatch",
            Problem::FinanceUnavailable { .. } => "finance_unavailable",
            Problem::Leaderboard { .. } => "leaderboard_mismatch",
            Problem::LeaderboardOrder { .. } => "leaderboard_order",
            Problem::LeaderboardUnavailable { .. } => "leaderboard_unavailable",
            Problem::UnknownOutcome { .. } => "unknown_outcome",
            Problem::Elided { kind, .. } => kind,
        }
    }

    /// How many problems this entry stands for.
    pub fn weight(&self) -> u64 {
        match self {
            Problem::Elided { count, .. } => *count,
            _ => 1,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Lost { viewer, seq, gift_id } => match gift_id {
                Some(g) => write!(f, "viewer {viewer} never received gift {g} (seq {seq})"),
                None => write!(f, "viewer {viewer} never received the event with seq {seq}"),
            },
            Problem::Duplicate { viewer, seq } => {
                write!(f, "viewer {viewer} received seq {seq} twice")
            }
            Problem::Reordered { viewer, seq } => {
                write!(f, "viewer {viewer} received seq {seq} after a later seq")
            }
            Problem::WrongGift { viewer, seq } => {
                write!(f, "viewer {viewer} got another gift at seq {seq} than other viewers")
            }
            Problem::Stream { viewer, what } => write!(f, "viewer {viewer}: {what}"),
            Problem::NeverDelivered { gift_id, seq } => {
                write!(f, "gift {gift_id} (seq {seq:?}) reached no viewer with that seq")
            }
            Problem::DuplicateGiftId { gift_id } => {
                write!(f, "gift id {gift_id} was returned for two different purchases")
            }
            Problem::AmountMismatch { gift_id, expected, got } => write!(
                f,
                "gift {gift_id} charged {got} minor units, the catalog says {expected}"
            ),
            Problem::Finance { expected, got } => write!(
                f,
                "finance gross gifts grew by {got} minor units, the load generator bought {expected}"
            ),
            Problem::FinanceRevenue { broadcaster, expected, got } => write!(
                f,
                "revenue report: broadcaster {broadcaster} grossed {got} minor units, the load generator bought {expected} in their room"
            ),
            Problem::FinanceUnavailable { error } => {
                write!(f, "finance summary unavailable: {error}")
            }
            Problem::Leaderboard { room_id, user_id, expected, got } => write!(
                f,
                "room {room_id} leaderboard: {user_id} shows {got:?} minor units, tallied {expected:?}"
            ),
            Problem::LeaderboardOrder { room_id } => {
                write!(f, "room {room_id} leaderboard is not ordered by amount")
            }
            Problem::LeaderboardUnavailable { room_id, error } => {
                write!(f, "room {room_id} leaderboard unavailable: {error}")
            }
            Problem::Elided { viewer, kind, count } => {
                write!(f, "viewer {viewer}: {count} more {kind} problems not listed")
            }
            Problem::UnknownOutcome { count } => write!(
                f,
                "{count} purchases got no answer after every retry: totals cannot be exact"
            ),
        }
    }
}

/// Checks deliveries. `room_logs[room]` maps seq → gift fingerprint as seen by
/// the room's viewers; `viewers_per_room[room]` says whether anyone watched.
pub fn verify_deliveries(
    purchases: &[PurchasedGift],
    room_logs: &[HashMap<u64, u64>],
    viewers: &[ViewerRecord],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen_ids = HashSet::new();
    let watched: HashSet<usize> = viewers.iter().map(|v| v.room).collect();
    // seq → gift id per room, for naming lost gifts and checking coverage.
    let mut by_room: Vec<BTreeMap<u64, &str>> = vec![BTreeMap::new(); room_logs.len()];
    for p in purchases {
        if !seen_ids.insert(p.gift_id.as_str()) {
            problems.push(Problem::DuplicateGiftId {
                gift_id: p.gift_id.clone(),
            });
            continue;
        }
        if !watched.contains(&p.room) {
            continue;
        }
        let log = &room_logs[p.room];
        let fp = fingerprint(&p.gift_id);
        let seq = p
            .seq
            .or_else(|| log.iter().find(|(_, f)| **f == fp).map(|(s, _)| *s));
        match seq {
            Some(s) if log.get(&s) == Some(&fp) => {
                by_room[p.room].insert(s, &p.gift_id);
            }
            _ => problems.push(Problem::NeverDelivered {
                gift_id: p.gift_id.clone(),
                seq,
            }),
        }
    }
    for v in viewers {
        let t = &v.tracker;
        let mut mine = Vec::new();
        for a in &t.anomalies {
            mine.push(match a {
                Anomaly::Duplicate(seq) => Problem::Duplicate {
                    viewer: v.viewer,
                    seq: *seq,
                },
                Anomaly::Reordered(seq) => Problem::Reordered {
                    viewer: v.viewer,
                    seq: *seq,
                },
                Anomaly::WrongGift(seq) => Problem::WrongGift {
                    viewer: v.viewer,
                    seq: *seq,
                },
                other => Problem::Stream {
                    viewer: v.viewer,
                    what: format!("{other:?}"),
                },
            });
        }
        let gifts = by_room.get(v.room);
        let name = |seq: u64| gifts.and_then(|g| g.get(&seq)).map(|s| (*s).to_owned());
        for &seq in &t.missing {
            mine.push(Problem::Lost {
                viewer: v.viewer,
                seq,
                gift_id: name(seq),
            });
        }
        if let (true, Some(gifts)) = (v.throughout, gifts) {
            let first = t.first.unwrap_or(u64::MAX);
            let last = t.last.unwrap_or(0);
            // Gifts before the viewer's first seq or after its last were never seen.
            let outside = gifts
                .range(..first)
                .chain(gifts.range(last.saturating_add(1)..));
            for (&seq, gift_id) in outside {
                mine.push(Problem::Lost {
                    viewer: v.viewer,
                    seq,
                    gift_id: Some((*gift_id).to_owned()),
                });
            }
        }
        problems.extend(cap_per_viewer(v.viewer, mine));
    }
    problems
}

/// Keeps the first [`PROBLEMS_PER_VIEWER_MAX`] problems of one viewer and
/// counts the rest by kind: a badly broken server could otherwise produce
/// viewers × gifts entries.
pub fn cap_per_viewer(viewer: usize, mut mine: Vec<Problem>) -> Vec<Problem> {
    if mine.len() > PROBLEMS_PER_VIEWER_MAX {
        let mut rest: BTreeMap<&'static str, u64> = BTreeMap::new();
        for p in mine.drain(PROBLEMS_PER_VIEWER_MAX..) {
            *rest.entry(p.kind()).or_default() += p.weight();
        }
        for (kind, count) in rest {
            mine.push(Problem::Elided {
                viewer,
                kind,
                count,
            });
        }
    }
    mine
}

/// The finance summary's gross gifts must have grown by exactly what was bought.
pub fn verify_finance(before: i64, after: i64, bought: i64) -> Option<Problem> {
    let got = after - before;
    (got != bought).then_some(Problem::Finance {
        expected: bought,
        got,
    })
}

/// The revenue report by broadcaster against what was bought in each of this
/// run's rooms (`expected`: broadcaster id → minor units); a broadcaster
/// missing from the report grossed nothing.
pub fn verify_revenue(
    expected: &BTreeMap<String, i64>,
    report: &HashMap<String, i64>,
) -> Vec<Problem> {
    expected
        .iter()
        .filter_map(|(b, &want)| {
            let got = report.get(b).copied().unwrap_or(0);
            (got != want).then(|| Problem::FinanceRevenue {
                broadcaster: b.clone(),
                expected: want,
                got,
            })
        })
        .collect()
}

/// A room's live leaderboard (top `limit`) against the tallies per sender.
pub fn verify_leaderboard(
    room_id: &str,
    tallies: &BTreeMap<String, i64>,
    entries: &[(String, i64)],
    limit: usize,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mismatch = |user: &str, expected: Option<i64>, got: Option<i64>| Problem::Leaderboard {
        room_id: room_id.to_owned(),
        user_id: user.to_owned(),
        expected,
        got,
    };
    let mut listed = HashSet::new();
    for (user, amount) in entries {
        listed.insert(user.as_str());
        let expected = tallies.get(user).copied();
        if expected != Some(*amount) {
            problems.push(mismatch(user, expected, Some(*amount)));
        }
    }
    if entries.windows(2).any(|w| w[0].1 < w[1].1) {
        problems.push(Problem::LeaderboardOrder {
            room_id: room_id.to_owned(),
        });
    }
    // Everyone strictly above the cut must be listed (ties at the cut may go either way).
    let mut amounts: Vec<i64> = tallies.values().copied().filter(|a| *a > 0).collect();
    amounts.sort_unstable_by(|a, b| b.cmp(a));
    let cut = if amounts.len() > limit {
        amounts[limit]
    } else {
        0
    };
    for (user, amount) in tallies {
        if *amount > cut && !listed.contains(user.as_str()) {
            problems.push(mismatch(user, Some(*amount), None));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(welcome: u64, seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        t.welcome(welcome, Some(1));
        for s in seqs {
            t.observe(*s, Some(1));
        }
        t
    }

    #[test]
    fn in_order_streams_are_clean() {
        let t = tracker(10, &[11, 12, 13]);
        assert!(t.anomalies.is_empty() && t.missing.is_empty());
        assert_eq!((t.first, t.last), (Some(11), Some(13)));
    }

    #[test]
    fn gaps_duplicates_and_reorders_are_told_apart() {
        let t = tracker(0, &[1, 3]);
        assert_eq!(t.missing.iter().copied().collect::<Vec<_>>(), vec![2]);
        let t = tracker(0, &[1, 1, 2]);
        assert_eq!(t.anomalies, vec![Anomaly::Duplicate(1)]);
        let t = tracker(0, &[2, 1, 3]);
        assert_eq!(t.anomalies, vec![Anomaly::Reordered(1)]);
        assert!(t.missing.is_empty());
    }

    fn purchase(id: &str, seq: u64) -> PurchasedGift {
        PurchasedGift {
            gift_id: id.into(),
            room: 0,
            sender_id: "s".into(),
            amount_minor: 100,
            seq: Some(seq),
        }
    }

    fn viewer(t: SeqTracker) -> ViewerRecord {
        ViewerRecord {
            viewer: 0,
            room: 0,
            throughout: true,
            tracker: t,
        }
    }

    #[test]
    fn a_gift_after_the_last_seen_seq_is_lost() {
        let log: HashMap<u64, u64> = [(1, fingerprint("a")), (2, fingerprint("b"))].into();
        let buys = [purchase("a", 1), purchase("b", 2)];
        let ok = verify_deliveries(
            &buys,
            std::slice::from_ref(&log),
            &[viewer(tracker(0, &[1, 2]))],
        );
        assert!(ok.is_empty(), "{ok:?}");
        let bad = verify_deliveries(&buys, &[log], &[viewer(tracker(0, &[1]))]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].kind(), "lost");
    }

    #[test]
    fn a_viewer_that_saw_nothing_is_summarised_not_listed_gift_by_gift() {
        let n = 1000u64;
        let log: HashMap<u64, u64> = (1..=n).map(|s| (s, fingerprint(&s.to_string()))).collect();
        let buys: Vec<_> = (1..=n).map(|s| purchase(&s.to_string(), s)).collect();
        let p = verify_deliveries(&buys, &[log], &[viewer(tracker(0, &[]))]);
        assert_eq!(p.len(), PROBLEMS_PER_VIEWER_MAX + 1);
        assert_eq!(p.iter().map(Problem::weight).sum::<u64>(), n);
        assert!(p.iter().all(|p| p.kind() == "lost"));
    }

    #[test]
    fn a_gift_no_viewer_saw_is_never_delivered() {
        let log: HashMap<u64, u64> = [(1, fingerprint("a"))].into();
        let p = verify_deliveries(&[purchase("x", 1)], &[log], &[viewer(tracker(0, &[1]))]);
        assert_eq!(p[0].kind(), "never_delivered");
    }

    #[test]
    fn finance_and_leaderboards_compare_exactly() {
        assert!(verify_finance(100, 600, 500).is_none());
        assert!(verify_finance(100, 601, 500).is_some());
        let tallies: BTreeMap<String, i64> = [("a".into(), 500), ("b".into(), 300)].into();
        let good = vec![("a".to_owned(), 500), ("b".to_owned(), 300)];
        assert!(verify_leaderboard("r", &tallies, &good, 100).is_empty());
        let off = vec![("a".to_owned(), 501), ("b".to_owned(), 300)];
        assert_eq!(verify_leaderboard("r", &tallies, &off, 100).len(), 1);
        let missing = vec![("a".to_owned(), 500)];
        assert_eq!(verify_leaderboard("r", &tallies, &missing, 100).len(), 1);
        assert!(verify_leaderboard("r", &tallies, &missing, 1).is_empty());
    }
}
