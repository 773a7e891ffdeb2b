//! Access tokens and resume tokens.
//!
//! Two kinds of credential reach the gateway in `ClientHello` (docs/PROTOCOL.md, sections 7.1 and
//! 7.8):
//!
//! - **Access tokens** are JWTs signed with HS256 by whoever holds an API key: the operator's
//!   backend, or `strait token`. The header names the key (`kid`); the claims name the identity, the
//!   room, the grants and the validity window. A [`KeyRing`] holds every key the gateway accepts, so
//!   keys can be rotated: add the new key, mint with it, and remove the old one once its tokens have
//!   expired.
//! - **Resume tokens** are opaque to the client and signed by the gateway itself with a
//!   [`ResumeSigner`]. They carry the participant id, the issuing node and an expiry, so a
//!   reconnecting client proves that it owns a session without the server keeping a table of token
//!   strings. Nodes that must honour each other's tokens share the signer's secret.
//!
//! Nothing here reads the clock: every check takes `now` as an argument, so tests can move time
//! and the session code decides which clock counts. Secrets never print: [`Secret`] has no
//! `Display` and its `Debug` is redacted; the one way to show a secret (the dev key printed at
//! start) is the explicitly named [`ApiKey::reveal_secret`].
//!
//! # Access token claims
//!
//! | claim | type | rule |
//! |---|---|---|
//! | `sub` | string | the identity: 1 to 128 bytes, no control character |
//! | `room` | string, optional | the one room the token grants ([`RoomId`] rules). Absent means *every room*, which only an `admin` token may have |
//! | `grants` | object, optional | `{ "publish": bool, "subscribe": bool, "admin": bool }`; a missing object or field is `false` |
//! | `name` | string, optional | display name, at most 256 bytes |
//! | `iat` | integer | seconds since the Unix epoch, not after `exp` |
//! | `exp` | integer | seconds since the Unix epoch; the token is refused from `exp + leeway` on |
//! | `nbf` | integer, optional | seconds since the Unix epoch; the token is refused before `nbf - leeway` |
//!
//! Other claims (`iss`, `jti`…) are ignored; a token with an `aud` claim is refused, because the
//! gateway does not name itself as an audience. The header must say `"alg": "HS256"` and name a key
//! with `kid`; a header with `crit` is refused (no extension is understood).
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use strait_gateway::auth::{AccessClaims, ApiKey, Grants, KeyRing, Secret};
//!
//! let key = ApiKey::new("main", Secret::new("a secret of at least thirty-two bytes!")).unwrap();
//! let mut ring = KeyRing::new();
//! ring.insert(key);
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
//! let claims = AccessClaims::new("alice", "lobby", Grants::participant(), now, Duration::from_secs(600));
//! let token = ring.mint("main", &claims).unwrap();
//!
//! let verified = ring.verify(&token, now).unwrap();
//! assert_eq!(verified.identity, "alice");
//! assert!(verified.grants.publish);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use strait_protocol::limits::{MAX_ID_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN};
use strait_protocol::{ErrorCode, RoomId};

/// Shortest secret accepted for an API key or a resume signer: 32 bytes, the output size of
/// SHA-256, as RFC 7518 section 3.2 requires for HS256 ("A key of the same size as the hash output
/// (for instance, 256 bits for "HS256") or larger MUST be used with this algorithm").
pub const MIN_SECRET_LEN: usize = 32;

/// Longest API key id: 64 bytes of `[A-Za-z0-9._-]`. The id is copied into every token header.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Default clock-skew allowance applied to `exp` and `nbf` (30 s). It bounds how long after its
/// expiry a stolen token still works, and how far the minting backend's clock may run ahead.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Largest timestamp accepted in a claim: 9999-12-31T23:59:59Z. Beyond it, converting to
/// `SystemTime` is not portable; no honest token needs it.
const MAX_TIMESTAMP: u64 = 253_402_300_799;

// ---------------------------------------------------------------------------------------------
// Secrets and keys
// ---------------------------------------------------------------------------------------------

