//! Self-signed development identities that browsers accept through `serverCertificateHashes`.
//!
//! The W3C WebTransport spec lets a page trust a certificate by its SHA-256 hash only if the
//! certificate is short-lived ("the total length of the validity period MUST NOT exceed two
//! weeks") and Chromium further requires an ECDSA key, so a development identity is ECDSA P-256
//! with a validity period of at most [`MAX_DEV_VALIDITY`], back-dated by [`DEV_BACKDATE`] to
//! tolerate clocks that run a little behind the gateway's.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::identity::{Identity, KeyAlgorithm, unix_seconds_floor};

/// The longest validity period (`notAfter - notBefore`, back-dating included) that browsers
/// accept for `serverCertificateHashes`: 14 days.
pub const MAX_DEV_VALIDITY: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How far before `now` a development certificate's `notBefore` is set: one hour.
pub const DEV_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The names every development certificate carries, before [`DevIdentityConfig::names`].
pub const DEFAULT_DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What to put in a development certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIdentityConfig {
    /// Extra subject alternative names, after [`DEFAULT_DEV_NAMES`]: DNS names (a leading `*.`
    /// wildcard is allowed) or IP addresses, e.g. the host name the page is served from. Duplicates
    /// are dropped. Default: none.
    pub names: Vec<String>,
    /// The whole validity period, `notAfter - notBefore`, back-dating included; whole seconds
    /// count, a fraction is dropped. Must exceed [`DEV_BACKDATE`] (so the certificate is valid at
    /// `now`) and not exceed [`MAX_DEV_VALIDITY`]. Default: [`MAX_DEV_VALIDITY`].
    pub validity: Duration,
}

impl Default for DevIdentityConfig {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            validity: MAX_DEV_VALIDITY,
        }
    }
}

/// Why a development identity could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// [`DevIdentityConfig::validity`] exceeds what browsers accept.
    #[error(
        "validity of {requested:?} exceeds the {max:?} that browsers accept for certificate hashes"
    )]
    ValidityTooLong {
        /// The configured validity.
        requested: Duration,
        /// [`MAX_DEV_VALIDITY`].
        max: Duration,
    },
    /// [`DevIdentityConfig::validity`] is not longer than the back-dating, so the certificate
    /// would not be valid at `now`.
    #[error("validity of {requested:?} does not outlast the {backdate:?} back-dating")]
    ValidityTooShort {
        /// The configured validity.
        requested: Duration,
        /// [`DEV_BACKDATE`].
        backdate: Duration,
    },
    /// A configured name is neither an IP address nor a DNS name.
    #[error("subject alternative name {name:?} is not a DNS name or IP address")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// `now` is too far from 1970 to be written in a certificate.
    #[error("time {now:?} cannot be written in a certificate")]
    TimeOutOfRange {
        /// The `now` that was given.
        now: SystemTime,
    },
    /// Key generation or signing failed inside the crypto provider.
    #[error("crypto provider failed: {reason}")]
    Crypto {
        /// The provider's message.
        reason: String,
    },
}

