//! Loading an operator's PEM certificate chain and private key, with a typed error for each way
//! the files can be wrong.
//!
//! Checks, in order: both files read; the chain file holds at least one certificate; the key file
//! holds exactly one unencrypted private key of a supported kind; then, certificate by
//! certificate from the leaf, that it parses, that (for the leaf) its public key is the private
//! key's, and that it is valid at `now`. The chain is not verified against any trust anchor:
//! that is the clients' job.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair as _, RsaKeyPair,
};
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use x509_parser::der_parser::oid::Oid;

use crate::identity::{Identity, KeyAlgorithm, asn1_time_to_system, parse_certificate};

/// Why a PEM chain and key could not be loaded.
///
/// Every variant names the file at fault. Certificates are numbered from 0, the leaf.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, an I/O error).
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file has a PEM block that is cut short or not valid base64.
    #[error("{}: malformed PEM: {reason}", path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser objected to.
        reason: String,
    },
    /// The chain file holds no `CERTIFICATE` block.
    #[error("{}: no PEM CERTIFICATE block found", path.display())]
    NoCertificate {
        /// The chain file.
        path: PathBuf,
    },
    /// A `CERTIFICATE` block does not hold a parseable X.509 certificate.
    #[error("{}: certificate {index} is not valid X.509: {reason}", path.display())]
    InvalidCertificate {
        /// The chain file.
        path: PathBuf,
        /// Position in the chain, 0 for the leaf.
        index: usize,
        /// What the parser objected to.
        reason: String,
    },
    /// The key file holds no `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block.
    #[error("{}: no PEM private key block found", path.display())]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key file holds more than one private key, so which one to use is ambiguous.
    #[error("{}: {count} private keys found, expected one", path.display())]
    MultiplePrivateKeys {
        /// The key file.
        path: PathBuf,
        /// How many were found.
        count: usize,
    },
    /// The private key is encrypted, of an unsupported algorithm or curve, or malformed.
    /// Supported: ECDSA P-256 and P-384 (PKCS#8 or SEC1), Ed25519 (PKCS#8), RSA of 2048 bits or
    /// more (PKCS#8 or PKCS#1).
    #[error("{}: unsupported private key: {reason}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key's public key is not the one in the leaf certificate.
    #[error(
        "{}: the {key_algorithm} private key does not belong to the leaf certificate in {}",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        /// The chain file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
        /// The private key's algorithm.
        key_algorithm: KeyAlgorithm,
    },
    /// A certificate's `notAfter` is before `now`.
    #[error("{}: certificate {index} expired at {not_after:?} (now {now:?})", path.display())]
    Expired {
        /// The chain file.
        path: PathBuf,
        /// Position in the chain, 0 for the leaf.
        index: usize,
        /// The certificate's `notAfter`.
        not_after: SystemTime,
        /// The `now` the check used.
        now: SystemTime,
    },
    /// A certificate's `notBefore` is after `now`.
    #[error(
        "{}: certificate {index} is not valid before {not_before:?} (now {now:?})",
        path.display()
    )]
    NotYetValid {
        /// The chain file.
        path: PathBuf,
        /// Position in the chain, 0 for the leaf.
        index: usize,
        /// The certificate's `notBefore`.
        not_before: SystemTime,
        /// The `now` the check used.
        now: SystemTime,
    },
}

