//! `POST /v1/dev/token`: mints access tokens in development mode.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::HttpState;
use crate::auth::{AccessClaims, Grants};

/// Body of `POST /v1/dev/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: Option<String>,
    /// Lifetime in seconds (default 3600, at most 86400).
    #[serde(default)]
    ttl: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    token: String,
    /// Where to connect with WebTransport.
    url: String,
}

pub(crate) async fn dev_token(
    State(state): State<Arc<HttpState>>,
    Json(request): Json<TokenRequest>,
) -> Response {
    let ttl = Duration::from_secs(request.ttl.unwrap_or(3600).clamp(1, 86_400));
    let now = SystemTime::now();
    let mut claims = AccessClaims::new(
        request.identity,
        request.room,
        Grants::participant(),
        now,
        ttl,
    );
    if let Some(name) = request.name {
        claims = claims.with_name(name);
    }
    match state.sessions.auth.mint(&claims) {
        Ok(token) => Json(TokenResponse {
            token,
            url: format!(
                "https://{}{}",
                state.quic_authority, state.sessions.config.webtransport.path
            ),
        })
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
