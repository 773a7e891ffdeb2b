//! WHIP and WHEP signaling on the HTTP port: a legacy WebRTC peer publishes to a room or
//! subscribes to a track with one HTTP request (RFC 9725 for WHIP; WHEP follows the same shape).
//!
//! | method and path | what | success |
//! |---|---|---|
//! | `POST /whip/{room}` | publish: the body is the SDP offer (`application/sdp`) | `201 Created`, `Location`, the answer |
//! | `POST /whep/{room}/{id}` | subscribe to track `id`, or to every track of participant `id` | `201 Created`, `Location`, the answer |
//! | `DELETE {Location}` | leave the room and close the peer | `200 OK` |
//! | `PATCH {Location}` | trickle ICE (`application/trickle-ice-sdpfrag` with candidates) | `204 No Content` |
//! | `PATCH {Location}` | ICE restart (a fragment with a new `a=ice-ufrag` and `a=ice-pwd`) | `200 OK`, the bridge's new credentials and candidates as a fragment |
//!
//! Every request carries `Authorization: Bearer <access token>` (or the token in an
//! `access_token` query parameter): the token must grant the room, and `publish` (WHIP) or
//! `subscribe` (WHEP). In a cluster, an offer for a room served by another node is answered
//! `307 Temporary Redirect` to the same path at that node, with a short-lived token in the
//! `access_token` parameter (browsers drop `Authorization` on a redirect to another origin); the
//! owner's `Location` is then absolute, so that `PATCH` and `DELETE` go to the owner. Only the token's identity (or an admin token) may
//! delete or patch a session. The answer holds the bridge's host candidates and `a=ice-lite`.
//! The bridge is ICE-lite: it answers the peer's checks and needs none of its candidates, so
//! trickled candidates are acknowledged and not used, and an offer may be posted before
//! gathering ends. The `201`, `204` and `200` responses carry an `ETag` (it changes at each ICE
//! restart); a `PATCH` with `If-Match` naming another tag than the session's (other than `*`) is
//! refused with `412`. An ICE restart keeps the session's tracks and DTLS; the peer's checks then
//! name the new credentials, from whatever address it has moved to.
//!
//! Refusals carry a one-line reason in a `text/plain` body:
//!
//! | status | why |
//! |---|---|
//! | 400 | the body is not SDP (or not UTF-8), the room name is invalid, the WebRTC stack refused the offer |
//! | 401 | no bearer token, or an invalid or expired one (`WWW-Authenticate: Bearer`) |
//! | 403 | the token is for another room, lacks the grant, or the session is someone else's |
//! | 400 | a `PATCH` fragment with lines other than `a=`/`m=`, a ufrag without a password, or malformed credentials |
//! | 404 | no such track, participant or session |
//! | 412 | a `PATCH` whose `If-Match` is not the session's `ETag` |
//! | 408 | the offer or fragment did not arrive in full within `http.body_timeout` |
//! | 413 | the offer or fragment is longer than `webrtc.max_sdp_bytes` |
//! | 415 | the `Content-Type` is not `application/sdp` (`application/trickle-ice-sdpfrag` for `PATCH`) |
//! | 422 | valid SDP the bridge cannot use: no audio or video, only unsupported codecs, no section to receive the requested tracks |
//! | 307 | another node of the cluster serves the room: `Location` is where to post the offer |
//! | 503 | draining, peer or room limits reached, or (`Retry-After`) no node of the cluster can take the room now |

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use strait_media::sfu::SfuError;
use strait_media::webrtc::{IceFragment, WebRtcError, check_offer};
use strait_protocol::{ParticipantId, RoomId};

use super::HttpState;
use crate::auth::VerifiedToken;
use crate::cluster::Placed;
use crate::session::SessionContext;
use crate::worker::bridge::{BridgeError, IcePatched, OfferRole, WebRtcOffer, WebRtcResource};

/// Adds the WHIP and WHEP routes.
pub(crate) fn routes(router: Router<Arc<HttpState>>) -> Router<Arc<HttpState>> {
    router
        .route("/whip/{room}", post(whip_post))
        .route(
            "/whip/{room}/{resource}",
            axum::routing::delete(whip_delete).patch(whip_patch),
        )
        .route("/whep/{room}/{target}", post(whep_post))
        .route(
            "/whep/{room}/{target}/{resource}",
            axum::routing::delete(whep_delete).patch(whep_patch),
        )
}

