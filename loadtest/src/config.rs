//! Command line and scenario file: flags (clap) over an optional TOML file over
//! built-in defaults, resolved into one validated [`Scenario`] before any
//! connection is opened.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "applause-loadtest",
    version,
    about = "Load generator and benchmark harness for Applause"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Runtime worker threads (1 = a single-threaded runtime, the cheapest per
    /// frame when the load generator is pinned to one core); default: one per CPU.
    #[arg(long, global = true)]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full scenario: rooms, viewers, senders, acks; verifies delivery, finance and leaderboards.
    Run(RunArgs),
    /// Purchase benchmark: concurrent senders POSTing gifts (closed loop unless --rate is given).
    Purchase(RunArgs),
    /// Drive any WebSocket fan-out server (Applause, nginx+nchan, Node ws) with timestamped messages.
    Fanout(FanoutArgs),
}

/// Scenario knobs. Every field is optional so that a flag overrides the TOML
/// file, which overrides the default; the same struct reads both.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioOpts {
    /// Base URL of the deployment (HTTP API and, unless --gateway is given, WebSocket).
    #[arg(long)]
    pub target: Option<String>,
    /// Gateway base URL for viewers (repeat for scaled mode; viewers are spread round-robin).
    #[arg(long = "gateway")]
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Base URL of the gift service HTTP API (default: --target).
    #[arg(long)]
    pub gifts: Option<String>,
    /// HS256 secret shared with the deployment.
    #[arg(long, env = "APPLAUSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Rooms to open.
    #[arg(long)]
    pub rooms: Option<usize>,
    /// WebSocket viewers per room.
    #[arg(long)]
    pub viewers: Option<usize>,
    /// Distinct sending users.
    #[arg(long)]
    pub senders: Option<usize>,
    /// Gifts per second over all rooms (the end rate of a ramp).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Start rate of a linear ramp to --rate over warm-up + duration.
    #[arg(long)]
    pub ramp_from: Option<f64>,
    /// Sticker mix as id:weight pairs, e.g. "rose:10,rocket:1" (default: the whole catalog, equal weights).
    #[arg(long)]
    pub stickers: Option<String>,
    /// Quantity per gift.
    #[arg(long)]
    pub quantity: Option<u32>,
    /// Share of gifts carrying a message, 0..=1.
    #[arg(long)]
    pub message_share: Option<f64>,
    /// Share of gifts the broadcaster acknowledges, 0..=1.
    #[arg(long)]
    pub ack_share: Option<f64>,
    /// Measured sending time, e.g. 30s, 2m, 500ms.
    #[arg(long)]
    pub duration: Option<String>,
    /// Sending time before measuring starts.
    #[arg(long)]
    pub warmup: Option<String>,
    /// How long to wait after sending for the last frames to arrive.
    #[arg(long)]
    pub drain: Option<String>,
    /// New WebSocket connections per second.
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Loopback source addresses for viewers, e.g. "127.0.0.1-127.0.0.8" or a comma list.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Concurrent purchases in flight at most (open loop) or concurrent senders loops (purchase mode).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Per-request timeout for HTTP calls.
    #[arg(long)]
    pub request_timeout: Option<String>,
    /// Retries of a purchase (same Idempotency-Key) after a timeout or connection error.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Top-up per sender in major units (decimal string); default: enough for the run.
    #[arg(long)]
    pub topup: Option<String>,
    /// Decimals of the deployment's currency.
    #[arg(long)]
    pub currency_decimals: Option<u32>,
    /// Other clients (such as further load generators) buy on the deployment
    /// during the run: finance is checked through the revenue report of this
    /// run's own broadcasters only, not through the global summary's growth.
    #[arg(long)]
    #[serde(default)]
    pub shared_deployment: bool,
}

#[derive(Debug, Clone, Args)]
pub struct OutputOpts {
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of latency percentiles and throughput per second here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Server process to sample for CPU per delivery and RSS (/proc/PID).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// No live progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML scenario file (keys as the long flags, e.g. `viewers = 5000`); flags win.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub opts: ScenarioOpts,
    #[command(flatten)]
    pub out: OutputOpts,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Publish URL: http(s)://… is POSTed to, ws://… gets text frames.
    #[arg(long)]
    pub publish: String,
    /// Subscriber URL (repeat to spread subscribers round-robin).
    #[arg(long = "subscribe", required = true)]
    pub subscribe: Vec<String>,
    /// Subscribers in total.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Published messages per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Message size in bytes (JSON padded to this size).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    #[arg(long, default_value = "20s")]
    pub duration: String,
    #[arg(long, default_value = "3s")]
    pub warmup: String,
    /// How long to wait after publishing for queued messages to arrive.
    #[arg(long, default_value = "10s")]
    pub drain: String,
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub source_ips: String,
    /// Exit non-zero when any subscriber missed or duplicated a message.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub out: OutputOpts,
}

/// A sticker and its relative weight in the mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixEntry {
    pub sticker_id: String,
    pub weight: u32,
}

