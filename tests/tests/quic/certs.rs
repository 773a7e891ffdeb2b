//! Development certificates rotate without dropping sessions: the next certificate's hash is
//! published before it is served, new connections get it, existing sessions go on.

use std::time::{Duration, SystemTime};

use strait_certs::RotationPolicy;
use strait_client::{Client, Transport, Trust};
use strait_tests::fixture::{TestGateway, WAIT, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_both_hashes_and_keeps_sessions() {
    let gw = TestGateway::start().await;
    let old = gw.gateway.cert_fingerprint();
    let session = gw.native("rotate", "alice").await;

    // Drive the rotation policy as if eleven days had passed: mint, publish, then serve the next.
    let policy = RotationPolicy::default();
    let later = SystemTime::now() + Duration::from_secs(11 * 24 * 3600);
    let mut steps = 0;
    while gw.gateway.cert_fingerprint() == old {
        gw.gateway
            .rotate_certificates(&policy, later)
            .expect("rotation step");
        steps += 1;
        assert!(
            steps < 10,
            "the policy promotes the next certificate within a few steps"
        );
    }
    let new = gw.gateway.cert_fingerprint();
    assert_ne!(new, old);

    // Both hashes are published while the old certificate is still valid.
    let hashes = http_get(gw.http_addr(), "/v1/cert-hashes").await;
    assert!(
        hashes.contains(&old.to_base64()),
        "old hash still published: {hashes}"
    );
    assert!(
        hashes.contains(&new.to_base64()),
        "new hash published: {hashes}"
    );

    // The session made with the old certificate goes on.
    session.ping().await.expect("existing session unaffected");

    // A new connection gets the new certificate: pinning only the old hash fails, the new works.
    let mut stale = gw.client_config(Transport::Quic, gw.token("rotate", "bob"));
    stale.trust = Trust::Hashes(vec![*old.as_bytes()]);
    stale.auto_resume = false;
    let refused = tokio::time::timeout(WAIT, Client::connect(stale))
        .await
        .expect("answer");
    assert!(
        refused.is_err(),
        "a client pinning only the old hash is refused"
    );
    let mut fresh = gw.client_config(Transport::Quic, gw.token("rotate", "bob"));
    fresh.trust = Trust::Hashes(vec![*new.as_bytes()]);
    let bob = tokio::time::timeout(WAIT, Client::connect(fresh))
        .await
        .expect("answer")
        .expect("a client pinning the new hash connects");
    bob.close().await;
    session.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_certificate_from_files_is_served_and_not_offered_for_pinning() {
    // A 90-day certificate, as a CA would issue (self-signed here), written as PEM files.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    let cert = params.self_signed(&key).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");

    let gw = TestGateway::start_with(|c| {
        c.tls.cert = Some(cert_path.clone());
        c.tls.key = Some(key_path.clone());
    })
    .await;
    let served = gw.gateway.cert_fingerprint();
    assert_eq!(
        served,
        strait_certs::Fingerprint::of(cert.der()),
        "the configured certificate is served"
    );
    // Browsers refuse serverCertificateHashes for certificates valid longer than 14 days.
    let body = http_get(gw.http_addr(), "/v1/cert-hashes").await;
    assert_eq!(body, r#"{"hashes":[]}"#);
    // A client that pins it still connects.
    let session = gw.native("files", "alice").await;
    session.ping().await.expect("works");
    session.close().await;
    gw.stop().await;
}
