//! Per-user rate limiting (token buckets) and the blocked-words filter.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets per user. Idle buckets are pruned so memory follows the
/// number of recently active users.
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `user`; `Err(seconds)` to wait when there is none.
    pub fn take(&self, user: &str) -> Result<(), u64> {
        let now = Instant::now();
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst);
        let mut b = self.buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Forgets buckets that have been full for a while.
    pub fn prune(&self) {
        let idle = Duration::from_secs(60);
        self.buckets.retain(|_, b| b.updated.elapsed() < idle);
    }
}

/// Whether `text` contains a blocked word or phrase, matched case-blind on
/// word boundaries ("class" does not match "ass").
pub(crate) fn contains_blocked(text: &str, blocked: &HashSet<String>) -> bool {
    if blocked.is_empty() {
        return false;
    }
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    blocked.iter().any(|b| {
        let phrase: Vec<&str> = b.split_whitespace().collect();
        !phrase.is_empty()
            && words
                .windows(phrase.len())
                .any(|w| w.iter().zip(&phrase).all(|(a, b)| a == b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_refuse() {
        let l = RateLimiter::new(RateLimit {
            per_second: 1,
            burst: 3,
        });
        assert!(l.take("a").is_ok());
        assert!(l.take("a").is_ok());
        assert!(l.take("a").is_ok());
        assert_eq!(l.take("a"), Err(1));
        assert!(l.take("b").is_ok());
    }

    #[test]
    fn blocked_words_match_whole_words() {
        let blocked: HashSet<String> = ["spam".to_string(), "buy followers".to_string()].into();
        assert!(contains_blocked("no SPAM please", &blocked));
        assert!(contains_blocked("Buy   followers now", &blocked));
        assert!(!contains_blocked("spammer", &blocked));
        assert!(!contains_blocked("followers buy", &blocked));
        assert!(!contains_blocked("anything", &HashSet::new()));
    }
}
