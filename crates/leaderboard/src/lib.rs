//! Applause leaderboards: per-room top gifters and global top broadcasters,
//! behind one async trait ([`Leaderboard`]) with two twins — [`RedisBoards`]
//! (Redis sorted sets, production) and [`MemoryBoards`] (the embedded single
//! binary). Both pass one conformance suite (`tests/`). The crate knows
//! nothing of HTTP or SQL: the gift service feeds it [`BoardUpdate`]s and the
//! ledger is the truth it can be rebuilt from.
//!
//! # Product decisions
//!
//! * **Windows.** `live` is everything sent to one room (a room *is* one
//!   stream session). For a room's board, `day` (UTC date), `week` (ISO week,
//!   UTC) and `all` count the gifts to the room's **broadcaster** across all
//!   their rooms in that period — the broadcaster's fan ranking; only `live`
//!   is the room alone. The global board ranks broadcasters by gross gifts
//!   received, windows `day`/`week`/`all` (`live` is an [`BoardError::Invalid`]).
//! * **The window of a gift is decided by its commit time** `at_ms`, never by
//!   the time the update is applied; reads take the caller's `now_ms` (an
//!   injectable clock) to pick the current day/week.
//! * **Exactly once.** Every update carries an `update_id` (the gift id, or
//!   `refund:<gift id>`); an update applied twice — a retry after a timeout,
//!   a reconnect with an unknown outcome, concurrent duplicates — counts once.
//!   In Redis a Lua script does `SET marker NX EX <ttl>` and the ZINCRBYs only
//!   when the marker was new, all atomically; markers live
//!   [`DEFAULT_MARKER_TTL_SECS`] (configurable): a retry later than that would
//!   count again. The twin keeps markers for between one and two TTLs.
//! * **Refunds subtract** (negative `amount_minor`). A total that reaches 0
//!   is removed; boards show only positive totals, and `me` is `None` for a
//!   user with no positive total (no gifts, or all refunded).
//! * **Ties.** Equal totals rank by user id ascending (byte order). Redis
//!   orders equal scores by member and ZREVRANGE reverses that, so members are
//!   stored order-reversed (see [`encode_member`]): ZREVRANGE and ZREVRANK then
//!   give exactly (total desc, user id asc) in O(log n), and the twin sorts by
//!   the same key.
//! * **Exactness.** Totals are integer minor units. Redis scores are doubles,
//!   exact up to 2^53 (≈ 90 trillion dollars at 2 decimals). An update is
//!   limited to ±`AMOUNT_MINOR_MAX` (10^15) and every total to
//!   ±[`TOTAL_MINOR_MAX`] = 2^52 − 1 (≈ 45 trillion dollars), so each ZINCRBY
//!   — and the undo of a refused one — computes below 2^53, exactly. An
//!   update that would push any total past the cap is refused by both twins
//!   (reported in [`ApplyReport::overflowed`]; neither counted nor marked, so
//!   the same update can be applied once the total has room again).
//! * **Expiry.** Day boards expire at the end of their UTC day + 2 days, week
//!   boards at the end of their ISO week + 2 days (EXPIREAT); `live` and
//!   `all` never expire. An update for a period whose board has already
//!   expired skips that board (it can no longer be read). Expiry runs by a
//!   clock, not the caller's `now_ms`: Redis's own for the Redis twin, the
//!   injected [`applause_core::Clock`] for the in-memory one (`with_clock`;
//!   default the system clock, which the Redis twin also uses to decide
//!   which boards an update still reaches).
//! * **Names.** The latest display name per user (by application order) is
//!   kept in one hash and attached to entries; broadcasters on the global
//!   board have a name only if they ever sent a gift.
//! * **Derived view.** [`Leaderboard::rebuild`] recomputes every board from
//!   the ledger's updates; [`Leaderboard::needs_rebuild`] is true while no
//!   generation marker exists — a fresh or flushed Redis, a restarted process
//!   for the twin — and the integrator then calls `rebuild`.
//! * **Metrics** ([`Metrics::register`] on the caller's registry):
//!   `applause_leaderboard_update_lag_seconds` (commit `at_ms` → applied),
//!   `applause_leaderboard_redis_errors_total`,
//!   `applause_leaderboard_rebuilds_total`; attach with `with_metrics`.
//!
//! # Redis key layout
//!
//! `P` is the configured key prefix, `G` the current generation (random hex):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:gen` | string | the generation pointer *and* marker; gone ⇒ rebuild |
//! | `P:rebuild-lock` | string | one rebuild at a time (token, PX 10 min, refreshed) |
//! | `P:G:{b:<broadcaster>}:live:<room>` | zset | room board, `live` |
//! | `P:G:{b:<broadcaster>}:d:<YYYYMMDD>` | zset | fan board, `day` (EXPIREAT) |
//! | `P:G:{b:<broadcaster>}:w:<YYYY>W<ww>` | zset | fan board, `week` (EXPIREAT) |
//! | `P:G:{b:<broadcaster>}:all` | zset | fan board, `all` |
//! | `P:G:{b:<broadcaster>}:m:<update_id>` | string | marker of the room part (EX ttl) |
//! | `P:G:{g}:d:…`, `P:G:{g}:w:…`, `P:G:{g}:all` | zset | global broadcaster boards |
//! | `P:G:{g}:m:<update_id>` | string | marker of the global part (EX ttl) |
//! | `P:G:{g}:names` | hash | user id → latest display name |
//!
//! Zset members are [`encode_member`]`(user id)`, scores integer minor units.
//!
//! **Cluster safety.** Every key an update part touches shares one hash tag:
//! an update is split into its broadcaster part (`{b:…}`: room and fan boards
//! plus that part's marker) and its global part (`{g}`: global boards,
//! marker, names), each counted once on its own marker. On a Redis Cluster
//! (a `redis+cluster://` URL turns it on by itself, as does
//! [`RedisBoards::with_slot_scripts`]`(true)`) every script stays inside one
//! slot (one script per broadcaster in a batch plus global ones), which is
//! what Redis Cluster requires. On one server — the default — scripts pack both parts of many updates,
//! far cheaper per update. Either way a script holds at most 64 parts, so no
//! script blocks readers for more than a couple of ms, and a batch is one
//! pipeline: one round trip. Reads use a second connection so they never
//! queue behind a writer's pipeline. The `P:gen` pointer is read with plain
//! commands, never inside a script.
//!
//! **Operating Redis.** Run it with `maxmemory-policy noeviction`: an
//! evicted marker would let a retry count twice and an evicted board would go
//! unnoticed (only the loss of `P:gen` — a flush, a restart without
//! persistence — is detected). Prefixes of two deployments must not be
//! `a` and `a:<16 hex digits>`; any other pair is safe for the sweep.
//!
//! **Rebuild.** A rebuild takes the lock, applies all updates under a fresh
//! generation `N` (readers keep reading the old, complete one), switches
//! `P:gen` to `N` in one SET, then deletes the keys of every other
//! generation under `P:` with SCAN + UNLINK. Only updates committed within
//! the marker TTL before `now` get markers in `N` (older ones cannot be
//! retried any more, and a long history would flood Redis with markers).
//! Every write and read pipeline also GETs `P:gen`; a process that sees the
//! pointer moved re-runs the operation on the new generation (re-applying is
//! safe: markers are per generation) and unlinks what it just wrote into the
//! dead one. An update applied to
//! the old generation between the ledger snapshot and the switch is not in
//! the new one: the integrator should re-apply the ledger's tail (updates
//! committed since shortly before its snapshot) after `rebuild`; duplicates
//! count once.

