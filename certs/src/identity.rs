//! The TLS identity: certificate chain, private key and the facts derived from the leaf.

use std::fmt;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::fingerprint::Fingerprint;

/// The algorithm of an identity's private key.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 (secp256r1). The only kind browsers accept for
    /// `serverCertificateHashes`, and what [`Identity::generate_dev`](crate::Identity::generate_dev)
    /// mints.
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048 bits or more.
    Rsa,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::Ed25519 => "Ed25519",
            Self::Rsa => "RSA",
        })
    }
}

/// The public facts about an identity: what to publish and when it is valid.
///
/// Holds no secret, is `Copy`, and is all that [`RotationPolicy`](crate::RotationPolicy) needs,
/// so rotation can be reasoned about (and tested) without any key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityInfo {
    /// SHA-256 of the leaf certificate's DER: the value for WebTransport
    /// `serverCertificateHashes` and for clients that pin the certificate.
    pub fingerprint: Fingerprint,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER: the value for Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub spki_fingerprint: Fingerprint,
    /// The leaf's `notBefore` (whole seconds, as the certificate stores it).
    pub not_before: SystemTime,
    /// The leaf's `notAfter` (whole seconds, as the certificate stores it).
    pub not_after: SystemTime,
}

impl IdentityInfo {
    /// Whether `now` lies in `[not_before, not_after]`, the inclusive validity of RFC 5280.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The time left until `not_after`, zero once it has passed.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// The length of the validity period, `not_after - not_before` (zero if inverted).
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }
}

impl AsRef<IdentityInfo> for IdentityInfo {
    fn as_ref(&self) -> &IdentityInfo {
        self
    }
}

/// A certificate chain (leaf first) and the leaf's private key, with the leaf's fingerprints and
/// validity computed once.
///
/// Made by [`Identity::generate_dev`] (a self-signed ECDSA P-256 development certificate) or
/// [`Identity::from_pem_files`] (an operator's chain and key). Hand it to rustls with
/// [`into_parts`](Self::into_parts) or [`to_parts`](Self::to_parts); the pair fits
/// `rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key)`.
///
/// `Debug` never prints the private key. [`private_key_pem`](Self::private_key_pem) does: keep
/// its output out of logs.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_algorithm: KeyAlgorithm,
    info: IdentityInfo,
}

impl Identity {
    /// Assembles an identity whose key is already known to match the leaf, computing the leaf's
    /// fingerprints and validity. Fails with a reason if the leaf does not parse.
    pub(crate) fn assemble(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        key_algorithm: KeyAlgorithm,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("empty certificate chain")?;
        let parsed = parse_certificate(leaf)?;
        let info = IdentityInfo {
            fingerprint: Fingerprint::of(leaf.as_ref()),
            spki_fingerprint: Fingerprint::of(parsed.public_key().raw),
            not_before: asn1_time_to_system(&parsed.validity().not_before),
            not_after: asn1_time_to_system(&parsed.validity().not_after),
        };
        Ok(Self {
            chain,
            key,
            key_algorithm,
            info,
        })
    }

    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `assemble` refuses an empty chain.
        &self.chain[0]
    }

    /// The private key, in the encoding it was loaded or generated in (PKCS#8 for generated keys).
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The private key's algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// The public facts: fingerprints and validity.
    pub fn info(&self) -> IdentityInfo {
        self.info
    }

    /// SHA-256 of the leaf certificate's DER (for `serverCertificateHashes` and pinning clients).
    pub fn fingerprint(&self) -> Fingerprint {
        self.info.fingerprint
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER (for `--ignore-certificate-errors-spki-list`).
    pub fn spki_fingerprint(&self) -> Fingerprint {
        self.info.spki_fingerprint
    }

    /// The leaf's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.info.not_before
    }

    /// The leaf's `notAfter`.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    /// Copies of the chain and key, in the types rustls takes.
    pub fn to_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }

    /// The chain and key, in the types rustls takes.
    pub fn into_parts(self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain, self.key)
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first.
    pub fn cert_chain_pem(&self) -> String {
        let mut out = String::new();
        for cert in &self.chain {
            push_pem(&mut out, "CERTIFICATE", cert.as_ref());
        }
        out
    }

    /// The private key as one PEM block labelled for its encoding (`PRIVATE KEY` for PKCS#8,
    /// `EC PRIVATE KEY` for SEC1, `RSA PRIVATE KEY` for PKCS#1). This is the secret: do not log it.
    pub fn private_key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        let mut out = String::new();
        push_pem(&mut out, label, self.key.secret_der());
        out
    }

    /// Writes [`cert_chain_pem`](Self::cert_chain_pem) and
    /// [`private_key_pem`](Self::private_key_pem) to two files, replacing them if they exist. On
    /// Unix the key file is created readable by its owner only (mode 0600).
    pub fn write_pem_files(&self, cert_path: &Path, key_path: &Path) -> io::Result<()> {
        std::fs::write(cert_path, self.cert_chain_pem())?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            options.mode(0o600);
            let mut file = options.open(key_path)?;
            // `mode` only applies when the file is created; tighten an existing file too.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(self.private_key_pem().as_bytes())?;
            file.sync_all()
        }
        #[cfg(not(unix))]
        {
            let mut file = options.open(key_path)?;
            file.write_all(self.private_key_pem().as_bytes())?;
            file.sync_all()
        }
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        let (chain, key) = self.to_parts();
        Self {
            chain,
            key,
            key_algorithm: self.key_algorithm,
            info: self.info,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.info.fingerprint)
            .field("spki_fingerprint", &self.info.spki_fingerprint)
            .field("not_before", &self.info.not_before)
            .field("not_after", &self.info.not_after)
            .field("chain_len", &self.chain.len())
            .field("key_algorithm", &self.key_algorithm)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl AsRef<IdentityInfo> for Identity {
    fn as_ref(&self) -> &IdentityInfo {
        &self.info
    }
}

