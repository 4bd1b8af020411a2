//! The conformance suite: every scenario runs against `MemoryBoards`,
//! `RedisBoards`, `RedisBoards` with cluster-safe (one slot per script)
//! scripts, and `RedisBoards` on a real three-master Redis Cluster; asserts
//! the expected answers, and their complete observations (entries with names
//! and ranks) must be identical.

use applause_leaderboard::{BoardError, Leaderboard, Window, TOTAL_MINOR_MAX};

use crate::common::{self, global, owned, top, update, DAY_MS, HOUR_MS};

/// Runs each scenario on both twins and compares what they observed.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (memory, redis) = common::twins().await;
            let slotted = common::redis_boards(&common::random_prefix())
                .await
                .with_slot_scripts(true);
            let cluster = common::cluster_boards(&common::random_prefix()).await;
            let base = common::monday_ms();
            let from_memory = scenarios::$name(&memory, base).await;
            let from_redis = scenarios::$name(&redis, base).await;
            let from_slotted = scenarios::$name(&slotted, base).await;
            let from_cluster = scenarios::$name(&cluster, base).await;
            common::delete_prefix(redis.key_prefix()).await;
            common::delete_prefix(slotted.key_prefix()).await;
            assert_eq!(from_memory, from_redis, "the twins disagree");
            assert_eq!(from_memory, from_slotted, "slot-safe scripts disagree");
            assert_eq!(from_memory, from_cluster, "the Redis Cluster disagrees");
        }
    )*};
}

conformance!(
    windows_roll_over_at_utc_midnight_and_iso_week,
    fan_windows_span_the_broadcasters_rooms_and_live_is_one_room,
    ties_rank_by_user_id_ascending,
    limits_are_honoured_and_checked,
    me_and_unknown_rooms,
    refunds_subtract_and_full_refunds_leave_the_board,
    global_board_ranks_broadcasters,
    latest_display_name_wins,
    needs_rebuild_until_the_first_rebuild,
    totals_past_the_exactness_cap_are_refused,
);

mod scenarios {
    use super::*;

    /// Everything the board shows, for the cross-twin comparison.
    async fn observe(b: &dyn Leaderboard, room: &str, bc: &str, nows: &[i64]) -> Vec<String> {
        let mut out = Vec::new();
        for &now in nows {
            for w in Window::ALL {
                out.push(format!(
                    "{w} {:?}",
                    b.top(room, bc, w, 100, now).await.unwrap()
                ));
            }
            for w in [Window::Day, Window::Week, Window::All] {
                out.push(format!(
                    "g{w} {:?}",
                    b.top_broadcasters(w, 100, now).await.unwrap()
                ));
            }
        }
        out
    }

    pub async fn windows_roll_over_at_utc_midnight_and_iso_week(
        b: &dyn Leaderboard,
        monday: i64,
    ) -> Vec<String> {
        let sunday_late = monday - 30 * 60_000; // Sun 23:30, previous ISO week
        let monday_early = monday + 30 * 60_000; // Mon 00:30
        let monday_last = monday + DAY_MS - 1; // Mon 23:59:59.999
        let tuesday = monday + DAY_MS; // Tue 00:00:00.000
        b.apply_batch(&[
            update("g1", "r1", "bc", "ann", 100, sunday_late),
            update("g2", "r1", "bc", "bob", 200, monday_early),
            update("g3", "r1", "bc", "ann", 50, monday_last),
            update("g4", "r1", "bc", "cat", 400, tuesday),
        ])
        .await
        .unwrap();
        // The window is picked by the reader's `now`, the bucket by `at_ms`.
        let day = |now| top(b, "r1", "bc", Window::Day, now);
        assert_eq!(day(monday - 1).await, owned(&[("ann", 100)]));
        assert_eq!(day(monday).await, owned(&[("bob", 200), ("ann", 50)]));
        assert_eq!(day(monday_last).await, owned(&[("bob", 200), ("ann", 50)]));
        assert_eq!(day(tuesday).await, owned(&[("cat", 400)]));
        assert_eq!(day(tuesday + DAY_MS).await, owned(&[]));
        let week = |now| top(b, "r1", "bc", Window::Week, now);
        assert_eq!(week(monday - 1).await, owned(&[("ann", 100)]));
        assert_eq!(week(monday - 6 * DAY_MS).await, owned(&[("ann", 100)]));
        assert_eq!(
            week(monday).await,
            owned(&[("cat", 400), ("bob", 200), ("ann", 50)])
        );
        assert_eq!(
            week(monday + 7 * DAY_MS - 1).await,
            owned(&[("cat", 400), ("bob", 200), ("ann", 50)])
        );
        assert_eq!(week(monday + 7 * DAY_MS).await, owned(&[]));
        let all = owned(&[("cat", 400), ("bob", 200), ("ann", 150)]);
        assert_eq!(top(b, "r1", "bc", Window::All, monday - DAY_MS).await, all);
        assert_eq!(top(b, "r1", "bc", Window::Live, monday).await, all);
        assert_eq!(
            global(b, Window::Day, monday - 1).await,
            owned(&[("bc", 100)])
        );
        assert_eq!(global(b, Window::Day, monday).await, owned(&[("bc", 250)]));
        assert_eq!(
            global(b, Window::Week, monday - 1).await,
            owned(&[("bc", 100)])
        );
        assert_eq!(
            global(b, Window::Week, tuesday).await,
            owned(&[("bc", 650)])
        );
        assert_eq!(global(b, Window::All, 0).await, owned(&[("bc", 750)]));
        observe(b, "r1", "bc", &[monday - 1, monday, tuesday]).await
    }

