//! The rebuild: under a lock, every update is applied into a fresh
//! generation, `P:gen` is switched to it in one SET, and the keys of every
//! other generation are swept with SCAN + UNLINK.

use std::collections::HashSet;

use redis::Value;

use crate::model::{rebuild_input, tally, BoardError, BoardUpdate, RebuildReport};

use super::round_trip::backend;
use super::{RedisBoards, BATCH_UPDATES_MAX};

/// How long the rebuild lock holds without a refresh, in ms.
const REBUILD_LOCK_MS: u64 = 600_000;

impl RedisBoards {
    /// [`crate::Leaderboard::rebuild`] of validated `updates`.
    pub(super) async fn rebuild_all(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
    ) -> Result<RebuildReport, BoardError> {
        let token = format!("{:016x}", rand::random::<u64>());
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.lock_key())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(REBUILD_LOCK_MS);
        let values = self.query(&pipe).await?;
        if matches!(values.first(), Some(Value::Nil) | None) {
            return Err(BoardError::RebuildInProgress);
        }
        let result = self.rebuild_locked(updates, now_ms, &token).await;
        if result.is_err() {
            // Best effort: a failed rebuild frees the lock for a retry; if
            // Redis is gone, the lock's own TTL frees it.
            let mut con = self.con.clone();
            let _: Result<i64, _> = self
                .unlock_script
                .key(self.lock_key())
                .arg(&token)
                .invoke_async(&mut con)
                .await;
        }
        let report = result?;
        if let Some(metrics) = &self.metrics {
            metrics.rebuilds.inc();
        }
        tracing::info!(
            generation = %report.generation,
            updates = report.updates,
            removed = report.removed,
            "leaderboard rebuilt"
        );
        Ok(report)
    }

    /// Deletes every key under the prefix except the pointer, the lock and
    /// the keys of `keep_generation`. SCAN, never KEYS: it does not block
    /// Redis on a large keyspace. On a cluster every master is scanned (a
    /// SCAN sees only its own node's keys).
    async fn sweep(&self, keep_generation: &str) -> Result<u64, BoardError> {
        let pattern = format!("{}:*", self.prefix);
        let keep = format!("{}:{keep_generation}:", self.prefix);
        let fixed: HashSet<String> = [self.gen_key(), self.lock_key()].into_iter().collect();
        let mut removed = 0u64;
        for node in self.con.nodes().await.map_err(backend)? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<String>) =
                    self.con.query_node(&node, &scan).await.map_err(backend)?;
                let doomed: Vec<String> = keys
                    .into_iter()
                    .filter(|k| !k.starts_with(&keep) && !fixed.contains(k))
                    .filter(|k| self.is_generation_key(k))
                    .collect();
                removed += self.unlink(&doomed).await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn rebuild_locked(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
        token: &str,
    ) -> Result<RebuildReport, BoardError> {
        let generation = format!("{:016x}", rand::random::<u64>());
        let (unique, marks) = rebuild_input(updates, now_ms, self.marker_ttl_secs);
        let mut report = RebuildReport {
            generation: generation.clone(),
            updates: updates.len(),
            applied: 0,
            duplicates: u32::try_from(updates.len() - unique.len()).unwrap_or(u32::MAX),
            overflowed: Vec::new(),
            removed: 0,
        };
        let now_s = now_ms.div_euclid(1000);
        for (chunk, chunk_marks) in unique
            .chunks(BATCH_UPDATES_MAX)
            .zip(marks.chunks(BATCH_UPDATES_MAX))
        {
            let (statuses, _) = self
                .apply_in(&generation, chunk, chunk_marks, now_s, false)
                .await?;
            let part = tally(chunk, &statuses);
            report.applied += part.applied;
            report.duplicates += part.duplicates;
            report.overflowed.extend(part.overflowed);
            let mut pipe = redis::pipe();
            pipe.cmd("PEXPIRE")
                .arg(self.lock_key())
                .arg(REBUILD_LOCK_MS);
            self.query(&pipe).await?;
        }
        // The switch: one SET, after which every reader and writer that
        // reads the pointer moves to the complete new generation.
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.gen_key()).arg(&generation);
        self.query(&pipe).await?;
        *self.generation.write() = generation.clone();
        report.removed = self.sweep(&generation).await?;
        let mut con = self.con.clone();
        let _: i64 = self
            .unlock_script
            .key(self.lock_key())
            .arg(token)
            .invoke_async(&mut con)
            .await
            .map_err(backend)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_input_keeps_first_ids_and_marks_only_recent_updates() {
        let u = |id: &str, at_ms| BoardUpdate {
            update_id: id.into(),
            room_id: "r".into(),
            broadcaster_id: "b".into(),
            sender_id: "s".into(),
            sender_name: "S".into(),
            amount_minor: 1,
            at_ms,
        };
        let (unique, marks) =
            rebuild_input(&[u("a", 1_000), u("b", 900_000), u("a", 5)], 1_000_000, 600);
        assert_eq!(unique.len(), 2);
        assert_eq!(unique[0].at_ms, 1_000);
        assert_eq!(marks, vec![false, true]);
    }
}
