//! TURN REST credentials: a username `<expiry unix seconds>:<identity>` and a password
//! `base64(HMAC-SHA1(secret, username))`.
//!
//! Anyone holding the shared secret (this gateway, or an external TURN server such as coturn with
//! `use-auth-secret`) can check a credential without state: the password is recomputed from the
//! username, and the expiry is read from it. Secrets rotate with an overlap: [`TurnSecrets`] mints
//! with the first secret and accepts every secret it holds, so a new secret is put first and the
//! old one is removed once the credentials it minted have expired (after one TTL).
//!
//! Time is an argument (unix seconds); nothing here reads a clock.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use ring::hmac;
use thiserror::Error;

/// Longest identity accepted in a username, in bytes. With the expiry and the colon the
/// username stays well below STUN's 513-byte limit on `USERNAME`.
pub const MAX_IDENTITY_LEN: usize = 256;

/// Why a credential could not be minted or was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The username is not `<expiry>:<identity>` with a decimal expiry and a non-empty identity.
    #[error("the username is not `<expiry>:<identity>`")]
    MalformedUsername,
    /// The credential expired at the given unix time.
    #[error("the credential expired at {expired_at}")]
    Expired {
        /// Unix seconds.
        expired_at: u64,
    },
    /// The identity is empty or longer than [`MAX_IDENTITY_LEN`].
    #[error("the identity must be 1 to {MAX_IDENTITY_LEN} bytes")]
    BadIdentity,
    /// No secret is configured.
    #[error("no TURN secret is configured")]
    NoSecret,
}

/// One shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(Vec<u8>);

impl TurnSecret {
    /// A secret from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> TurnSecret {
        TurnSecret(bytes.into())
    }

    /// The password for `username` under this secret.
    pub fn password(&self, username: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TurnSecret(<redacted; {} bytes>)", self.0.len())
    }
}

/// A minted credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `<expiry>:<identity>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Unix seconds after which the credential is refused.
    pub expires_at: u64,
    /// How long it was minted for.
    pub ttl: Duration,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The secrets in use: the first mints, all verify.
///
/// Clones share one list: [`replace`](TurnSecrets::replace) changes it for every holder at once
/// (the server core that verifies and the gateway that mints), which is how secrets rotate while
/// the server runs.
#[derive(Clone, Default)]
pub struct TurnSecrets {
    secrets: Arc<RwLock<Arc<[TurnSecret]>>>,
}

impl fmt::Debug for TurnSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TurnSecrets(<{} redacted>)", self.snapshot().len())
    }
}

impl PartialEq for TurnSecrets {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot() == other.snapshot()
    }
}

impl Eq for TurnSecrets {}

impl TurnSecrets {
    /// The secrets, newest first.
    pub fn new(secrets: Vec<TurnSecret>) -> TurnSecrets {
        TurnSecrets {
            secrets: Arc::new(RwLock::new(secrets.into())),
        }
    }

    /// Replaces the secrets, newest first, for every clone. Credentials minted under a secret
    /// that is no longer listed are refused from then on.
    pub fn replace(&self, secrets: Vec<TurnSecret>) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = secrets.into();
    }

    fn snapshot(&self) -> Arc<[TurnSecret]> {
        Arc::clone(&self.secrets.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every secret, newest first.
    pub fn all(&self) -> Vec<TurnSecret> {
        self.snapshot().to_vec()
    }

    /// Mints a credential for `identity` valid from `now_unix` for `ttl`.
    pub fn mint(
        &self,
        identity: &str,
        now_unix: u64,
        ttl: Duration,
    ) -> Result<Credentials, CredentialError> {
        let secrets = self.snapshot();
        let secret = secrets.first().ok_or(CredentialError::NoSecret)?;
        if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN {
            return Err(CredentialError::BadIdentity);
        }
        let expires_at = now_unix.saturating_add(ttl.as_secs());
        let username = format!("{expires_at}:{identity}");
        let password = secret.password(&username);
        Ok(Credentials {
            username,
            password,
            expires_at,
            ttl,
        })
    }

    /// The passwords `username` would have under each secret, newest first.
    pub fn passwords<'a>(&self, username: &'a str) -> impl Iterator<Item = String> + 'a {
        let secrets = self.snapshot();
        (0..secrets.len()).map(move |i| secrets[i].password(username))
    }
}

/// A parsed TURN REST username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Username<'a> {
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Who it was minted for (a participant id).
    pub identity: &'a str,
}

