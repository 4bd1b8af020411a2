//! Stickers and rooms: the catalog, opening, reading and ending a stream.

use applause_core::ids::{is_valid_object_id, is_valid_text};
use applause_core::{ErrorCode, Role};
use applause_ledger::{CreateRoomCmd, EndRoomOutcome};
use applause_web::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::render::json;
use crate::{body, principal, GiftService, Id};

/// The longest room title, in characters.
pub const TITLE_CHARS_MAX: usize = 100;

pub(crate) async fn stickers(State(svc): State<GiftService>) -> Response {
    let currency = svc.0.ledger.currency();
    let list: Vec<_> = svc
        .0
        .catalog
        .stickers()
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "name": s.name,
                "price": currency.format(s.price_minor),
                "animation": s.animation,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "currency": currency.code(), "stickers": list }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    title: String,
}

pub(crate) async fn create(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if who.role != Role::Broadcaster {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only broadcasters open rooms",
        ));
    }
    let req: CreateRoom = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    let title = req.title.trim();
    if title.is_empty() || !is_valid_text(title, TITLE_CHARS_MAX) {
        return Err(ApiError::new(
            ErrorCode::InvalidTitle,
            format!("title must be 1–{TITLE_CHARS_MAX} characters without control characters"),
        ));
    }
    let room = svc
        .0
        .ledger
        .create_room(CreateRoomCmd {
            broadcaster_id: who.user_id,
            title: title.to_owned(),
        })
        .await
        .map_err(crate::gifts::ledger_error)?;
    Ok(json(StatusCode::CREATED, &crate::render::room(&room)))
}

pub(crate) async fn get(
    State(svc): State<GiftService>,
    Id(room_id): Id,
) -> Result<Response, ApiError> {
    if !is_valid_object_id(&room_id) {
        return Err(ErrorCode::RoomNotFound.into());
    }
    match svc
        .0
        .ledger
        .room(&room_id)
        .await
        .map_err(crate::gifts::ledger_error)?
    {
        Some(r) => Ok(json(StatusCode::OK, &crate::render::room(&r))),
        None => Err(ErrorCode::RoomNotFound.into()),
    }
}

pub(crate) async fn end(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(room_id): Id,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if !is_valid_object_id(&room_id) {
        return Err(ErrorCode::RoomNotFound.into());
    }
    match svc
        .0
        .ledger
        .end_room(&room_id, &who.user_id)
        .await
        .map_err(crate::gifts::ledger_error)?
    {
        // Ending twice answers the same state: ending is idempotent.
        EndRoomOutcome::Ended(room, _) | EndRoomOutcome::AlreadyEnded(room) => {
            Ok(json(StatusCode::OK, &crate::render::room(&room)))
        }
        EndRoomOutcome::NotFound => Err(ErrorCode::RoomNotFound.into()),
        EndRoomOutcome::NotYours => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the room's broadcaster can end it",
        )),
    }
}
