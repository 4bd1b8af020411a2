//! Leaderboard reads: a room's top gifters, one's own rank, top broadcasters.

use applause_core::ids::is_valid_object_id;
use applause_core::ErrorCode;
use applause_leaderboard::{Entry, Window};
use applause_web::ApiError;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::gifts::ledger_error;
use crate::params::{BoardWindow, ObjectId, RoomWindow};
use crate::render::json;
use crate::views::{Amount, BoardEntry, BroadcasterBoard, MyRank, RoomBoard};
use crate::{principal, GiftService, Id};

/// The most entries one read returns.
pub const LIMIT_MAX: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoardQuery {
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

pub(crate) type QueryResult = Result<Query<BoardQuery>, axum::extract::rejection::QueryRejection>;

pub(crate) fn parse(
    q: QueryResult,
    default_window: Window,
    allow_live: bool,
) -> Result<(Window, usize), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let window = match q.window.as_deref() {
        None => default_window,
        Some(w) => w
            .parse::<Window>()
            .ok()
            .filter(|w| allow_live || *w != Window::Live)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "window {w:?} must be {}",
                        if allow_live {
                            "live, day, week or all"
                        } else {
                            "day, week or all"
                        }
                    ),
                )
            })?,
    };
    let limit = match q.limit.as_deref() {
        None => 10,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=LIMIT_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("limit must be a whole number from 1 to {LIMIT_MAX}"),
                )
            })?,
    };
    Ok((window, limit))
}

fn entries_json(entries: Vec<Entry>, svc: &GiftService) -> Vec<BoardEntry> {
    let c = svc.0.ledger.currency();
    entries
        .into_iter()
        .map(|e| BoardEntry {
            amount: Amount::of(c, e.amount_minor),
            name: e.name.unwrap_or_else(|| e.user_id.clone()),
            rank: e.rank,
            user_id: e.user_id,
        })
        .collect()
}

fn board_error(e: applause_leaderboard::BoardError) -> ApiError {
    ApiError::unavailable(e)
}

async fn room_broadcaster(svc: &GiftService, room_id: &str) -> Result<String, ApiError> {
    if !is_valid_object_id(room_id) {
        return Err(ErrorCode::RoomNotFound.into());
    }
    let room = svc
        .0
        .ledger
        .room(room_id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| ApiError::from(ErrorCode::RoomNotFound))?;
    Ok(room.broadcaster_id)
}

applause_web::api_errors!(RoomTopErrors = [InvalidQuery, RoomNotFound, Unavailable]);

/// A room's top gifters in a window.
///
/// Anyone, signed in or not. Ties rank by user id.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}/leaderboard",
    tag = "leaderboards",
    operation_id = "room_leaderboard",
    params(
        ("room_id" = inline(ObjectId), Path, description = "The room."),
        ("window" = inline(Option<RoomWindow>), Query, description = "Default `live`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 10."),
    ),
    responses((status = 200, description = "The board.", body = RoomBoard<'_>), RoomTopErrors)
)]
pub(crate) async fn room_top(
    State(svc): State<GiftService>,
    Id(room_id): Id,
    q: QueryResult,
) -> Result<Response, ApiError> {
    let (window, limit) = parse(q, Window::Live, true)?;
    let broadcaster = room_broadcaster(&svc, &room_id).await?;
    let entries = svc
        .0
        .boards
        .top(&room_id, &broadcaster, window, limit, svc.0.clock.now_ms())
        .await
        .map_err(board_error)?;
    Ok(json(
        StatusCode::OK,
        &RoomBoard {
            entries: entries_json(entries, &svc),
            room_id: &room_id,
            window: window.as_str(),
        },
    ))
}

applause_web::api_errors!(RoomMeErrors = [InvalidQuery, Unauthorized, RoomNotFound, Unavailable]);

/// The token's user's own rank and total on a room's board.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}/leaderboard/me",
    tag = "leaderboards",
    operation_id = "my_rank",
    params(
        ("room_id" = inline(ObjectId), Path, description = "The room."),
        ("window" = inline(Option<RoomWindow>), Query, description = "Default `live`."),
    ),
    security(("bearer" = [])),
    responses((status = 200, description = "The user's rank.", body = MyRank<'_>), RoomMeErrors)
)]
pub(crate) async fn room_me(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(room_id): Id,
    q: QueryResult,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    let (window, _) = parse(q, Window::Live, true)?;
    let broadcaster = room_broadcaster(&svc, &room_id).await?;
    let me = svc
        .0
        .boards
        .me(
            &room_id,
            &broadcaster,
            window,
            &who.user_id,
            svc.0.clock.now_ms(),
        )
        .await
        .map_err(board_error)?;
    let c = svc.0.ledger.currency();
    Ok(json(
        StatusCode::OK,
        &MyRank {
            amount: Amount::of(c, me.as_ref().map_or(0, |e| e.amount_minor)),
            rank: me.as_ref().map(|e| e.rank),
            room_id: &room_id,
            user_id: &who.user_id,
            window: window.as_str(),
        },
    ))
}

applause_web::api_errors!(BroadcastersErrors = [InvalidQuery, Unavailable]);

/// The top broadcasters by gross gifts received.
///
/// Anyone, signed in or not.
#[utoipa::path(
    get,
    path = "/v1/leaderboards/broadcasters",
    tag = "leaderboards",
    operation_id = "broadcaster_leaderboard",
    params(
        ("window" = inline(Option<BoardWindow>), Query, description = "Default `day`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 10."),
    ),
    responses(
        (status = 200, description = "The board.", body = BroadcasterBoard<'_>),
        BroadcastersErrors,
    )
)]
pub(crate) async fn broadcasters(
    State(svc): State<GiftService>,
    q: QueryResult,
) -> Result<Response, ApiError> {
    let (window, limit) = parse(q, Window::Day, false)?;
    let entries = svc
        .0
        .boards
        .top_broadcasters(window, limit, svc.0.clock.now_ms())
        .await
        .map_err(board_error)?;
    Ok(json(
        StatusCode::OK,
        &BroadcasterBoard {
            entries: entries_json(entries, &svc),
            window: window.as_str(),
        },
    ))
}
