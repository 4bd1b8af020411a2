//! SQLite's batch rows bound as parameters: the keys a batch loads and the
//! rows it writes go into multi-row `VALUES` lists, chunked under SQLite's
//! parameter limit.
//!
//! Why not one JSON array per table (as PostgreSQL does): SQLite's JSON
//! functions allocate for every value they expand, and a profile of the
//! purchase benchmark put about a quarter of the server's CPU in `malloc`
//! under them (docs/benchmarks.md). Bound parameters are copied straight
//! into the statement.
//!
//! Statements are prepared once and kept: every `VALUES` list is padded to
//! a power of two rows (130 rows are written as 256, the last 126 all NULL,
//! which the statement passes over), so a table needs at most a dozen
//! shapes and parsing a many-row `VALUES` list (a tenth of the server's
//! instructions when each batch re-prepared its own) happens once per
//! shape. Key lookups pad their `IN` list by repeating the last key, which
//! selects the same rows.
//!
//! A batch's reads (with its BEGIN), and then its writes with its COMMIT,
//! go to the connection's worker thread as one script each: sqlx's SQLite
//! driver runs every statement of a query string, binding the parameters
//! in order across them (sqlx 0.8; the tests below hold it to that).
use applause_core::Channel;
use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::model::*;
use crate::plan::WriteSet;

/// Parameters per statement at most. SQLite's limit
/// (`SQLITE_MAX_VARIABLE_NUMBER`) is 32,766 since 3.32; the bundled SQLite
/// is newer.
const PARAMS_MAX: usize = 32_000;

/// Rows per statement at most (a power of two), so the shapes a table needs
/// stay few: 1, 2, 4, … up to this.
const ROWS_MAX: usize = 512;

/// Statements the writer connection keeps prepared: every power-of-two shape
/// of every batch statement, with room to spare.
pub(super) const STATEMENT_CACHE: usize = 512;

/// The most rows one statement of `columns` parameters per row takes: a
/// power of two under both limits.
fn rows_max(columns: usize) -> usize {
    let fit = (PARAMS_MAX / columns.max(1)).clamp(1, ROWS_MAX);
    1 << fit.ilog2()
}

/// Binds one row's columns.
pub(super) type BindRow<'a, T> = fn(&mut Separated<'_, 'a, Sqlite, &'static str>, &'a T);

/// Appends to `script` the statements `head VALUES (…), (…) tail; ` that
/// take `rows` (`columns` parameters each): one per [`rows_max`] rows, each
/// padded to a power of two with rows of NULLs (so one prepared shape serves
/// many batch sizes). `head … tail` must pass over an all-NULL row: an
/// insert selects `WHERE column1 IS NOT NULL`, a join or `IN` never
/// matches NULL.
fn statement<'a, T>(
    script: &mut QueryBuilder<'a, Sqlite>,
    head: &str,
    tail: &str,
    columns: usize,
    rows: &'a [T],
    bind: BindRow<'a, T>,
) {
    for chunk in rows.chunks(rows_max(columns)) {
        let padded = chunk.len().next_power_of_two();
        script.push(head);
        script.push_values(
            chunk
                .iter()
                .map(Some)
                .chain(std::iter::repeat_n(None, padded - chunk.len())),
            |mut b, row| match row {
                Some(row) => bind(&mut b, row),
                None => {
                    for _ in 0..columns {
                        b.push_bind(None::<i64>);
                    }
                }
            },
        );
        script.push(tail);
        script.push("; ");
    }
}

/// Appends `INSERT INTO {into} SELECT * FROM (VALUES …) WHERE column1 IS
/// NOT NULL{conflict}` statements for `rows` (see [`statement`]); `conflict`
/// is an `ON CONFLICT` clause or nothing.
fn insert<'a, T>(
    script: &mut QueryBuilder<'a, Sqlite>,
    into: &str,
    conflict: &str,
    columns: usize,
    rows: &'a [T],
    bind: BindRow<'a, T>,
) {
    let head = format!("INSERT INTO {into} SELECT * FROM (");
    let tail = format!(") WHERE column1 IS NOT NULL{conflict}");
    statement(script, &head, &tail, columns, rows, bind);
}

