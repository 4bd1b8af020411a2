//! The gift service's settings (`GiftsConfig`), validated before any port
//! is bound, and the blocked-words file format.

use std::collections::HashSet;
use std::time::Duration;

use crate::limits::RateLimit;
use crate::redpackets;

/// Settings of the gift service, validated before any port is bound.
#[derive(Debug, Clone)]
pub struct GiftsConfig {
    /// Gift purchases per user: sustained rate and burst.
    pub rate: RateLimit,
    /// Words that may not appear in gift messages or acknowledgements (lowercase).
    pub blocked_words: HashSet<String>,
    /// The largest request body accepted, in bytes.
    pub body_bytes_max: usize,
    /// How long a red packet stays claimable when the drop does not say
    /// (SPEC §7: default 24 h, at most 24 h).
    pub red_packet_expiry: Duration,
}

impl Default for GiftsConfig {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 50,
                burst: 100,
            },
            blocked_words: HashSet::new(),
            body_bytes_max: 16 * 1024,
            red_packet_expiry: Duration::from_secs(redpackets::EXPIRES_IN_S_MAX),
        }
    }
}

impl GiftsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate.per_second == 0 || self.rate.burst == 0 {
            return Err(
                "gift rate limit must be at least 1 per second with a burst of at least 1".into(),
            );
        }
        if !(1024..=1024 * 1024).contains(&self.body_bytes_max) {
            return Err("body size limit must be between 1 KiB and 1 MiB".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(redpackets::EXPIRES_IN_S_MAX))
            .contains(&self.red_packet_expiry)
        {
            return Err("red packet expiry must be between 1 second and 24 hours".into());
        }
        Ok(())
    }

    /// Reads a blocked-words file: one word or phrase per line, `#` comments.
    pub fn parse_blocked_words(text: &str) -> HashSet<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase())
            .filter(|l| !l.is_empty())
            .collect()
    }
}