impl Identity {
    /// Loads a PEM certificate chain (leaf first; other PEM blocks are ignored) and a PEM private
    /// key, checks that they belong together and are valid at `now`, and computes the leaf's
    /// fingerprints. The same file may be given for both.
    ///
    /// The key is kept in the encoding the file had (PKCS#8, SEC1 or PKCS#1); rustls with the
    /// ring provider accepts all three.
    pub fn from_pem_files(
        cert_path: &Path,
        key_path: &Path,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        let chain = read_chain(cert_path)?;
        let key = read_key(key_path)?;
        let (key_algorithm, public_key) =
            public_key_of(&key).map_err(|reason| LoadError::UnsupportedKey {
                path: key_path.to_owned(),
                reason,
            })?;

        for (index, der) in chain.iter().enumerate() {
            let cert = parse_certificate(der).map_err(|reason| LoadError::InvalidCertificate {
                path: cert_path.to_owned(),
                index,
                reason,
            })?;
            if index == 0 && !spki_matches(cert.public_key(), key_algorithm, &public_key) {
                return Err(LoadError::KeyMismatch {
                    cert_path: cert_path.to_owned(),
                    key_path: key_path.to_owned(),
                    key_algorithm,
                });
            }
            let not_before = asn1_time_to_system(&cert.validity().not_before);
            let not_after = asn1_time_to_system(&cert.validity().not_after);
            if now < not_before {
                return Err(LoadError::NotYetValid {
                    path: cert_path.to_owned(),
                    index,
                    not_before,
                    now,
                });
            }
            if now > not_after {
                return Err(LoadError::Expired {
                    path: cert_path.to_owned(),
                    index,
                    not_after,
                    now,
                });
            }
        }

        Identity::assemble(chain, key, key_algorithm).map_err(|reason| {
            LoadError::InvalidCertificate {
                path: cert_path.to_owned(),
                index: 0,
                reason,
            }
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_owned(),
        },
        _ => LoadError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Every PEM section of a file, in order.
fn pem_sections(path: &Path, contents: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, LoadError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::MalformedPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let contents = read_file(path)?;
    let chain: Vec<CertificateDer<'static>> = pem_sections(path, &contents)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if chain.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let contents = read_file(path)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = pem_sections(path, &contents)?
        .into_iter()
        .filter_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some(PrivatePkcs8KeyDer::from(der).into()),
            SectionKind::EcPrivateKey => Some(PrivateSec1KeyDer::from(der).into()),
            SectionKind::RsaPrivateKey => Some(PrivatePkcs1KeyDer::from(der).into()),
            _ => None,
        })
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        // The PEM parser skips labels it does not know, such as an encrypted key.
        0 if contains(&contents, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            Err(LoadError::UnsupportedKey {
                path: path.to_owned(),
                reason: "the key is encrypted; decrypt it first (openssl pkey -in key.pem)".into(),
            })
        }
        0 => Err(LoadError::NoPrivateKey {
            path: path.to_owned(),
        }),
        count => Err(LoadError::MultiplePrivateKeys {
            path: path.to_owned(),
            count,
        }),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The key's algorithm and its public key in the form a certificate's SubjectPublicKeyInfo
/// carries in its BIT STRING: the uncompressed point for ECDSA, the 32 bytes for Ed25519, the
/// DER `RSAPublicKey` for RSA. The `Err` is a reason for [`LoadError::UnsupportedKey`].
///
/// PKCS#8 keys go through rcgen's `KeyPair` (which tries Ed25519, P-256, P-384 and RSA with
/// ring); PKCS#1 and SEC1 keys, which rcgen on ring does not read, go to ring directly. ring's
/// ECDSA constructors take an RNG for their consistency check: the system RNG, as for key
/// generation.
pub(crate) fn public_key_of(key: &PrivateKeyDer<'_>) -> Result<(KeyAlgorithm, Vec<u8>), String> {
    match key {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let pair = rcgen::KeyPair::try_from(key)
                .map_err(|_| describe_unsupported_pkcs8(pkcs8.secret_pkcs8_der()))?;
            let alg = pair.algorithm();
            let algorithm = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
                KeyAlgorithm::EcdsaP256
            } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
                KeyAlgorithm::EcdsaP384
            } else if alg == &rcgen::PKCS_ED25519 {
                KeyAlgorithm::Ed25519
            } else if alg == &rcgen::PKCS_RSA_SHA256 {
                KeyAlgorithm::Rsa
            } else {
                return Err(format!("PKCS#8 key for {alg:?} is not supported"));
            };
            Ok((algorithm, pair.public_key_raw().to_vec()))
        }
        PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
            .map(|pair| (KeyAlgorithm::Rsa, pair.public_key().as_ref().to_vec()))
            .map_err(|e| format!("PKCS#1 RSA key rejected: {e}")),
        PrivateKeyDer::Sec1(sec1) => {
            let curves: [(KeyAlgorithm, &'static EcdsaSigningAlgorithm, &[u8]); 2] = [
                (
                    KeyAlgorithm::EcdsaP256,
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    OID_P256,
                ),
                (
                    KeyAlgorithm::EcdsaP384,
                    &ECDSA_P384_SHA384_ASN1_SIGNING,
                    OID_P384,
                ),
            ];
            let rng = SystemRandom::new();
            for (algorithm, signing, curve) in curves {
                let pkcs8 = sec1_to_pkcs8(sec1.secret_sec1_der(), curve);
                if let Ok(pair) = EcdsaKeyPair::from_pkcs8(signing, &pkcs8, &rng) {
                    return Ok((algorithm, pair.public_key().as_ref().to_vec()));
                }
            }
            Err(
                "SEC1 EC key is not on P-256 or P-384, is malformed, or lacks its public key"
                    .into(),
            )
        }
        _ => Err("unknown private key encoding".into()),
    }
}

/// Whether a certificate's SubjectPublicKeyInfo holds `public_key` for `algorithm`.
fn spki_matches(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    algorithm: KeyAlgorithm,
    public_key: &[u8],
) -> bool {
    let expected_oid: &[u8] = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => OID_EC_PUBLIC_KEY,
        KeyAlgorithm::Ed25519 => OID_ED25519,
        KeyAlgorithm::Rsa => OID_RSA_ENCRYPTION,
    };
    // The curve is implied by the point: equal points are on the same curve.
    spki.algorithm.algorithm.as_bytes() == expected_oid
        && spki.subject_public_key.data.as_ref() == public_key
}

