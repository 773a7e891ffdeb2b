//! Connecting: certificate pinning, `ClientHello` → `ServerHello`, refusal, a pipelined join.

use strait_client::protocol::*;
use strait_client::{Client, ClientError, Trust};

use crate::support::*;

#[tokio::test]
async fn connects_with_a_pinned_certificate_hash() {
    let server = TestServer::start();
    let (session, (hello, _peer)) = tokio::join!(Client::connect(server.config()), async {
        let mut peer = server.accept().await;
        (peer.hello(7, "rt-1", false).await, peer)
    });
    let session = session.unwrap();

    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(hello.token, "test-token");
    assert_eq!(hello.resume, None);
    assert!(hello.agent.starts_with("strait-client/"));
    assert_eq!(session.participant(), ParticipantId(7));
    assert_eq!(session.limits().max_tracks, 16);
    assert_eq!(session.server_max_datagram_size(), 1160);
    assert!(session.max_datagram_size().unwrap() >= 1150);
    assert_eq!(session.remote_address(), Some(server.addr));
}

#[tokio::test]
async fn a_wrong_certificate_hash_is_a_tls_error() {
    let server = TestServer::start();
    let mut config = server.config();
    config.trust = Trust::Hashes(vec![[0x5a; 32]]);
    let (result, server_side) = tokio::join!(Client::connect(config), server.accept_handshake());
    assert!(
        matches!(result, Err(ClientError::Tls(_))),
        "expected a TLS error, got {result:?}"
    );
    assert!(server_side.is_err(), "the server must not see a session");
}

#[tokio::test]
async fn connects_with_web_pki_roots_and_checks_the_name() {
    let (ca, leaf, key) = ca_signed_identity();
    let server = TestServer::start_with(leaf, key);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.into()).unwrap();
    let mut config = server.config();
    config.trust = Trust::Roots(std::sync::Arc::new(roots));
    config.server_name = Some("localhost".into());
    let (session, _peer) = tokio::join!(Client::connect(config.clone()), async {
        let mut peer = server.accept().await;
        peer.hello(1, "rt", false).await;
        peer
    });
    assert_eq!(session.unwrap().participant(), ParticipantId(1));

    // The certificate does not name 127.0.0.1.
    config.server_name = None;
    let (result, _) = tokio::join!(Client::connect(config), server.accept_handshake());
    assert!(matches!(result, Err(ClientError::Tls(_))), "got {result:?}");
}

#[tokio::test]
async fn a_refused_hello_is_rejected_with_the_server_code() {
    let server = TestServer::start();
    let (result, ()) = tokio::join!(Client::connect(server.config()), async {
        let mut peer = server.accept().await;
        let _ = peer.recv().await;
        peer.send(&[ControlMessage::Error(ErrorMessage {
            request: None,
            code: ErrorCode::UNAUTHORIZED,
            reason: "bad signature".into(),
        })])
        .await;
        peer.conn
            .close(ErrorCode::UNAUTHORIZED.0.into(), b"unauthorized");
    });
    // The `Error` frame, or only the close that follows it when the close overtakes the frame.
    match result {
        Err(ClientError::Rejected { code, reason }) => {
            assert_eq!(code, ErrorCode::UNAUTHORIZED);
            assert!(
                reason == "bad signature" || reason == "unauthorized",
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn join_can_be_pipelined_behind_the_hello() {
    let server = TestServer::start();
    let (result, _peer) = tokio::join!(Client::connect_and_join(server.config(), "lobby"), async {
        let mut peer = server.accept().await;
        // Both arrive before the server has said anything.
        let ControlMessage::ClientHello(_) = peer.recv().await else {
            panic!("expected ClientHello");
        };
        let ControlMessage::Join(join) = peer.recv().await else {
            panic!("expected Join right behind ClientHello");
        };
        assert_eq!(join.room.0, "lobby");
        assert_eq!(join.name, "tester");
        peer.send(&[
            server_hello(9, "rt", false),
            joined(join.request, "lobby", 9),
        ])
        .await;
        peer
    });
    let (session, room) = result.unwrap();
    assert_eq!(room.room.0, "lobby");
    assert_eq!(session.participant(), ParticipantId(9));
    assert_eq!(session.room().unwrap().me.participant, ParticipantId(9));
}

/// A `GoAway { code: REDIRECT }` before `ServerHello`, then the end of the control stream.
async fn redirect(peer: &mut Peer, to: &TestServer, token: Option<&str>) {
    let hash: String = to.cert_hash.iter().map(|b| format!("{b:02x}")).collect();
    peer.send(&[
        ControlMessage::GoAway(GoAway {
            code: ErrorCode::REDIRECT,
            redirect: Some(format!("https://{}/rtc", to.addr)),
            cert_hashes: vec![hash],
            token: token.map(Into::into),
        }),
        ControlMessage::Error(ErrorMessage {
            request: None,
            code: ErrorCode::REDIRECT,
            reason: "another node serves this session".into(),
        }),
    ])
    .await;
    peer.finish();
}

#[tokio::test]
async fn a_redirect_is_followed_with_the_hashes_and_token_it_carries() {
    let a = TestServer::start();
    let b = TestServer::start();
    assert_ne!(a.cert_hash, b.cert_hash);
    let (session, (hello_b, _a, _b)) = tokio::join!(Client::connect(a.config()), async {
        let mut at_a = a.accept().await;
        let hello_a = at_a.recv().await;
        assert!(matches!(hello_a, ControlMessage::ClientHello(ref h) if h.token == "test-token"));
        redirect(&mut at_a, &b, Some("token-for-b")).await;
        // b's certificate is trusted only through the hashes of the redirect.
        let mut at_b = b.accept().await;
        (at_b.hello(5, "rt-b", false).await, at_a, at_b)
    });
    let session = session.expect("connected through the redirect");
    assert_eq!(session.remote_address(), Some(b.addr));
    assert_eq!(session.participant(), ParticipantId(5));
    assert_eq!(hello_b.token, "token-for-b");
}

#[tokio::test]
async fn redirects_are_followed_a_few_times_and_then_reported() {
    let a = TestServer::start();
    let (result, peers) = tokio::join!(Client::connect(a.config()), async {
        let mut peers = Vec::new();
        for _ in 0..=strait_client::MAX_REDIRECTS {
            let mut peer = a.accept().await;
            peer.recv().await;
            redirect(&mut peer, &a, None).await;
            peers.push(peer);
        }
        peers
    });
    assert_eq!(peers.len(), strait_client::MAX_REDIRECTS + 1);
    match result {
        Err(ClientError::Redirected { redirect }) => {
            assert_eq!(redirect.code, ErrorCode::REDIRECT);
        }
        other => panic!("expected the last redirect, got {other:?}"),
    }
}