/// The resolved, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub http_base: String,
    pub gateways: Vec<String>,
    pub jwt_secret: String,
    pub rooms: usize,
    pub viewers_per_room: usize,
    pub senders: usize,
    /// `None` = closed loop (purchase mode without --rate).
    pub rate_end: Option<f64>,
    pub rate_start: Option<f64>,
    pub mix: Option<Vec<MixEntry>>,
    pub quantity: u32,
    pub message_share: f64,
    pub ack_share: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub connect_rate: f64,
    pub source_ips: Vec<Ipv4Addr>,
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub retries: u32,
    pub topup: Option<String>,
    pub currency_decimals: u32,
    /// Check finance through this run's broadcasters only (see the flag).
    pub shared_deployment: bool,
}

macro_rules! merge {
    ($flags:expr, $file:expr, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.take(); } )*
    };
}

impl RunArgs {
    /// Resolves flags, file and defaults; `purchase` selects the purchase benchmark defaults.
    pub fn resolve(&self, purchase: bool) -> Result<Scenario> {
        let mut o = self.opts.clone();
        if let Some(path) = &self.scenario {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario file {}", path.display()))?;
            let mut file: ScenarioOpts = toml::from_str(&text)
                .with_context(|| format!("parsing scenario file {}", path.display()))?;
            merge!(
                o,
                file,
                target,
                gifts,
                jwt_secret,
                rooms,
                viewers,
                senders,
                rate,
                ramp_from,
                stickers,
                quantity,
                message_share,
                ack_share,
                duration,
                warmup,
                drain,
                connect_rate,
                source_ips,
                concurrency,
                request_timeout,
                retries,
                topup,
                currency_decimals
            );
            if o.gateways.is_empty() {
                o.gateways = file.gateways;
            }
            o.shared_deployment |= file.shared_deployment;
        }
        let target = trim_base(o.target.as_deref().unwrap_or("http://127.0.0.1:8080"));
        let http_base = o.gifts.as_deref().map(trim_base).unwrap_or(target.clone());
        let gateways = if o.gateways.is_empty() {
            vec![target.clone()]
        } else {
            o.gateways.iter().map(|g| trim_base(g)).collect()
        };
        let Some(jwt_secret) = o.jwt_secret.clone() else {
            bail!("--jwt-secret (or APPLAUSE_JWT_SECRET) is required to mint tokens");
        };
        let viewers_per_room = if purchase {
            0
        } else {
            o.viewers.unwrap_or(100)
        };
        let rate_end = match (o.rate, purchase) {
            (Some(r), _) => Some(r),
            (None, true) => None,
            (None, false) => Some(10.0),
        };
        let s = Scenario {
            http_base,
            gateways,
            jwt_secret,
            rooms: o.rooms.unwrap_or(1),
            viewers_per_room,
            senders: o.senders.unwrap_or(if purchase { 64 } else { 10 }),
            rate_end,
            rate_start: o.ramp_from,
            mix: o.stickers.as_deref().map(parse_mix).transpose()?,
            quantity: o.quantity.unwrap_or(1),
            message_share: o.message_share.unwrap_or(0.2),
            ack_share: if purchase {
                0.0
            } else {
                o.ack_share.unwrap_or(0.1)
            },
            duration: parse_duration(o.duration.as_deref().unwrap_or("30s"))?,
            warmup: parse_duration(o.warmup.as_deref().unwrap_or("2s"))?,
            drain: parse_duration(o.drain.as_deref().unwrap_or("10s"))?,
            connect_rate: o.connect_rate.unwrap_or(2000.0),
            source_ips: parse_source_ips(o.source_ips.as_deref().unwrap_or("127.0.0.1-127.0.0.8"))?,
            concurrency: o.concurrency.unwrap_or(if purchase { 64 } else { 512 }),
            request_timeout: parse_duration(o.request_timeout.as_deref().unwrap_or("5s"))?,
            retries: o.retries.unwrap_or(3),
            topup: o.topup.clone(),
            currency_decimals: o.currency_decimals.unwrap_or(2),
            shared_deployment: o.shared_deployment,
        };
        s.validate()?;
        Ok(s)
    }
}

impl Scenario {
    fn validate(&self) -> Result<()> {
        if self.rooms == 0 || self.senders == 0 {
            bail!("--rooms and --senders must be at least 1");
        }
        if self.jwt_secret.len() < 32 {
            bail!("the JWT secret must be at least 32 bytes (SPEC §3)");
        }
        for (name, v) in [
            ("--message-share", self.message_share),
            ("--ack-share", self.ack_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1, got {v}");
            }
        }
        for r in [self.rate_end, self.rate_start].into_iter().flatten() {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate and --ramp-from must be positive, got {r}");
            }
        }
        if !(1..=9999).contains(&self.quantity) {
            bail!("--quantity must be 1..=9999");
        }
        if self.connect_rate <= 0.0 || self.concurrency == 0 {
            bail!("--connect-rate and --concurrency must be positive");
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        Ok(())
    }

