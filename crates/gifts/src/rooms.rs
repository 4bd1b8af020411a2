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
use utoipa::ToSchema;

use crate::params::ObjectId;
use crate::render::json;
use crate::views::{Amount, RoomView, StickerView, Stickers};
use crate::{body, principal, GiftService, Id};

/// The longest room title, in characters.
pub const TITLE_CHARS_MAX: usize = 100;

/// The sticker catalog: ids, names, prices.
///
/// Anyone, signed in or not.
#[utoipa::path(
    get,
    path = "/v1/stickers",
    tag = "catalog",
    operation_id = "list_stickers",
    responses((status = 200, description = "The catalog, in display order.", body = Stickers<'_>))
)]
pub(crate) async fn stickers(State(svc): State<GiftService>) -> Response {
    let currency = svc.0.ledger.currency();
    let stickers = svc
        .0
        .catalog
        .stickers()
        .iter()
        .map(|s| StickerView {
            animation: &s.animation,
            id: &s.id,
            name: &s.name,
            price: Amount::of(currency, s.price_minor),
        })
        .collect();
    json(
        StatusCode::OK,
        &Stickers {
            currency: currency.code(),
            stickers,
        },
    )
}

/// A room to open.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    /// 1–100 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, example = "Friday night live")]
    title: String,
}

applause_web::api_errors!(
    CreateRoomErrors = [
        InvalidJson,
        InvalidRequest,
        InvalidTitle,
        Unauthorized,
        Forbidden,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unavailable,
    ]
);

/// Open a live room (a stream session).
///
/// Broadcasters only; the room is the token's user's.
#[utoipa::path(
    post,
    path = "/v1/rooms",
    tag = "rooms",
    operation_id = "create_room",
    request_body(content = CreateRoom, content_type = "application/json"),
    security(("bearer" = ["broadcaster"])),
    responses(
        (status = 201, description = "The room, live.", body = RoomView<'_>,
            links(
                ("GetRoom" = (operation_id = "get_room",
                    parameters(("room_id" = "$response.body#/room_id")))),
                ("PurchaseGift" = (operation_id = "purchase_gift",
                    parameters(("room_id" = "$response.body#/room_id")))),
                ("DropRedPacket" = (operation_id = "drop_red_packet",
                    parameters(("room_id" = "$response.body#/room_id")))),
                ("RoomLeaderboard" = (operation_id = "room_leaderboard",
                    parameters(("room_id" = "$response.body#/room_id")))),
                ("MyRank" = (operation_id = "my_rank",
                    parameters(("room_id" = "$response.body#/room_id")))),
                ("EndRoom" = (operation_id = "end_room",
                    parameters(("room_id" = "$response.body#/room_id")))),
            )),
        CreateRoomErrors,
    )
)]
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

applause_web::api_errors!(GetRoomErrors = [RoomNotFound, Unavailable]);

/// A room's state.
///
/// Anyone, signed in or not.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}",
    tag = "rooms",
    operation_id = "get_room",
    params(("room_id" = inline(ObjectId), Path, description = "The room.")),
    responses((status = 200, description = "The room.", body = RoomView<'_>), GetRoomErrors)
)]
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

applause_web::api_errors!(EndRoomErrors = [Unauthorized, Forbidden, RoomNotFound, Unavailable]);

/// End the stream: the room stops accepting gifts and red packets.
///
/// The room's broadcaster only. Ending an ended room answers its state again.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/end",
    tag = "rooms",
    operation_id = "end_room",
    params(("room_id" = inline(ObjectId), Path, description = "The room.")),
    security(("bearer" = ["broadcaster"])),
    responses((status = 200, description = "The room, ended.", body = RoomView<'_>), EndRoomErrors)
)]
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