/// A shared secret. Its `Debug` is redacted and it has no `Display`: the only way to read it is
/// [`Secret::reveal`].
///
/// The HMAC key is the UTF-8 bytes of the string, as with the secrets of LiveKit and most JWT
/// tooling, so the same text can be pasted into the operator's backend.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret. Its length is checked where it is used ([`ApiKey::new`]).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret in clear. Call it only to hand the secret to whoever must hold it (the dev key
    /// printed at start, a config file being written), never for logs.
    #[must_use]
    pub fn reveal(&self) -> &str {
        &self.0
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a key or signer could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key id is empty, longer than [`MAX_KEY_ID_LEN`], or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("invalid API key id: {0}")]
    InvalidId(&'static str),
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("secret is {len} bytes; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort {
        /// The length that was given.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// An API key: the id written in a token's `kid` header, and the HS256 secret.
#[derive(Clone)]
pub struct ApiKey {
    id: String,
    secret: Secret,
}

impl ApiKey {
    /// Makes a key, checking the id (1 to 64 bytes of `[A-Za-z0-9._-]`) and the secret (at least
    /// [`MIN_SECRET_LEN`] bytes).
    pub fn new(id: impl Into<String>, secret: Secret) -> Result<Self, KeyError> {
        let id = id.into();
        validate_key_id(&id)?;
        if secret.as_bytes().len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort {
                len: secret.as_bytes().len(),
            });
        }
        Ok(Self { id, secret })
    }

    /// A fresh key for dev mode: id `dev-<8 hex digits>`, secret 32 random bytes in unpadded
    /// base64url (43 characters), both from the operating system's generator.
    pub fn generate_dev() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let mut id_bytes = [0u8; 4];
        let mut secret_bytes = [0u8; 32];
        rng.fill(&mut id_bytes).map_err(|_| KeyError::Rng)?;
        rng.fill(&mut secret_bytes).map_err(|_| KeyError::Rng)?;
        let id = format!("dev-{:08x}", u32::from_be_bytes(id_bytes));
        Self::new(id, Secret::new(URL_SAFE_NO_PAD.encode(secret_bytes)))
    }

    /// The key id, as written in the `kid` header of the tokens it signs.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret, still wrapped.
    #[must_use]
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The secret in clear, for the one place that must show it: the dev key printed at start so
    /// that the developer can mint tokens. Never log it.
    #[must_use]
    pub fn reveal_secret(&self) -> &str {
        self.secret.reveal()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

fn validate_key_id(id: &str) -> Result<(), KeyError> {
    if id.is_empty() {
        return Err(KeyError::InvalidId("empty"));
    }
    if id.len() > MAX_KEY_ID_LEN {
        return Err(KeyError::InvalidId("longer than 64 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(KeyError::InvalidId("a character outside [A-Za-z0-9._-]"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Access token claims
// ---------------------------------------------------------------------------------------------

/// What a token allows besides joining its room. Each missing field reads as `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    /// May publish tracks. Without it `Publish` is answered `FORBIDDEN`.
    pub publish: bool,
    /// May subscribe to tracks. Without it `Subscribe` is answered `FORBIDDEN`.
    pub subscribe: bool,
    /// May administer the room (and, with no `room` claim, every room).
    pub admin: bool,
}

impl Grants {
    /// Publish and subscribe: an ordinary participant.
    #[must_use]
    pub const fn participant() -> Self {
        Self {
            publish: true,
            subscribe: true,
            admin: false,
        }
    }

    /// Subscribe only: a viewer.
    #[must_use]
    pub const fn viewer() -> Self {
        Self {
            publish: false,
            subscribe: true,
            admin: false,
        }
    }

    /// Everything.
    #[must_use]
    pub const fn admin() -> Self {
        Self {
            publish: true,
            subscribe: true,
            admin: true,
        }
    }
}

/// The claims of an access token, as they appear in the JWT payload (see the table in the module
/// docs). Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The identity (`sub`): 1 to 128 bytes, no control character.
    pub sub: String,
    /// The one room granted. `None` grants every room and requires `grants.admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// What the holder may do in the room.
    #[serde(default)]
    pub grants: Grants,
    /// Display name shown to others, at most 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at.
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
    /// Not valid before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

impl AccessClaims {
    /// Claims for one room, issued at `now` and valid for `ttl`.
    pub fn new(
        identity: impl Into<String>,
        room: impl Into<String>,
        grants: Grants,
        now: SystemTime,
        ttl: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        Self {
            sub: identity.into(),
            room: Some(room.into()),
            grants,
            name: None,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            nbf: None,
        }
    }

    /// Admin claims valid in every room, issued at `now` and valid for `ttl`.
    pub fn any_room_admin(identity: impl Into<String>, now: SystemTime, ttl: Duration) -> Self {
        Self {
            room: None,
            ..Self::new(identity, String::new(), Grants::admin(), now, ttl)
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets `nbf`: the token is not valid before `not_before`.
    #[must_use]
    pub fn not_before(mut self, not_before: SystemTime) -> Self {
        self.nbf = Some(unix_seconds(not_before));
        self
    }

    /// Checks the rules of the module docs' table that do not depend on the time. `verify` applies
    /// them to every token and `mint` to every claim set, so the gateway never mints a token it
    /// would refuse.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.sub.is_empty() {
            return Err("sub is empty");
        }
        if self.sub.len() > MAX_ID_LEN {
            return Err("sub is longer than 128 bytes");
        }
        if self.sub.chars().any(char::is_control) {
            return Err("sub contains a control character");
        }
        match &self.room {
            Some(room) => RoomId::validate(room)?,
            None if !self.grants.admin => return Err("no room claim, and no admin grant"),
            None => {}
        }
        if self.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
            return Err("name is longer than 256 bytes");
        }
        let nbf = self.nbf.unwrap_or(0);
        if self.iat > MAX_TIMESTAMP || self.exp > MAX_TIMESTAMP || nbf > MAX_TIMESTAMP {
            return Err("a timestamp is after the year 9999");
        }
        if self.exp < self.iat {
            return Err("exp is before iat");
        }
        if nbf > self.exp {
            return Err("nbf is after exp");
        }
        Ok(())
    }
}

/// Which rooms a verified token may join.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoomGrant {
    /// This room only.
    Room(RoomId),
    /// Every room (an admin token without a `room` claim).
    Any,
}

impl RoomGrant {
    /// Whether `room` may be joined.
    #[must_use]
    pub fn allows(&self, room: &RoomId) -> bool {
        match self {
            RoomGrant::Room(granted) => granted == room,
            RoomGrant::Any => true,
        }
    }
}

/// A token that passed [`KeyRing::verify`]: what the session may do, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedToken {
    /// The API key that signed it, for logs and for counting tokens per key during a rotation.
    pub key_id: String,
    /// The identity (`sub`).
    pub identity: String,
    /// The room or rooms it may join.
    pub room: RoomGrant,
    /// What it may do there.
    pub grants: Grants,
    /// The display name, if the token sets one.
    pub name: Option<String>,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires (without leeway).
    pub expires_at: SystemTime,
    /// When it becomes valid (without leeway), if the token says.
    pub not_before: Option<SystemTime>,
}

impl VerifiedToken {
    /// Whether the token grants `room`; a `Join` to any other room is answered `FORBIDDEN`.
    #[must_use]
    pub fn allows_room(&self, room: &RoomId) -> bool {
        self.room.allows(room)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a JWT: wrong number of parts, bad base64, a header or payload that is not JSON, or a
    /// header the gateway does not understand (`crit`).
    #[error("malformed access token")]
    Malformed,
    /// The `kid` header is missing or names no key in the key ring.
    #[error("access token signed with an unknown key")]
    UnknownKey,
    /// The signature does not match the named key.
    #[error("access token signature is wrong")]
    BadSignature,
    /// `now` is at or past `exp + leeway`.
    #[error("access token expired")]
    Expired,
    /// `now` is before `nbf - leeway`.
    #[error("access token not valid yet")]
    NotYetValid,
    /// The header's `alg` is not `HS256` (`none`, `RS256`, `HS512`…).
    #[error("access token algorithm is not HS256")]
    WrongAlgorithm,
    /// The signature is good but the claims break a rule (module docs); says which.
    #[error("access token claims are invalid: {0}")]
    InvalidClaims(String),
    /// Longer than 4096 bytes; refused before parsing.
    #[error("access token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
}

impl AuthError {
    /// The protocol error code the session is closed with (docs/PROTOCOL.md section 7.1):
    /// `TOKEN_EXPIRED` for an expired token, so the client knows to fetch a new one, and
    /// `UNAUTHORIZED` for everything else.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TOKEN_EXPIRED,
            _ => ErrorCode::UNAUTHORIZED,
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// No key with this id in the key ring.
    #[error("no API key with this id")]
    UnknownKey,
    /// The claims break a rule that `verify` would enforce.
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// The encoded token would exceed 4096 bytes.
    #[error("the token would be longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The JWT library refused to sign (not expected with HS256 and a secret key).
    #[error("signing failed: {0}")]
    Signing(String),
}

// ---------------------------------------------------------------------------------------------
// Key ring
// ---------------------------------------------------------------------------------------------

/// The API keys the gateway accepts, by id, and the clock-skew leeway applied to `exp` and `nbf`.
///
/// Rotation: insert the new key and mint with it; tokens signed by the old key keep verifying until
/// the old key is removed.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: HashMap<String, ApiKey>,
    leeway: Duration,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyRing {
    /// An empty key ring with [`DEFAULT_LEEWAY`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            keys: HashMap::new(),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Sets the leeway applied to `exp` and `nbf`.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The leeway applied to `exp` and `nbf`.
    #[must_use]
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Adds a key, replacing (and returning) any key with the same id.
    pub fn insert(&mut self, key: ApiKey) -> Option<ApiKey> {
        self.keys.insert(key.id.clone(), key)
    }

    /// Removes a key; tokens it signed no longer verify.
    pub fn remove(&mut self, id: &str) -> Option<ApiKey> {
        self.keys.remove(id)
    }

    /// The key with this id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&ApiKey> {
        self.keys.get(id)
    }

    /// The ids of all keys, in no particular order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many keys the ring holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key (then every token is refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signs `claims` with the key `key_id`: HS256, `typ: JWT`, `kid: key_id`. The claims are
    /// checked first with [`AccessClaims::validate`].
    pub fn mint(&self, key_id: &str, claims: &AccessClaims) -> Result<String, MintError> {
        let key = self.keys.get(key_id).ok_or(MintError::UnknownKey)?;
        claims.validate().map_err(MintError::InvalidClaims)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.id.clone());
        let token = jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(key.secret.as_bytes()),
        )
        .map_err(|e| MintError::Signing(e.to_string()))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(MintError::TooLong);
        }
        Ok(token)
    }

    /// Verifies an access token at time `now`.
    ///
    /// In order: length (at most 4096 bytes, before any parsing), shape (three base64url parts),
    /// header (`alg` exactly `HS256`, no `crit`, a `kid` naming a key of the ring), signature,
    /// claims (module docs), then `nbf` and `exp` against `now` with the ring's leeway. The JWT
    /// library is told not to check times, so it never reads the clock.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        if ![header, payload, signature]
            .iter()
            .all(|part| is_base64url(part))
        {
            return Err(AuthError::Malformed);
        }

        // The library's `Header` cannot represent `alg: none` or unknown algorithms (they fail as
        // JSON errors), so the header is read here first to tell a wrong algorithm from garbage.
        let header = parse_header(header)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        if header.alg != "HS256" {
            return Err(AuthError::WrongAlgorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(AuthError::UnknownKey)?;

        let data = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_secret(key.secret.as_bytes()),
            &validation(),
        )
        .map_err(|e| map_jwt_error(&e))?;
        let claims: AccessClaims = serde_json::from_value(data.claims)
            .map_err(|e| AuthError::InvalidClaims(e.to_string()))?;
        claims
            .validate()
            .map_err(|why| AuthError::InvalidClaims(why.to_owned()))?;

        // RFC 7519 section 4.1.4: "the current date/time MUST be before the expiration date/time
        // listed in the "exp" claim"; section 4.1.5: "the current date/time MUST be after or equal
        // to the not-before date/time listed in the "nbf" claim". Both allow "some small leeway".
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if let Some(nbf) = claims.nbf
            && now.saturating_add(self.leeway) < Duration::from_secs(nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        if now >= Duration::from_secs(claims.exp).saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }

        Ok(VerifiedToken {
            key_id: key.id.clone(),
            room: match claims.room {
                // Validated above with `RoomId::validate`.
                Some(room) => RoomGrant::Room(RoomId(room)),
                None => RoomGrant::Any,
            },
            identity: claims.sub,
            grants: claims.grants,
            name: claims.name,
            // Timestamps are at most `MAX_TIMESTAMP` (validated), so these cannot overflow.
            issued_at: UNIX_EPOCH + Duration::from_secs(claims.iat),
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
            not_before: claims.nbf.map(|nbf| UNIX_EPOCH + Duration::from_secs(nbf)),
        })
    }
}

