//! Red packets (SPEC §7): drop, claim and read (the expiry sweeper is the
//! relay's).
//!
//! Decisions, documented here and in `docs/architecture.md`:
//! - The shares are allocated at the drop (`applause_core::redpacket`) and
//!   stored; claim *i* gets share *i*. For `random` this is the double-mean
//!   draw done up front, which has the same distribution as drawing at each
//!   claim and keeps the ledger's planner deterministic.
//! - **The sender may not claim their own packet** (403 `forbidden`): a
//!   packet is a gift to the room, and a sender claiming back would only be a
//!   slower refund.
//! - Any signed-in user may claim: the gift service does not know who is
//!   connected to a room (the gateway does), and claims are once per user.
//! - Claims of a packet whose room has ended answer 410 `red_packet_gone`;
//!   the rest returns to the sender at expiry like any unclaimed rest.
//! - The drop's `Idempotency-Key` follows the purchase rules (400 / 409 /
//!   422, failures replayed); a replay answers the original 201 body.

use applause_core::ids::is_valid_object_id;
use applause_core::redpacket::{self, Mode, RedPacketError};
use applause_core::ErrorCode;
use applause_ledger::{
    ClaimCmd, ClaimOutcome, ClaimRecord, DropCmd, DropOutcome, RedPacket, StoredOutcome,
};
use applause_web::{rfc3339_ms, ApiError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::gifts::ledger_error;
use crate::idempotency::{self, key_reused, InFlight};
use crate::params::{Mode as ModeParam, ObjectId};
use crate::render::{json, json_response};
use crate::views::{Amount, ByChannel, ClaimView, Claimed, Dropped, PacketView};
use crate::{body, principal, GiftService, Id};

/// The longest time a packet stays claimable, in seconds (the default is
/// `GiftsConfig::red_packet_expiry`).
pub const EXPIRES_IN_S_MAX: u64 = 86_400;

/// A red packet to drop into a live room.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DropBody {
    /// What the packet holds, drawn from the sender's wallet into escrow at once.
    #[schema(value_type = Amount)]
    pub(crate) total: serde_json::Value,
    /// How many shares: 1–500, each at least one minor unit.
    #[schema(value_type = u32, minimum = 1, maximum = 500, example = 2)]
    count: serde_json::Value,
    /// `equal`, `random` (double-mean) or `fixed` (with `shares`).
    #[schema(value_type = ModeParam)]
    mode: String,
    /// `fixed` only: `count` amounts summing to `total`, claimed in order.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Amount>>)]
    pub(crate) shares: Option<Vec<serde_json::Value>>,
    /// Seconds until the unclaimed rest returns to the sender: 1–86400
    /// (default the server's setting, 24 h).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 86400)]
    expires_in_s: Option<serde_json::Value>,
}

applause_web::api_errors!(
    DropErrors = [
        IdempotencyKeyRequired,
        InvalidJson,
        InvalidRequest,
        InvalidAmount,
        InvalidRedPacket,
        Unauthorized,
        InsufficientFunds,
        RoomNotFound,
        RoomNotLive,
        IdempotencyKeyInFlight,
        PayloadTooLarge,
        UnsupportedMediaType,
        IdempotencyKeyReused,
        Unavailable,
    ]
);

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidRedPacket, e.to_string())
}

/// A uniform value in `[0, n)` from the operating system's randomness (v4
/// UUIDs), by rejection so there is no modulo bias.
fn os_uniform(n: u64) -> u64 {
    const BITS: u64 = (1 << 62) - 1;
    let zone = BITS - (BITS % n.max(1));
    loop {
        // The low 62 bits of a v4 UUID are random (the variant bits are above).
        let v = (uuid::Uuid::new_v4().as_u128() as u64) & BITS;
        if v < zone {
            return v % n.max(1);
        }
    }
}