/// Parses one certificate, insisting that the DER has no trailing bytes.
pub(crate) fn parse_certificate<'a>(
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, String> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Converts a certificate time (whole seconds since the epoch) to a `SystemTime`.
pub(crate) fn asn1_time_to_system(time: &x509_parser::time::ASN1Time) -> SystemTime {
    from_unix_seconds(time.timestamp())
}

/// `UNIX_EPOCH + secs`, for negative `secs` too.
pub(crate) fn from_unix_seconds(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Whole seconds since the epoch, rounded towards the past (so a time with a fraction of a
/// second maps to the second it falls in). `None` outside `i64`.
pub(crate) fn unix_seconds_floor(time: SystemTime) -> Option<i64> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).ok()?;
            let extra = i64::from(before.subsec_nanos() > 0);
            whole.checked_add(extra).map(|s| -s)
        }
    }
}

fn push_pem(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let encoded = STANDARD.encode(der);
    // RFC 7468: base64 lines of exactly 64 characters except the last. Base64 is ASCII, so byte
    // chunks are character chunks.
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_towards_the_past() {
        let t = UNIX_EPOCH + Duration::new(100, 500);
        assert_eq!(unix_seconds_floor(t), Some(100));
        let t = UNIX_EPOCH - Duration::new(100, 500);
        assert_eq!(unix_seconds_floor(t), Some(-101));
        assert_eq!(
            unix_seconds_floor(UNIX_EPOCH - Duration::from_secs(7)),
            Some(-7)
        );
        assert_eq!(from_unix_seconds(-7), UNIX_EPOCH - Duration::from_secs(7));
        assert_eq!(from_unix_seconds(7), UNIX_EPOCH + Duration::from_secs(7));
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let mut out = String::new();
        push_pem(&mut out, "X", &[0u8; 100]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN X-----"));
        assert_eq!(lines.last(), Some(&"-----END X-----"));
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        let body: Vec<usize> = lines[1..lines.len() - 1].iter().map(|l| l.len()).collect();
        assert_eq!(body, [64, 64, 8]);
    }

    #[test]
    fn info_helpers() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let info = IdentityInfo {
            fingerprint: Fingerprint::from_bytes([1; 32]),
            spki_fingerprint: Fingerprint::from_bytes([2; 32]),
            not_before: start,
            not_after: start + Duration::from_secs(10),
        };
        assert!(!info.is_valid_at(start - Duration::from_nanos(1)));
        assert!(info.is_valid_at(start));
        assert!(info.is_valid_at(info.not_after));
        assert!(!info.is_valid_at(info.not_after + Duration::from_nanos(1)));
        assert_eq!(info.remaining(start), Duration::from_secs(10));
        assert_eq!(
            info.remaining(start + Duration::from_secs(20)),
            Duration::ZERO
        );
        assert_eq!(info.lifetime(), Duration::from_secs(10));
    }
}
