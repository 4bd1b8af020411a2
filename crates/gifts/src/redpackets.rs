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
use applause_core::{Channel, ErrorCode};
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

use crate::gifts::ledger_error;
use crate::idempotency::{self, key_reused, InFlight};
use crate::render::{json, json_response};
use crate::{body, principal, GiftService, Id};

/// The longest time a packet stays claimable, in seconds (the default is
/// `GiftsConfig::red_packet_expiry`).
pub const EXPIRES_IN_S_MAX: u64 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DropBody {
    pub(crate) total: serde_json::Value,
    count: serde_json::Value,
    mode: String,
    #[serde(default)]
    pub(crate) shares: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    expires_in_s: Option<serde_json::Value>,
}

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
    serde_json::to_string(&serde_json::json!({
        "packet_id": p.packet_id,
        "room_id": p.room_id,
        "sender_id": p.sender_id,
        "total": c.format(p.total_minor),
        "count": p.count,
        "mode": p.mode,
        "created_at": rfc3339_ms(p.created_at_ms),
        "expires_at": rfc3339_ms(p.expires_at_ms),
    }))
    .expect("packet serializes")
}

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
            let mut v = claim_json(&claim, c);
            v["remaining_count"] = remaining_count.into();
            Ok(json(StatusCode::OK, &v))
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

fn claim_json(claim: &ClaimRecord, c: &applause_core::Currency) -> serde_json::Value {
    let mut by_channel = serde_json::Map::new();
    for ch in Channel::ALL {
        by_channel.insert(
            ch.as_str().into(),
            c.format(claim.by_channel[ch.index()]).into(),
        );
    }
    serde_json::json!({
        "packet_id": claim.packet_id,
        "user_id": claim.user_id,
        "name": claim.user_name,
        "amount": c.format(claim.amount_minor),
        "by_channel": by_channel,
        "claimed_at": rfc3339_ms(claim.created_at_ms),
    })
}

/// `GET /v1/red-packets/{id}`: state and claims so far (any signed-in user;
/// the unclaimed shares are not shown).
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
        &serde_json::json!({
            "packet_id": p.packet_id,
            "room_id": p.room_id,
            "sender_id": p.sender_id,
            "sender_name": p.sender_name,
            "mode": p.mode,
            "total": c.format(p.total_minor),
            "count": p.count,
            "state": p.state(svc.0.clock.now_ms()),
            "claimed_count": p.claimed_count,
            "claimed": c.format(p.claimed_minor),
            "remaining": c.format(p.remaining_minor()),
            "remaining_count": p.remaining_count(),
            "returned": c.format(p.returned_minor),
            "created_at": rfc3339_ms(p.created_at_ms),
            "expires_at": rfc3339_ms(p.expires_at_ms),
            "settled_at": p.settled_at_ms.map(rfc3339_ms),
            "claims": claims.iter().map(|cl| claim_json(cl, c)).collect::<Vec<_>>(),
        }),
    ))
}