/// The header fields the gateway looks at; others are ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Whether every byte is of the unpadded base64url alphabet (RFC 7515 section 2, "Base64url
/// Encoding": "with all trailing '=' characters omitted").
fn is_base64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_header(encoded: &str) -> Result<RawHeader, AuthError> {
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)
}

/// Signature and algorithm only: times are checked by `verify` against its `now`, so the library
/// never reads the clock (it does only when `validate_exp` or `validate_nbf` is set).
fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    validation
}

fn map_jwt_error(error: &jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        JwtErrorKind::InvalidSignature => AuthError::BadSignature,
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::UnsupportedAlgorithm
        | JwtErrorKind::InvalidAlgorithmName
        | JwtErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        JwtErrorKind::ExpiredSignature => AuthError::Expired,
        JwtErrorKind::ImmatureSignature => AuthError::NotYetValid,
        JwtErrorKind::InvalidAudience => {
            AuthError::InvalidClaims("aud does not name this gateway".to_owned())
        }
        JwtErrorKind::InvalidIssuer
        | JwtErrorKind::InvalidSubject
        | JwtErrorKind::MissingRequiredClaim(_)
        | JwtErrorKind::InvalidClaimFormat(_) => AuthError::InvalidClaims(error.to_string()),
        _ => AuthError::Malformed,
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Resume tokens
// ---------------------------------------------------------------------------------------------

/// Version byte at the start of every resume token payload.
const RESUME_VERSION: u8 = 1;
/// Version, participant id, issuing node, expiry (seconds): 1 + 8 + 8 + 8 bytes.
const RESUME_PAYLOAD_LEN: usize = 25;
/// HMAC-SHA256 tag.
const RESUME_TAG_LEN: usize = 32;
/// Signed before the payload so that a resume signer's MAC can never be mistaken for any other
/// MAC made with the same secret (an operator may reuse one secret for several purposes).
const RESUME_CONTEXT: &[u8] = b"strait resume token v1\0";

/// What a valid resume token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeClaims {
    /// The participant whose session may be taken back (the value of its `ParticipantId`).
    pub participant: u64,
    /// The incarnation of the node that issued the token (random per process), or 0 outside a
    /// cluster: another node of the cluster redirects the resume there while that node lives.
    pub node: u64,
    /// When the token stops being honoured (whole seconds).
    pub expires: SystemTime,
}

