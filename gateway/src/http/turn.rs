//! `POST /v1/turn/credentials`: TURN credentials for the holder of an access token.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;

/// `POST /v1/turn/credentials` with `Authorization: Bearer <access token>`: TURN credentials
/// for the token's identity. 404 when TURN is not configured, 401 without a valid token.
pub(crate) async fn credentials(
    State(http): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Response {
    let sessions = &http.sessions;
    if !sessions.turn.available() {
        return (StatusCode::NOT_FOUND, "TURN is not configured\n").into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = SystemTime::now();
    let Some(Ok(verified)) = token.map(|t| sessions.auth.keys.verify(t, now)) else {
        return (
            StatusCode::UNAUTHORIZED,
            "a valid access token is required\n",
        )
            .into_response();
    };
    match sessions.turn.mint(&verified.identity, now) {
        Ok(creds) => Json(creds).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
