//! Per-IP connect rate limiting: a token bucket per address, refilled at the
//! configured rate, forgotten once full again so the map stays small.

use std::net::IpAddr;

use dashmap::DashMap;
use tokio::time::Instant;

/// The most addresses tracked at once; past it, new addresses are admitted
/// unlimited rather than growing memory without bound.
const TRACKED_IPS_MAX: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct IpLimiter {
    per_s: f64,
    burst: f64,
    buckets: DashMap<IpAddr, Bucket>,
}

impl IpLimiter {
    /// `per_s == 0` disables the limit.
    pub(crate) fn new(per_s: u32, burst: u32) -> Self {
        Self {
            per_s: f64::from(per_s),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Takes one connect token for `ip`; false when the address is over its rate.
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        if self.per_s == 0.0 {
            return true;
        }
        let now = Instant::now();
        if self.buckets.len() >= TRACKED_IPS_MAX && !self.buckets.contains_key(&ip) {
            return true;
        }
        let mut b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_s;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely (they carry no state).
    pub(crate) fn forget_idle(&self) {
        if self.per_s == 0.0 {
            return;
        }
        let now = Instant::now();
        self.buckets.retain(|_, b| {
            b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_s < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn refuses_past_the_burst_and_refills() {
        let l = IpLimiter::new(10, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| l.admit(ip)));
        assert!(!l.admit(ip));
        assert!(
            l.admit("10.0.0.2".parse().unwrap()),
            "other addresses are unaffected"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(l.admit(ip));
        assert!(!l.admit(ip));
        tokio::time::advance(Duration::from_secs(1)).await;
        l.forget_idle();
        assert_eq!(l.buckets.len(), 0);
        assert!(IpLimiter::new(0, 0).admit(ip));
    }
}