/// A refused request: a status and a one-line reason (or, `307`, where to go instead).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: String,
    /// `Location` of a redirect.
    location: Option<String>,
    /// `Retry-After` in seconds.
    retry_after: Option<u32>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            location: None,
            retry_after: None,
        }
    }

    /// `307 Temporary Redirect` to `location` (another node of the cluster serves the room).
    fn redirect(location: String) -> Self {
        Self {
            status: StatusCode::TEMPORARY_REDIRECT,
            reason: "another node of the cluster serves this room".into(),
            location: Some(location),
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = format!("{}\n", self.reason);
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<BridgeError> for Refusal {
    fn from(e: BridgeError) -> Self {
        let status = match &e {
            BridgeError::Offer(offer) => match offer {
                WebRtcError::SdpTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                WebRtcError::NoMedia | WebRtcError::UnsupportedCodecs { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                WebRtcError::TooManyPeers(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
            BridgeError::Room(room) => match room {
                SfuError::RoomFull { .. }
                | SfuError::TooManyRooms { .. }
                | SfuError::TooManyTracks { .. }
                | SfuError::TooManySubscriptions { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
            BridgeError::NoSuchTarget(_) | BridgeError::UnknownResource => StatusCode::NOT_FOUND,
            BridgeError::NoMatchingSection => StatusCode::UNPROCESSABLE_ENTITY,
            BridgeError::StackFailed => StatusCode::BAD_REQUEST,
            BridgeError::NotOwner => StatusCode::FORBIDDEN,
            BridgeError::EntityTagMismatch(_) => StatusCode::PRECONDITION_FAILED,
            BridgeError::Disabled => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal::new(status, e.to_string())
    }
}

async fn whip_post(
    State(http): State<Arc<HttpState>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Request::new(&headers, query.as_deref());
    offer(&http.sessions, room, Ok(OfferRole::Publish), request, body).await
}

async fn whep_post(
    State(http): State<Arc<HttpState>>,
    Path((room, target)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let role = target
        .parse::<u64>()
        .map(OfferRole::Subscribe)
        .map_err(|_| target);
    let request = Request::new(&headers, query.as_deref());
    offer(&http.sessions, room, role, request, body).await
}

async fn offer(
    shared: &SessionContext,
    room: String,
    role: Result<OfferRole, String>,
    request: Request<'_>,
    body: Body,
) -> Response {
    match accept(shared, room, role, request, body).await {
        Ok(Accepted {
            location,
            answer,
            ice_servers,
        }) => {
            let mut response = (
                StatusCode::CREATED,
                [
                    (header::LOCATION, location),
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                ],
                answer.clone(),
            )
                .into_response();
            if let Some(tag) = answer
                .lines()
                .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
                .and_then(|ufrag| HeaderValue::from_str(&format!("\"{ufrag}\"")).ok())
            {
                response.headers_mut().insert(header::ETAG, tag);
            }
            for link in ice_servers {
                response.headers_mut().append(header::LINK, link);
            }
            response
        }
        Err(refusal) => {
            shared.metrics.webrtc_offers_refused.inc();
            refusal.into_response()
        }
    }
}

/// An offer the worker answered.
struct Accepted {
    /// The resource URL (`Location`).
    location: String,
    /// The answer SDP.
    answer: String,
    /// `Link` header values naming the TURN servers, with credentials for this peer.
    ice_servers: Vec<HeaderValue>,
}

/// `Link` header values (WHIP, RFC 9725 §4.4) for every TURN URL the gateway hands out, with
/// credentials minted for the peer's participant id (as in `ServerHello`); none when TURN is off.
fn ice_server_links(shared: &SessionContext, participant: ParticipantId) -> Vec<HeaderValue> {
    let Ok(credentials) = shared
        .turn
        .mint(&participant.0.to_string(), SystemTime::now())
    else {
        return Vec::new();
    };
    // Quoted strings (RFC 9110 §5.6.4): backslash before `"` and `\`.
    let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    credentials
        .uris
        .iter()
        .filter_map(|url| {
            let value = format!(
                "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; \
                 credential-type=\"password\"",
                quote(&credentials.username),
                quote(&credentials.password),
            );
            HeaderValue::from_str(&value).ok()
        })
        .collect()
}

/// Why a body (`what`: the offer, a fragment) could not be read: it did not arrive within
/// `http.body_timeout` (408), the connection failed (400), or it is longer than `max` (413).
fn body_refusal(e: &axum::Error, what: &str, max: usize) -> Refusal {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause.is::<tower_http::timeout::TimeoutError>() {
            return Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the {what} did not arrive in time"),
            );
        }
        if cause.is::<http_body_util::LengthLimitError>() {
            return Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the {what} is longer than {max} bytes"),
            );
        }
        source = cause.source();
    }
    Refusal::new(
        StatusCode::BAD_REQUEST,
        format!("the {what} could not be read: {e}"),
    )
}

/// Checks a WHIP or WHEP request in order of cost (no body is read before the token is good)
/// and hands the offer to the worker.
async fn accept(
    shared: &SessionContext,
    room: String,
    role: Result<OfferRole, String>,
    request: Request<'_>,
    body: Body,
) -> Result<Accepted, Refusal> {
    let headers = request.headers;
    if shared.drain.is_cancelled() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is draining",
        ));
    }
    let token = authenticate(shared, request)?;
    let room = room_id(room)?;
    if !token.allows_room(&room) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("the access token does not grant room `{room}`"),
        ));
    }
    let role = role.map_err(|target| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("`{target}` is not a track or participant id"),
        )
    })?;
    let (granted, grant) = match role {
        OfferRole::Publish => (token.grants.publish, "publish"),
        OfferRole::Subscribe(_) => (token.grants.subscribe, "subscribe"),
    };
    if !granted {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("the access token does not grant {grant}"),
        ));
    }
    // In a cluster the room may be served by another node: the client posts the same offer
    // there (307 keeps the method and the body), with a short-lived token in the URL because
    // browsers drop `Authorization` on a redirect to another origin.
    let path = match role {
        OfferRole::Publish => format!("/whip/{}", encode_segment(room.as_str())),
        OfferRole::Subscribe(target) => format!("/whep/{}/{target}", encode_segment(room.as_str())),
    };
    match shared.cluster.place(room.as_str()).await {
        Placed::Here => {}
        Placed::Elsewhere(owner) => {
            let mut location = format!("{}{path}", owner.http);
            if let Some(token) = shared.redirect_token(&token) {
                location.push_str("?access_token=");
                location.push_str(&token);
            }
            return Err(Refusal::redirect(location));
        }
        Placed::Unavailable(reason) => {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).retry_after(1));
        }
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as application/sdp",
        ));
    }
    let max = shared.config.webrtc.max_sdp_bytes;
    // Reads at most `max` bytes, whatever Content-Length claims.
    let body = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| body_refusal(&e, "offer", max))?;
    let sdp = String::from_utf8(body.to_vec())
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the offer is not UTF-8"))?;
    // Refuse a bad offer here, before the worker spends anything on it.
    check_offer(&sdp, max).map_err(|e| Refusal::from(BridgeError::Offer(e)))?;

    let resource = resource_id().map_err(|_| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the system random source failed",
        )
    })?;
    // Absolute in a cluster, so that a client that followed a redirect sends its PATCH and
    // DELETE to this node, not to the node it first asked.
    let location = format!(
        "{}{path}/{resource}",
        shared.cluster.public_http().unwrap_or_default()
    );
    let participant = shared.new_participant_id();
    let ice_servers = ice_server_links(shared, participant);
    // The peer joins its room on the room's worker (its UDP port is that worker's).
    let worker = shared
        .media
        .placement()
        .seat_at_home(participant, &room)
        .map_err(BridgeError::Placement)?;
    let answer = shared
        .media
        .worker(worker)
        .webrtc_offer(WebRtcOffer {
            participant,
            resource,
            token,
            room,
            role,
            sdp,
        })
        .await
        .inspect_err(|_| shared.media.placement().gone(participant))?;
    Ok(Accepted {
        location,
        answer,
        ice_servers,
    })
}

