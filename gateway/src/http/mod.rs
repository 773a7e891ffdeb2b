//! The HTTP surface: liveness, readiness, metrics, certificate hashes and, in development mode,
//! a token endpoint.
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when listeners are up and the node is not draining, 503 otherwise |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/cert-hashes` | SHA-256 hashes of the QUIC certificates for `serverCertificateHashes` |
//! | `POST /v1/dev/token` | mints an access token (development mode only) |
//! | `POST /whip/{room}`, `POST /whep/{room}/{id}` | WebRTC publish and subscribe ([`whip`]), when the bridge is on |
//! | `POST /v1/turn/credentials` | TURN credentials for the bearer of an access token |
//! | `GET /ws/rtc?token=…` | WebSocket signaling for WebRTC peers ([`ws`]), when the bridge is on |
//! | `GET /`, `/app.js`, … | the web demo (`web-demo/`), embedded in the binary |

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::Shared;

mod assets;
mod tokens;
pub(crate) mod whip;
pub(crate) mod ws;

/// Builds the router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cert-hashes", get(cert_hashes))
        .route(
            "/v1/turn/credentials",
            post(crate::turn::credentials_endpoint),
        );
    if shared.config.dev_token_endpoint() {
        router = router.route("/v1/dev/token", post(tokens::dev_token));
    }
    if shared.webrtc_addr.is_some() {
        router = whip::routes(router);
        router = ws::routes(router);
    }
    for asset in assets::DEMO {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router.with_state(shared)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.drain.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Serialize)]
struct CertHashes {
    hashes: Vec<crate::quic::tls::CertHash>,
}

/// The hashes browsers may pin. Browsers accept `serverCertificateHashes` only for certificates
/// valid for at most 14 days, so a long-lived certificate (one from a CA, loaded from PEM files) is
/// not listed: an empty list tells the page to let the browser verify the certificate normally.
async fn cert_hashes(State(shared): State<Arc<Shared>>) -> Json<CertHashes> {
    let pinnable = shared.certs.current().lifetime() <= strait_certs::MAX_DEV_VALIDITY;
    let hashes = if pinnable {
        let policy = strait_certs::RotationPolicy::default();
        crate::quic::tls::hashes_json(&shared.certs.published(&policy, SystemTime::now()))
    } else {
        Vec::new()
    };
    Json(CertHashes { hashes })
}
