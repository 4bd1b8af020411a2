//! The ordering contract and the history-window rules, shared by both buses so
//! they answer every case the same way.

use std::sync::Arc;

use applause_core::EventEnvelope;

use crate::{History, HistoryBounds, PublishOutcome};

/// What the bus does with `seq` given the room's last published seq (`None`
/// when the bus has no record of the room) and, when the publisher read it
/// from the ledger, the seq through which every event of the room is recorded
/// as having reached the bus (`published_through`).
///
/// A room starts at seq 1. A bus that lost a room's record (Redis flushed or
/// restarted from an old snapshot, keys expired, a process restarted) goes on
/// only where the ledger vouches for everything before: `published_through +
/// 1`. Without that word a later seq is a gap, because the events before it
/// may not have been published yet (two publishers racing on a new room).
///
/// Seq 0 means "nothing yet" (see [`crate::RoomCursor`]), so an event at 0 is
/// never delivered: it counts as already at or before any cursor.
pub(crate) fn check_order(
    last_seq: Option<u64>,
    seq: u64,
    published_through: Option<u64>,
) -> PublishOutcome {
    if seq == 0 {
        return PublishOutcome::Duplicate;
    }
    let vouched = published_through.is_some_and(|p| p.checked_add(1) == Some(seq));
    match last_seq {
        Some(last) if seq <= last => PublishOutcome::Duplicate,
        Some(last) if seq == last.saturating_add(1) || vouched => PublishOutcome::Published,
        Some(last) => PublishOutcome::Gap {
            expected: last.saturating_add(1),
        },
        None if seq == 1 || vouched => PublishOutcome::Published,
        None => PublishOutcome::Gap { expected: 1 },
    }
}

/// Whether publishing `seq` after `last_seq` starts the room's history over
/// (the bus lost events the ledger vouched for): the kept events are dropped
/// so the history stays contiguous.
pub(crate) fn restarts_history(last_seq: Option<u64>, seq: u64) -> bool {
    last_seq.is_none_or(|last| last.checked_add(1) != Some(seq))
}

/// Answers a history request from the room's last seq and the kept events
/// with `seq > since_seq`, in order (at most `max` of them are looked at).
///
/// The count bound is applied to seq numbers, not to what storage happens to
/// keep: Redis trims streams approximately (`MAXLEN ~`), and a resume must get
/// the same answer whichever bus serves it.
pub(crate) fn answer_history(
    last_seq: Option<u64>,
    since_seq: u64,
    max: usize,
    kept_after_since: impl IntoIterator<Item = Arc<EventEnvelope>>,
    bounds: HistoryBounds,
    now_ms: i64,
) -> History {
    let Some(last) = last_seq else {
        // No record of the room: nothing was published, unless the record was
        // lost (restart, expiry), in which case a client past 0 must resync.
        return if since_seq == 0 {
            History::Events(Vec::new())
        } else {
            History::Gone
        };
    };
    if since_seq == last {
        return History::Events(Vec::new());
    }
    if since_seq > last {
        // The client saw a seq this bus never published: its view comes from
        // a room state the bus no longer has, so only a resync is correct.
        return History::Gone;
    }
    let events_max = u64::try_from(bounds.events_max).unwrap_or(u64::MAX);
    if last - since_seq > events_max {
        return History::Gone;
    }
    if max == 0 {
        return History::Events(Vec::new());
    }
    let age_ms_max = i64::try_from(bounds.age_ms_max).unwrap_or(i64::MAX);
    let mut out = Vec::with_capacity(max.min(usize::try_from(last - since_seq).unwrap_or(max)));
    for (expected, event) in (since_seq + 1..).zip(kept_after_since.into_iter().take(max)) {
        if event.seq != expected || now_ms.saturating_sub(event.committed_at_ms) > age_ms_max {
            return History::Gone;
        }
        out.push(event);
    }
    if out.is_empty() {
        // The room has events after since_seq but none is kept any more.
        return History::Gone;
    }
    History::Events(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, committed_at_ms: i64) -> Arc<EventEnvelope> {
        Arc::new(EventEnvelope {
            room_id: "r".into(),
            epoch: 1,
            seq,
            frame: String::new(),
            broadcaster_frame: None,
            broadcaster_id: "b".into(),
            committed_at_ms,
            ends_room: false,
        })
    }

    #[test]
    fn order_outcomes() {
        use PublishOutcome::{Duplicate, Gap, Published};
        // (last, seq, published_through, expected)
        let cases = [
            (None, 1, None, Published),
            (None, 7, None, Gap { expected: 1 }),
            (None, 7, Some(6), Published),
            (None, 7, Some(5), Gap { expected: 1 }),
            (None, 7, Some(7), Gap { expected: 1 }),
            (None, 0, None, Duplicate),
            (None, 0, Some(u64::MAX), Duplicate),
            (Some(3), 0, None, Duplicate),
            (Some(0), 1, None, Published),
            (Some(4), 5, None, Published),
            (Some(4), 5, Some(2), Published),
            (Some(4), 4, None, Duplicate),
            (Some(4), 4, Some(3), Duplicate),
            (Some(4), 1, None, Duplicate),
            (Some(4), 7, None, Gap { expected: 5 }),
            (Some(4), 7, Some(5), Gap { expected: 5 }),
            // The bus went back to an older state than the ledger vouches for.
            (Some(4), 7, Some(6), Published),
        ];
        for (last, seq, through, expected) in cases {
            assert_eq!(
                check_order(last, seq, through),
                expected,
                "last={last:?} seq={seq} through={through:?}"
            );
        }
        assert!(restarts_history(None, 1));
        assert!(restarts_history(Some(4), 7));
        assert!(!restarts_history(Some(4), 5));
    }

    fn seqs(h: &History) -> Option<Vec<u64>> {
        match h {
            History::Events(v) => Some(v.iter().map(|e| e.seq).collect()),
            History::Gone => None,
        }
    }

    #[test]
    fn history_windows() {
        let b = HistoryBounds {
            events_max: 3,
            age_ms_max: 1_000,
        };
        let now = 10_000;
        let kept = |from: u64, to: u64| (from..=to).map(|s| ev(s, now)).collect::<Vec<_>>();
        // (last, since, max, kept, expected seqs or None for Gone)
        type Case = (
            Option<u64>,
            u64,
            usize,
            Vec<Arc<EventEnvelope>>,
            Option<Vec<u64>>,
        );
        let cases: Vec<Case> = vec![
            (None, 0, 10, vec![], Some(vec![])),
            (None, 3, 10, vec![], None),
            (Some(5), 5, 10, vec![], Some(vec![])),
            (Some(5), 6, 10, vec![], None),
            (Some(5), 2, 10, kept(3, 5), Some(vec![3, 4, 5])),
            (Some(5), 1, 10, kept(2, 5), None),
            (Some(5), 2, 2, kept(3, 5), Some(vec![3, 4])),
            (Some(5), 2, 0, kept(3, 5), Some(vec![])),
            (Some(5), 2, 10, kept(4, 5), None),
            (Some(5), 2, 10, vec![], None),
            (
                Some(5),
                2,
                10,
                vec![ev(3, now - 1_001), ev(4, now), ev(5, now)],
                None,
            ),
            (
                Some(5),
                3,
                10,
                vec![ev(4, now - 1_000), ev(5, now)],
                Some(vec![4, 5]),
            ),
        ];
        for (last, since, max, kept, expected) in cases {
            let h = answer_history(last, since, max, kept, b, now);
            assert_eq!(seqs(&h), expected, "last={last:?} since={since} max={max}");
        }
    }
}
