//! `applause`: the one binary. Thin: parses the command line, validates the
//! settings before binding anything, and calls the library.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use applause::config::{jwt_secret, parse_duration};
use applause::{build, run, shutdown_signal, CommonArgs, Mode};
use applause_core::Role;
use applause_ledger::GroupBy;
use clap::{Parser, Subcommand};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "applause",
    version,
    about = "Live-streaming tipping platform: gift stickers, exact revenue splits, live fan-out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process (SQLite ledger, in-memory boards and bus by default).
    Serve(CommonArgs),
    /// Run a WebSocket gateway node (scaled mode: needs --redis-url).
    Gateway(CommonArgs),
    /// Run a gift-service node (HTTP API; scaled mode: needs --redis-url).
    Gifts(CommonArgs),
    /// Create or update the ledger schema, then exit.
    Migrate(CommonArgs),
    /// Print a signed token for trying the API.
    Token {
        /// User id (1–64 of A-Z a-z 0-9 _ -).
        #[arg(long)]
        sub: String,
        /// viewer, broadcaster, finance or admin.
        #[arg(long)]
        role: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, such as 30m, 12h, 7d.
        #[arg(long, default_value = "12h")]
        ttl: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Finance reports.
    Report {
        #[command(subcommand)]
        report: ReportCommand,
    },
    /// Leaderboard maintenance.
    Leaderboard {
        #[command(subcommand)]
        action: LeaderboardCommand,
    },
    /// Ledger maintenance.
    Ledger {
        #[command(subcommand)]
        action: LedgerCommand,
    },
    /// Serve with seeded demo data and print how to try it.
    Demo(CommonArgs),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Revenue over [from, to) grouped by day, channel, broadcaster or sticker.
    Revenue {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "day")]
        group_by: String,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Subcommand)]
enum LeaderboardCommand {
    /// Recompute every board in Redis from the ledger.
    Rebuild(CommonArgs),
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check every invariant of the ledger; exits 1 when one fails.
    Check(CommonArgs),
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("applause: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("applause: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(c) => serve(c, Mode::Embedded, false).await,
        Command::Gateway(c) => serve(c, Mode::Gateway, false).await,
        Command::Gifts(c) => serve(c, Mode::Gifts, false).await,
        Command::Demo(c) => serve(c, Mode::Embedded, true).await,
        Command::Migrate(c) => {
            let s = c.settings().map_err(anyhow::Error::msg)?;
            applause::open_ledger(&s, &prometheus::Registry::new()).await?;
            println!(
                "ledger schema is up to date at {}",
                applause::redact(&s.database_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            sub,
            role,
            name,
            ttl,
            common,
        } => {
            let role: Role = role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            let ttl = parse_duration(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let secret = jwt_secret(&common.data_dir).map_err(anyhow::Error::msg)?;
            let auth = applause_web::Authenticator::new(&secret).map_err(anyhow::Error::msg)?;
            let token = auth
                .mint(&sub, role, name.as_deref(), ttl)
                .map_err(|e| anyhow::anyhow!("--sub/--name: {e}"))?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            report:
                ReportCommand::Revenue {
                    from,
                    to,
                    group_by,
                    format,
                    common,
                },
        } => {
            let s = common.settings().map_err(anyhow::Error::msg)?;
            let (from_ms, to_ms) = applause_gifts::parse_interval(&from, &to)
                .map_err(|e| anyhow::anyhow!("--from/--to: {e}"))?;
            let group: GroupBy = group_by
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--group-by: {e}"))?;
            if format != "csv" && format != "json" {
                anyhow::bail!("--format {format:?} must be csv or json");
            }
            let ledger = applause::open_ledger(&s, &prometheus::Registry::new()).await?;
            let (rows, totals) = ledger.revenue(from_ms, to_ms, group).await?;
            let c = ledger.currency();
            if format == "csv" {
                print!("{}", applause_gifts::revenue_csv(group, &rows, &totals, c));
            } else {
                let rows: Vec<_> = rows
                    .iter()
                    .chain(std::iter::once(&totals))
                    .map(|r| {
                        serde_json::json!({
                            group.as_str(): r.key, "gifts": r.gifts, "gross": c.format(r.gross),
                            "store_fees": c.format(r.store_fees), "broadcaster_earnings": c.format(r.broadcaster_earnings),
                            "platform_revenue": c.format(r.platform_revenue), "refunds": c.format(r.refunds),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            action: LedgerCommand::Check(common),
        } => {
            let s = common.settings().map_err(anyhow::Error::msg)?;
            let ledger = applause::open_ledger(&s, &prometheus::Registry::new()).await?;
            let check = ledger.check().await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&applause_gifts::check_json(
                    &check,
                    ledger.currency()
                ))?
            );
            Ok(if check.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Leaderboard {
            action: LeaderboardCommand::Rebuild(common),
        } => {
            let s = common.settings().map_err(anyhow::Error::msg)?;
            if s.redis_url.is_none() {
                anyhow::bail!("--redis-url is required: in-memory boards are rebuilt by `applause serve` when it starts");
            }
            let registry = prometheus::Registry::new();
            let ledger = applause::open_ledger(&s, &registry).await?;
            let boards = applause::open_boards(&s, &registry).await?;
            let r = applause_relay::rebuild_boards(
                &ledger,
                boards.as_ref(),
                &applause_core::clock::SystemClock,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            println!(
                "rebuilt the leaderboards from {} updates (generation {})",
                r.updates, r.generation
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(common: CommonArgs, mode: Mode, demo: bool) -> anyhow::Result<ExitCode> {
    // Every value is checked before anything is bound or opened.
    let settings = common.settings().map_err(anyhow::Error::msg)?;
    init_logs(settings.json_logs);
    let secret = jwt_secret(&settings.data_dir).map_err(anyhow::Error::msg)?;
    let app = build(&settings, &secret, mode).await?;
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("--bind {}: cannot listen", settings.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, mode = ?mode, ledger = %applause::redact(&settings.database_url), redis = ?settings.redis_url, "applause is listening");
    if demo {
        applause::demo::seed_and_print(&app, &secret, addr).await?;
    }
    run(app, listener, shutdown_signal()).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(ExitCode::SUCCESS)
}
