//! Data rooms: create, list, show, execute, cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, Caller, ErrorResponse, WaitParam, blocking, skipped_headers};
use crate::CoordState;
use crate::model::{Role, Room, RoomStatus, User};
use crate::mpc::NewRoom;
use crate::rooms::{self, ExecuteError};
use crate::store::{Listing, ROOMS};

/// The seed nests the room under `data_room`; both shapes are accepted.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RoomBody {
    /// `{"data_room": {...}}`
    Nested {
        /// The room.
        data_room: NewRoom,
    },
    /// `{...}`
    Flat(NewRoom),
}

fn visible(user: &User, room: &Room) -> bool {
    user.role == Role::Admin
        || room.created_by == user.id
        || user
            .organization
            .as_ref()
            .is_some_and(|o| room.participants.iter().any(|p| &p.organization == o))
}

fn room_json(room: &Room) -> Value {
    let mut v = json!(room);
    v["waiting_for"] = json!(room.waiting_for());
    v["ci95_half_width"] = json!(crate::intervals::ci95(
        room.result.as_ref(),
        &room.proof_artifacts
    ));
    v
}

/// Creates a data room and invites its participants' nodes.
#[utoipa::path(post, path = "/data_rooms", tag = "data_rooms", request_body = RoomBody, responses(
    (status = 201, description = "The pending room", body = Object),
    (status = 404, description = "`unknown_dataset`", body = ErrorResponse),
    (status = 422, description = "Invalid SQL, participants or parameters", body = ErrorResponse),
))]
/// `POST /api/v1/data_rooms` → 201 with the `pending` room; invitations go out to the nodes.
pub async fn create(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Json(body): Json<RoomBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input = match body {
        RoomBody::Nested { data_room } | RoomBody::Flat(data_room) => data_room,
    };
    let room = crate::mpc::build(&s, input, &user.id, None).map_err(|(code, m)| {
        let status = if code == "unknown_dataset" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, code, m)
    })?;
    let (s2, r2, name) = (s.clone(), room.clone(), user.name.clone());
    blocking(move || rooms::open(&s2, &r2, &name)).await??;
    Ok((StatusCode::CREATED, Json(room_json(&room))))
}

/// Data rooms visible to the caller, newest first.
#[utoipa::path(get, path = "/data_rooms", tag = "data_rooms", responses(
    (status = 200, description = "Rooms with each participant's attestation status; `x-prism-skipped-records` counts records that do not decode", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
/// `GET /api/v1/data_rooms`: rooms the caller's organization is in or the caller created; all
/// for admins.
pub async fn list(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let store = s.store.clone();
    let l: Listing<Room> = blocking(move || store.listing(ROOMS)).await??;
    let mut all = l.records;
    all.retain(|r| visible(&user, r));
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok((
        skipped_headers(&user, &l.corrupt),
        Json(json!(all.iter().map(room_json).collect::<Vec<_>>())),
    ))
}

/// Deletes a data room (admin; also one that no longer decodes). For repair: an executing
/// room's result is lost.
#[utoipa::path(delete, path = "/data_rooms/{id}", tag = "data_rooms",
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 404, description = "`unknown_room`", body = ErrorResponse),
    )
)]
pub async fn delete(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    super::queries::delete_record(&s, &c, ROOMS, "room", id).await
}

async fn load(s: &Arc<CoordState>, user: &User, id: String) -> ApiResult<Room> {
    let s2 = s.clone();
    let id2 = id.clone();
    let room = blocking(move || rooms::load(&s2, &id2)).await??;
    room.filter(|r| visible(user, r)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_room",
            format!("data room {id} does not exist or is not visible to you"),
        )
    })
}

/// One data room.
#[utoipa::path(get, path = "/data_rooms/{id}", tag = "data_rooms",
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room", body = Object),
        (status = 404, description = "`unknown_room`", body = ErrorResponse),
    )
)]
pub async fn show(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(room_json(&load(&s, &user, id).await?)))
}

/// Executes a room every participant has attested.
#[utoipa::path(post, path = "/data_rooms/{id}/execute", tag = "data_rooms",
    params(("id" = String, Path, description = "Room id"), WaitParam),
    responses(
        (status = 200, description = "The finished room (`?wait=true`)", body = Object),
        (status = 202, description = "The executing room", body = Object),
        (status = 404, description = "`unknown_room`", body = ErrorResponse),
        (status = 409, description = "`room_not_ready`, naming who has not attested", body = ErrorResponse),
    )
)]
/// `POST /api/v1/data_rooms/{id}/execute`: only when `ready` (or `failed`, to retry).
pub async fn execute(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Query(p): Query<WaitParam>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    load(&s, &user, id.clone()).await?;
    let done = s.room_done.subscribe();
    let (s2, id2, name) = (s.clone(), id.clone(), user.name.clone());
    let started = blocking(move || crate::runs::execute_room(&s2, &id2, &name)).await?;
    let room = match started {
        Ok(r) => r,
        Err(ExecuteError::Unknown) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_room",
                format!("data room {id} does not exist"),
            ));
        }
        Err(ExecuteError::NotReady(status, waiting)) => {
            let who = waiting
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let msg = if waiting.is_empty() {
                format!("cannot execute: the room is {status:?}").to_lowercase()
            } else {
                format!("cannot execute: status {status:?}; waiting for attestations from {who}")
                    .to_lowercase()
            };
            return Err(ApiError::new(StatusCode::CONFLICT, "room_not_ready", msg)
                .with_details(json!({"status": status, "waiting_for": waiting})));
        }
        Err(ExecuteError::Store(e)) => return Err(e.into()),
    };
    if !p.wait {
        return Ok((StatusCode::ACCEPTED, Json(room_json(&room))));
    }
    let deadline =
        Duration::from_millis(room.manifest.params.deadline_ms) + Duration::from_secs(15);
    let finished = || async {
        load(&s, &user, id.clone()).await.is_ok_and(|r| {
            matches!(
                r.status,
                RoomStatus::Completed
                    | RoomStatus::Failed
                    | RoomStatus::Declined
                    | RoomStatus::Cancelled
            )
        })
    };
    super::wait_done(&s, done, &id, deadline, finished).await;
    let room = load(&s, &user, id).await?;
    let status = if matches!(
        room.status,
        RoomStatus::Completed | RoomStatus::Failed | RoomStatus::Declined | RoomStatus::Cancelled
    ) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(room_json(&room))))
}

/// Cancels a room before it executes.
#[utoipa::path(post, path = "/data_rooms/{id}/cancel", tag = "data_rooms",
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The cancelled room", body = Object),
        (status = 403, description = "Neither the creator nor an admin", body = ErrorResponse),
        (status = 404, description = "`unknown_room`", body = ErrorResponse),
        (status = 409, description = "`room_not_cancellable`", body = ErrorResponse),
    )
)]
/// `POST /api/v1/data_rooms/{id}/cancel`: before execution.
pub async fn cancel(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room = load(&s, &user, id.clone()).await?;
    if user.role != Role::Admin && room.created_by != user.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the room's creator or an admin can cancel it",
        ));
    }
    let (s2, name) = (s.clone(), user.name.clone());
    match blocking(move || rooms::cancel(&s2, &id, &name)).await?? {
        Some(r) => {
            crate::runs::room_settled(&s, &r).await;
            Ok(Json(room_json(&r)))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "room_not_cancellable",
            format!("a {:?} room cannot be cancelled", room.status).to_lowercase(),
        )),
    }
}
