//! Fixture builders shared by the test modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair};
use strait_certs::Identity;
use time::OffsetDateTime;

pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

/// A fixed "now" with a fractional second, so rounding shows.
pub(crate) fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_750_000_000, 123_456_789)
}

/// `t0()` rounded down to the second.
pub(crate) fn t0_floor() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

pub(crate) fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

pub(crate) const RSA_PKCS8: &str = include_str!("../fixtures/rsa2048.pkcs8.pem");
pub(crate) const RSA_PKCS1: &str = include_str!("../fixtures/rsa2048.pkcs1.pem");
pub(crate) const P256_PKCS8: &str = include_str!("../fixtures/p256.pkcs8.pem");
pub(crate) const P256_SEC1: &str = include_str!("../fixtures/p256.sec1.pem");
pub(crate) const P384_PKCS8: &str = include_str!("../fixtures/p384.pkcs8.pem");
pub(crate) const P384_SEC1: &str = include_str!("../fixtures/p384.sec1.pem");

/// Certificate parameters for `localhost` valid over `[not_before, not_after]`.
pub(crate) fn params(not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params
}

/// A self-signed certificate (PEM) for `key` valid over `[not_before, not_after]`.
pub(crate) fn self_signed_pem(
    key: &KeyPair,
    not_before: SystemTime,
    not_after: SystemTime,
) -> String {
    params(not_before, not_after)
        .self_signed(key)
        .unwrap()
        .pem()
}

/// Whether rustls (ring provider) accepts the identity as a server certificate; rustls also
/// checks that the key matches the leaf.
pub(crate) fn rustls_accepts(identity: &Identity) -> Result<(), rustls::Error> {
    let (chain, key) = identity.to_parts();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map(drop)
}
