//! Development identities: validity, names, key type, fingerprints, export.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use strait_certs::{
    DevIdentityConfig, Fingerprint, GenerateError, Identity, KeyAlgorithm, MAX_DEV_VALIDITY,
};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::support::{DAY, HOUR, rustls_accepts, t0, t0_floor};

fn dev(names: &[&str]) -> Identity {
    let config = DevIdentityConfig {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    };
    Identity::generate_dev(&config, t0()).unwrap()
}

fn secs(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[test]
fn validity_starts_one_hour_back_and_lasts_at_most_14_days() {
    let identity = dev(&[]);
    let (_, cert) = X509Certificate::from_der(identity.leaf()).unwrap();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();

    assert_eq!(not_before, secs(t0_floor()) - 3600);
    assert_eq!(not_after - not_before, 14 * 24 * 3600);
    assert_eq!(identity.not_before(), t0_floor() - HOUR);
    assert_eq!(identity.not_after(), t0_floor() - HOUR + MAX_DEV_VALIDITY);
    assert!(identity.info().lifetime() <= 14 * DAY);
    assert!(identity.info().is_valid_at(t0()));
}

#[test]
fn shorter_validity_is_honoured() {
    let config = DevIdentityConfig {
        validity: 2 * DAY + Duration::from_millis(900),
        ..Default::default()
    };
    let identity = Identity::generate_dev(&config, t0()).unwrap();
    assert_eq!(identity.info().lifetime(), 2 * DAY);
    assert_eq!(identity.not_before(), t0_floor() - HOUR);
}

#[test]
fn validity_outside_the_browser_limits_is_refused() {
    let too_long = DevIdentityConfig {
        validity: MAX_DEV_VALIDITY + Duration::from_secs(1),
        ..Default::default()
    };
    assert!(matches!(
        Identity::generate_dev(&too_long, t0()),
        Err(GenerateError::ValidityTooLong { .. })
    ));
    let too_short = DevIdentityConfig {
        validity: HOUR,
        ..Default::default()
    };
    assert!(matches!(
        Identity::generate_dev(&too_short, t0()),
        Err(GenerateError::ValidityTooShort { .. })
    ));
}

#[test]
fn default_and_configured_names_are_in_the_san() {
    let identity = dev(&["gw.example", "192.0.2.7", "localhost"]);
    let (_, cert) = X509Certificate::from_der(identity.leaf()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(dns, ["localhost", "gw.example"]);
    let expected: Vec<IpAddr> = ["127.0.0.1", "::1", "192.0.2.7"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ips, expected);
}

#[test]
fn invalid_configured_name_is_refused() {
    let config = DevIdentityConfig {
        names: vec!["not a host".to_owned()],
        ..Default::default()
    };
    assert!(matches!(
        Identity::generate_dev(&config, t0()),
        Err(GenerateError::InvalidName { name }) if name == "not a host"
    ));
}

#[test]
fn key_is_ecdsa_p256() {
    let identity = dev(&[]);
    assert_eq!(identity.key_algorithm(), KeyAlgorithm::EcdsaP256);
    let (_, cert) = X509Certificate::from_der(identity.leaf()).unwrap();
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);
    assert_eq!(
        spki.subject_public_key.data.len(),
        65,
        "uncompressed P-256 point"
    );
    assert_eq!(
        cert.signature_algorithm.algorithm,
        OID_SIG_ECDSA_WITH_SHA256
    );

    // The private key is PKCS#8 that ring reads as P-256.
    let rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8) = identity.private_key() else {
        panic!("generated key is not PKCS#8");
    };
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.secret_pkcs8_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
}

#[test]
fn fingerprints_are_sha256_of_the_leaf_and_its_spki() {
    let identity = dev(&[]);
    let der = identity.leaf().as_ref();
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    assert_eq!(
        identity.fingerprint().as_bytes().as_slice(),
        digest.as_ref()
    );
    assert_eq!(identity.fingerprint(), Fingerprint::of(der));
    assert_eq!(identity.info().fingerprint, identity.fingerprint());

    let (_, cert) = X509Certificate::from_der(der).unwrap();
    assert_eq!(
        identity.spki_fingerprint(),
        Fingerprint::of(cert.public_key().raw)
    );
    assert_ne!(identity.spki_fingerprint(), identity.fingerprint());
}

#[test]
fn every_identity_has_its_own_key() {
    let a = dev(&[]);
    let b = dev(&[]);
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.spki_fingerprint(), b.spki_fingerprint());
}

#[test]
fn rustls_accepts_a_dev_identity() {
    rustls_accepts(&dev(&["gw.example"])).unwrap();
}

#[test]
fn debug_never_prints_the_key() {
    let identity = dev(&[]);
    let debug = format!("{identity:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(
        debug.contains(&identity.fingerprint().to_hex_colon()),
        "{debug}"
    );
    let key_b64: String = identity
        .private_key_pem()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!debug.contains(&key_b64), "{debug}");
    assert!(!format!("{:#?}", identity.clone()).contains(&key_b64));
}

#[test]
fn pem_round_trip_keeps_everything() {
    let identity = dev(&["gw.example"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    identity.write_pem_files(&cert_path, &key_path).unwrap();

    let cert_text = std::fs::read_to_string(&cert_path).unwrap();
    assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let loaded = Identity::from_pem_files(&cert_path, &key_path, t0()).unwrap();
    assert_eq!(loaded.fingerprint(), identity.fingerprint());
    assert_eq!(loaded.info(), identity.info());
    assert_eq!(loaded.cert_chain(), identity.cert_chain());
    assert_eq!(
        loaded.private_key().secret_der(),
        identity.private_key().secret_der()
    );
    assert_eq!(loaded.key_algorithm(), KeyAlgorithm::EcdsaP256);
    assert_eq!(
        loaded.fingerprint(),
        Fingerprint::of(loaded.leaf().as_ref())
    );
}

#[test]
fn parts_are_what_rustls_takes() {
    let identity = dev(&[]);
    let (chain, key) = identity.clone().into_parts();
    assert_eq!(chain.as_slice(), identity.cert_chain());
    assert_eq!(key.secret_der(), identity.private_key().secret_der());
}