/// Why a resume token was refused. Every case is answered the same way on the wire
/// ([`ResumeError::code`]): the server continues with a fresh session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// Not base64url, not the right length, or an unknown version.
    #[error("malformed resume token")]
    Malformed,
    /// The tag does not match: forged, tampered with, or signed by another signer.
    #[error("resume token signature is wrong")]
    BadSignature,
    /// `now` is at or past the token's expiry.
    #[error("resume token expired")]
    Expired,
    /// Longer than 4096 bytes; refused before decoding.
    #[error("resume token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
}

impl ResumeError {
    /// The protocol error code naming a refused resume: `RESUME_FAILED` (docs/PROTOCOL.md 7.8).
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        ErrorCode::RESUME_FAILED
    }
}

/// Issues and checks resume tokens: unpadded base64url of a 25-byte payload (version `1`,
/// participant id, issuing node, expiry in seconds since the Unix epoch, all big-endian) followed
/// by its 32-byte HMAC-SHA256 tag; 76 characters in all.
///
/// A token proves that this signer (or another holding the same secret) issued it; the tag is
/// compared in constant time. It is not encrypted: the participant id is no secret.
pub struct ResumeSigner {
    key: hmac::Key,
}

impl fmt::Debug for ResumeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeSigner(<redacted>)")
    }
}

