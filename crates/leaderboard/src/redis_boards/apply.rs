//! Writes: one batch of updates as one pipeline of apply scripts (packed,
//! or one per hash-tag slot for Redis Cluster), following a generation
//! switch and cleaning what a stale write left in the dead generation.

use std::collections::{HashMap, HashSet};

use redis::Cmd;

use crate::model::{
    names_key, plan, stored_name, tally, ApplyReport, BoardError, BoardUpdate, PartPlan, Status,
};

use super::round_trip::{decode, protocol};
use super::scripts::status_of;
use super::RedisBoards;

/// Most update parts (room or global) one script applies. A script runs
/// atomically, so this bounds how long it keeps readers waiting (a part
/// costs Redis ≈ 15-30 µs).
const SCRIPT_PARTS_MAX: usize = 64;

/// Keys deleted per UNLINK (see `RedisBoards::unlink`).
pub(super) const UNLINK_KEYS_MAX: usize = 500;

impl RedisBoards {
    /// The EVALSHA of one slot's parts.
    fn script_cmd(
        &self,
        generation: &str,
        names: bool,
        parts: &[(&PartPlan, bool, i64, &str, &str)],
    ) -> Cmd {
        let mut keys: Vec<String> = Vec::new();
        let mut args: Vec<String> = vec![
            self.marker_ttl_secs.to_string(),
            if names { "1" } else { "0" }.to_owned(),
            parts.len().to_string(),
        ];
        if names {
            keys.push(self.key(generation, &names_key()));
        }
        for (part, mark, amount, field, name) in parts {
            keys.push(self.key(generation, &part.marker));
            args.push(part.boards.len().to_string());
            args.push(if *mark { "1" } else { "0" }.to_owned());
            args.push(part.member.clone());
            args.push(amount.to_string());
            args.push((*field).to_owned());
            args.push((*name).to_owned());
            for (board, expire_at_s) in &part.boards {
                keys.push(self.key(generation, board));
                args.push(expire_at_s.to_string());
            }
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.apply_script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        cmd
    }

    /// Applies `updates` (≤ BATCH_UPDATES_MAX, validated) to `generation` in
    /// one pipeline of scripts of at most SCRIPT_PARTS_MAX parts (grouped by
    /// slot when `slot_scripts`), then a GET of the pointer when
    /// `read_pointer`.
    ///
    /// `plan_now_s` decides which period boards are alive; `mark[i]` says
    /// whether update i sets an idempotency marker.
    pub(super) async fn apply_in(
        &self,
        generation: &str,
        updates: &[BoardUpdate],
        marks: &[bool],
        plan_now_s: i64,
        read_pointer: bool,
    ) -> Result<(Vec<(Status, Status)>, Option<String>), BoardError> {
        let plans: Vec<(PartPlan, PartPlan)> =
            updates.iter().map(|u| plan(u, plan_now_s)).collect();
        // Each script is a list of parts: (update index, global part?).
        let mut scripts: Vec<Vec<(usize, bool)>> = Vec::new();
        if self.slot_scripts {
            // Cluster-safe: every script stays inside one hash-tag slot.
            let mut slot_of: HashMap<&str, usize> = HashMap::new();
            let mut slots: Vec<Vec<(usize, bool)>> = Vec::new();
            for (i, update) in updates.iter().enumerate() {
                let slot = *slot_of
                    .entry(update.broadcaster_id.as_str())
                    .or_insert_with(|| {
                        slots.push(Vec::new());
                        slots.len() - 1
                    });
                slots[slot].push((i, false));
            }
            let global: Vec<(usize, bool)> = (0..updates.len()).map(|i| (i, true)).collect();
            slots.push(global);
            for parts in &slots {
                scripts.extend(parts.chunks(SCRIPT_PARTS_MAX).map(<[_]>::to_vec));
            }
        } else {
            // One node: a script may span slots, so pack both parts of
            // consecutive updates; far fewer scripts per batch.
            let parts: Vec<(usize, bool)> = (0..updates.len())
                .flat_map(|i| [(i, false), (i, true)])
                .collect();
            scripts.extend(parts.chunks(SCRIPT_PARTS_MAX).map(<[_]>::to_vec));
        }
        // Each script with the key that routes it (its first key).
        let mut cmds: Vec<(String, Cmd)> = Vec::with_capacity(scripts.len());
        for parts in &scripts {
            let args: Vec<_> = parts
                .iter()
                .map(|&(i, global)| {
                    let u = &updates[i];
                    if global {
                        let name = stored_name(&u.sender_name);
                        let field = u.sender_id.as_str();
                        (&plans[i].1, marks[i], u.amount_minor, field, name)
                    } else {
                        (&plans[i].0, marks[i], u.amount_minor, "", "")
                    }
                })
                .collect();
            let names = parts.iter().any(|&(_, global)| global);
            let route = if names {
                self.key(generation, &names_key())
            } else {
                self.key(generation, &args[0].0.marker)
            };
            cmds.push((route, self.script_cmd(generation, names, &args)));
        }
        let (values, pointer) = self.query_cmds(false, &cmds, read_pointer).await?;
        if values.len() != scripts.len() {
            return Err(protocol(format!(
                "{} replies to a pipeline of {} scripts",
                values.len(),
                scripts.len()
            )));
        }
        let mut statuses = vec![(Status::Duplicate, Status::Duplicate); updates.len()];
        for (parts, value) in scripts.iter().zip(&values) {
            let codes: Vec<i64> = decode(value)?;
            if codes.len() != parts.len() {
                return Err(protocol("script status count"));
            }
            for (&(i, global), code) in parts.iter().zip(codes) {
                let status = status_of(code)?;
                if global {
                    statuses[i].1 = status;
                } else {
                    statuses[i].0 = status;
                }
            }
        }
        Ok((statuses, pointer))
    }

    /// Applies one chunk on the current generation, following the pointer if
    /// a rebuild switched it meanwhile.
    pub(super) async fn apply_chunk(
        &self,
        updates: &[BoardUpdate],
    ) -> Result<ApplyReport, BoardError> {
        let marks = vec![true; updates.len()];
        let mut report = ApplyReport::default();
        // Two switches during one call would mean rebuilds back to back;
        // after the third attempt the next call catches up.
        for _ in 0..3 {
            let generation = self.generation();
            let now_s = self.clock.now_ms().div_euclid(1000);
            let (statuses, pointer) = self
                .apply_in(&generation, updates, &marks, now_s, true)
                .await?;
            report = tally(updates, &statuses);
            if let Some(metrics) = &self.metrics {
                let done_ms = self.clock.now_ms();
                for (update, status) in updates.iter().zip(&statuses) {
                    if status.0 == Status::Applied {
                        metrics.observe_lag(update.at_ms, done_ms);
                    }
                }
            }
            if !self.adopt_pointer(pointer, &generation) {
                break;
            }
            // A rebuild switched generations under us: what this call just
            // wrote lives in a dead generation that the rebuild's sweep may
            // already have passed, so remove it here, then re-apply.
            self.unlink_written(&generation, updates, now_s).await?;
        }
        Ok(report)
    }

    /// Deletes every key `apply_in` may have written for `updates` under
    /// the dead `generation`.
    async fn unlink_written(
        &self,
        generation: &str,
        updates: &[BoardUpdate],
        plan_now_s: i64,
    ) -> Result<(), BoardError> {
        let mut keys: HashSet<String> = HashSet::new();
        keys.insert(self.key(generation, &names_key()));
        for update in updates {
            let (room, global) = plan(update, plan_now_s);
            for part in [room, global] {
                keys.insert(self.key(generation, &part.marker));
                for (board, _) in part.boards {
                    keys.insert(self.key(generation, &board));
                }
            }
        }
        let keys: Vec<String> = keys.into_iter().collect();
        self.unlink(&keys).await?;
        Ok(())
    }
}
