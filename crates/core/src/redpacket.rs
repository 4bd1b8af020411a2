//! Red-packet allocation (SPEC §7): how a packet's total is cut into shares.
//!
//! Pure integer arithmetic on minor units — never floats. Every allocator
//! returns exactly `count` shares, each at least one minor unit, summing
//! exactly to the total. The random allocator takes its randomness from an
//! injected value source so tests (and the statistical check) can drive it.

/// The most shares one packet may have.
pub const COUNT_MAX: u32 = 500;

/// Why a packet cannot be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedPacketError {
    #[error("count must be from 1 to {COUNT_MAX}")]
    Count,
    #[error("the total must be at least one minor unit per share")]
    TotalBelowCount,
    #[error("shares must be given for fixed mode only, one per share, each at least one minor unit, summing to the total")]
    Shares,
    #[error("mode must be equal, random or fixed")]
    Mode,
}

/// How a packet's total is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Equal,
    Random,
    Fixed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Equal => "equal",
            Mode::Random => "random",
            Mode::Fixed => "fixed",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = RedPacketError;
    fn from_str(s: &str) -> Result<Mode, RedPacketError> {
        match s {
            "equal" => Ok(Mode::Equal),
            "random" => Ok(Mode::Random),
            "fixed" => Ok(Mode::Fixed),
            _ => Err(RedPacketError::Mode),
        }
    }
}

fn check(total: i64, count: u32) -> Result<(), RedPacketError> {
    if !(1..=COUNT_MAX).contains(&count) {
        return Err(RedPacketError::Count);
    }
    if total < i64::from(count) {
        return Err(RedPacketError::TotalBelowCount);
    }
    Ok(())
}

/// `count` shares differing by at most one minor unit; the larger shares
/// come first (claim order), so early claimers get the extra unit.
pub fn equal(total: i64, count: u32) -> Result<Vec<i64>, RedPacketError> {
    check(total, count)?;
    let n = i64::from(count);
    let (base, extra) = (total / n, total % n);
    Ok((0..n).map(|i| base + i64::from(i < extra)).collect())
}

/// One double-mean draw: the share of the next claimer when `remaining` is
/// left for `remaining_count` shares. Uniform in `[1, 2 × remaining /
/// remaining_count)` (integer division); the last share takes the rest.
/// `uniform(n)` must return a uniformly distributed value in `[0, n)`.
///
/// The upper bound keeps every later share at least one unit: for k ≥ 2
/// shares and R ≥ k, `2R/k − 1 ≤ R − (k − 1)`, so the rest never drops
/// below one unit per remaining share (asserted anyway).
pub fn random_share(
    remaining: i64,
    remaining_count: u32,
    uniform: &mut impl FnMut(u64) -> u64,
) -> i64 {
    debug_assert!(remaining_count >= 1 && remaining >= i64::from(remaining_count));
    if remaining_count <= 1 {
        return remaining;
    }
    let k = i64::from(remaining_count);
    // Exclusive upper bound of the draw; at least 2 because remaining ≥ k.
    let hi = (2 * (remaining as i128) / k as i128) as i64;
    let span = (hi - 1).max(1) as u64;
    let share = 1 + uniform(span).min(span - 1) as i64;
    // Never leave less than one unit per remaining share.
    share.min(remaining - (k - 1))
}

/// `count` shares by the double-mean method, in claim order. The expected
/// share of every position is `total / count` (up to integer rounding).
pub fn random(
    total: i64,
    count: u32,
    uniform: &mut impl FnMut(u64) -> u64,
) -> Result<Vec<i64>, RedPacketError> {
    check(total, count)?;
    let mut remaining = total;
    let mut out = Vec::with_capacity(count as usize);
    for left in (1..=count).rev() {
        let s = random_share(remaining, left, uniform);
        remaining -= s;
        out.push(s);
    }
    debug_assert_eq!(remaining, 0);
    Ok(out)
}

/// Validates explicit shares: one per claim, each ≥ one unit, summing to `total`.
pub fn fixed(total: i64, shares: &[i64]) -> Result<Vec<i64>, RedPacketError> {
    let count = u32::try_from(shares.len()).map_err(|_| RedPacketError::Count)?;
    check(total, count)?;
    let mut sum: i64 = 0;
    for s in shares {
        if *s < 1 {
            return Err(RedPacketError::Shares);
        }
        sum = sum.checked_add(*s).ok_or(RedPacketError::Shares)?;
    }
    if sum != total {
        return Err(RedPacketError::Shares);
    }
    Ok(shares.to_vec())
}

/// Whether `shares` is a valid allocation of `total` (what the ledger
/// re-checks before it moves money into escrow).
pub fn is_valid_allocation(total: i64, shares: &[i64]) -> bool {
    fixed(total, shares).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_differs_by_at_most_one() {
        assert_eq!(equal(10, 3).unwrap(), vec![4, 3, 3]);
        assert_eq!(equal(3, 3).unwrap(), vec![1, 1, 1]);
        assert_eq!(equal(2, 3), Err(RedPacketError::TotalBelowCount));
        assert_eq!(equal(10, 0), Err(RedPacketError::Count));
        assert_eq!(equal(1000, 501), Err(RedPacketError::Count));
    }

    #[test]
    fn random_extremes() {
        // A source that always returns the top or the bottom of the range.
        let mut top = |n: u64| n - 1;
        let s = random(100, 4, &mut top).unwrap();
        assert_eq!(s.iter().sum::<i64>(), 100);
        assert!(s.iter().all(|x| *x >= 1));
        let mut bottom = |_n: u64| 0;
        let s = random(100, 4, &mut bottom).unwrap();
        assert_eq!(s, vec![1, 1, 1, 97]);
        assert_eq!(random(5, 5, &mut bottom).unwrap(), vec![1; 5]);
    }

    #[test]
    fn fixed_is_checked() {
        assert_eq!(fixed(6, &[1, 2, 3]).unwrap(), vec![1, 2, 3]);
        assert_eq!(fixed(6, &[1, 2, 2]), Err(RedPacketError::Shares));
        assert_eq!(fixed(6, &[0, 3, 3]), Err(RedPacketError::Shares));
        assert_eq!(fixed(6, &[]), Err(RedPacketError::Count));
        assert_eq!(fixed(i64::MAX, &[i64::MAX, 1]), Err(RedPacketError::Shares));
        assert!("random".parse::<Mode>().is_ok());
        assert!("lucky".parse::<Mode>().is_err());
    }
}