impl ResumeSigner {
    /// A signer with a configured secret (at least [`MIN_SECRET_LEN`] bytes), for clusters whose
    /// nodes honour each other's tokens.
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// A signer with a random secret, for a single node: its tokens die with the process.
    pub fn generate() -> Result<Self, KeyError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| KeyError::Rng)?;
        Ok(Self { key })
    }

    /// A token for `participant`'s session on the node of incarnation `node` (0 outside a
    /// cluster), honoured until `expires` (truncated to whole seconds, and to the year 9999).
    #[must_use]
    pub fn issue(&self, participant: u64, node: u64, expires: SystemTime) -> String {
        let mut raw = [0u8; RESUME_PAYLOAD_LEN + RESUME_TAG_LEN];
        raw[0] = RESUME_VERSION;
        raw[1..9].copy_from_slice(&participant.to_be_bytes());
        raw[9..17].copy_from_slice(&node.to_be_bytes());
        raw[17..25].copy_from_slice(&unix_seconds(expires).min(MAX_TIMESTAMP).to_be_bytes());
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(RESUME_CONTEXT);
        ctx.update(&raw[..RESUME_PAYLOAD_LEN]);
        raw[RESUME_PAYLOAD_LEN..].copy_from_slice(ctx.sign().as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a token at time `now`: length, encoding, tag (constant time), version, expiry.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<ResumeClaims, ResumeError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ResumeError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ResumeError::Malformed)?;
        if raw.len() != RESUME_PAYLOAD_LEN + RESUME_TAG_LEN {
            return Err(ResumeError::Malformed);
        }
        let (payload, tag) = raw.split_at(RESUME_PAYLOAD_LEN);
        let mut signed = Vec::with_capacity(RESUME_CONTEXT.len() + RESUME_PAYLOAD_LEN);
        signed.extend_from_slice(RESUME_CONTEXT);
        signed.extend_from_slice(payload);
        hmac::verify(&self.key, &signed, tag).map_err(|_| ResumeError::BadSignature)?;

        if payload[0] != RESUME_VERSION {
            return Err(ResumeError::Malformed);
        }
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&payload[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        let expires_secs = field(17);
        if expires_secs > MAX_TIMESTAMP {
            return Err(ResumeError::Malformed);
        }
        let expires = UNIX_EPOCH + Duration::from_secs(expires_secs);
        if now >= expires {
            return Err(ResumeError::Expired);
        }
        Ok(ResumeClaims {
            participant: field(1),
            node: field(9),
            expires,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The gateway's token authority: the keys that verify access tokens (and mint them, with the
/// minting key), and the signer of resume tokens.
#[derive(Debug)]
pub(crate) struct Authority {
    /// Keys that verify (and in development mode mint) access tokens.
    pub(crate) keys: KeyRing,
    /// The key id used to mint tokens (the development key, or the first configured key).
    pub(crate) mint_key: String,
    /// Signs and checks resume tokens.
    pub(crate) resume: ResumeSigner,
}

impl Authority {
    /// Mints an access token with the minting key.
    pub(crate) fn mint(&self, claims: &AccessClaims) -> Result<String, MintError> {
        self.keys.mint(&self.mint_key, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET_A: &str = "secret-a-0123456789abcdefghijklmnopqrstuv";
    const SECRET_B: &str = "secret-b-0123456789abcdefghijklmnopqrstuv";
    const TEN_MINUTES: Duration = Duration::from_secs(600);

    /// 2026-01-01T00:00:00Z.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn key(id: &str, secret: &str) -> ApiKey {
        ApiKey::new(id, Secret::new(secret)).unwrap()
    }

    fn ring_with(keys: &[(&str, &str)]) -> KeyRing {
        let mut ring = KeyRing::new();
        for (id, secret) in keys {
            ring.insert(key(id, secret));
        }
        ring
    }

    fn alice() -> AccessClaims {
        AccessClaims::new("alice", "lobby", Grants::participant(), t0(), TEN_MINUTES)
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs any JSON payload with HS256 under `kid`, bypassing `mint`'s checks.
    fn sign_raw(kid: &str, secret: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    /// A token whose header is `header_json`, with alice's claims and `signature`.
    fn with_header(header_json: &str, signature: &[u8]) -> String {
        let claims = serde_json::to_vec(&alice()).unwrap();
        format!(
            "{}.{}.{}",
            b64(header_json.as_bytes()),
            b64(&claims),
            b64(signature)
        )
    }

    #[test]
    fn minted_token_verifies_with_every_claim() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let claims = alice().with_name("Alice").not_before(t0());
        let token = ring.mint("k1", &claims).unwrap();

        let verified = ring.verify(&token, t0() + secs(1)).unwrap();
        assert_eq!(verified.key_id, "k1");
        assert_eq!(verified.identity, "alice");
        assert_eq!(verified.room, RoomGrant::Room(RoomId("lobby".into())));
        assert_eq!(verified.grants, Grants::participant());
        assert_eq!(verified.name.as_deref(), Some("Alice"));
        assert_eq!(verified.issued_at, t0());
        assert_eq!(verified.expires_at, t0() + TEN_MINUTES);
        assert_eq!(verified.not_before, Some(t0()));
        assert!(verified.allows_room(&RoomId("lobby".into())));
        assert!(!verified.allows_room(&RoomId("other".into())));
    }

    #[test]
    fn minted_header_names_the_key_and_hs256() {
        let token = ring_with(&[("k1", SECRET_A)]).mint("k1", &alice()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn grants_are_parsed_and_missing_ones_are_false() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let base = serde_json::json!({"sub": "bob", "room": "r", "iat": 1_767_225_600u64,
            "exp": 1_767_226_200u64});

        let mut viewer = base.clone();
        viewer["grants"] = serde_json::json!({"subscribe": true});
        let verified = ring
            .verify(&sign_raw("k1", SECRET_A, &viewer), t0())
            .unwrap();
        assert_eq!(verified.grants, Grants::viewer());

        let verified = ring.verify(&sign_raw("k1", SECRET_A, &base), t0()).unwrap();
        assert_eq!(verified.grants, Grants::default());

        let mut all = base;
        all["grants"] = serde_json::json!({"publish": true, "subscribe": true, "admin": true});
        let verified = ring.verify(&sign_raw("k1", SECRET_A, &all), t0()).unwrap();
        assert_eq!(verified.grants, Grants::admin());
    }

    #[test]
    fn any_room_needs_the_admin_grant() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let admin = AccessClaims::any_room_admin("ops", t0(), TEN_MINUTES);
        let verified = ring
            .verify(&ring.mint("k1", &admin).unwrap(), t0())
            .unwrap();
        assert_eq!(verified.room, RoomGrant::Any);
        assert!(verified.allows_room(&RoomId("anything".into())));

        let not_admin = AccessClaims {
            room: None,
            ..alice()
        };
        assert!(matches!(
            ring.mint("k1", &not_admin),
            Err(MintError::InvalidClaims(_))
        ));
        let forged = sign_raw("k1", SECRET_A, &serde_json::to_value(&not_admin).unwrap());
        assert!(matches!(
            ring.verify(&forged, t0()),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn expiry_honours_the_leeway_to_the_second() {
        let ring = ring_with(&[("k1", SECRET_A)]).with_leeway(secs(5));
        let token = ring.mint("k1", &alice()).unwrap();
        let exp = t0() + TEN_MINUTES;
        assert!(ring.verify(&token, exp + secs(4)).is_ok());
        assert_eq!(ring.verify(&token, exp + secs(5)), Err(AuthError::Expired));
        assert_eq!(ring.verify(&token, exp + secs(6)), Err(AuthError::Expired));
        assert_eq!(AuthError::Expired.code(), ErrorCode::TOKEN_EXPIRED);
    }

    #[test]
    fn not_before_in_the_future_is_refused() {
        let ring = ring_with(&[("k1", SECRET_A)]).with_leeway(secs(5));
        let later = alice().not_before(t0() + secs(60));
        let token = ring.mint("k1", &later).unwrap();
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::NotYetValid));
        assert_eq!(
            ring.verify(&token, t0() + secs(54)),
            Err(AuthError::NotYetValid)
        );
        assert!(ring.verify(&token, t0() + secs(55)).is_ok());
        assert_eq!(AuthError::NotYetValid.code(), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let token = ring_with(&[("k1", SECRET_B)]).mint("k1", &alice()).unwrap();
        let ring = ring_with(&[("k1", SECRET_A)]);
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::BadSignature));
        assert_eq!(AuthError::BadSignature.code(), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let token = ring.mint("k1", &alice()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let admin = AccessClaims {
            grants: Grants::admin(),
            ..alice()
        };
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&admin).unwrap()),
            parts[2]
        );
        assert_eq!(ring.verify(&forged, t0()), Err(AuthError::BadSignature));
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let token = ring_with(&[("k2", SECRET_A)]).mint("k2", &alice()).unwrap();
        let ring = ring_with(&[("k1", SECRET_A)]);
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::UnknownKey));

        let no_kid = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &alice(),
            &EncodingKey::from_secret(SECRET_A.as_bytes()),
        )
        .unwrap();
        assert_eq!(ring.verify(&no_kid, t0()), Err(AuthError::UnknownKey));
        assert_eq!(
            ring.mint("k2", &alice()),
            Err(MintError::UnknownKey),
            "minting needs a key of the ring"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let token = with_header(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#, b"");
        assert!(
            token.ends_with('.'),
            "an unsecured JWT has an empty signature"
        );
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::WrongAlgorithm));
        let token = with_header(r#"{"alg":"None","kid":"k1"}"#, b"");
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let rs256 = with_header(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#, &[7u8; 256]);
        assert_eq!(ring.verify(&rs256, t0()), Err(AuthError::WrongAlgorithm));

        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some("k1".into());
        let hs512 = jsonwebtoken::encode(
            &header,
            &alice(),
            &EncodingKey::from_secret(SECRET_A.as_bytes()),
        )
        .unwrap();
        assert_eq!(ring.verify(&hs512, t0()), Err(AuthError::WrongAlgorithm));
        assert_eq!(AuthError::WrongAlgorithm.code(), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn crit_header_is_refused() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let token = with_header(r#"{"alg":"HS256","kid":"k1","crit":["exp"]}"#, &[0u8; 32]);
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::Malformed));
    }

    #[test]
    fn garbage_is_malformed() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let valid = ring.mint("k1", &alice()).unwrap();
        for garbage in [
            "",
            "garbage",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "...",
            "eyJhbGciOiJIUzI1NiJ9",
            &format!("{valid}.extra"),
            &format!("{}.!!!.sig", b64(br#"{"alg":"HS256","kid":"k1"}"#)),
        ] {
            assert_eq!(
                ring.verify(garbage, t0()),
                Err(AuthError::Malformed),
                "{garbage:?}"
            );
        }
        // A correctly signed payload that is not JSON.
        let header = b64(br#"{"alg":"HS256","kid":"k1"}"#);
        let payload = b64(b"not json");
        let message = format!("{header}.{payload}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET_A.as_bytes());
        let tag = hmac::sign(&key, message.as_bytes());
        let signed_garbage = format!("{message}.{}", b64(tag.as_ref()));
        assert_eq!(
            ring.verify(&signed_garbage, t0()),
            Err(AuthError::Malformed)
        );
        assert_eq!(AuthError::Malformed.code(), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn long_tokens_are_refused_before_parsing() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let token = "a".repeat(5000);
        assert_eq!(ring.verify(&token, t0()), Err(AuthError::TooLong));
        let at_limit = "a".repeat(MAX_TOKEN_LEN);
        assert_eq!(ring.verify(&at_limit, t0()), Err(AuthError::Malformed));
        assert_eq!(AuthError::TooLong.code(), ErrorCode::UNAUTHORIZED);
    }

    #[test]
    fn claim_rules_are_enforced_on_signed_tokens() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let good = serde_json::to_value(alice()).unwrap();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("sub", serde_json::json!("")),
            ("sub", serde_json::json!("x".repeat(129))),
            ("sub", serde_json::json!("a\nb")),
            ("room", serde_json::json!("")),
            ("room", serde_json::json!("r".repeat(129))),
            ("name", serde_json::json!("n".repeat(257))),
            ("exp", serde_json::json!(1_000u64)),
            ("exp", serde_json::json!("tomorrow")),
            ("exp", serde_json::json!(u64::MAX)),
            ("nbf", serde_json::json!(1_800_000_000u64)),
            ("grants", serde_json::json!({"publish": "yes"})),
            ("aud", serde_json::json!("someone-else")),
        ];
        for (field, value) in cases {
            let mut claims = good.clone();
            claims[field] = value.clone();
            let token = sign_raw("k1", SECRET_A, &claims);
            let result = ring.verify(&token, t0());
            assert!(
                matches!(result, Err(AuthError::InvalidClaims(_))),
                "{field} = {value}: {result:?}"
            );
        }
        let mut no_exp = good;
        no_exp.as_object_mut().unwrap().remove("exp");
        let result = ring.verify(&sign_raw("k1", SECRET_A, &no_exp), t0());
        assert!(matches!(result, Err(AuthError::InvalidClaims(_))));
        assert_eq!(
            AuthError::InvalidClaims(String::new()).code(),
            ErrorCode::UNAUTHORIZED
        );
    }

    #[test]
    fn empty_sub_is_refused_by_mint_and_verify() {
        let ring = ring_with(&[("k1", SECRET_A)]);
        let empty = AccessClaims {
            sub: String::new(),
            ..alice()
        };
        assert_eq!(
            ring.mint("k1", &empty),
            Err(MintError::InvalidClaims("sub is empty"))
        );
        let token = sign_raw("k1", SECRET_A, &serde_json::to_value(&empty).unwrap());
        assert_eq!(
            ring.verify(&token, t0()),
            Err(AuthError::InvalidClaims("sub is empty".into()))
        );
    }

    #[test]
    fn rotated_keys_keep_old_tokens_valid_until_removed() {
        let mut ring = ring_with(&[("2025", SECRET_A)]);
        let old = ring.mint("2025", &alice()).unwrap();
        ring.insert(key("2026", SECRET_B));
        let new = ring.mint("2026", &alice()).unwrap();

        assert_eq!(ring.verify(&old, t0()).unwrap().key_id, "2025");
        assert_eq!(ring.verify(&new, t0()).unwrap().key_id, "2026");

        ring.remove("2025");
        assert_eq!(ring.verify(&old, t0()), Err(AuthError::UnknownKey));
        assert!(ring.verify(&new, t0()).is_ok());
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn keys_are_checked_when_made() {
        assert_eq!(
            ApiKey::new("k1", Secret::new("short")).unwrap_err(),
            KeyError::SecretTooShort { len: 5 }
        );
        for id in ["", "has space", "kid\"", &"k".repeat(65)] {
            assert!(
                matches!(
                    ApiKey::new(id, Secret::new(SECRET_A)),
                    Err(KeyError::InvalidId(_))
                ),
                "{id:?}"
            );
        }
        assert!(ApiKey::new("prod-2026.01_a", Secret::new(SECRET_A)).is_ok());
    }

    #[test]
    fn dev_keys_are_random_and_well_formed() {
        let a = ApiKey::generate_dev().unwrap();
        let b = ApiKey::generate_dev().unwrap();
        let hex = a.id().strip_prefix("dev-").unwrap();
        assert_eq!(hex.len(), 8);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a.reveal_secret().len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.reveal_secret()).unwrap().len(), 32);
        assert_ne!(a.reveal_secret(), b.reveal_secret());

        let mut ring = KeyRing::new();
        ring.insert(a.clone());
        let token = ring.mint(a.id(), &alice()).unwrap();
        assert!(ring.verify(&token, t0()).is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let key = key("k1", SECRET_A);
        let mut ring = KeyRing::new();
        ring.insert(key.clone());
        for printed in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{:?}", key.secret()),
            format!("{ring:?}"),
            format!("{:?}", ResumeSigner::new(SECRET_A.as_bytes()).unwrap()),
        ] {
            assert!(!printed.contains(SECRET_A), "{printed}");
            assert!(!printed.contains("0123456789"), "{printed}");
        }
        assert!(format!("{key:?}").contains("k1"));
    }

    // Resume tokens.

    fn signer(secret: &str) -> ResumeSigner {
        ResumeSigner::new(secret.as_bytes()).unwrap()
    }

    #[test]
    fn resume_token_round_trip() {
        let signer = signer(SECRET_A);
        let expires = t0() + secs(20);
        let token = signer.issue(42, 7, expires);
        assert_eq!(token.len(), 76);
        assert_eq!(
            signer.verify(&token, t0()),
            Ok(ResumeClaims {
                participant: 42,
                node: 7,
                expires,
            })
        );
        // Another signer with the same secret (another node) honours it.
        assert!(self::signer(SECRET_A).verify(&token, t0()).is_ok());
        // Random signers work too.
        let random = ResumeSigner::generate().unwrap();
        let token = random.issue(u64::MAX, u64::MAX, expires);
        assert_eq!(random.verify(&token, t0()).unwrap().participant, u64::MAX);
    }

    #[test]
    fn resume_token_expires() {
        let signer = signer(SECRET_A);
        let token = signer.issue(1, 1, t0() + secs(20));
        assert!(signer.verify(&token, t0() + secs(19)).is_ok());
        assert_eq!(
            signer.verify(&token, t0() + secs(20)),
            Err(ResumeError::Expired)
        );
        assert_eq!(ResumeError::Expired.code(), ErrorCode::RESUME_FAILED);
    }

    #[test]
    fn tampered_resume_tokens_are_refused() {
        let signer = signer(SECRET_A);
        let token = signer.issue(42, 7, t0() + secs(20));
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for at in [0, 1, 8, 9, 17, 24, 25, 40, 56] {
            let mut bad = raw.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                signer.verify(&b64(&bad), t0()),
                Err(ResumeError::BadSignature),
                "byte {at}"
            );
        }
    }

    #[test]
    fn resume_tokens_from_another_signer_are_refused() {
        let token = signer(SECRET_B).issue(42, 7, t0() + secs(20));
        assert_eq!(
            signer(SECRET_A).verify(&token, t0()),
            Err(ResumeError::BadSignature)
        );
        let random = ResumeSigner::generate().unwrap();
        assert_eq!(random.verify(&token, t0()), Err(ResumeError::BadSignature));
    }

    #[test]
    fn malformed_and_long_resume_tokens_are_refused() {
        let signer = signer(SECRET_A);
        let token = signer.issue(42, 7, t0() + secs(20));
        for bad in [
            "",
            "!!!!",
            &token[..75],
            &format!("{token}A"),
            &format!("{token}="),
        ] {
            assert_eq!(
                signer.verify(bad, t0()),
                Err(ResumeError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            signer.verify(&"A".repeat(5000), t0()),
            Err(ResumeError::TooLong)
        );
        assert!(matches!(
            ResumeSigner::new(b"short"),
            Err(KeyError::SecretTooShort { len: 5 })
        ));
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_any_string(token in ".{0,600}") {
            let ring = ring_with(&[("k1", SECRET_A)]);
            let _ = ring.verify(&token, t0());
            let _ = signer(SECRET_A).verify(&token, t0());
        }

        #[test]
        fn verify_never_panics_on_jwt_shaped_input(
            header in prop::collection::vec(any::<u8>(), 0..64),
            payload in prop::collection::vec(any::<u8>(), 0..256),
            signature in prop::collection::vec(any::<u8>(), 0..64),
            alg in prop::sample::select(vec!["HS256", "none", "RS256", "HS512"]),
        ) {
            let ring = ring_with(&[("k1", SECRET_A)]);
            let shaped = format!("{}.{}.{}", b64(&header), b64(&payload), b64(&signature));
            let _ = ring.verify(&shaped, t0());
            let header = format!(r#"{{"alg":"{alg}","kid":"k1"}}"#);
            let with_header = format!("{}.{}.{}", b64(header.as_bytes()), b64(&payload), b64(&signature));
            prop_assert!(ring.verify(&with_header, t0()).is_err());
        }

        #[test]
        fn resume_round_trips(participant: u64, node: u64, ttl in 1u64..1_000_000) {
            let signer = signer(SECRET_A);
            let expires = t0() + secs(ttl);
            let token = signer.issue(participant, node, expires);
            let claims = signer.verify(&token, t0()).unwrap();
            prop_assert_eq!(claims.participant, participant);
            prop_assert_eq!(claims.node, node);
            prop_assert_eq!(claims.expires, expires);
        }
    }
}