/// Appends to `script` the statements `SELECT {tag}, {select} IN (VALUES
/// (…), (…))` that select the rows of `keys`, one per [`rows_max`] keys:
/// every row they read starts with `tag`, which tells the reads of one
/// script apart. Each list is padded to a power of two by repeating its
/// last key (the same rows match), so one prepared shape serves many batch
/// sizes.
pub(super) fn select_in<'a, T>(
    script: &mut QueryBuilder<'a, Sqlite>,
    tag: i64,
    select: &str,
    columns: usize,
    keys: &'a [T],
    bind: BindRow<'a, T>,
) {
    let max = rows_max(columns);
    for chunk in keys.chunks(max) {
        let padded = chunk.len().next_power_of_two().min(max);
        let last = &chunk[chunk.len() - 1];
        script.push(format_args!("SELECT {tag}, {select} IN ("));
        script.push_values(
            chunk
                .iter()
                .chain(std::iter::repeat_n(last, padded - chunk.len())),
            |mut b, key| bind(&mut b, key),
        );
        script.push("); ");
    }
}

/// Binds a one-column key.
pub(super) fn bind_one<'a>(b: &mut Separated<'_, 'a, Sqlite, &'static str>, key: &'a &'a String) {
    b.push_bind(key.as_str());
}

/// Binds a two-column key.
pub(super) fn bind_pair<'a>(
    b: &mut Separated<'_, 'a, Sqlite, &'static str>,
    key: &'a &'a (String, String),
) {
    b.push_bind(key.0.as_str()).push_bind(key.1.as_str());
}