async fn whip_delete(
    State(http): State<Arc<HttpState>>,
    Path((room, resource)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    delete(
        &http.sessions,
        room,
        resource,
        true,
        Request::new(&headers, query.as_deref()),
    )
    .await
}

async fn whep_delete(
    State(http): State<Arc<HttpState>>,
    Path((room, _target, resource)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    delete(
        &http.sessions,
        room,
        resource,
        false,
        Request::new(&headers, query.as_deref()),
    )
    .await
}

async fn delete(
    shared: &SessionContext,
    room: String,
    resource: String,
    publisher: bool,
    request: Request<'_>,
) -> Response {
    let result = async {
        let token = authenticate(shared, request)?;
        let room = room_id(room)?;
        let worker = shared.media.placement().room_worker(&room).unwrap_or(0);
        shared
            .media
            .worker(worker)
            .webrtc_delete(WebRtcResource {
                room,
                resource,
                publisher,
                identity: token.identity.clone(),
                admin: token.grants.admin,
            })
            .await
            .map_err(Refusal::from)
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn whip_patch(
    State(http): State<Arc<HttpState>>,
    Path((room, resource)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Request::new(&headers, query.as_deref());
    patch(&http.sessions, room, resource, true, request, body).await
}

async fn whep_patch(
    State(http): State<Arc<HttpState>>,
    Path((room, _target, resource)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Request::new(&headers, query.as_deref());
    patch(&http.sessions, room, resource, false, request, body).await
}

/// Trickle ICE or an ICE restart (RFC 9725 §4.3); see the module docs.
async fn patch(
    shared: &SessionContext,
    room: String,
    resource: String,
    publisher: bool,
    request: Request<'_>,
    body: Body,
) -> Response {
    let headers = request.headers;
    let result = async {
        let token = authenticate(shared, request)?;
        let room = room_id(room)?;
        let is_fragment = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/trickle-ice-sdpfrag")
            });
        if !is_fragment {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a PATCH must be sent as application/trickle-ice-sdpfrag",
            ));
        }
        let max = shared.config.webrtc.max_sdp_bytes;
        let body = axum::body::to_bytes(body, max)
            .await
            .map_err(|e| body_refusal(&e, "fragment", max))?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the fragment is not UTF-8"))?;
        let fragment =
            IceFragment::parse(text, max).map_err(|e| Refusal::from(BridgeError::Offer(e)))?;
        let if_match = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let target = WebRtcResource {
            room,
            resource,
            publisher,
            identity: token.identity.clone(),
            admin: token.grants.admin,
        };
        let worker = shared
            .media
            .placement()
            .room_worker(&target.room)
            .unwrap_or(0);
        shared
            .media
            .worker(worker)
            .webrtc_patch(target, fragment, if_match)
            .await
            .map_err(Refusal::from)
    }
    .await;
    let tag = |t: String| HeaderValue::from_str(&t).unwrap_or(HeaderValue::from_static("\"\""));
    match result {
        Ok(IcePatched::Trickled { entity_tag }) => {
            (StatusCode::NO_CONTENT, [(header::ETAG, tag(entity_tag))]).into_response()
        }
        Ok(IcePatched::Restarted {
            entity_tag,
            fragment,
        }) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/trickle-ice-sdpfrag"),
                ),
                (header::ETAG, tag(entity_tag)),
            ],
            fragment,
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// What a handler read of a request for [`authenticate`].
#[derive(Clone, Copy)]
struct Request<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
}

impl<'a> Request<'a> {
    fn new(headers: &'a HeaderMap, query: Option<&'a str>) -> Self {
        Self { headers, query }
    }
}

/// The access token of `Authorization: Bearer`, or else of the `access_token` query parameter
/// (what a redirect to another node of the cluster carries, RFC 6750 §2.3).
fn authenticate(shared: &SessionContext, request: Request<'_>) -> Result<VerifiedToken, Refusal> {
    let header = request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match header {
        Some(value) => value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim()),
        None => request.query.and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("access_token="))
        }),
    }
    .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
    shared
        .auth
        .keys
        .verify(token, SystemTime::now())
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

fn room_id(room: String) -> Result<RoomId, Refusal> {
    RoomId::validate(&room).map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, why))?;
    Ok(RoomId(room))
}

/// 128 random bits from the operating system, hex: the resource id in a session's URL.
fn resource_id() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Percent-encodes a path segment (RFC 3986 §3.3): unreserved characters stay, every other byte
/// becomes `%XX`.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode_segment;

    #[test]
    fn room_names_are_percent_encoded_in_locations() {
        assert_eq!(encode_segment("lobby-1"), "lobby-1");
        assert_eq!(encode_segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