/// Drop a red packet into a live room; viewers claim its shares.
///
/// Any signed-in user. The `Idempotency-Key` follows the purchase rules: a
/// replay answers the original outcome, another body 422, in flight 409.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/red-packets",
    tag = "red-packets",
    operation_id = "drop_red_packet",
    params(
        ("room_id" = inline(ObjectId), Path, description = "The room."),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255,
            pattern = "^[!-~]([ -~]*[!-~])?$",
            description = "1–255 printable ASCII characters; the drop's identity for retries."),
    ),
    request_body(content = DropBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Dropped (or the replay of that answer).", body = Dropped<'_>,
            links(
                ("GetRedPacket" = (operation_id = "get_red_packet",
                    parameters(("packet_id" = "$response.body#/packet_id")))),
                ("ClaimRedPacket" = (operation_id = "claim_red_packet",
                    parameters(("packet_id" = "$response.body#/packet_id")))),
            )),
        DropErrors,
    )
)]
pub(crate) async fn drop_packet(
    State(svc): State<GiftService>,
    Id(room_id): Id,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    let key = idempotency::key(&headers)?;
    let req: DropBody = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    let currency = svc.0.ledger.currency();
    let total = body::amount(currency, &req.total, "total")?;
    let count = req
        .count
        .as_u64()
        .filter(|c| (1..=u64::from(redpacket::COUNT_MAX)).contains(c))
        .ok_or_else(|| invalid(RedPacketError::Count))? as u32;
    let mode: Mode = req.mode.parse().map_err(invalid)?;
    let expires_in_s = match &req.expires_in_s {
        None => svc.0.config.red_packet_expiry.as_secs(),
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=EXPIRES_IN_S_MAX).contains(s))
            .ok_or_else(|| invalid("expires_in_s must be a whole number from 1 to 86400"))?,
    };
    let given: Option<Vec<i64>> = match &req.shares {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|s| body::amount(currency, s, "shares"))
                .collect::<Result<_, _>>()?,
        ),
    };
    let shares = match (mode, &given) {
        (Mode::Fixed, Some(s)) if s.len() == count as usize => redpacket::fixed(total, s),
        (Mode::Fixed, _) | (_, Some(_)) => Err(RedPacketError::Shares),
        (Mode::Equal, None) => redpacket::equal(total, count),
        (Mode::Random, None) => redpacket::random(total, count, &mut os_uniform),
    }
    .map_err(invalid)?;
    if !is_valid_object_id(&room_id) {
        return Err(ErrorCode::RoomNotFound.into());
    }
    let request_hash = request_hash(&[
        &room_id,
        &total.to_string(),
        &count.to_string(),
        mode.as_str(),
        &format!("{given:?}"),
        &expires_in_s.to_string(),
    ]);
    let stored_key = format!("{}{key}", applause_ledger::RED_PACKET_KEY_PREFIX);
    let _guard = InFlight::enter(&svc.0.in_flight, &who.user_id, &stored_key)?;
    if let Some(rec) = svc
        .0
        .ledger
        .idempotency(&who.user_id, &stored_key)
        .await
        .map_err(ledger_error)?
    {
        if rec.request_hash != request_hash {
            return Err(key_reused());
        }
        return replay(&svc, &rec.outcome).await;
    }
    let outcome = svc
        .0
        .ledger
        .drop_red_packet(DropCmd {
            sender_id: who.user_id.clone(),
            sender_name: who.name.clone(),
            room_id,
            mode: mode.as_str().to_owned(),
            total_minor: total,
            shares,
            expires_in_ms: (expires_in_s * 1000) as i64,
            idempotency_key: key,
            request_hash,
        })
        .await
        .map_err(ledger_error)?;
    match outcome {
        DropOutcome::Dropped(p, _) => Ok(json_response(
            StatusCode::CREATED,
            dropped_body(&p, currency),
        )),
        DropOutcome::Rejected(code) => Err(code.into()),
        DropOutcome::Replay(stored) => replay(&svc, &stored).await,
        DropOutcome::KeyReused => Err(key_reused()),
    }
}

async fn replay(svc: &GiftService, stored: &StoredOutcome) -> Result<Response, ApiError> {
    match stored {
        StoredOutcome::Gift(id) => {
            let (p, _) = svc
                .0
                .ledger
                .red_packet(id)
                .await
                .map_err(ledger_error)?
                .ok_or_else(|| ApiError::internal(format!("stored red packet {id} is missing")))?;
            Ok(json_response(
                StatusCode::CREATED,
                dropped_body(&p, svc.0.ledger.currency()),
            ))
        }
        StoredOutcome::Rejected(code) => Err((*code).into()),
    }
}

fn request_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The 201 of a drop, from the packet's fields that never change (so a
/// replay is byte-identical).
fn dropped_body(p: &RedPacket, c: &applause_core::Currency) -> String {
    serde_json::to_string(&Dropped {
        count: p.count,
        created_at: rfc3339_ms(p.created_at_ms),
        expires_at: rfc3339_ms(p.expires_at_ms),
        mode: &p.mode,
        packet_id: &p.packet_id,
        room_id: &p.room_id,
        sender_id: &p.sender_id,
        total: Amount::of(c, p.total_minor),
    })
    .expect("packet serializes")
}

