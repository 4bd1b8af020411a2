//! Reads: a board's top entries and one user's line, each a single
//! pipeline on the read connection that also reads the generation pointer
//! after the data (and follows it once if a rebuild moved it), plus the
//! display names.

use crate::model::{decode_member, encode_member, names_key, BoardError, Entry};

use super::round_trip::{decode, protocol};
use super::RedisBoards;

impl RedisBoards {
    /// Reads one board's top entries, following a moved pointer once.
    pub(super) async fn top_of(
        &self,
        relative_key: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, BoardError> {
        let mut rows: Vec<(String, i64)> = Vec::new();
        let mut generation = self.generation();
        for _ in 0..2 {
            let key = self.key(&generation, relative_key);
            let mut range = redis::cmd("ZREVRANGEBYSCORE");
            range
                .arg(&key)
                .arg("+inf")
                .arg("(0")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
            let (values, pointer) = self.query_cmds(true, &[(key, range)], true).await?;
            let [range] = values.as_slice() else {
                return Err(protocol("top reply"));
            };
            let raw: Vec<(String, String)> = decode(range)?;
            rows = raw
                .into_iter()
                .map(|(member, score)| Ok((user_of(&member)?, score_of(&score)?)))
                .collect::<Result<_, BoardError>>()?;
            if !self.adopt_pointer(pointer, &generation) {
                break;
            }
            generation = self.generation();
        }
        let names = self
            .names(&generation, rows.iter().map(|r| r.0.as_str()))
            .await?;
        Ok(rows
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(i, ((user_id, amount_minor), name))| Entry {
                rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                user_id,
                name,
                amount_minor,
            })
            .collect())
    }

    async fn names<'a>(
        &self,
        generation: &str,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<String>>, BoardError> {
        let users: Vec<&str> = users.collect();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.key(generation, &names_key()))
            .arg(&users);
        let values = self.query_read(&pipe).await?;
        let [names] = values.as_slice() else {
            return Err(protocol("names reply"));
        };
        let names: Vec<Option<String>> = decode(names)?;
        if names.len() != users.len() {
            return Err(protocol("names count"));
        }
        Ok(names)
    }

    /// `user_id`'s line on the board `relative` of the current generation.
    pub(super) async fn me_on(
        &self,
        relative: &str,
        user_id: &str,
    ) -> Result<Option<Entry>, BoardError> {
        let member = encode_member(user_id);
        let mut generation = self.generation();
        let mut found: Option<(i64, u32)> = None;
        for _ in 0..2 {
            let key = self.key(&generation, relative);
            let mut score = redis::cmd("ZSCORE");
            score.arg(&key).arg(&member);
            let mut rank = redis::cmd("ZREVRANK");
            rank.arg(&key).arg(&member);
            let cmds = [(key.clone(), score), (key, rank)];
            let (values, pointer) = self.query_cmds(true, &cmds, true).await?;
            let [score, rank] = values.as_slice() else {
                return Err(protocol("me reply"));
            };
            let score: Option<String> = decode(score)?;
            let rank: Option<u32> = decode(rank)?;
            found = match (score, rank) {
                (Some(score), Some(rank)) => Some((score_of(&score)?, rank + 1)),
                _ => None,
            };
            if !self.adopt_pointer(pointer, &generation) {
                break;
            }
            generation = self.generation();
        }
        // Non-positive totals sort below every positive one, so the rank of
        // a positive total is its rank among the shown entries.
        let Some((amount_minor, rank)) = found.filter(|(total, _)| *total > 0) else {
            return Ok(None);
        };
        let name = self
            .names(&generation, std::iter::once(user_id))
            .await?
            .pop()
            .flatten();
        Ok(Some(Entry {
            rank,
            user_id: user_id.to_owned(),
            name,
            amount_minor,
        }))
    }
}

fn user_of(member: &str) -> Result<String, BoardError> {
    decode_member(member).ok_or_else(|| protocol(format!("member {member:?}")))
}

/// Parses a score reply. Redis may format a double as `1e+15`; every total
/// is an integer within ±[`crate::TOTAL_MINOR_MAX`] < 2^53, so the double converts
/// back exactly; anything else is refused rather than rounded.
fn score_of(score: &str) -> Result<i64, BoardError> {
    const EXACT_MAX: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    let value: f64 = score
        .parse()
        .map_err(|_| protocol(format!("score {score:?}")))?;
    if value.fract() != 0.0 || value.abs() > EXACT_MAX {
        return Err(protocol(format!("score {score:?}")));
    }
    Ok(value as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TOTAL_MINOR_MAX;

    #[test]
    fn scores_parse_exactly_in_any_double_format() {
        assert_eq!(score_of("100").unwrap(), 100);
        assert_eq!(score_of("-70").unwrap(), -70);
        assert_eq!(score_of("1e+15").unwrap(), 1_000_000_000_000_000);
        assert_eq!(score_of("4503599627370495").unwrap(), TOTAL_MINOR_MAX);
        assert_eq!(score_of("9007199254740991").unwrap(), (1 << 53) - 1);
        assert!(score_of("1.5").is_err());
        assert!(score_of("9007199254740992").is_err());
        assert!(score_of("inf").is_err());
    }
}
