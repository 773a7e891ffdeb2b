//! TLS client configuration on the `ring` provider, and the certificate-hash verifier.
//!
//! [`HashVerifier`] is the native counterpart of the browser's `serverCertificateHashes`: the
//! server's leaf certificate is accepted when the SHA-256 of its DER encoding is one of the pinned
//! hashes, and the handshake signature is then verified with that certificate's public key, so a
//! peer that merely replays the certificate without its private key is refused.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::Trust;
use crate::error::ClientError;

/// ALPN of raw QUIC sessions.
pub const ALPN_STRAIT: &[u8] = b"strait/1";
/// ALPN of WebTransport (HTTP/3).
pub const ALPN_H3: &[u8] = b"h3";

/// SHA-256 of a certificate's DER encoding: the value to put in [`Trust::Hashes`].
#[must_use]
pub fn certificate_hash(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Accepts exactly a leaf whose SHA-256 is pinned; verifies handshake signatures with `ring`.
#[derive(Debug)]
pub(crate) struct HashVerifier {
    hashes: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl HashVerifier {
    pub(crate) fn new(hashes: Vec<[u8; 32]>, provider: &CryptoProvider) -> Self {
        Self {
            hashes,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for HashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin replaces chain, name and date checks, as `serverCertificateHashes` does; the
        // gateway keeps such certificates short-lived (<= 14 days) and rotates them.
        let hash = certificate_hash(end_entity.as_ref());
        if self.hashes.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client configuration on `ring` with the given trust and ALPN.
pub fn client_config(trust: &Trust, alpn: &[u8]) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Hashes(hashes) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(HashVerifier::new(
                hashes.clone(),
                &provider,
            )))
            .with_no_client_auth(),
        Trust::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_der() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let h = certificate_hash(b"abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(h[28..], [0xf2, 0x00, 0x15, 0xad]);
    }

    #[test]
    fn verifier_refuses_unpinned_leaf() {
        let provider = rustls::crypto::ring::default_provider();
        let v = HashVerifier::new(vec![certificate_hash(b"pinned")], &provider);
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1));
        assert!(
            v.verify_server_cert(&CertificateDer::from(&b"pinned"[..]), &[], &name, &[], now)
                .is_ok()
        );
        assert!(
            v.verify_server_cert(&CertificateDer::from(&b"other"[..]), &[], &name, &[], now)
                .is_err()
        );
    }
}
