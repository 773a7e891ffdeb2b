//! Links between nodes (ALPN `strait-peer/1`): two nodes that share `cluster.peer_secret` link
//! and know each other's id; a node with another secret, or none, is refused with a clear error,
//! counted, and no link is kept on either side.

use strait_gateway::PeerError;
use strait_gateway::metrics::{RefusalLabel, RefusalReason};
use strait_tests::fixture::{TestGateway, WAIT};

const SECRET: &str = "the peer secret of this test cluster, 32+";

async fn node(id: &str, secret: Option<&str>) -> TestGateway {
    let (id, secret) = (id.to_owned(), secret.map(str::to_owned));
    TestGateway::start_with(move |c| {
        c.cluster.node_id = Some(id);
        c.cluster.peer_secret = secret;
    })
    .await
}

fn peer_refusals(gw: &TestGateway) -> u64 {
    gw.gateway
        .metrics()
        .refusals
        .get_or_create(&RefusalLabel {
            reason: RefusalReason::Peer,
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_the_peer_secret_link_and_know_each_other() {
    let a = node("node-a", Some(SECRET)).await;
    let b = node("node-b", Some(SECRET)).await;
    let other = tokio::time::timeout(WAIT, a.gateway.dial_peer(b.quic_addr()))
        .await
        .expect("in time")
        .expect("the link comes up");
    assert_eq!(other, "node-b");
    assert_eq!(a.gateway.peers(), ["node-b"]);
    // The acceptor keeps the link before it answers: the dialer has the answer.
    assert_eq!(b.gateway.peers(), ["node-a"]);
    assert_eq!(peer_refusals(&b), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_refused_and_counted() {
    let a = node("node-a", Some("another secret, also of 32 bytes or more")).await;
    let b = node("node-b", Some(SECRET)).await;
    let err = tokio::time::timeout(WAIT, a.gateway.dial_peer(b.quic_addr()))
        .await
        .expect("in time")
        .expect_err("refused");
    // The acceptor checks first, counts the refusal and closes: the dialer sees the connection
    // end before any answer.
    assert!(matches!(err, PeerError::Io(_)), "{err}");
    assert_eq!(peer_refusals(&b), 1);
    assert!(a.gateway.peers().is_empty());
    assert!(b.gateway.peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_secret_neither_dials_nor_offers_links() {
    let plain = node("node-plain", None).await;
    let b = node("node-b", Some(SECRET)).await;
    let err = plain
        .gateway
        .dial_peer(b.quic_addr())
        .await
        .expect_err("no secret");
    assert!(matches!(err, PeerError::NoSecret), "{err}");
    // A node with the secret cannot reach one without: it does not offer the ALPN.
    let err = tokio::time::timeout(WAIT, b.gateway.dial_peer(plain.quic_addr()))
        .await
        .expect("in time")
        .expect_err("no peer ALPN");
    assert!(matches!(err, PeerError::Connect(_)), "{err}");
    assert!(b.gateway.peers().is_empty());
}
