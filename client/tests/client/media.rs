//! Media datagrams both ways, the size limit, the receive queue's overflow policy, pings.

use strait_client::protocol::datagram::{self, Datagram, DatagramControl};
use strait_client::protocol::*;
use strait_client::{SendError, Session};

use crate::requests::{joined_session, video};
use crate::support::*;

async fn publishing(server: &TestServer) -> (Session, Peer, Vec<MediaId>) {
    let (session, mut peer) = joined_session(server).await;
    let (published, ()) = tokio::join!(session.publish(video(1)), async {
        let ControlMessage::Publish(p) = peer.recv().await else {
            panic!("expected Publish");
        };
        peer.send(&[ControlMessage::Published(Published {
            request: p.request,
            track: TrackId(100),
        })])
        .await;
    });
    let media = published.unwrap().media;
    (session, peer, media)
}

#[tokio::test]
async fn send_rtp_builds_a_media_datagram_with_the_layer_media_id() {
    let server = TestServer::start();
    let (session, peer, media) = publishing(&server).await;
    let packet = rtp(1, 100);
    session.send_rtp(media[0], &packet).unwrap();
    let (got_media, got_rtp) = peer.recv_media().await;
    assert_eq!(got_media, media[0]);
    assert_eq!(&got_rtp[..], &packet[..]);
    assert_eq!(session.stats().media_sent, 1);
}

#[tokio::test]
async fn a_packet_that_does_not_fit_a_datagram_is_refused_and_kept() {
    let server = TestServer::start();
    let (session, peer, media) = publishing(&server).await;
    let max = session.max_rtp_size(media[0]).unwrap();
    assert_eq!(
        max,
        session.max_datagram_size().unwrap() - datagram::media_header_len(media[0])
    );

    let too_big = rtp(1, max - 12 + 1);
    assert_eq!(
        session.send_rtp(media[0], &too_big),
        Err(SendError::TooLarge { len: max + 1, max })
    );
    assert_eq!(session.stats().send_too_large, 1);

    // Exactly the maximum goes through.
    let fits = rtp(2, max - 12);
    session.send_rtp(media[0], &fits).unwrap();
    let (_, got) = peer.recv_media().await;
    assert_eq!(got.len(), max);

    // Not RTP at all is refused too.
    assert!(matches!(
        session.send_rtp(media[0], &[0u8; 4]),
        Err(SendError::InvalidRtp(_))
    ));
}

#[tokio::test]
async fn received_media_is_queued_in_order() {
    let server = TestServer::start();
    let (session, peer) = joined_session(&server).await;
    for seq in 0..3 {
        peer.send_media(MediaId(5), &rtp(seq, 20));
    }
    for seq in 0..3u16 {
        let packet = within("media", session.recv_media()).await.unwrap();
        assert_eq!(packet.media, MediaId(5));
        assert_eq!(u16::from_be_bytes([packet.rtp[2], packet.rtp[3]]), seq);
    }
    assert_eq!(session.stats().media_received, 3);
}

#[tokio::test]
async fn a_full_media_queue_drops_the_oldest_and_counts() {
    let server = TestServer::start();
    let mut config = server.config();
    config.media_queue = 2;
    let (session, mut peer) = tokio::join!(strait_client::Client::connect(config), async {
        let mut peer = server.accept().await;
        peer.hello(1, "rt", false).await;
        peer
    });
    let session = session.unwrap();
    let _ = &mut peer;
    for seq in 0..5 {
        peer.send_media(MediaId(5), &rtp(seq, 20));
    }
    // The client answers this ping after handling the datagrams sent before it.
    peer.send_control_datagram(DatagramControl::Ping {
        seq: 9,
        timestamp_us: 1,
    });
    loop {
        let d = peer.recv_datagram().await;
        if let Ok(Datagram::Control(DatagramControl::Pong { seq: 9, .. })) =
            datagram::parse_datagram(&d)
        {
            break;
        }
    }
    let stats = session.stats();
    assert_eq!((stats.media_received, stats.media_dropped), (5, 3));
    let first = session.try_recv_media().unwrap();
    let second = session.try_recv_media().unwrap();
    assert_eq!(first.rtp[3], 3);
    assert_eq!(second.rtp[3], 4);
    assert!(session.try_recv_media().is_none());
}

#[tokio::test]
async fn ping_measures_the_round_trip_over_datagrams() {
    let server = TestServer::start();
    let (session, peer) = joined_session(&server).await;
    let _pong = peer.spawn_pong();
    let rtt = within("a pong", session.ping()).await.unwrap();
    assert!(rtt < WAIT);
}

#[tokio::test]
async fn a_keyframe_request_by_datagram_names_the_media_id() {
    let server = TestServer::start();
    let (session, peer) = joined_session(&server).await;
    session.request_keyframe_datagram(MediaId(5)).unwrap();
    let d = peer.recv_datagram().await;
    assert_eq!(
        datagram::parse_datagram(&d).unwrap(),
        Datagram::Control(DatagramControl::KeyframeRequest { media: MediaId(5) })
    );
}