    pub async fn fan_windows_span_the_broadcasters_rooms_and_live_is_one_room(
        b: &dyn Leaderboard,
        monday: i64,
    ) -> Vec<String> {
        let t = monday + HOUR_MS;
        b.apply_batch(&[
            update("f1", "morning", "bc", "ann", 300, t),
            update("f2", "evening", "bc", "bob", 200, t + HOUR_MS),
            update("f3", "evening", "bc", "ann", 50, t + HOUR_MS),
            update("f4", "other-room", "other-bc", "bob", 999, t),
        ])
        .await
        .unwrap();
        assert_eq!(
            top(b, "morning", "bc", Window::Live, t).await,
            owned(&[("ann", 300)])
        );
        assert_eq!(
            top(b, "evening", "bc", Window::Live, t).await,
            owned(&[("bob", 200), ("ann", 50)])
        );
        for w in [Window::Day, Window::Week, Window::All] {
            let fans = owned(&[("ann", 350), ("bob", 200)]);
            assert_eq!(top(b, "morning", "bc", w, t).await, fans);
            assert_eq!(top(b, "evening", "bc", w, t).await, fans);
            assert_eq!(
                top(b, "other-room", "other-bc", w, t).await,
                owned(&[("bob", 999)])
            );
        }
        let mut out = observe(b, "morning", "bc", &[t]).await;
        out.extend(observe(b, "evening", "bc", &[t]).await);
        out
    }