/// Parses `<expiry>:<identity>` (the identity may itself contain `:`).
pub fn parse_username(username: &str) -> Result<Username<'_>, CredentialError> {
    let (expiry, identity) = username
        .split_once(':')
        .ok_or(CredentialError::MalformedUsername)?;
    if expiry.is_empty()
        || expiry.len() > 20
        || !expiry.bytes().all(|b| b.is_ascii_digit())
        || identity.is_empty()
        || identity.len() > MAX_IDENTITY_LEN
    {
        return Err(CredentialError::MalformedUsername);
    }
    let expires_at = expiry
        .parse()
        .map_err(|_| CredentialError::MalformedUsername)?;
    Ok(Username {
        expires_at,
        identity,
    })
}

/// Parses `username` and refuses it when it has expired at `now_unix`.
pub fn check_username(username: &str, now_unix: u64) -> Result<Username<'_>, CredentialError> {
    let parsed = parse_username(username)?;
    if now_unix > parsed.expires_at {
        return Err(CredentialError::Expired {
            expired_at: parsed.expires_at,
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> TurnSecrets {
        TurnSecrets::new(vec![TurnSecret::new(b"new-secret".to_vec())])
    }

    #[test]
    fn password_is_base64_hmac_sha1_of_the_username() {
        // Computed independently: printf '%s' '1700000300:alice' \
        //   | openssl dgst -sha1 -hmac secret -binary | base64
        let secret = TurnSecret::new(b"secret".to_vec());
        let password = secret.password("1700000300:alice");
        assert_eq!(password, "EMyQZfHYmtCZQwnd3MGRHxDzVgY=");
        assert_eq!(password, secret.password("1700000300:alice"));
        assert_ne!(password, secret.password("1700000300:bob"));
    }

    #[test]
    fn minted_credentials_carry_expiry_and_identity() {
        let creds = secrets()
            .mint("42", 1_700_000_000, Duration::from_secs(300))
            .unwrap();
        assert_eq!(creds.username, "1700000300:42");
        assert_eq!(creds.expires_at, 1_700_000_300);
        assert_eq!(
            creds.password,
            TurnSecret::new(b"new-secret".to_vec()).password(&creds.username)
        );
        assert!(!format!("{creds:?}").contains(&creds.password));
    }

    #[test]
    fn expiry_is_checked_against_the_given_time() {
        let creds = secrets()
            .mint("42", 1_000, Duration::from_secs(300))
            .unwrap();
        assert!(check_username(&creds.username, 1_300).is_ok());
        assert_eq!(
            check_username(&creds.username, 1_301),
            Err(CredentialError::Expired { expired_at: 1_300 })
        );
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for bad in ["", "alice", ":alice", "12:", "x1:alice", "-1:a", "1 :a"] {
            assert_eq!(
                parse_username(bad),
                Err(CredentialError::MalformedUsername),
                "{bad:?}"
            );
        }
        let long = format!("1:{}", "a".repeat(MAX_IDENTITY_LEN + 1));
        assert!(parse_username(&long).is_err());
        let parsed = parse_username("5:room:alice").unwrap();
        assert_eq!(parsed.identity, "room:alice");
    }

    #[test]
    fn rotation_mints_with_the_newest_and_accepts_both() {
        let old = TurnSecret::new(b"old".to_vec());
        let new = TurnSecret::new(b"new".to_vec());
        let before = TurnSecrets::new(vec![old.clone()]);
        let during = TurnSecrets::new(vec![new.clone(), old.clone()]);
        let old_creds = before.mint("1", 0, Duration::from_secs(60)).unwrap();
        let new_creds = during.mint("1", 0, Duration::from_secs(60)).unwrap();
        assert_eq!(new_creds.password, new.password(&new_creds.username));
        assert!(
            during
                .passwords(&old_creds.username)
                .any(|p| p == old_creds.password)
        );
        let after = TurnSecrets::new(vec![new]);
        assert!(
            !after
                .passwords(&old_creds.username)
                .any(|p| p == old_creds.password)
        );
    }

    #[test]
    fn minting_needs_a_secret_and_an_identity() {
        let none = TurnSecrets::default();
        assert_eq!(
            none.mint("1", 0, Duration::from_secs(1)),
            Err(CredentialError::NoSecret)
        );
        assert_eq!(
            secrets().mint("", 0, Duration::from_secs(1)),
            Err(CredentialError::BadIdentity)
        );
    }
}
