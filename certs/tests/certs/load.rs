//! Loading PEM chains and keys: every supported key kind and every error.

use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use strait_certs::{DevIdentityConfig, Identity, KeyAlgorithm, LoadError};

use crate::support::{
    DAY, P256_PKCS8, P256_SEC1, P384_PKCS8, P384_SEC1, RSA_PKCS1, RSA_PKCS8, params,
    rustls_accepts, self_signed_pem, t0, write,
};

fn load(cert: &Path, key: &Path) -> Result<Identity, LoadError> {
    Identity::from_pem_files(cert, key, t0())
}

/// A certificate for `signing_key_pem` (PKCS#8), loaded with `key_file_pem` as the key file.
fn load_key_kind(signing_key_pem: &str, key_file_pem: &str) -> Identity {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::from_pem(signing_key_pem).unwrap();
    let cert = write(
        dir.path(),
        "cert.pem",
        self_signed_pem(&key, t0() - DAY, t0() + DAY),
    );
    let key = write(dir.path(), "key.pem", key_file_pem);
    load(&cert, &key).unwrap()
}

fn dev_identity() -> Identity {
    Identity::generate_dev(&DevIdentityConfig::default(), t0()).unwrap()
}

#[test]
fn loads_every_supported_key_kind() {
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap()
        .serialize_pem();
    let cases = [
        (
            "P-256 PKCS#8",
            P256_PKCS8,
            P256_PKCS8,
            KeyAlgorithm::EcdsaP256,
        ),
        ("P-256 SEC1", P256_PKCS8, P256_SEC1, KeyAlgorithm::EcdsaP256),
        (
            "P-384 PKCS#8",
            P384_PKCS8,
            P384_PKCS8,
            KeyAlgorithm::EcdsaP384,
        ),
        ("P-384 SEC1", P384_PKCS8, P384_SEC1, KeyAlgorithm::EcdsaP384),
        ("P-384 generated", &p384, &p384, KeyAlgorithm::EcdsaP384),
        ("Ed25519 PKCS#8", &ed25519, &ed25519, KeyAlgorithm::Ed25519),
        ("RSA PKCS#8", RSA_PKCS8, RSA_PKCS8, KeyAlgorithm::Rsa),
        ("RSA PKCS#1", RSA_PKCS8, RSA_PKCS1, KeyAlgorithm::Rsa),
    ];
    for (name, signing, file, algorithm) in cases {
        let identity = load_key_kind(signing, file);
        assert_eq!(identity.key_algorithm(), algorithm, "{name}");
        rustls_accepts(&identity).unwrap_or_else(|e| panic!("{name}: rustls refused: {e}"));
        // The key keeps its encoding, and exports under the matching label.
        let label = file.lines().next().unwrap();
        assert!(identity.private_key_pem().starts_with(label), "{name}");
    }
}

#[test]
fn loads_a_chain_leaf_first() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = params(t0() - DAY, t0() + 30 * DAY);
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = params(t0() - DAY, t0() + DAY)
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let cert = write(
        dir.path(),
        "chain.pem",
        format!("{}{}", leaf.pem(), ca_cert.pem()),
    );
    let key = write(dir.path(), "key.pem", leaf_key.serialize_pem());
    let identity = load(&cert, &key).unwrap();
    assert_eq!(identity.cert_chain().len(), 2);
    assert_eq!(identity.leaf(), leaf.der());
    assert_eq!(
        identity.fingerprint(),
        strait_certs::Fingerprint::of(leaf.der())
    );
    rustls_accepts(&identity).unwrap();
}

#[test]
fn one_combined_file_serves_as_both() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dev_identity();
    let both = write(
        dir.path(),
        "both.pem",
        format!(
            "{}{}",
            identity.private_key_pem(),
            identity.cert_chain_pem()
        ),
    );
    assert_eq!(
        load(&both, &both).unwrap().fingerprint(),
        identity.fingerprint()
    );
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dev_identity();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let err = load(&cert, &key).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotFound { path } if *path == cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("cert.pem"), "{err}");

    std::fs::write(&cert, identity.cert_chain_pem()).unwrap();
    let err = load(&cert, &key).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotFound { path } if *path == key),
        "{err:?}"
    );
}

#[test]
fn unreadable_file_is_reported_with_its_error() {
    // Root can read any file, so a directory stands in for an unreadable one.
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "key.pem", dev_identity().private_key_pem());
    let err = load(dir.path(), &key).unwrap_err();
    assert!(
        matches!(&err, LoadError::Unreadable { path, .. } if path == dir.path()),
        "{err:?}"
    );
}

#[test]
fn garbage_holds_no_certificate_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(
        dir.path(),
        "garbage",
        b"\x00\xffnot pem at all\n\x13\x37".repeat(10),
    );
    let identity = dev_identity();
    let key = write(dir.path(), "key.pem", identity.private_key_pem());
    let cert = write(dir.path(), "cert.pem", identity.cert_chain_pem());

    let err = load(&garbage, &key).unwrap_err();
    assert!(
        matches!(&err, LoadError::NoCertificate { path } if *path == garbage),
        "{err:?}"
    );
    let err = load(&cert, &garbage).unwrap_err();
    assert!(
        matches!(&err, LoadError::NoPrivateKey { path } if *path == garbage),
        "{err:?}"
    );
    let empty = write(dir.path(), "empty", "");
    assert!(matches!(
        load(&empty, &key),
        Err(LoadError::NoCertificate { .. })
    ));
}

