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
//! | `POST /whip/{room}`, `POST /whep/{room}/{id}` | WebRTC publish and subscribe ([`crate::whip`]), when the bridge is on |
//! | `POST /v1/turn/credentials` | TURN credentials for the bearer of an access token |
//! | `GET /ws/rtc?token=…` | WebSocket signaling for WebRTC peers ([`crate::ws`]), when the bridge is on |
//! | `GET /`, `/app.js`, … | the web demo (`web-demo/`), embedded in the binary |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::auth::{AccessClaims, Grants};

/// Builds the router.
pub fn router(shared: Arc<Shared>) -> Router {
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
        router = router.route("/v1/dev/token", post(dev_token));
    }
    if shared.webrtc_addr.is_some() {
        router = crate::whip::routes(router);
        router = crate::ws::routes(router);
    }
    for asset in DEMO {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router.with_state(shared)
}

/// One file of the web demo, compiled into the binary so that `strait serve` serves the demo
/// with no files beside it.
#[derive(Debug)]
pub struct Asset {
    /// The URL path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

impl Asset {
    fn response(&'static self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                // The demo changes with the binary; a browser revalidates rather than mixing versions.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            self.body,
        )
            .into_response()
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The web demo's files (`web-demo/`): plain ES modules, no build step. A new module of the demo
/// needs a line here.
pub const DEMO: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../web-demo/index.html"),
    },
    Asset {
        path: "/index.html",
        content_type: HTML,
        body: include_bytes!("../../web-demo/index.html"),
    },
    Asset {
        path: "/style.css",
        content_type: CSS,
        body: include_bytes!("../../web-demo/style.css"),
    },
    Asset {
        path: "/app.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/app.js"),
    },
    Asset {
        path: "/session.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/session.js"),
    },
    Asset {
        path: "/media.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/media.js"),
    },
    Asset {
        path: "/rtp.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/rtp.js"),
    },
    Asset {
        path: "/fallback.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/fallback.js"),
    },
    Asset {
        path: "/signaling.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/signaling.js"),
    },
    Asset {
        path: "/protocol.js",
        content_type: JS,
        body: include_bytes!("../../web-demo/protocol.js"),
    },
];

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
    hashes: Vec<crate::tls::CertHash>,
}

/// The hashes browsers may pin. Browsers accept `serverCertificateHashes` only for certificates
/// valid for at most 14 days, so a long-lived certificate (one from a CA, loaded from PEM files) is
/// not listed: an empty list tells the page to let the browser verify the certificate normally.
async fn cert_hashes(State(shared): State<Arc<Shared>>) -> Json<CertHashes> {
    let pinnable = shared.certs.current().lifetime() <= strait_certs::MAX_DEV_VALIDITY;
    let hashes = if pinnable {
        let policy = strait_certs::RotationPolicy::default();
        crate::tls::hashes_json(&shared.certs.published(&policy, SystemTime::now()))
    } else {
        Vec::new()
    };
    Json(CertHashes { hashes })
}

/// Body of `POST /v1/dev/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
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

async fn dev_token(
    State(shared): State<Arc<Shared>>,
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
    match shared.mint(&claims) {
        Ok(token) => Json(TokenResponse {
            token,
            url: format!(
                "https://{}{}",
                shared.public_quic_authority(),
                shared.config.webtransport.path
            ),
        })
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
