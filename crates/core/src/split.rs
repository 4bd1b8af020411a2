//! The revenue-split policy: funding channels, their store fee rates, the
//! broadcaster share, the order in which a purchase draws on a wallet's
//! channels, and the exact largest-remainder apportionment of a price.
//!
//! Rates are held as integer parts per million so that every quota is an exact
//! rational with denominator 10^12 and is computed in `i128` without rounding.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Where money entered a viewer's wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Apple,
    Google,
    Web,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Apple, Channel::Google, Channel::Web];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Apple => "apple",
            Channel::Google => "google",
            Channel::Web => "web",
        }
    }

    /// Position in [`Channel::ALL`]; per-channel arrays are indexed by it.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "apple" => Ok(Channel::Apple),
            "google" => Ok(Channel::Google),
            "web" => Ok(Channel::Web),
            other => Err(format!(
                "unknown channel {other:?} (expected apple, google or web)"
            )),
        }
    }
}

/// Amounts in minor units, one per channel, indexed by [`Channel::index`].
pub type PerChannel = [i64; 3];

/// A rate in parts per million: 300_000 is 30%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ppm(u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);

    /// Converts a fraction in [0, 1] with at most six decimals (`0.3`, `0.035`).
    pub fn from_fraction(d: Decimal) -> Result<Ppm, String> {
        if d.is_sign_negative() || d > Decimal::ONE {
            return Err(format!("rate {d} must be between 0 and 1"));
        }
        let scaled = d * Decimal::from(1_000_000);
        if scaled.fract() != Decimal::ZERO {
            return Err(format!("rate {d} has more than six decimal places"));
        }
        let v: u32 = scaled
            .trunc()
            .to_string()
            .parse()
            .map_err(|_| format!("rate {d} is out of range"))?;
        Ok(Ppm(v))
    }

    /// Parses a fraction from text, as given in flags and files.
    pub fn parse(text: &str) -> Result<Ppm, String> {
        let d =
            Decimal::from_str(text.trim()).map_err(|_| format!("rate {text:?} is not a number"))?;
        Ppm::from_fraction(d)
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The rate as the decimal text flags take (`0.3` for 300,000 ppm).
    pub fn to_text(self) -> String {
        self.to_fraction().to_string()
    }

    pub fn to_fraction(self) -> Decimal {
        Decimal::new(i64::from(self.0), 6).normalize()
    }
}

/// How one price divides between the app store, the broadcaster and the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Split {
    pub store: i64,
    pub broadcaster: i64,
    pub platform: i64,
    /// The same three parts attributed to each funding channel:
    /// `by_channel[channel.index()] = [store, broadcaster, platform]`. Each row
    /// sums to that channel's portion and each column to the part above.
    pub by_channel: [[i64; 3]; 3],
}

impl Split {
    pub fn total(&self) -> i64 {
        self.store + self.broadcaster + self.platform
    }

    /// The store part attributed to each channel.
    pub fn store_by_channel(&self) -> PerChannel {
        [
            self.by_channel[0][0],
            self.by_channel[1][0],
            self.by_channel[2][0],
        ]
    }
}

/// The configured fee rates and shares. Built once from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPolicy {
    store_fee: [Ppm; 3],
    broadcaster_share: Ppm,
    broadcaster_overrides: HashMap<String, Ppm>,
    draw_order: [Channel; 3],
}

impl Default for SplitPolicy {
    /// Apple 30%, Google 15%, web 3% (card processor); broadcaster 70%.
    fn default() -> Self {
        Self::new(
            [Ppm(300_000), Ppm(150_000), Ppm(30_000)],
            Ppm(700_000),
            HashMap::new(),
        )
    }
}

/// The denominator of every quota: a rate in ppm times a share in ppm.
const QUOTA_DENOMINATOR: i128 = 1_000_000_000_000;

impl SplitPolicy {
    pub fn new(
        store_fee: [Ppm; 3],
        broadcaster_share: Ppm,
        broadcaster_overrides: HashMap<String, Ppm>,
    ) -> Self {
        let mut draw_order = Channel::ALL;
        // Cheapest store fee first, so the most of each purchase reaches the
        // broadcaster and the platform; equal fees keep the order apple,
        // google, web. A stable sort makes this deterministic.
        draw_order.sort_by_key(|c| store_fee[c.index()]);
        Self {
            store_fee,
            broadcaster_share,
            broadcaster_overrides,
            draw_order,
        }
    }

    pub fn store_fee(&self, channel: Channel) -> Ppm {
        self.store_fee[channel.index()]
    }

    /// The broadcaster's share of what remains after the store fee.
    pub fn broadcaster_share(&self, broadcaster_id: &str) -> Ppm {
        self.broadcaster_overrides
            .get(broadcaster_id)
            .copied()
            .unwrap_or(self.broadcaster_share)
    }

    pub fn default_broadcaster_share(&self) -> Ppm {
        self.broadcaster_share
    }

    /// The order in which a purchase draws on a wallet's channel balances:
    /// ascending store fee, ties in the order apple, google, web.
    pub fn draw_order(&self) -> [Channel; 3] {
        self.draw_order
    }

