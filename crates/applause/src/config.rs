//! Command-line flags (each with an `APPLAUSE_*` environment twin) and the
//! typed, validated [`Settings`] built from them before any port is bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use applause_core::{Catalog, Channel, Currency, Ppm, SplitPolicy};
use applause_gateway::GatewayConfig;
use applause_gifts::{GiftsConfig, RateLimit};
use applause_ledger::LedgerOptions;
use applause_relay::RelayConfig;
use clap::Args;

/// The flags' defaults, read from the libraries' `Default`s: those are the
/// only place a default lives, so the binary and the crates never disagree.
mod defaults {
    use applause_core::Channel;
    use applause_gateway::GatewayConfig;
    use applause_gifts::GiftsConfig;
    use applause_ledger::LedgerOptions;
    use applause_relay::RelayConfig;

    pub fn gateway() -> GatewayConfig {
        GatewayConfig::default()
    }

    pub fn gifts() -> GiftsConfig {
        GiftsConfig::default()
    }

    pub fn relay() -> RelayConfig {
        RelayConfig::default()
    }

    pub fn ledger() -> LedgerOptions {
        LedgerOptions::default()
    }

    pub fn fee(channel: Channel) -> String {
        ledger().policy.store_fee(channel).to_text()
    }
}

/// Flags shared by every subcommand that runs or reads the platform.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on.
    #[arg(long, env = "APPLAUSE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Directory for the SQLite ledger and the generated JWT secret.
    #[arg(long, env = "APPLAUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Ledger database: `sqlite:PATH` or `postgres://…` (default: SQLite in the data dir).
    #[arg(long, env = "APPLAUSE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for leaderboards and the event bus (unset: in-memory, single process).
    #[arg(long, env = "APPLAUSE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, env = "APPLAUSE_REDIS_PREFIX", default_value = "applause:")]
    pub redis_prefix: String,
    /// Sticker catalog TOML file (default: the built-in catalog).
    #[arg(long, env = "APPLAUSE_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Settlement currency code.
    #[arg(long, env = "APPLAUSE_CURRENCY", default_value = "USD")]
    pub currency: String,
    /// Decimals of the settlement currency's minor unit.
    #[arg(long, env = "APPLAUSE_CURRENCY_EXPONENT", default_value_t = defaults::ledger().currency.exponent())]
    pub currency_exponent: u32,
    /// Store fee rate for money that came through Apple.
    #[arg(long, env = "APPLAUSE_FEE_APPLE", default_value_t = defaults::fee(Channel::Apple))]
    pub fee_apple: String,
    /// Store fee rate for money that came through Google.
    #[arg(long, env = "APPLAUSE_FEE_GOOGLE", default_value_t = defaults::fee(Channel::Google))]
    pub fee_google: String,
    /// Card-processor fee rate for money that came through the web.
    #[arg(long, env = "APPLAUSE_FEE_WEB", default_value_t = defaults::fee(Channel::Web))]
    pub fee_web: String,
    /// Broadcaster share of what remains after the store fee.
    #[arg(long, env = "APPLAUSE_BROADCASTER_SHARE", default_value_t = defaults::ledger().policy.default_broadcaster_share().to_text())]
    pub broadcaster_share: String,
    /// Per-broadcaster share overrides, `id=rate`, comma-separated.
    #[arg(
        long,
        env = "APPLAUSE_BROADCASTER_SHARE_OVERRIDES",
        value_delimiter = ','
    )]
    pub broadcaster_share_override: Vec<String>,
    /// Gift purchases per user per second (sustained).
    #[arg(long, env = "APPLAUSE_GIFT_RATE_PER_S", default_value_t = defaults::gifts().rate.per_second)]
    pub gift_rate_per_s: u32,
    /// Gift purchases per user in a burst.
    #[arg(long, env = "APPLAUSE_GIFT_BURST", default_value_t = defaults::gifts().rate.burst)]
    pub gift_burst: u32,
    /// Seconds a red packet stays claimable when the drop does not say (1–86400).
    #[arg(long, env = "APPLAUSE_RED_PACKET_EXPIRY_S", default_value_t = defaults::gifts().red_packet_expiry.as_secs())]
    pub red_packet_expiry_s: u64,
    /// File of blocked words for gift messages and acks (one per line).
    #[arg(long, env = "APPLAUSE_BLOCKED_WORDS")]
    pub blocked_words: Option<PathBuf>,
    /// Events kept per room for resume.
    #[arg(long, env = "APPLAUSE_HISTORY_EVENTS_MAX", default_value_t = defaults::gateway().history_events_max)]
    pub history_events_max: usize,
    /// Seconds events are kept per room for resume.
    #[arg(long, env = "APPLAUSE_HISTORY_AGE_S", default_value_t = defaults::gateway().history_age_ms_max / 1_000)]
    pub history_age_s: u64,
    /// Bytes queued per WebSocket before it is closed as a slow consumer.
    #[arg(long, env = "APPLAUSE_OUTBOUND_QUEUE_BYTES_MAX", default_value_t = defaults::gateway().outbound_queue_bytes_max)]
    pub outbound_queue_bytes_max: usize,
    /// Most WebSocket connections held at once.
    #[arg(long, env = "APPLAUSE_CONNECTIONS_MAX", default_value_t = defaults::gateway().connections_max)]
    pub connections_max: usize,
    /// WebSocket connects per second per client IP (sustained).
    #[arg(long, env = "APPLAUSE_CONNECTS_PER_IP_PER_S", default_value_t = defaults::gateway().connects_per_ip_per_s)]
    pub connects_per_ip_per_s: u32,
    /// Seconds of silence before a WebSocket peer is closed.
    #[arg(long, env = "APPLAUSE_WS_IDLE_TIMEOUT_S", default_value_t = defaults::gateway().idle_timeout_ms / 1_000)]
    pub ws_idle_timeout_s: u64,
    /// Milliseconds a new WebSocket's live events wait for an immediate
    /// `resume` (replayed first, nothing twice); 0 turns the wait off.
    #[arg(long, env = "APPLAUSE_WS_RESUME_GRACE_MS", default_value_t = defaults::gateway().resume_grace_ms)]
    pub ws_resume_grace_ms: u64,
    /// Browser origins allowed to open WebSockets, comma-separated
    /// (`https://app.example,http://localhost:8080`); empty allows any
    /// origin, which is safe because no cookie ever authenticates
    /// (docs/security.md).
    #[arg(long, env = "APPLAUSE_WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub ws_allowed_origins: Vec<String>,
    /// Milliseconds between pushes of a busy room's live top 10 to its viewers
    /// (a push goes out only when the board changed). Each push is one more
    /// frame to every viewer, so a shorter interval costs CPU and bandwidth.
    #[arg(long, env = "APPLAUSE_LEADERBOARD_PUSH_MS", default_value_t = defaults::relay().leaderboard_push_interval.as_millis() as u64)]
    pub leaderboard_push_ms: u64,
    /// Run the WebSocket fan-out on a thread of its own (`true`), so a big
    /// room's rounds of writes never hold up HTTP requests and ledger
    /// commits queued on the same runtime, or as a task among them
    /// (`false`). Default: `true` for `serve`, `false` for gateway nodes,
    /// which serve no purchases.
    #[arg(long, env = "APPLAUSE_FANOUT_THREAD", action = clap::ArgAction::Set)]
    pub fanout_thread: Option<bool>,
    /// Deliveries a second (a room's events a second times its viewers)
    /// from which a room's fan-out pairs its events: each viewer gets two
    /// gifts per write, half the sends, and the first of a pair waits for
    /// the second (at most `--fanout-heavy-coalesce-ms`). 0: never.
    #[arg(long, env = "APPLAUSE_FANOUT_HEAVY_DELIVERIES_MIN", default_value_t = defaults::gateway().fanout_heavy_deliveries_min)]
    pub fanout_heavy_deliveries_min: u32,
    /// The longest the first event of a heavy room's pair waits for the
    /// second, in milliseconds (0–100; 0 turns pairing off). Rooms whose
    /// events come further apart never wait.
    #[arg(long, env = "APPLAUSE_FANOUT_HEAVY_COALESCE_MS", default_value_t = defaults::gateway().fanout_heavy_coalesce_ms)]
    pub fanout_heavy_coalesce_ms: u64,
    /// Stagger a heavy room's pairs: each gift goes at once to half the
    /// viewers (with the one they lacked) and to the other half with the
    /// next gift — still two per write, about half the wait (true or false;
    /// false: every viewer waits for the pair).
    #[arg(long, env = "APPLAUSE_FANOUT_HEAVY_STAGGER", action = clap::ArgAction::Set, default_value_t = defaults::gateway().fanout_heavy_stagger)]
    pub fanout_heavy_stagger: bool,
    /// Most commands the ledger commits in one transaction.
    #[arg(long, env = "APPLAUSE_BATCH_MAX", default_value_t = defaults::ledger().batch_max)]
    pub batch_max: usize,
    /// Log format: text or json.
    #[arg(long, env = "APPLAUSE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Everything a process needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub catalog: Catalog,
    pub ledger: LedgerOptions,
    pub gifts: GiftsConfig,
    pub relay: RelayConfig,
    pub gateway: GatewayConfig,
    pub history: applause_bus::HistoryBounds,
    pub json_logs: bool,
    /// `--fanout-thread`, when given (the default depends on the process's
    /// kind: `gateway_config`).
    pub fanout_thread: Option<bool>,
}