impl Identity {
    /// Mints a self-signed ECDSA P-256 development identity valid from `now - 1h` for
    /// `config.validity`, with SANs `localhost`, `127.0.0.1`, `::1` and `config.names`.
    ///
    /// `now` is rounded down to the whole second, as certificates store time in seconds, so
    /// `not_before() == floor(now) - 1h` exactly and `not_after() == not_before() + validity`.
    ///
    /// The key comes from the operating system's RNG through ring: that is the one source of
    /// randomness in this crate and is not injectable, which is acceptable for key material
    /// (tests compare properties, never key bytes). The serial number is derived from the public
    /// key, so it is unique per key.
    pub fn generate_dev(
        config: &DevIdentityConfig,
        now: SystemTime,
    ) -> Result<Self, GenerateError> {
        if config.validity > MAX_DEV_VALIDITY {
            return Err(GenerateError::ValidityTooLong {
                requested: config.validity,
                max: MAX_DEV_VALIDITY,
            });
        }
        if config.validity <= DEV_BACKDATE {
            return Err(GenerateError::ValidityTooShort {
                requested: config.validity,
                backdate: DEV_BACKDATE,
            });
        }
        let out_of_range = || GenerateError::TimeOutOfRange { now };
        // Both durations are below 14 days in seconds, far inside i64.
        let backdate = i64::try_from(DEV_BACKDATE.as_secs()).map_err(|_| out_of_range())?;
        let validity = i64::try_from(config.validity.as_secs()).map_err(|_| out_of_range())?;
        let start = unix_seconds_floor(now)
            .and_then(|s| s.checked_sub(backdate))
            .ok_or_else(out_of_range)?;
        let end = start.checked_add(validity).ok_or_else(out_of_range)?;
        let to_cert_time =
            |secs| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| out_of_range());

        let mut params = CertificateParams::default();
        params.not_before = to_cert_time(start)?;
        params.not_after = to_cert_time(end)?;
        params.subject_alt_names = subject_alt_names(&config.names)?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "strait development certificate");
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

        let crypto = |e: rcgen::Error| GenerateError::Crypto {
            reason: e.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let cert = params.self_signed(&key).map_err(crypto)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Identity::assemble(vec![cert.der().clone()], key_der, KeyAlgorithm::EcdsaP256)
            .map_err(|reason| GenerateError::Crypto { reason })
    }
}

/// The default names followed by `extra`, each once, classified as IP address or DNS name.
fn subject_alt_names(extra: &[String]) -> Result<Vec<SanType>, GenerateError> {
    let mut sans: Vec<SanType> = Vec::with_capacity(DEFAULT_DEV_NAMES.len() + extra.len());
    let mut seen: Vec<String> = Vec::new();
    for name in DEFAULT_DEV_NAMES
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let name = name.trim();
        let san = if let Ok(ip) = name.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(name) {
            let ia5 = name
                .to_owned()
                .try_into()
                .map_err(|_| GenerateError::InvalidName {
                    name: name.to_owned(),
                })?;
            SanType::DnsName(ia5)
        } else {
            return Err(GenerateError::InvalidName {
                name: name.to_owned(),
            });
        };
        // IP addresses are compared in their canonical form, DNS names case-insensitively.
        let key = match &san {
            SanType::IpAddress(ip) => ip.to_string(),
            _ => name.to_ascii_lowercase(),
        };
        if !seen.contains(&key) {
            seen.push(key);
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A DNS name as it may appear in a certificate: dot-separated labels of ASCII letters, digits,
/// `-` and `_`, none empty or longer than 63, at most 253 characters, optionally starting `*.`.
fn is_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_rules() {
        for ok in ["localhost", "a.example", "*.example.com", "x-y_z.test", "a"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        for bad in [
            "",
            "*.",
            "a..b",
            "has space",
            "ünïcode",
            "a.",
            long_label.as_str(),
            "*",
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_are_deduplicated_and_classified() {
        let extra = [
            "LOCALHOST".to_owned(),
            "0:0:0:0:0:0:0:1".to_owned(),
            "gw.example".to_owned(),
            "10.0.0.1".to_owned(),
            "gw.example".to_owned(),
        ];
        let sans = subject_alt_names(&extra).unwrap();
        let ips = sans
            .iter()
            .filter(|s| matches!(s, SanType::IpAddress(_)))
            .count();
        let dns = sans
            .iter()
            .filter(|s| matches!(s, SanType::DnsName(_)))
            .count();
        assert_eq!((ips, dns), (3, 2), "{sans:?}");
    }

    #[test]
    fn invalid_names_are_refused() {
        let err = subject_alt_names(&["bad name".to_owned()]).unwrap_err();
        assert!(matches!(err, GenerateError::InvalidName { name } if name == "bad name"));
    }
}