applause_web::api_errors!(
    ClaimErrors = [
        Unauthorized,
        Forbidden,
        RedPacketNotFound,
        AlreadyClaimed,
        RedPacketGone,
        Unavailable,
    ]
);

/// Claim one share of a red packet into the token's user's wallet.
///
/// Any signed-in user but its sender (403); once per user (409); an empty,
/// expired or ended-room packet is 410.
#[utoipa::path(
    post,
    path = "/v1/red-packets/{packet_id}/claim",
    tag = "red-packets",
    operation_id = "claim_red_packet",
    params(("packet_id" = inline(ObjectId), Path, description = "The red packet.")),
    security(("bearer" = [])),
    responses((status = 200, description = "Claimed.", body = Claimed<'_>), ClaimErrors)
)]
pub(crate) async fn claim(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(packet_id): Id,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if !is_valid_object_id(&packet_id) {
        return Err(ErrorCode::RedPacketNotFound.into());
    }
    let outcome = svc
        .0
        .ledger
        .claim_red_packet(ClaimCmd {
            packet_id,
            user_id: who.user_id.clone(),
            user_name: who.name.clone(),
        })
        .await
        .map_err(ledger_error)?;
    let c = svc.0.ledger.currency();
    match outcome {
        ClaimOutcome::Claimed(claim, remaining_count, _) => {
            let v = claim_view(&claim, c);
            Ok(json(
                StatusCode::OK,
                &Claimed {
                    amount: v.amount,
                    by_channel: v.by_channel,
                    claimed_at: v.claimed_at,
                    name: v.name,
                    packet_id: v.packet_id,
                    remaining_count,
                    user_id: v.user_id,
                },
            ))
        }
        ClaimOutcome::AlreadyClaimed => Err(ApiError::new(
            ErrorCode::AlreadyClaimed,
            "you already claimed this red packet",
        )),
        ClaimOutcome::Gone => Err(ApiError::new(
            ErrorCode::RedPacketGone,
            "this red packet is empty or expired",
        )),
        ClaimOutcome::NotFound => Err(ErrorCode::RedPacketNotFound.into()),
        ClaimOutcome::OwnPacket => Err(ApiError::new(
            ErrorCode::Forbidden,
            "you cannot claim your own red packet",
        )),
    }
}

fn claim_view<'a>(claim: &'a ClaimRecord, c: &applause_core::Currency) -> ClaimView<'a> {
    ClaimView {
        amount: Amount::of(c, claim.amount_minor),
        by_channel: ByChannel::of(c, &claim.by_channel),
        claimed_at: rfc3339_ms(claim.created_at_ms),
        name: &claim.user_name,
        packet_id: &claim.packet_id,
        user_id: &claim.user_id,
    }
}

applause_web::api_errors!(GetPacketErrors = [Unauthorized, RedPacketNotFound, Unavailable]);

/// A red packet's state and its claims so far (not the unclaimed shares).
///
/// Any signed-in user.
#[utoipa::path(
    get,
    path = "/v1/red-packets/{packet_id}",
    tag = "red-packets",
    operation_id = "get_red_packet",
    params(("packet_id" = inline(ObjectId), Path, description = "The red packet.")),
    security(("bearer" = [])),
    responses((status = 200, description = "The packet.", body = PacketView<'_>), GetPacketErrors)
)]
pub(crate) async fn get(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(packet_id): Id,
) -> Result<Response, ApiError> {
    principal(&svc, &headers)?;
    if !is_valid_object_id(&packet_id) {
        return Err(ErrorCode::RedPacketNotFound.into());
    }
    let (p, claims) = svc
        .0
        .ledger
        .red_packet(&packet_id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| ApiError::from(ErrorCode::RedPacketNotFound))?;
    let c = svc.0.ledger.currency();
    Ok(json(
        StatusCode::OK,
        &PacketView {
            claimed: Amount::of(c, p.claimed_minor),
            claimed_count: p.claimed_count,
            claims: claims.iter().map(|cl| claim_view(cl, c)).collect(),
            count: p.count,
            created_at: rfc3339_ms(p.created_at_ms),
            expires_at: rfc3339_ms(p.expires_at_ms),
            mode: &p.mode,
            packet_id: &p.packet_id,
            remaining: Amount::of(c, p.remaining_minor()),
            remaining_count: p.remaining_count(),
            returned: Amount::of(c, p.returned_minor),
            room_id: &p.room_id,
            sender_id: &p.sender_id,
            sender_name: &p.sender_name,
            settled_at: p.settled_at_ms.map(rfc3339_ms),
            state: p.state(svc.0.clock.now_ms()),
            total: Amount::of(c, p.total_minor),
        },
    ))
}