fn rate(name: &str, text: &str) -> Result<Ppm, String> {
    Ppm::parse(text).map_err(|e| format!("--{name}: {e}"))
}

impl CommonArgs {
    /// Validates every value; the error names the flag and the value.
    pub fn settings(&self) -> Result<Settings, String> {
        let bind: SocketAddr = self.bind.parse().map_err(|_| {
            format!(
                "--bind {:?} is not an address such as 127.0.0.1:8080",
                self.bind
            )
        })?;
        let currency = Currency::new(&self.currency, self.currency_exponent)
            .map_err(|e| format!("--currency: {e}"))?;
        let fees = [
            rate("fee-apple", &self.fee_apple)?,
            rate("fee-google", &self.fee_google)?,
            rate("fee-web", &self.fee_web)?,
        ];
        let share = rate("broadcaster-share", &self.broadcaster_share)?;
        let mut overrides = HashMap::new();
        for o in self
            .broadcaster_share_override
            .iter()
            .filter(|o| !o.trim().is_empty())
        {
            let (id, r) = o
                .split_once('=')
                .ok_or_else(|| format!("--broadcaster-share-override {o:?} must be id=rate"))?;
            if !applause_core::ids::is_valid_user_id(id.trim()) {
                return Err(format!(
                    "--broadcaster-share-override {o:?}: {id:?} is not a user id"
                ));
            }
            overrides.insert(id.trim().to_owned(), rate("broadcaster-share-override", r)?);
        }
        let catalog = match &self.catalog {
            None => Catalog::builtin(&currency),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--catalog {}: {e}", path.display()))?;
                Catalog::from_toml(&text, &currency)
                    .map_err(|e| format!("--catalog {}: {e}", path.display()))?
            }
        };
        let blocked_words = match &self.blocked_words {
            None => Default::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--blocked-words {}: {e}", path.display()))?;
                GiftsConfig::parse_blocked_words(&text)
            }
        };
        let database_url = match &self.database_url {
            Some(u)
                if u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.starts_with("sqlite:") =>
            {
                u.clone()
            }
            Some(u) => {
                return Err(format!(
                    "--database-url {u:?} must start with sqlite: or postgres://"
                ))
            }
            None => format!("sqlite:{}", self.data_dir.join("applause.db").display()),
        };
        if let Some(r) = &self.redis_url {
            // A server URL, or `redis+cluster://host:port,…/` for a Redis
            // Cluster; the reason never echoes the URL (it may hold a password).
            applause_redis::RedisTarget::parse(r).map_err(|e| format!("--redis-url {e}"))?;
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}', ' ']) {
            return Err(format!(
                "--redis-prefix {:?} must be non-empty, without braces or spaces",
                self.redis_prefix
            ));
        }
        if !(1..=10_000).contains(&self.batch_max) {
            return Err(format!(
                "--batch-max {} must be between 1 and 10000",
                self.batch_max
            ));
        }
        let json_logs = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(format!("--log-format {other:?} must be text or json")),
        };
        let gifts = GiftsConfig {
            rate: RateLimit {
                per_second: self.gift_rate_per_s,
                burst: self.gift_burst,
            },
            blocked_words,
            red_packet_expiry: std::time::Duration::from_secs(self.red_packet_expiry_s),
            ..GiftsConfig::default()
        };
        let relay = RelayConfig {
            leaderboard_push_interval: std::time::Duration::from_millis(self.leaderboard_push_ms),
            ..RelayConfig::default()
        };
        if !(50..=60_000).contains(&self.leaderboard_push_ms) {
            return Err(format!(
                "--leaderboard-push-ms {} must be between 50 and 60000",
                self.leaderboard_push_ms
            ));
        }
        if !(1..=86_400).contains(&self.red_packet_expiry_s) {
            return Err(format!(
                "--red-packet-expiry-s {} must be between 1 and 86400",
                self.red_packet_expiry_s
            ));
        }
        gifts
            .validate()
            .map_err(|e| format!("--gift-rate-per-s/--gift-burst: {e}"))?;
        relay
            .validate()
            .map_err(|e| format!("--leaderboard-push-ms: {e}"))?;
        if self.fanout_heavy_coalesce_ms > 100 {
            return Err(format!(
                "--fanout-heavy-coalesce-ms {} must be between 0 and 100",
                self.fanout_heavy_coalesce_ms
            ));
        }
        let gateway = GatewayConfig {
            fanout_heavy_deliveries_min: self.fanout_heavy_deliveries_min,
            fanout_heavy_coalesce_ms: self.fanout_heavy_coalesce_ms,
            fanout_heavy_stagger: self.fanout_heavy_stagger,
            outbound_queue_bytes_max: self.outbound_queue_bytes_max,
            history_events_max: self.history_events_max,
            history_age_ms_max: self.history_age_s.saturating_mul(1000),
            connections_max: self.connections_max,
            connects_per_ip_per_s: self.connects_per_ip_per_s,
            idle_timeout_ms: self.ws_idle_timeout_s.saturating_mul(1000),
            resume_grace_ms: self.ws_resume_grace_ms,
            allowed_origins: self.ws_allowed_origins.clone(),
            ..GatewayConfig::default()
        };
        gateway.validate()?;
        Ok(Settings {
            bind,
            data_dir: self.data_dir.clone(),
            database_url,
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            catalog,
            ledger: LedgerOptions {
                currency,
                policy: SplitPolicy::new(fees, share, overrides),
                batch_max: self.batch_max,
                ..LedgerOptions::default()
            },
            gifts,
            relay,
            history: applause_bus::HistoryBounds {
                events_max: self.history_events_max,
                age_ms_max: self.history_age_s.saturating_mul(1000),
            },
            gateway,
            json_logs,
            fanout_thread: self.fanout_thread,
        })
    }
}

