//! The HTTP surface: liveness, readiness, metrics, certificate hashes and, in development mode,
//! a token endpoint.
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when listeners are up, the node is not draining and (in a cluster) holds its lease, 503 otherwise |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/cert-hashes` | SHA-256 hashes of the QUIC certificates for `serverCertificateHashes` |
//! | `GET /v1/nodes` | the cluster's serving nodes (URLs, certificate hashes), for clients to fall back to |
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

use crate::quic::tls::CertStore;
use crate::session::{Admission, SessionContext};

mod assets;
pub(crate) mod server;
mod tokens;
mod turn;
pub(crate) mod whip;
pub(crate) mod ws;

/// What the HTTP surface needs from its gateway.
#[derive(Debug)]
pub(crate) struct HttpState {
    /// What sessions (`/ws/rtc`) and WHIP/WHEP need: configuration, tokens, the worker, TURN.
    pub(crate) sessions: Arc<SessionContext>,
    /// Session slots (`/ws/rtc` sessions take one).
    pub(crate) admission: Arc<Admission>,
    /// The registry behind `/metrics`.
    pub(crate) registry: prometheus_client::registry::Registry,
    /// Certificates published at `/v1/cert-hashes`.
    pub(crate) certs: Arc<CertStore>,
    /// Whether the WebRTC bridge runs.
    pub(crate) webrtc: bool,
    /// `host:port` clients use to reach the QUIC port.
    pub(crate) quic_authority: String,
    /// The HTTP port's address (the gateway's own origins are allowed on `/ws/rtc` by default).
    pub(crate) http_addr: std::net::SocketAddr,
    /// The watch over the media workers and the TURN server.
    pub(crate) health: Arc<crate::health::Health>,
}

/// Builds the router.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cert-hashes", get(cert_hashes))
        .route("/v1/nodes", get(nodes))
        .route("/v1/turn/credentials", post(turn::credentials));
    if state.sessions.config.dev_token_endpoint() {
        router = router.route("/v1/dev/token", post(tokens::dev_token));
    }
    if state.webrtc {
        router = whip::routes(router);
        router = ws::routes(router);
    }
    for asset in assets::DEMO {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router.with_state(state)
}

/// Alive: 503 when a media worker or the TURN server is dead or stalled (restart the process).
async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let problems = state.health.problems(std::time::Instant::now());
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problem_lines(&problems)).into_response()
    }
}

/// Ready for traffic: 503 while draining, when a media worker or the TURN server is dead or
/// stalled, or (in a cluster) when the node's lease could not be renewed for longer than the
/// lease. `/healthz` never looks at the cluster: a Redis outage must not restart a node.
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let problems = state.health.problems(std::time::Instant::now());
    if state.sessions.drain.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !problems.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, problem_lines(&problems)).into_response()
    } else if let Err(why) = state.sessions.cluster.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
    } else {
        let shedding = state.health.shedding();
        if shedding.is_empty() {
            (StatusCode::OK, "ready\n").into_response()
        } else {
            let lines: String = shedding
                .iter()
                .map(|(part, level)| format!("{part} is overloaded: shedding at level {level}\n"))
                .collect();
            (StatusCode::SERVICE_UNAVAILABLE, lines).into_response()
        }
    }
}

fn problem_lines(problems: &[crate::health::Problem]) -> String {
    problems.iter().map(|p| format!("{p}\n")).collect()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
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

#[derive(Serialize)]
struct Nodes {
    nodes: Vec<NodeEntry>,
}

#[derive(Serialize)]
struct NodeEntry {
    id: String,
    webtransport: String,
    quic: String,
    http: String,
    region: Option<String>,
    cert_hashes: Vec<String>,
}

/// How long `/v1/nodes` waits for the cluster's directory before it answers 503.
const NODES_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The cluster's serving nodes, so that a client can go on through another node when its own
/// dies (the web demo asks once it is live). An empty list outside a cluster; 503 while the
/// directory is unreachable.
async fn nodes(State(state): State<Arc<HttpState>>) -> Response {
    let listed = tokio::time::timeout(NODES_DEADLINE, state.sessions.cluster.serving_nodes()).await;
    match listed {
        Ok(Ok(nodes)) => Json(Nodes {
            nodes: nodes
                .into_iter()
                .map(|n| NodeEntry {
                    id: n.id,
                    webtransport: n.webtransport,
                    quic: n.quic,
                    http: n.http,
                    region: n.region,
                    cert_hashes: n.cert_hashes,
                })
                .collect(),
        })
        .into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster directory is unreachable: {why}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster directory did not answer in time\n",
        )
            .into_response(),
    }
}

/// The hashes browsers may pin. Browsers accept `serverCertificateHashes` only for certificates
/// valid for at most 14 days, so a long-lived certificate (one from a CA, loaded from PEM files) is
/// not listed: an empty list tells the page to let the browser verify the certificate normally.
async fn cert_hashes(State(state): State<Arc<HttpState>>) -> Json<CertHashes> {
    let pinnable = state.certs.current().lifetime() <= strait_certs::MAX_DEV_VALIDITY;
    let hashes = if pinnable {
        let policy = strait_certs::RotationPolicy::default();
        crate::quic::tls::hashes_json(&state.certs.published(&policy, SystemTime::now()))
    } else {
        Vec::new()
    };
    Json(CertHashes { hashes })
}