    pub async fn ties_rank_by_user_id_ascending(b: &dyn Leaderboard, monday: i64) -> Vec<String> {
        let t = monday + HOUR_MS;
        // Byte order: "B" < "_" < "a" < "aa" < "ab" < "b"; "a" is a prefix
        // of "aa", the case a naive reversed encoding gets wrong.
        let users = ["b", "aa", "_", "a", "B", "ab", "top", "low"];
        let mut updates = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let amount = match *user {
                "top" => 500,
                "low" => 10,
                _ => 100,
            };
            updates.push(update(&format!("t{i}"), "r", "bc", user, amount, t));
        }
        b.apply_batch(&updates).await.unwrap();
        let expected = owned(&[
            ("top", 500),
            ("B", 100),
            ("_", 100),
            ("a", 100),
            ("aa", 100),
            ("ab", 100),
            ("b", 100),
            ("low", 10),
        ]);
        for w in Window::ALL {
            assert_eq!(top(b, "r", "bc", w, t).await, expected);
            // A limit inside the tie cuts it in user id order.
            let first3 = b.top("r", "bc", w, 3, t).await.unwrap();
            assert_eq!(common::pairs(&first3), expected[..3].to_vec());
            for (i, (user, amount)) in expected.iter().enumerate() {
                let me = b.me("r", "bc", w, user, t).await.unwrap().unwrap();
                assert_eq!(
                    (me.rank as usize, me.amount_minor),
                    (i + 1, *amount),
                    "{user}"
                );
            }
        }
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn limits_are_honoured_and_checked(b: &dyn Leaderboard, monday: i64) -> Vec<String> {
        let t = monday + HOUR_MS;
        let updates: Vec<_> = (0..150)
            .map(|i| {
                update(
                    &format!("l{i}"),
                    "r",
                    "bc",
                    &format!("u{i:03}"),
                    1000 - i,
                    t,
                )
            })
            .collect();
        b.apply_batch(&updates).await.unwrap();
        for limit in [1usize, 2, 10, 100] {
            let entries = b.top("r", "bc", Window::Live, limit, t).await.unwrap();
            assert_eq!(entries.len(), limit);
            assert_eq!(entries[limit - 1].user_id, format!("u{:03}", limit - 1));
        }
        for limit in [0usize, 101] {
            assert!(matches!(
                b.top("r", "bc", Window::Live, limit, t).await,
                Err(BoardError::Invalid { field: "limit", .. })
            ));
            assert!(matches!(
                b.top_broadcasters(Window::All, limit, t).await,
                Err(BoardError::Invalid { field: "limit", .. })
            ));
        }
        let last = b
            .me("r", "bc", Window::Live, "u149", t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((last.rank, last.amount_minor), (150, 851));
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn me_and_unknown_rooms(b: &dyn Leaderboard, monday: i64) -> Vec<String> {
        let t = monday + HOUR_MS;
        b.apply(&update("m1", "r", "bc", "ann", 100, t))
            .await
            .unwrap();
        for w in Window::ALL {
            assert_eq!(b.me("r", "bc", w, "nobody", t).await.unwrap(), None);
            assert_eq!(
                b.me("unknown", "nobody-bc", w, "ann", t).await.unwrap(),
                None
            );
            assert_eq!(top(b, "unknown", "nobody-bc", w, t).await, owned(&[]));
            let me = b.me("r", "bc", w, "ann", t).await.unwrap().unwrap();
            assert_eq!(me.rank, 1);
            assert_eq!(me.name.as_deref(), Some("ann name"));
        }
        // The live board of another room of the same broadcaster is empty.
        assert_eq!(top(b, "r2", "bc", Window::Live, t).await, owned(&[]));
        assert!(matches!(
            b.top("bad room!", "bc", Window::Live, 10, t).await,
            Err(BoardError::Invalid {
                field: "room_id",
                ..
            })
        ));
        assert!(matches!(
            b.apply(&update("bad id with spaces", "r", "bc", "ann", 1, t))
                .await,
            Err(BoardError::Invalid {
                field: "update_id",
                ..
            })
        ));
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn refunds_subtract_and_full_refunds_leave_the_board(
        b: &dyn Leaderboard,
        monday: i64,
    ) -> Vec<String> {
        let t = monday + HOUR_MS;
        b.apply_batch(&[
            update("g1", "r", "bc", "ann", 500, t),
            update("g2", "r", "bc", "bob", 300, t),
            update("g3", "r", "bc", "cat", 200, t),
            update("refund:g1", "r", "bc", "ann", -450, t),
            update("refund:g3", "r", "bc", "cat", -200, t),
            // A refund arriving before its gift: negative until the gift.
            update("refund:g9", "r", "bc", "dan", -70, t),
        ])
        .await
        .unwrap();
        for w in Window::ALL {
            assert_eq!(
                top(b, "r", "bc", w, t).await,
                owned(&[("bob", 300), ("ann", 50)])
            );
            assert_eq!(b.me("r", "bc", w, "cat", t).await.unwrap(), None);
            assert_eq!(b.me("r", "bc", w, "dan", t).await.unwrap(), None);
        }
        assert_eq!(global(b, Window::All, t).await, owned(&[("bc", 280)]));
        let report = b
            .apply(&update("g9", "r", "bc", "dan", 100, t))
            .await
            .unwrap();
        assert_eq!(report.applied, 1);
        assert_eq!(
            top(b, "r", "bc", Window::Live, t).await,
            owned(&[("bob", 300), ("ann", 50), ("dan", 30)])
        );
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn global_board_ranks_broadcasters(b: &dyn Leaderboard, monday: i64) -> Vec<String> {
        let t = monday + 2 * DAY_MS + HOUR_MS; // Wednesday
        b.apply_batch(&[
            update("a1", "ra", "alpha", "ann", 100, t),
            update("a2", "ra2", "alpha", "bob", 150, t),
            update("b1", "rb", "beta", "ann", 250, t),
            update("c1", "rc", "gamma", "cat", 90, t - DAY_MS), // Tuesday
            update("c2", "rc", "gamma", "cat", 400, t - 7 * DAY_MS), // last week
            update("d1", "rd", "delta", "dan", 250, t),
        ])
        .await
        .unwrap();
        assert_eq!(
            global(b, Window::Day, t).await,
            owned(&[("alpha", 250), ("beta", 250), ("delta", 250)])
        );
        assert_eq!(
            global(b, Window::Week, t).await,
            owned(&[("alpha", 250), ("beta", 250), ("delta", 250), ("gamma", 90)])
        );
        assert_eq!(
            global(b, Window::All, t).await,
            owned(&[
                ("gamma", 490),
                ("alpha", 250),
                ("beta", 250),
                ("delta", 250)
            ])
        );
        assert_eq!(
            common::pairs(&b.top_broadcasters(Window::All, 2, t).await.unwrap()),
            owned(&[("gamma", 490), ("alpha", 250)])
        );
        assert!(matches!(
            b.top_broadcasters(Window::Live, 10, t).await,
            Err(BoardError::Invalid {
                field: "window",
                ..
            })
        ));
        observe(b, "ra", "alpha", &[t]).await
    }

    pub async fn latest_display_name_wins(b: &dyn Leaderboard, monday: i64) -> Vec<String> {
        let t = monday + HOUR_MS;
        let mut first = update("n1", "r", "bc", "ann", 100, t);
        first.sender_name = "Ann".into();
        let mut second = update("n2", "r", "bc", "ann", 100, t);
        second.sender_name = "Queen Ann 👑".into();
        b.apply(&first).await.unwrap();
        b.apply(&second).await.unwrap();
        let mut dup = first.clone();
        dup.sender_name = "ignored: a duplicate changes nothing".into();
        b.apply(&dup).await.unwrap();
        let entries = b.top("r", "bc", Window::Live, 10, t).await.unwrap();
        assert_eq!(entries[0].name.as_deref(), Some("Queen Ann 👑"));
        // Broadcasters never seen as senders have no name on the global board.
        let brs = b.top_broadcasters(Window::All, 10, t).await.unwrap();
        assert_eq!(brs[0].name, None);
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn needs_rebuild_until_the_first_rebuild(
        b: &dyn Leaderboard,
        monday: i64,
    ) -> Vec<String> {
        let t = monday + HOUR_MS;
        assert!(
            b.needs_rebuild().await.unwrap(),
            "fresh boards are not known complete"
        );
        b.apply(&update("p1", "r", "bc", "ann", 100, t))
            .await
            .unwrap();
        let report = b
            .rebuild(&[update("p2", "r", "bc", "bob", 70, t)], t)
            .await
            .unwrap();
        assert_eq!((report.updates, report.applied), (1, 1));
        assert!(!b.needs_rebuild().await.unwrap());
        // Boards written before the first rebuild are replaced by it.
        assert_eq!(
            top(b, "r", "bc", Window::Live, t).await,
            owned(&[("bob", 70)])
        );
        observe(b, "r", "bc", &[t]).await
    }

    pub async fn totals_past_the_exactness_cap_are_refused(
        b: &dyn Leaderboard,
        monday: i64,
    ) -> Vec<String> {
        let t = monday + HOUR_MS;
        let big = 1_000_000_000_000_000; // AMOUNT_MINOR_MAX
        let updates: Vec<_> = (0..5)
            .map(|i| update(&format!("o{i}"), "r", "bc", "whale", big, t))
            .collect();
        let report = b.apply_batch(&updates).await.unwrap();
        // 4 × 10^15 fits under 2^52 − 1 ≈ 4.5 × 10^15; the 5th does not.
        assert_eq!(report.applied, 4);
        assert_eq!(report.overflowed, vec!["o4".to_owned()]);
        for w in Window::ALL {
            let whale = b.me("r", "bc", w, "whale", t).await.unwrap().unwrap();
            assert_eq!(
                whale.amount_minor,
                4 * big,
                "{w}: the refused part was undone"
            );
        }
        assert_eq!(global(b, Window::All, t).await, owned(&[("bc", 4 * big)]));
        // A small gift by someone else still fits.
        b.apply(&update("o-small", "r", "bc", "minnow", 1, t))
            .await
            .unwrap();
        // Not marked: after a refund it can be applied.
        b.apply(&update("refund:o0", "r", "bc", "whale", -big, t))
            .await
            .unwrap();
        let report = b.apply(&updates[4]).await.unwrap();
        assert_eq!(report.applied, 1);
        let whale = b
            .me("r", "bc", Window::All, "whale", t)
            .await
            .unwrap()
            .unwrap();
        assert!(whale.amount_minor <= TOTAL_MINOR_MAX);
        assert!(matches!(
            b.apply(&update("o10", "r", "bc", "whale", big + 1, t))
                .await,
            Err(BoardError::Invalid {
                field: "amount_minor",
                ..
            })
        ));
        observe(b, "r", "bc", &[t]).await
    }
}