    /// Splits `price` across a wallet's channel balances in [`Self::draw_order`],
    /// or `None` when the balances together hold less than `price`.
    pub fn draw(&self, balances: &PerChannel, price: i64) -> Option<PerChannel> {
        let mut portions = [0i64; 3];
        let mut remaining = price;
        for channel in self.draw_order {
            if remaining == 0 {
                break;
            }
            let take = balances[channel.index()].max(0).min(remaining);
            portions[channel.index()] = take;
            remaining -= take;
        }
        (remaining == 0).then_some(portions)
    }

    /// Apportions a price, paid from the given channel portions, between store,
    /// broadcaster and platform.
    ///
    /// Exact quotas: for each channel portion `p`, the store gets `p·fee`, the
    /// broadcaster `(p − p·fee)·share`, the platform the rest. The three parts
    /// are apportioned by the largest-remainder method: each gets the floor of
    /// its quota, and the one or two minor units left over go to the parts with
    /// the largest fractional remainders. **Tie order**: broadcaster, then
    /// store, then platform. So the parts always sum to the price and each is
    /// within one minor unit of its exact quota.
    ///
    /// The parts are then attributed to channels (for per-channel reports and
    /// store payables) by controlled rounding of the 3×3 table of quotas: every
    /// cell is the floor or the ceiling of its quota, every channel row sums to
    /// its portion and every column to its part.
    pub fn split(&self, broadcaster_id: &str, portions: &PerChannel) -> Split {
        let share = i128::from(self.broadcaster_share(broadcaster_id).get());
        // Quotas scaled by QUOTA_DENOMINATOR (10^12): p ≤ 10^15 so every
        // product stays below 10^27, well inside i128.
        let mut cells = [[0i128; 3]; 3];
        let mut price: i128 = 0;
        for channel in Channel::ALL {
            let p = i128::from(portions[channel.index()]);
            let fee = i128::from(self.store_fee(channel).get());
            let store_q = p * fee * 1_000_000;
            let broadcaster_q = p * (1_000_000 - fee) * share;
            cells[channel.index()] = [
                store_q,
                broadcaster_q,
                p * QUOTA_DENOMINATOR - store_q - broadcaster_q,
            ];
            price += p;
        }
        let column = |j: usize| cells.iter().map(|row| row[j]).sum::<i128>();
        // Order of the quotas here is the tie order: broadcaster, store, platform.
        let parts = largest_remainder(price, &[column(1), column(0), column(2)]);
        let totals = [parts[1], parts[0], parts[2]];
        let by_channel = controlled_rounding(&cells, portions, &totals);
        Split {
            store: totals[0] as i64,
            broadcaster: totals[1] as i64,
            platform: totals[2] as i64,
            by_channel,
        }
    }
}

/// Rounds a 3×3 table of quotas (channels × parts, scaled by
/// [`QUOTA_DENOMINATOR`]) so that each cell is its floor or its ceiling, row
/// `c` sums to `portions[c]` and column `j` to `totals[j]`. Such a rounding
/// always exists for two-way tables whose margins are themselves floors or
/// ceilings of the margin quotas; with nine cells an exhaustive search over
/// which cells round up is cheap and deterministic (the lowest-numbered
/// subset with the largest sum of remainders wins).
fn controlled_rounding(
    cells: &[[i128; 3]; 3],
    portions: &PerChannel,
    totals: &[i128; 3],
) -> [[i64; 3]; 3] {
    let mut floor = [[0i64; 3]; 3];
    let mut frac = [[0i128; 3]; 3];
    for c in 0..3 {
        for j in 0..3 {
            floor[c][j] = cells[c][j].div_euclid(QUOTA_DENOMINATOR) as i64;
            frac[c][j] = cells[c][j].rem_euclid(QUOTA_DENOMINATOR);
        }
    }
    let row_need: [i64; 3] = std::array::from_fn(|c| portions[c] - floor[c].iter().sum::<i64>());
    let col_need: [i64; 3] =
        std::array::from_fn(|j| totals[j] as i64 - (0..3).map(|c| floor[c][j]).sum::<i64>());
    if row_need == [0; 3] && col_need == [0; 3] {
        return floor;
    }
    let mut best: Option<(i128, u32)> = None;
    for mask in 0u32..512 {
        let mut rows = [0i64; 3];
        let mut cols = [0i64; 3];
        let mut weight = 0i128;
        let mut eligible = true;
        for bit in 0..9 {
            if mask & (1 << bit) != 0 {
                let (c, j) = (bit / 3, bit % 3);
                if frac[c][j] == 0 {
                    eligible = false;
                    break;
                }
                rows[c] += 1;
                cols[j] += 1;
                weight += frac[c][j];
            }
        }
        if eligible && rows == row_need && cols == col_need && best.is_none_or(|(w, _)| weight > w)
        {
            best = Some((weight, mask));
        }
    }
    let (_, mask) = best.expect("a controlled rounding of a 3x3 table always exists");
    for bit in 0..9 {
        if mask & (1 << bit) != 0 {
            floor[bit / 3][bit % 3] += 1;
        }
    }
    floor
}

