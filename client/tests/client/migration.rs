//! `rebind()`: a new local socket, as when a phone changes network. QUIC migrates the
//! connection; the server sees the new address and the session goes on.

use strait_client::protocol::*;

use crate::requests::joined_session;
use crate::support::*;

#[tokio::test]
async fn rebind_moves_the_session_to_a_new_address_the_server_sees() {
    let server = TestServer::start();
    let (session, peer) = joined_session(&server).await;
    let _pong = peer.spawn_pong();
    let before = peer.conn.remote_address();
    assert_eq!(session.local_address().unwrap(), before);

    let after = session.rebind().unwrap();
    assert_ne!(after, before);
    assert_eq!(after.ip(), before.ip());
    assert_eq!(session.local_address().unwrap(), after);

    // A round trip on the new path, then the server has migrated.
    within("a pong", session.ping()).await.unwrap();
    within("the server to see the new address", async {
        while peer.conn.remote_address() != after {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(session.stats().rebinds, 1);

    // Control still works on the migrated connection.
    let mut peer = peer;
    let (result, ()) = tokio::join!(session.unsubscribe(TrackId(1)), async {
        let ControlMessage::Unsubscribe(u) = peer.recv().await else {
            panic!("expected Unsubscribe");
        };
        peer.send(&[ControlMessage::Ack(Ack { request: u.request })])
            .await;
    });
    result.unwrap();

    // And an explicit address works too.
    let chosen = session.rebind_to("127.0.0.1:0".parse().unwrap()).unwrap();
    within("a pong", session.ping()).await.unwrap();
    assert_eq!(session.local_address().unwrap(), chosen);
}
