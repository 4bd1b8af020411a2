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
//! Statements are prepared once and kept: every chunk has a row count that
//! is a power of two (a batch of 130 rows is written as 128 + 2), so a table
//! needs at most a dozen shapes and parsing a many-row `VALUES` list (a tenth
//! of the server's instructions when each batch re-prepared its own) happens
//! once per shape. Key lookups pad their `IN` list to the next power of two
//! by repeating the last key instead, which selects the same rows.
use applause_core::Channel;
use sqlx::query_builder::Separated;
use sqlx::sqlite::SqliteRow;
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

/// Cuts `n` rows into power-of-two chunk sizes, largest first, none above
/// `max` (a power of two): 130 → 128, 2.
fn chunk_sizes(mut n: usize, max: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= max { max } else { 1 << n.ilog2() };
        n -= size;
        Some(size)
    })
}

/// Binds one row's columns.
pub(super) type BindRow<'a, T> = fn(&mut Separated<'_, 'a, Sqlite, &'static str>, &'a T);

/// Writes `rows` as `head VALUES (…), (…) tail` statements of `columns`
/// parameters per row, each a power of two rows long (prepared once per
/// shape and kept).
async fn values<'a, T>(
    conn: &mut SqliteConnection,
    head: &str,
    tail: &str,
    columns: usize,
    rows: &'a [T],
    bind: BindRow<'a, T>,
) -> Result<(), sqlx::Error> {
    let mut rest = rows;
    for size in chunk_sizes(rows.len(), rows_max(columns)) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let mut q = QueryBuilder::<Sqlite>::new(head);
        q.push_values(chunk, |mut b, row| bind(&mut b, row));
        q.push(tail);
        q.build().persistent(true).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Reads the rows `head IN (VALUES (…), (…))` selects for `keys`. Each
/// statement's list is padded to a power of two by repeating its last key
/// (the same rows match), so one prepared shape serves many batch sizes.
pub(super) async fn select_in<'a, T>(
    conn: &mut SqliteConnection,
    head: &str,
    columns: usize,
    keys: &'a [T],
    bind: BindRow<'a, T>,
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let mut out = Vec::new();
    let max = rows_max(columns);
    for chunk in keys.chunks(max) {
        let padded = chunk.len().next_power_of_two().min(max);
        let last = &chunk[chunk.len() - 1];
        let mut q = QueryBuilder::<Sqlite>::new(head);
        q.push(" IN (");
        q.push_values(
            chunk
                .iter()
                .chain(std::iter::repeat_n(last, padded - chunk.len())),
            |mut b, key| bind(&mut b, key),
        );
        q.push(")");
        out.extend(q.build().persistent(true).fetch_all(&mut *conn).await?);
    }
    Ok(out)
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

/// Writes a planned batch (inside the caller's transaction).
pub(super) async fn write(conn: &mut SqliteConnection, w: &WriteSet) -> Result<(), sqlx::Error> {
    // Before the batch's new keys: a forgotten key may be used again.
    values(
        conn,
        "DELETE FROM idempotency WHERE (user_id, key) IN (",
        ")",
        2,
        &w.expired_keys,
        |b, (u, k)| {
            b.push_bind(u).push_bind(k);
        },
    )
    .await?;
    for room in &w.new_rooms {
        sqlx::query(
            "INSERT INTO rooms (room_id, broadcaster_id, title, epoch, live, last_seq, published_seq, created_at_ms, ended_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&room.room_id)
        .bind(&room.broadcaster_id)
        .bind(&room.title)
        .bind(room.epoch as i64)
        .bind(room.live)
        .bind(room.last_seq as i64)
        .bind(room.published_seq as i64)
        .bind(room.created_at_ms)
        .bind(room.ended_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    for room in &w.room_updates {
        sqlx::query(
            "UPDATE rooms SET live = ?2, last_seq = ?3, published_seq = ?4, ended_at_ms = ?5 WHERE room_id = ?1",
        )
        .bind(&room.room_id)
        .bind(room.live)
        .bind(room.last_seq as i64)
        .bind(room.published_seq as i64)
        .bind(room.ended_at_ms)
        .execute(&mut *conn)
        .await?;
    }
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
    values(
        conn,
        "INSERT INTO wallets (user_id, channel, balance_minor) ",
        " ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = balance_minor + excluded.balance_minor",
        3,
        &credits,
        bind_delta,
    )
    .await?;
    values(
        conn,
        "UPDATE wallets SET balance_minor = balance_minor + d.column3 FROM (",
        ") AS d WHERE wallets.user_id = d.column1 AND wallets.channel = d.column2",
        3,
        &debits,
        bind_delta,
    )
    .await?;
    values(
        conn,
        "INSERT INTO transactions (txn_id, kind, created_at_ms) ",
        "",
        3,
        &w.txns,
        |b, t| {
            b.push_bind(&t.txn_id)
                .push_bind(t.kind)
                .push_bind(t.created_at_ms);
        },
    )
    .await?;
    values(
        conn,
        "INSERT INTO entries (txn_id, account, amount_minor) ",
        "",
        3,
        &w.entries,
        |b, e| {
            b.push_bind(&e.txn_id)
                .push_bind(&e.account)
                .push_bind(e.amount_minor);
        },
    )
    .await?;
    let gifts: Vec<(&GiftRecord, String)> = w
        .gifts
        .iter()
        .map(|g| {
            let by_channel =
                serde_json::to_string(&g.split.by_channel).expect("an array serializes");
            (g, by_channel)
        })
        .collect();
    values(
        conn,
        "INSERT INTO gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
         amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
         seq, epoch, created_at_ms) ",
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
    )
    .await?;
    values(
        conn,
        "INSERT INTO idempotency (user_id, key, request_hash, gift_id, error_code, created_at_ms) ",
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
    )
    .await?;
    values(
        conn,
        "INSERT INTO receipts (receipt_id, user_id, channel, amount_minor, created_at_ms) ",
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
    )
    .await?;
    values(
        conn,
        "INSERT INTO room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, \
         created_at_ms, gift_id) ",
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
    )
    .await?;
    for (gift_id, text, at) in &w.acks {
        sqlx::query("UPDATE gifts SET ack_text = ?2, acked_at_ms = ?3 WHERE gift_id = ?1")
            .bind(gift_id)
            .bind(text)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    }
    for (gift_id, reason, by, at) in &w.refunds {
        sqlx::query("UPDATE gifts SET refunded_at_ms = ?2 WHERE gift_id = ?1")
            .bind(gift_id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO refunds (gift_id, reason, refunded_by, created_at_ms) VALUES (?1, ?2, ?3, ?4)")
            .bind(gift_id)
            .bind(reason)
            .bind(by)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    }
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
    values(
        conn,
        "INSERT INTO red_packets (packet_id, room_id, sender_id, sender_name, mode, total_minor, count, shares, \
         claimed_count, claimed_minor, escrow_apple, escrow_google, escrow_web, created_at_ms, expires_at_ms, \
         settled_at_ms, returned_minor) ",
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
    )
    .await?;
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
    values(
        conn,
        "INSERT INTO red_packet_claims (packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms) ",
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
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row};

    use super::*;

    #[test]
    fn chunks_are_powers_of_two_that_sum_to_the_rows() {
        assert_eq!(chunk_sizes(130, 512).collect::<Vec<_>>(), vec![128, 2]);
        assert_eq!(chunk_sizes(0, 512).count(), 0);
        assert_eq!(
            chunk_sizes(1100, 512).collect::<Vec<_>>(),
            vec![512, 512, 64, 8, 4]
        );
        for n in 0..3000 {
            let sizes: Vec<_> = chunk_sizes(n, rows_max(17)).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= 512));
        }
        assert_eq!(rows_max(17), 512);
        assert_eq!(rows_max(100), 256);
    }

    /// Rows past one statement's parameter limit are written and read in
    /// chunks, all of them, in a real (in-memory) SQLite.
    #[tokio::test]
    async fn rows_past_the_parameter_limit_go_in_chunks() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT, n INTEGER)")
            .await
            .unwrap();
        let rows: Vec<(String, String, i64)> = (0..PARAMS_MAX as i64 / 3 * 2 + 7)
            .map(|i| (format!("a{i}"), format!("b{i}"), i))
            .collect();
        values(
            &mut conn,
            "INSERT INTO t (a, b, n) ",
            "",
            3,
            &rows,
            |b, r| {
                b.push_bind(&r.0).push_bind(&r.1).push_bind(r.2);
            },
        )
        .await
        .unwrap();
        let count: i64 = sqlx::query("SELECT COUNT(*), SUM(n) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, rows.len() as i64);
        // Two columns per key: past the limit too.
        let pairs: Vec<(String, String)> =
            rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
        let keys: Vec<&(String, String)> = pairs.iter().collect();
        let found = select_in(
            &mut conn,
            "SELECT a FROM t WHERE (a, b)",
            2,
            &keys,
            bind_pair,
        )
        .await
        .unwrap();
        assert_eq!(found.len(), rows.len());
    }
}