// Object identifier contents (the bytes after tag and length).
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 / secp256r1, 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519, 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` for the named curve (RFC 5915
/// section 3 describes this nesting), so ring can read it:
///
/// ```text
/// PrivateKeyInfo ::= SEQUENCE { version INTEGER (0),
///     algorithm SEQUENCE { id-ecPublicKey, namedCurve OID }, privateKey OCTET STRING }
/// ```
///
/// ring checks the SEC1 `parameters`, if present, against `curve` and requires the optional
/// `publicKey`, which OpenSSL always writes.
fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let mut algorithm = der_tlv(0x06, OID_EC_PUBLIC_KEY);
    algorithm.extend(der_tlv(0x06, curve));
    let mut info = der_tlv(0x02, &[0]);
    info.extend(der_tlv(0x30, &algorithm));
    info.extend(der_tlv(0x04, sec1));
    der_tlv(0x30, &info)
}

/// One DER tag-length-value with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    match u8::try_from(content.len()) {
        Ok(len) if len < 0x80 => out.push(len),
        _ => {
            let len = content.len().to_be_bytes();
            let skip = len.iter().take_while(|&&b| b == 0).count();
            let octets = &len[skip..];
            // At most size_of::<usize>() octets, so this fits the 7-bit count.
            out.push(0x80 | u8::try_from(octets.len()).unwrap_or(0x7f));
            out.extend_from_slice(octets);
        }
    }
    out.extend_from_slice(content);
    out
}

/// Names the algorithm of a PKCS#8 key that was refused, for the error message.
fn describe_unsupported_pkcs8(der: &[u8]) -> String {
    let supported = "supported: ECDSA P-256/P-384, Ed25519, RSA of 2048 bits or more";
    let Some((algorithm, parameter)) = pkcs8_algorithm(der) else {
        return format!("PKCS#8 key is malformed; {supported}");
    };
    let name = |oid: &Oid<'_>| match oid.as_bytes() {
        OID_EC_PUBLIC_KEY => "EC".to_owned(),
        OID_RSA_ENCRYPTION => "RSA".to_owned(),
        OID_ED25519 => "Ed25519".to_owned(),
        [0x2b, 0x65, 0x6e] => "X25519".to_owned(),
        [0x2b, 0x65, 0x6f] => "X448".to_owned(),
        [0x2b, 0x65, 0x71] => "Ed448".to_owned(),
        [0x2b, 0x81, 0x04, 0x00, 0x23] => "P-521".to_owned(),
        [0x2b, 0x81, 0x04, 0x00, 0x0a] => "secp256k1".to_owned(),
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA".to_owned(),
        _ => oid.to_id_string(),
    };
    match parameter {
        Some(curve) if algorithm.as_bytes() == OID_EC_PUBLIC_KEY => {
            format!(
                "PKCS#8 EC key on curve {} is not supported; {supported}",
                name(&curve)
            )
        }
        _ => format!(
            "PKCS#8 key of type {} was rejected (wrong type, too small or malformed); {supported}",
            name(&algorithm)
        ),
    }
}

/// The algorithm OID of a PKCS#8 `PrivateKeyInfo` and its parameter, if that is an OID too.
fn pkcs8_algorithm(der: &[u8]) -> Option<(Oid<'static>, Option<Oid<'static>>)> {
    let (_, info) = x509_parser::der_parser::parse_der(der).ok()?;
    let info = info.as_sequence().ok()?;
    let algorithm = info.get(1)?.as_sequence().ok()?;
    let oid = algorithm.first()?.as_oid().ok()?.to_owned();
    let parameter = algorithm
        .get(1)
        .and_then(|p| p.as_oid().ok())
        .map(|p| p.to_owned());
    Some((oid, parameter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        let long = der_tlv(0x04, &[0; 0x80]);
        assert_eq!(&long[..3], &[0x04, 0x81, 0x80]);
        assert_eq!(long.len(), 3 + 0x80);
        let longer = der_tlv(0x04, &[0; 0x1234]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn sec1_inside_a_generated_pkcs8_key_round_trips() {
        // ring's PKCS#8 for P-256 nests a SEC1 ECPrivateKey (with its public key); unwrap it and
        // wrap it again, and the public key must come out the same.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = pair.serialize_der();
        let (_, info) = x509_parser::der_parser::parse_der(&pkcs8).unwrap();
        let sec1 = info.as_sequence().unwrap()[2].as_slice().unwrap().to_vec();
        let key = PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(sec1));
        let (algorithm, public) = public_key_of(&key).unwrap();
        assert_eq!(algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(public, pair.public_key_raw());
    }

    #[test]
    fn names_unsupported_pkcs8_algorithms() {
        // A syntactically valid X25519 PKCS#8 key (RFC 8410 section 10.3 layout).
        let mut x25519 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22,
            0x04, 0x20,
        ];
        x25519.extend([0x11; 32]);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(x25519));
        let reason = public_key_of(&key).unwrap_err();
        assert!(reason.contains("X25519"), "{reason}");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![1, 2, 3]));
        assert!(public_key_of(&key).unwrap_err().contains("malformed"));
    }
}
