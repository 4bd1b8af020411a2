//! Setup phase: the run's id and tokens, the catalog and sticker mix, the
//! broadcasters' rooms and the funded senders.

use anyhow::{bail, Context, Result};
use applause_core::money::AMOUNT_MINOR_MAX;
use applause_core::Currency;
use futures_util::StreamExt;
use rand::Rng;

use crate::api::{Api, StickerInfo};
use crate::auth::TokenMint;
use crate::config::Scenario;
use crate::net::raise_nofile_limit;
use crate::progress::Progress;

use super::Room;

/// Channels funded round-robin.
const CHANNELS: [&str; 3] = ["apple", "google", "web"];

/// What every phase knows about the run before anything is sent.
pub(super) struct Setup {
    pub(super) run_id: String,
    pub(super) started_at: String,
    pub(super) started_day: chrono::NaiveDate,
    pub(super) total_viewers: usize,
    pub(super) currency: Currency,
    pub(super) api: Api,
    pub(super) mint: TokenMint,
    admin: String,
    pub(super) finance: String,
}

/// What the setup created on the deployment.
pub(super) struct World {
    pub(super) catalog: Vec<StickerInfo>,
    /// (sticker id, cumulative weight); see [`build_mix`].
    pub(super) mix: Vec<(String, u64)>,
    /// The finance summary's gross gifts before the run.
    pub(super) gross_before: Result<i64>,
    pub(super) rooms: Vec<Room>,
    /// (user id, token)
    pub(super) senders: Vec<(String, String)>,
}

impl Setup {
    /// The run's identity and clients; nothing is sent yet.
    pub(super) fn new(s: &Scenario) -> Result<Self> {
        let run_id = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
        let started_at = chrono::Utc::now().to_rfc3339();
        let started_day = chrono::Utc::now().date_naive();
        let total_viewers = s.rooms * s.viewers_per_room;
        if total_viewers > 0 {
            let limit = raise_nofile_limit(total_viewers as u64 + 4096);
            if limit < total_viewers as u64 + 256 {
                eprintln!("warning: open-file limit {limit} is below {total_viewers} viewers");
            }
        }
        let currency = Currency::new("USD", s.currency_decimals).map_err(anyhow::Error::msg)?;
        let api = Api::new(&s.http_base, s.request_timeout, s.retries, currency.clone())?;
        let mint = TokenMint::new(&s.jwt_secret);
        let admin = mint.mint(&format!("lt{run_id}-admin"), "admin", "loadtest admin")?;
        let finance = mint.mint(
            &format!("lt{run_id}-finance"),
            "finance",
            "loadtest finance",
        )?;
        Ok(Self {
            run_id,
            started_at,
            started_day,
            total_viewers,
            currency,
            api,
            mint,
            admin,
            finance,
        })
    }

    /// Reads the catalog, creates the rooms and funds the senders.
    pub(super) async fn open(&self, s: &Scenario, progress: &Progress) -> Result<World> {
        let (api, run_id, mint) = (&self.api, &self.run_id, &self.mint);
        progress.set_phase("catalog");
        let catalog = api.stickers().await?;
        let mix = build_mix(s, &catalog)?;
        let gross_before = api.gross_gifts(&self.finance).await;

        progress.set_phase("rooms");
        let mut rooms = Vec::with_capacity(s.rooms);
        for r in 0..s.rooms {
            let sub = format!("lt{run_id}-b{r}");
            let token = mint.mint(&sub, "broadcaster", &format!("broadcaster {r}"))?;
            let created = api
                .create_room(&token, &format!("loadtest {run_id} room {r}"))
                .await?;
            rooms.push(Room {
                room_id: created.room_id,
                broadcaster_token: token,
            });
        }

        progress.set_phase("funding");
        let senders: Vec<(String, String)> = (0..s.senders)
            .map(|i| {
                let sub = format!("lt{run_id}-s{i}");
                let token = mint.mint(&sub, "viewer", &format!("sender {i}"))?;
                Ok((sub, token))
            })
            .collect::<Result<_>>()?;
        let topup = match &s.topup {
            Some(t) => crate::money::parse_minor(&self.currency, t)?,
            None => default_topup(s, &catalog, &mix),
        };
        let fund = futures_util::stream::iter(senders.iter().enumerate().map(|(i, (sub, _))| {
            let admin = &self.admin;
            let receipt = format!("lt{run_id}-topup-{i}");
            async move {
                api.topup(admin, sub, CHANNELS[i % CHANNELS.len()], topup, &receipt)
                    .await
            }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
        for r in fund {
            r.context("funding senders")?;
        }
        Ok(World {
            catalog,
            mix,
            gross_before,
            rooms,
            senders,
        })
    }
}

/// The weighted sticker mix as (sticker id, price, cumulative weight).
fn build_mix(s: &Scenario, catalog: &[StickerInfo]) -> Result<Vec<(String, u64)>> {
    if catalog.is_empty() {
        bail!("the sticker catalog is empty");
    }
    let mut out = Vec::new();
    let mut cumulative = 0u64;
    match &s.mix {
        None => {
            for c in catalog {
                cumulative += 1;
                out.push((c.id.clone(), cumulative));
            }
        }
        Some(mix) => {
            for m in mix.iter().filter(|m| m.weight > 0) {
                if !catalog.iter().any(|c| c.id == m.sticker_id) {
                    bail!("sticker {:?} is not in the server's catalog", m.sticker_id);
                }
                cumulative += u64::from(m.weight);
                out.push((m.sticker_id.clone(), cumulative));
            }
        }
    }
    Ok(out)
}

/// Enough money per sender for the whole run with a wide margin.
fn default_topup(s: &Scenario, catalog: &[StickerInfo], mix: &[(String, u64)]) -> i64 {
    let max_price = mix
        .iter()
        .filter_map(|(id, _)| catalog.iter().find(|c| &c.id == id))
        .map(|c| c.price_minor)
        .max()
        .unwrap_or(0);
    let total = s.warmup + s.duration;
    // Closed loop has no rate: budget for a generous 20,000 gifts/s.
    let gifts = s
        .gifts_due(total)
        .unwrap_or((20_000.0 * total.as_secs_f64()) as u64);
    let per_sender = gifts / s.senders as u64 + 16;
    let amount = (per_sender as i64)
        .saturating_mul(max_price)
        .saturating_mul(i64::from(s.quantity))
        .saturating_mul(2);
    amount.clamp(100, AMOUNT_MINOR_MAX / 1000)
}