#[test]
fn swapped_files_hold_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dev_identity();
    let key = write(dir.path(), "key.pem", identity.private_key_pem());
    let cert = write(dir.path(), "cert.pem", identity.cert_chain_pem());
    assert!(matches!(
        load(&key, &cert),
        Err(LoadError::NoCertificate { .. })
    ));
}

#[test]
fn broken_pem_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "key.pem", dev_identity().private_key_pem());
    let unterminated = write(dir.path(), "a.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let err = load(&unterminated, &key).unwrap_err();
    assert!(matches!(&err, LoadError::MalformedPem { path, .. } if *path == unterminated));
    let bad_base64 = write(
        dir.path(),
        "b.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    assert!(matches!(
        load(&bad_base64, &key),
        Err(LoadError::MalformedPem { .. })
    ));
}

#[test]
fn certificate_block_with_garbage_inside_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "key.pem", dev_identity().private_key_pem());
    let cert = write(
        dir.path(),
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let err = load(&cert, &key).unwrap_err();
    assert!(
        matches!(err, LoadError::InvalidCertificate { index: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn two_keys_are_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dev_identity();
    let cert = write(dir.path(), "cert.pem", identity.cert_chain_pem());
    let keys = format!(
        "{}{}",
        identity.private_key_pem(),
        dev_identity().private_key_pem()
    );
    let key = write(dir.path(), "key.pem", keys);
    let err = load(&cert, &key).unwrap_err();
    assert!(
        matches!(err, LoadError::MultiplePrivateKeys { count: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn encrypted_and_unsupported_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", dev_identity().cert_chain_pem());

    let encrypted = write(
        dir.path(),
        "enc.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = load(&cert, &encrypted).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnsupportedKey { reason, .. } if reason.contains("encrypted")),
        "{err:?}"
    );

    // An X25519 key is a valid PKCS#8 key that cannot sign.
    let x25519 = write(
        dir.path(),
        "x25519.pem",
        "-----BEGIN PRIVATE KEY-----\n\
         MC4CAQAwBQYDK2VuBCIEIBERERERERERERERERERERERERERERERERERERERERER\n\
         -----END PRIVATE KEY-----\n",
    );
    let err = load(&cert, &x25519).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnsupportedKey { reason, .. } if reason.contains("X25519")),
        "{err:?}"
    );

    let junk_key = write(
        dir.path(),
        "junk.pem",
        "-----BEGIN EC PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END EC PRIVATE KEY-----\n",
    );
    assert!(matches!(
        load(&cert, &junk_key),
        Err(LoadError::UnsupportedKey { .. })
    ));
}

#[test]
fn a_key_that_is_not_the_leafs_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", dev_identity().cert_chain_pem());
    let other_p256 = write(dir.path(), "p256.pem", dev_identity().private_key_pem());
    let err = load(&cert, &other_p256).unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::KeyMismatch { cert_path, key_path, key_algorithm: KeyAlgorithm::EcdsaP256 }
                if *cert_path == cert && *key_path == other_p256
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("p256.pem"), "{err}");

    for other in [RSA_PKCS1, RSA_PKCS8, P384_SEC1] {
        let key = write(dir.path(), "other.pem", other);
        let err = load(&cert, &key).unwrap_err();
        assert!(matches!(err, LoadError::KeyMismatch { .. }), "{err:?}");
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let key = write(dir.path(), "key.pem", key_pair.serialize_pem());

    let expired = write(
        dir.path(),
        "expired.pem",
        self_signed_pem(&key_pair, t0() - 20 * DAY, t0() - DAY),
    );
    let err = load(&expired, &key).unwrap_err();
    assert!(
        matches!(err, LoadError::Expired { index: 0, .. }),
        "{err:?}"
    );

    let future = write(
        dir.path(),
        "future.pem",
        self_signed_pem(&key_pair, t0() + DAY, t0() + 20 * DAY),
    );
    let err = load(&future, &key).unwrap_err();
    assert!(
        matches!(err, LoadError::NotYetValid { index: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn validity_bounds_are_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let key = write(dir.path(), "key.pem", key_pair.serialize_pem());
    let start = crate::support::t0_floor();
    let end = start + DAY;
    let cert = write(
        dir.path(),
        "cert.pem",
        self_signed_pem(&key_pair, start, end),
    );
    let second = Duration::from_secs(1);

    assert!(Identity::from_pem_files(&cert, &key, start).is_ok());
    assert!(Identity::from_pem_files(&cert, &key, end).is_ok());
    assert!(matches!(
        Identity::from_pem_files(&cert, &key, start - second),
        Err(LoadError::NotYetValid { not_before, .. }) if not_before == start
    ));
    assert!(matches!(
        Identity::from_pem_files(&cert, &key, end + second),
        Err(LoadError::Expired { not_after, .. }) if not_after == end
    ));
}

#[test]
fn an_expired_intermediate_is_named_by_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params: CertificateParams = params(t0() - 30 * DAY, t0() - DAY);
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = params(t0() - DAY, t0() + DAY)
        .signed_by(&leaf_key, &Issuer::new(ca_params, &ca_key))
        .unwrap();
    let cert = write(
        dir.path(),
        "chain.pem",
        format!("{}{}", leaf.pem(), ca_cert.pem()),
    );
    let key = write(dir.path(), "key.pem", leaf_key.serialize_pem());
    let err = load(&cert, &key).unwrap_err();
    assert!(
        matches!(err, LoadError::Expired { index: 1, .. }),
        "{err:?}"
    );
}