mod memory;
mod metrics;
mod model;
mod redis_boards;

pub use memory::MemoryBoards;
pub use metrics::Metrics;
pub use model::{
    decode_member, encode_member, validate, ApplyReport, BoardError, BoardUpdate, Entry,
    RebuildReport, Window, AT_MS_MAX, NAME_CHARS_MAX, PERIOD_GRACE_SECS, TOP_LIMIT_MAX,
    TOTAL_MINOR_MAX, UPDATE_ID_LEN_MAX,
};
pub use redis_boards::{RedisBoards, BATCH_UPDATES_MAX};

use async_trait::async_trait;

/// How long an idempotency marker lives, in seconds: long enough for any
/// retry after a timeout or reconnect. Each update keeps two markers (room
/// part, global part) of about 100 bytes each, so at 10,000 gifts/s the
/// default costs ≈ 1.2 GB of Redis at full load; lower it if that matters.
pub const DEFAULT_MARKER_TTL_SECS: u64 = 600;

/// The leaderboards, whatever stores them. All amounts are integer minor units.
#[async_trait]
pub trait Leaderboard: Send + Sync {
    /// Counts a batch of updates, each exactly once (also across retries and
    /// concurrent callers). One Redis round trip per call (up to
    /// [`BATCH_UPDATES_MAX`] updates; larger batches are split). A batch with
    /// an invalid update is refused as a whole before anything is applied.
    async fn apply_batch(&self, updates: &[BoardUpdate]) -> Result<ApplyReport, BoardError>;

    /// Counts one update; see [`Leaderboard::apply_batch`].
    async fn apply(&self, update: &BoardUpdate) -> Result<ApplyReport, BoardError> {
        self.apply_batch(std::slice::from_ref(update)).await
    }

    /// The room's top `limit` (1..=100) gifters in `window` as of `now_ms`
    /// (`live` = this room; `day`/`week`/`all` = the broadcaster's fans).
    /// An unknown room is an empty board.
    async fn top(
        &self,
        room_id: &str,
        broadcaster_id: &str,
        window: Window,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Entry>, BoardError>;

    /// `user_id`'s line on that board, `None` if they have no positive total.
    async fn me(
        &self,
        room_id: &str,
        broadcaster_id: &str,
        window: Window,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<Entry>, BoardError>;

    /// The top `limit` (1..=100) broadcasters by gross gifts received
    /// (`day`, `week` or `all`).
    async fn top_broadcasters(
        &self,
        window: Window,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Entry>, BoardError>;

    /// Replaces every board by the aggregation of `updates` (the ledger's
    /// gifts and refunds); `now_ms` decides which day/week boards are still
    /// alive. Readers see the old boards until the new ones are complete.
    async fn rebuild(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
    ) -> Result<RebuildReport, BoardError>;

    /// True when the boards are not known to be complete: no generation
    /// marker (fresh or flushed Redis, fresh process for the twin). The
    /// integrator then calls [`Leaderboard::rebuild`] from the ledger.
    async fn needs_rebuild(&self) -> Result<bool, BoardError>;
}