/// Apportions the integer `total` in proportion to `quotas` (each scaled by
/// [`QUOTA_DENOMINATOR`], summing to within one unit of `total`): floors first,
/// then one unit each to the largest fractional remainders; equal remainders
/// go in slice order.
fn largest_remainder<const N: usize>(total: i128, quotas: &[i128; N]) -> [i128; N] {
    let mut parts = [0i128; N];
    let mut order = [0usize; N];
    for i in 0..N {
        parts[i] = quotas[i].div_euclid(QUOTA_DENOMINATOR);
        order[i] = i;
    }
    let mut left = total - parts.iter().sum::<i128>();
    // Stable sort keeps slice order among equal remainders.
    order.sort_by_key(|&i| std::cmp::Reverse(quotas[i].rem_euclid(QUOTA_DENOMINATOR)));
    // At most N − 1 units are left (the remainders sum to less than N), and
    // only parts with a non-zero remainder receive one.
    for &i in &order {
        if left <= 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    debug_assert_eq!(left, 0, "largest remainder left units over");
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SplitPolicy {
        SplitPolicy::default()
    }

    #[test]
    fn rates_parse_as_exact_fractions() {
        assert_eq!(Ppm::parse("0.3"), Ok(Ppm(300_000)));
        assert_eq!(Ppm::parse("0.035"), Ok(Ppm(35_000)));
        assert_eq!(Ppm::parse("1"), Ok(Ppm::ONE));
        assert!(Ppm::parse("1.01").is_err());
        assert!(Ppm::parse("-0.1").is_err());
        assert!(Ppm::parse("0.0000001").is_err());
        assert!(Ppm::parse("abc").is_err());
        assert_eq!(Ppm(300_000).to_fraction().to_string(), "0.3");
    }

    #[test]
    fn draws_cheapest_channel_first() {
        let p = policy();
        assert_eq!(
            p.draw_order(),
            [Channel::Web, Channel::Google, Channel::Apple]
        );
        // apple 5.00, google 1.00, web 0.50: a 2.00 purchase takes web, google, then apple.
        assert_eq!(p.draw(&[500, 100, 50], 200), Some([50, 100, 50]));
        assert_eq!(p.draw(&[500, 100, 50], 651), None);
        assert_eq!(p.draw(&[500, 100, 50], 650), Some([500, 100, 50]));
    }

    fn check(portions: PerChannel, expected: (i64, i64, i64)) {
        let s = policy().split("b", &portions);
        assert_eq!(
            (s.store, s.broadcaster, s.platform),
            expected,
            "{portions:?}"
        );
        assert_eq!(s.total(), portions.iter().sum::<i64>());
        assert_eq!(s.store_by_channel().iter().sum::<i64>(), s.store);
        for (row, portion) in s.by_channel.iter().zip(portions) {
            assert_eq!(row.iter().sum::<i64>(), portion);
        }
    }

    #[test]
    fn splits_known_prices() {
        // 1.99 via apple: store 0.597, broadcaster 0.9751, platform 0.4179.
        check([199, 0, 0], (60, 97, 42));
        // 1.00 via web: store 0.03, broadcaster 0.679, platform 0.291.
        check([0, 0, 100], (3, 68, 29));
        // 0.01 via apple: quotas 0.003 / 0.0049 / 0.0021: the cent goes to the broadcaster.
        check([1, 0, 0], (0, 1, 0));
        // 500.00 via google: exact.
        check([0, 50000, 0], (7500, 29750, 12750));
        // A mix: apple 0.50, web 0.50.
        check([50, 0, 50], (17, 58, 25));
    }

    #[test]
    fn overrides_change_the_broadcaster_share() {
        let mut overrides = HashMap::new();
        overrides.insert("star".to_owned(), Ppm(900_000));
        let p = SplitPolicy::new(
            [Ppm(300_000), Ppm(150_000), Ppm(30_000)],
            Ppm(700_000),
            overrides,
        );
        assert_eq!(p.broadcaster_share("star"), Ppm(900_000));
        let s = p.split("star", &[1000, 0, 0]);
        assert_eq!((s.store, s.broadcaster, s.platform), (300, 630, 70));
    }

    #[test]
    fn ties_follow_the_documented_order() {
        // Fee 0%, share 50%: 1 unit splits into quotas 0 / 0.5 / 0.5 — the
        // broadcaster wins the tie against the platform.
        let p = SplitPolicy::new([Ppm(0); 3], Ppm(500_000), HashMap::new());
        let s = p.split("b", &[1, 0, 0]);
        assert_eq!((s.store, s.broadcaster, s.platform), (0, 1, 0));
        // Fee 50%, share 0%: store and platform tie at 0.5 — the store wins.
        let p = SplitPolicy::new([Ppm(500_000); 3], Ppm(0), HashMap::new());
        let s = p.split("b", &[1, 0, 0]);
        assert_eq!((s.store, s.broadcaster, s.platform), (1, 0, 0));
    }
}