/// The JWT secret: `APPLAUSE_JWT_SECRET`, or the one in the data directory,
/// created (32 random bytes, hex, mode 0600) when absent.
pub fn jwt_secret(data_dir: &Path) -> Result<Vec<u8>, String> {
    if let Ok(s) = std::env::var("APPLAUSE_JWT_SECRET") {
        if s.len() < applause_web::auth::SECRET_BYTES_MIN {
            return Err(format!(
                "APPLAUSE_JWT_SECRET is {} bytes; at least {} are required",
                s.len(),
                applause_web::auth::SECRET_BYTES_MIN
            ));
        }
        return Ok(s.into_bytes());
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= applause_web::auth::SECRET_BYTES_MIN => {
            Ok(s.trim().as_bytes().to_vec())
        }
        Ok(_) => Err(format!(
            "{} holds a secret shorter than 32 bytes",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("--data-dir {}: {e}", data_dir.display()))?;
            let secret: [u8; 32] = rand::random();
            let text = hex::encode(secret);
            write_private(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(text.into_bytes())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)
    }
}

/// Parses a duration such as `30s`, `15m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 15m, 2h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration such as 30s, 15m, 2h or 7d"
            ))
        }
    };
    if secs == 0 || secs > 366 * 86_400 {
        return Err(format!("{text:?} must be between 1s and 366d"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    /// Settings from no flags at all (and no `APPLAUSE_*` variables).
    fn no_flags() -> Settings {
        let vars: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("APPLAUSE_"))
            .collect();
        assert!(
            vars.is_empty(),
            "run without APPLAUSE_* variables: {vars:?}"
        );
        Cli::parse_from(["applause"]).common.settings().unwrap()
    }

    #[test]
    fn without_flags_the_binary_runs_on_the_libraries_defaults() {
        let s = no_flags();
        assert_eq!(s.gateway, GatewayConfig::default());
        assert_eq!(s.relay, RelayConfig::default());
        let gifts = GiftsConfig::default();
        assert_eq!(s.gifts.rate.per_second, gifts.rate.per_second);
        assert_eq!(s.gifts.rate.burst, gifts.rate.burst);
        assert_eq!(s.gifts.red_packet_expiry, gifts.red_packet_expiry);
        assert_eq!(s.gifts.body_bytes_max, gifts.body_bytes_max);
        let ledger = LedgerOptions::default();
        assert_eq!(s.ledger.batch_max, ledger.batch_max);
        assert_eq!(s.ledger.currency, ledger.currency);
        for ch in Channel::ALL {
            assert_eq!(s.ledger.policy.store_fee(ch), ledger.policy.store_fee(ch));
        }
        assert_eq!(
            s.ledger.policy.default_broadcaster_share(),
            ledger.policy.default_broadcaster_share()
        );
        assert_eq!(s.history.events_max, s.gateway.history_events_max);
        assert_eq!(s.history.age_ms_max, s.gateway.history_age_ms_max);
    }

    #[test]
    fn the_heavy_room_pairing_is_set_by_flags_and_bounded() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["applause"][..], args].concat())
                .unwrap()
                .common
                .settings()
        };
        let s = parse(&[
            "--fanout-heavy-deliveries-min",
            "50000",
            "--fanout-heavy-coalesce-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(s.gateway.fanout_heavy_deliveries_min, 50_000);
        assert_eq!(s.gateway.fanout_heavy_coalesce_ms, 0);
        assert!(s.gateway.fanout_heavy_stagger, "staggered by default");
        let s = parse(&["--fanout-heavy-stagger", "false"]).unwrap();
        assert!(!s.gateway.fanout_heavy_stagger);
        let bad = Cli::try_parse_from(["applause", "--fanout-heavy-stagger", "sometimes"]);
        assert!(
            bad.is_err(),
            "a stagger that is neither true nor false is refused"
        );
        let err = parse(&["--fanout-heavy-coalesce-ms", "101"]).unwrap_err();
        assert!(err.contains("--fanout-heavy-coalesce-ms 101"), "{err}");
        let bad = Cli::try_parse_from(["applause", "--fanout-heavy-deliveries-min", "-1"]);
        assert!(bad.is_err(), "a negative rate is refused");
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        // README's configuration table states these; the crates own them.
        let g = GatewayConfig::default();
        assert_eq!(g.outbound_queue_bytes_max, 262_144);
        assert_eq!(g.connects_per_ip_per_s, 2_000);
        assert_eq!(g.resume_grace_ms, 300);
        assert_eq!(g.fanout_heavy_deliveries_min, 10_000);
        assert_eq!(g.fanout_heavy_coalesce_ms, 60);
        assert_eq!(
            RelayConfig::default().leaderboard_push_interval,
            Duration::from_millis(1_000)
        );
        assert_eq!(defaults::fee(Channel::Apple), "0.3");
        assert_eq!(defaults::fee(Channel::Google), "0.15");
        assert_eq!(defaults::fee(Channel::Web), "0.03");
    }
}