    /// Gifts per second at `t` into the sending phase, or `None` in closed loop.
    pub fn rate_at(&self, t: Duration) -> Option<f64> {
        let end = self.rate_end?;
        let start = self.rate_start.unwrap_or(end);
        let total = (self.warmup + self.duration).as_secs_f64();
        let x = (t.as_secs_f64() / total).min(1.0);
        Some(start + (end - start) * x)
    }

    /// Gifts that should have been sent by `t` (the integral of the rate).
    pub fn gifts_due(&self, t: Duration) -> Option<u64> {
        let end = self.rate_end?;
        let start = self.rate_start.unwrap_or(end);
        let total = (self.warmup + self.duration).as_secs_f64();
        let t = t.as_secs_f64().min(total);
        Some((start * t + (end - start) * t * t / (2.0 * total)).floor() as u64)
    }
}

fn trim_base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Parses "30s", "2m", "500ms", "1h" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("bad duration unit in {text:?} (use ms, s, m or h)"),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        bail!("bad duration {text:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses "id:weight,id:weight" (a missing weight is 1).
pub fn parse_mix(text: &str) -> Result<Vec<MixEntry>> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, w) = part.split_once(':').unwrap_or((part, "1"));
        let weight: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("bad sticker weight in {part:?}"))?;
        mix.push(MixEntry {
            sticker_id: id.trim().to_owned(),
            weight,
        });
    }
    if mix.is_empty() || mix.iter().all(|m| m.weight == 0) {
        bail!("--stickers needs at least one sticker with a positive weight");
    }
    Ok(mix)
}

/// Parses "127.0.0.1-127.0.0.8" or "127.0.0.1,127.0.0.2"; only 127.0.0.0/8.
pub fn parse_source_ips(text: &str) -> Result<Vec<Ipv4Addr>> {
    let mut ips = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().context("bad source address")?;
            let b: Ipv4Addr = b.trim().parse().context("bad source address")?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 254 {
                bail!("bad source address range {part:?}");
            }
            ips.extend((a..=b).map(Ipv4Addr::from));
        } else {
            ips.push(part.parse().context("bad source address")?);
        }
    }
    if ips.is_empty() || ips.iter().any(|ip| !ip.is_loopback()) {
        bail!("--source-ips must be loopback addresses (127.0.0.0/8)");
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoke_invocation_parses() {
        let cli = Cli::try_parse_from([
            "applause-loadtest",
            "run",
            "--target",
            "http://127.0.0.1:9000",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--rooms",
            "1",
            "--viewers",
            "200",
            "--senders",
            "5",
            "--rate",
            "50",
            "--duration",
            "5s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let s = args.resolve(false).unwrap();
        assert_eq!(s.viewers_per_room, 200);
        assert_eq!(s.gateways, vec!["http://127.0.0.1:9000"]);
        assert_eq!(s.duration, Duration::from_secs(5));
        assert_eq!(s.gifts_due(Duration::from_secs(1)), Some(50));
    }

    #[test]
    fn a_scenario_file_is_read_and_flags_override_it() {
        let path = std::env::temp_dir().join(format!("lt-scenario-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            r#"
target = "http://127.0.0.1:7000"
gateways = ["http://127.0.0.1:7101", "http://127.0.0.1:7102/"]
jwt-secret = "0123456789abcdef0123456789abcdef"
rooms = 3
viewers = 1000
rate = 200
ramp-from = 20
stickers = "rose:3,heart"
duration = "1m"
"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "applause-loadtest",
            "run",
            "--scenario",
            path.to_str().unwrap(),
            "--rooms",
            "2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let s = args.resolve(false).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.rooms, 2, "the flag wins");
        assert_eq!(s.viewers_per_room, 1000);
        assert_eq!(s.http_base, "http://127.0.0.1:7000");
        assert_eq!(
            s.gateways,
            vec!["http://127.0.0.1:7101", "http://127.0.0.1:7102"]
        );
        assert_eq!(s.duration, Duration::from_secs(60));
        assert_eq!(s.rate_start, Some(20.0));
        assert_eq!(s.mix.as_ref().unwrap().len(), 2);
        assert!(Cli::try_parse_from(["applause-loadtest", "run", "--bogus"]).is_err());
    }

    #[test]
    fn durations_mixes_and_addresses() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
        assert_eq!(parse_mix("a:2, b").unwrap()[1].weight, 1);
        assert_eq!(parse_source_ips("127.0.0.1-127.0.0.3").unwrap().len(), 3);
        assert!(parse_source_ips("10.0.0.1").is_err());
    }

    #[test]
    fn a_ramp_integrates_linearly() {
        let mut s = RunArgs {
            scenario: None,
            opts: ScenarioOpts {
                jwt_secret: Some("x".repeat(32)),
                rate: Some(100.0),
                ramp_from: Some(0.0001),
                duration: Some("10s".into()),
                warmup: Some("0s".into()),
                ..Default::default()
            },
            out: OutputOpts {
                json: None,
                plot: None,
                server_pid: None,
                quiet: true,
            },
        }
        .resolve(false)
        .unwrap();
        assert_eq!(s.gifts_due(Duration::from_secs(10)), Some(500));
        s.rate_start = None;
        assert_eq!(s.gifts_due(Duration::from_secs(10)), Some(1000));
    }
}