/// Writes a planned batch and commits the caller's transaction, all in one
/// round trip to the connection's worker thread: every statement goes into
/// one script, its parameters bound in order. (A statement each cost a hop
/// to that thread and back, some 25 of them per batch of purchases, each
/// waiting for a core on a busy machine.) On an error nothing after the
/// failed statement runs and the caller rolls back.
pub(super) async fn write_and_commit(
    conn: &mut SqliteConnection,
    w: &WriteSet,
) -> Result<(), sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new("");
    // Before the batch's new keys: a forgotten key may be used again.
    statement(
        &mut q,
        "DELETE FROM idempotency WHERE (user_id, key) IN (",
        ")",
        2,
        &w.expired_keys,
        |b, (u, k)| {
            b.push_bind(u).push_bind(k);
        },
    );
    insert(
        &mut q,
        "rooms (room_id, broadcaster_id, title, epoch, live, last_seq, published_seq, created_at_ms, ended_at_ms)",
        "",
        9,
        &w.new_rooms,
        |b, room| {
            b.push_bind(&room.room_id)
                .push_bind(&room.broadcaster_id)
                .push_bind(&room.title)
                .push_bind(room.epoch as i64)
                .push_bind(room.live)
                .push_bind(room.last_seq as i64)
                .push_bind(room.published_seq as i64)
                .push_bind(room.created_at_ms)
                .push_bind(room.ended_at_ms);
        },
    );
    // Each room at most once (its final state).
    statement(
        &mut q,
        "UPDATE rooms SET live = d.column2, last_seq = d.column3, published_seq = d.column4, \
         ended_at_ms = d.column5 FROM (",
        ") AS d WHERE rooms.room_id = d.column1",
        5,
        &w.room_updates,
        |b, room| {
            b.push_bind(&room.room_id)
                .push_bind(room.live)
                .push_bind(room.last_seq as i64)
                .push_bind(room.published_seq as i64)
                .push_bind(room.ended_at_ms);
        },
    );
    let deltas: Vec<(&str, Channel, i64)> = w
        .wallet_deltas
        .iter()
        .map(|((user, channel), delta)| (user.as_str(), *channel, *delta))
        .collect();
    let (credits, debits): (Vec<_>, Vec<_>) = deltas.into_iter().partition(|(_, _, d)| *d > 0);
    let debits: Vec<_> = debits.into_iter().filter(|(_, _, d)| *d < 0).collect();
    let bind_delta: BindRow<'_, (&str, Channel, i64)> = |b, (user, channel, delta)| {
        b.push_bind(*user)
            .push_bind(channel.as_str())
            .push_bind(*delta);
    };
    // Credits are upserted (the row may be new); debits update rows that
    // exist (they were loaded and drawn from).
    insert(
        &mut q,
        "wallets (user_id, channel, balance_minor)",
        " ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = balance_minor + excluded.balance_minor",
        3,
        &credits,
        bind_delta,
    );
    statement(
        &mut q,
        "UPDATE wallets SET balance_minor = balance_minor + d.column3 FROM (",
        ") AS d WHERE wallets.user_id = d.column1 AND wallets.channel = d.column2",
        3,
        &debits,
        bind_delta,
    );
    insert(
        &mut q,
        "transactions (txn_id, kind, created_at_ms)",
        "",
        3,
        &w.txns,
        |b, t| {
            b.push_bind(&t.txn_id)
                .push_bind(t.kind)
                .push_bind(t.created_at_ms);
        },
    );
    insert(
        &mut q,
        "entries (txn_id, account, amount_minor)",
        "",
        3,
        &w.entries,
        |b, e| {
            b.push_bind(&e.txn_id)
                .push_bind(&e.account)
                .push_bind(e.amount_minor);
        },
    );
    let gifts: Vec<(&GiftRecord, String)> = w
        .gifts
        .iter()
        .map(|g| {
            let by_channel =
                serde_json::to_string(&g.split.by_channel).expect("an array serializes");
            (g, by_channel)
        })
        .collect();
    insert(
        &mut q,
        "gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
         amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
         seq, epoch, created_at_ms)",
        "",
        17,
        &gifts,
        |b, (g, by_channel)| {
            b.push_bind(&g.gift_id)
                .push_bind(&g.room_id)
                .push_bind(&g.broadcaster_id)
                .push_bind(&g.sender_id)
                .push_bind(&g.sender_name)
                .push_bind(&g.sticker_id)
                .push_bind(i64::from(g.quantity))
                .push_bind(g.amount_minor)
                .push_bind(g.split.store)
                .push_bind(g.split.broadcaster)
                .push_bind(g.split.platform)
                .push_bind(by_channel)
                .push_bind(&g.message)
                .push_bind(g.balance_after_minor)
                .push_bind(g.seq as i64)
                .push_bind(g.epoch as i64)
                .push_bind(g.created_at_ms);
        },
    );
    insert(
        &mut q,
        "idempotency (user_id, key, request_hash, gift_id, error_code, created_at_ms)",
        "",
        6,
        &w.idempotency,
        |b, i| {
            let (gift, code) = match &i.outcome {
                StoredOutcome::Gift(g) => (Some(g.as_str()), None),
                StoredOutcome::Rejected(c) => (None, Some(c.as_str())),
            };
            b.push_bind(&i.user_id)
                .push_bind(&i.key)
                .push_bind(&i.request_hash)
                .push_bind(gift)
                .push_bind(code)
                .push_bind(i.created_at_ms);
        },
    );
    insert(
        &mut q,
        "receipts (receipt_id, user_id, channel, amount_minor, created_at_ms)",
        "",
        5,
        &w.receipts,
        |b, r| {
            b.push_bind(&r.receipt_id)
                .push_bind(&r.user_id)
                .push_bind(r.channel.as_str())
                .push_bind(r.amount_minor)
                .push_bind(r.created_at_ms);
        },
    );
    insert(
        &mut q,
        "room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, \
         created_at_ms, gift_id)",
        "",
        9,
        &w.events,
        |b, o| {
            let e = &o.envelope;
            b.push_bind(&e.room_id)
                .push_bind(e.seq as i64)
                .push_bind(e.epoch as i64)
                .push_bind(&e.frame)
                .push_bind(&e.broadcaster_frame)
                .push_bind(&e.broadcaster_id)
                .push_bind(e.ends_room)
                .push_bind(e.committed_at_ms)
                .push_bind(&o.gift_id);
        },
    );
    // A gift is acknowledged and refunded at most once.
    statement(
        &mut q,
        "UPDATE gifts SET ack_text = d.column2, acked_at_ms = d.column3 FROM (",
        ") AS d WHERE gifts.gift_id = d.column1",
        3,
        &w.acks,
        |b, (gift_id, text, at)| {
            b.push_bind(gift_id).push_bind(text).push_bind(at);
        },
    );
    statement(
        &mut q,
        "UPDATE gifts SET refunded_at_ms = d.column2 FROM (",
        ") AS d WHERE gifts.gift_id = d.column1",
        2,
        &w.refunds,
        |b, (gift_id, _, _, at)| {
            b.push_bind(gift_id).push_bind(at);
        },
    );
    insert(
        &mut q,
        "refunds (gift_id, reason, refunded_by, created_at_ms)",
        "",
        4,
        &w.refunds,
        |b, (gift_id, reason, by, at)| {
            b.push_bind(gift_id)
                .push_bind(reason)
                .push_bind(by)
                .push_bind(at);
        },
    );
    let packets: Vec<(&RedPacket, String)> = w
        .new_packets
        .iter()
        .chain(w.packet_updates.iter())
        .map(|p| {
            (
                p,
                serde_json::to_string(&p.shares).expect("shares serialize"),
            )
        })
        .collect();
    insert(
        &mut q,
        "red_packets (packet_id, room_id, sender_id, sender_name, mode, total_minor, count, shares, \
         claimed_count, claimed_minor, escrow_apple, escrow_google, escrow_web, created_at_ms, expires_at_ms, \
         settled_at_ms, returned_minor)",
        " ON CONFLICT (packet_id) DO UPDATE SET claimed_count = excluded.claimed_count, \
         claimed_minor = excluded.claimed_minor, escrow_apple = excluded.escrow_apple, \
         escrow_google = excluded.escrow_google, escrow_web = excluded.escrow_web, \
         settled_at_ms = excluded.settled_at_ms, returned_minor = excluded.returned_minor",
        17,
        &packets,
        |b, (p, shares)| {
            b.push_bind(&p.packet_id)
                .push_bind(&p.room_id)
                .push_bind(&p.sender_id)
                .push_bind(&p.sender_name)
                .push_bind(&p.mode)
                .push_bind(p.total_minor)
                .push_bind(i64::from(p.count))
                .push_bind(shares)
                .push_bind(i64::from(p.claimed_count))
                .push_bind(p.claimed_minor)
                .push_bind(p.escrow[0])
                .push_bind(p.escrow[1])
                .push_bind(p.escrow[2])
                .push_bind(p.created_at_ms)
                .push_bind(p.expires_at_ms)
                .push_bind(p.settled_at_ms)
                .push_bind(p.returned_minor);
        },
    );
    let claims: Vec<(&ClaimRecord, String)> = w
        .claims
        .iter()
        .map(|c| {
            (
                c,
                serde_json::to_string(&c.by_channel).expect("an array serializes"),
            )
        })
        .collect();
    insert(
        &mut q,
        "red_packet_claims (packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms)",
        "",
        7,
        &claims,
        |b, (c, by_channel)| {
            b.push_bind(&c.packet_id)
                .push_bind(&c.user_id)
                .push_bind(&c.user_name)
                .push_bind(i64::from(c.idx))
                .push_bind(c.amount_minor)
                .push_bind(by_channel)
                .push_bind(c.created_at_ms);
        },
    );
    q.push("COMMIT");
    q.build().persistent(true).execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row};

    use super::*;

    #[test]
    fn statements_stay_under_both_limits() {
        assert_eq!(rows_max(17), 512);
        assert_eq!(rows_max(100), 256);
        assert!((1..200).all(|c| rows_max(c) * c <= PARAMS_MAX && rows_max(c).is_power_of_two()));
    }

    /// Rows past one statement's parameter limit are written and read in
    /// chunks, all of them and no padding row, in a real (in-memory) SQLite;
    /// one script holds every chunk.
    #[tokio::test]
    async fn rows_past_the_parameter_limit_go_in_chunks() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT, n INTEGER)")
            .await
            .unwrap();
        let rows: Vec<(String, String, i64)> = (0..PARAMS_MAX as i64 / 3 * 2 + 7)
            .map(|i| (format!("a{i}"), format!("b{i}"), i))
            .collect();
        let mut script = QueryBuilder::<Sqlite>::new("");
        insert(&mut script, "t (a, b, n)", "", 3, &rows, |b, r| {
            b.push_bind(&r.0).push_bind(&r.1).push_bind(r.2);
        });
        let statements = rows.len().div_ceil(rows_max(3));
        assert_eq!(script.sql().matches("INSERT").count(), statements);
        script.build().execute(&mut conn).await.unwrap();
        let (count, sum): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(n) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, rows.len() as i64);
        assert_eq!(sum, rows.iter().map(|r| r.2).sum::<i64>());
        // Two columns per key: past the limit too.
        let pairs: Vec<(String, String)> =
            rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
        let keys: Vec<&(String, String)> = pairs.iter().collect();
        let mut script = QueryBuilder::<Sqlite>::new("BEGIN; ");
        select_in(&mut script, 7, "a FROM t WHERE (a, b)", 2, &keys, bind_pair);
        script.push("SELECT 8, 'after'; COMMIT");
        assert_eq!(
            script.sql().matches("SELECT 7,").count(),
            rows.len().div_ceil(rows_max(2))
        );
        let found = script.build().fetch_all(&mut conn).await.unwrap();
        let tags: Vec<i64> = found.iter().map(|r| r.get(0)).collect();
        assert_eq!(tags.iter().filter(|t| **t == 7).count(), rows.len());
        assert_eq!(tags.last(), Some(&8));
    }
}
