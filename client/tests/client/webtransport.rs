//! The same session over WebTransport (HTTP/3), against a wtransport server.

use bytes::Bytes;
use strait_client::protocol::datagram::{self, Datagram};
use strait_client::protocol::limits::DEFAULT_MAX_FRAME_SIZE;
use strait_client::protocol::*;
use strait_client::{Client, ClientError, Transport, certificate_hash};
use wtransport::tls::{Certificate, CertificateChain, PrivateKey};
use wtransport::{Endpoint, Identity, ServerConfig};

use crate::support::*;

async fn read_message(
    recv: &mut wtransport::RecvStream,
    reader: &mut FrameReader,
    inbox: &mut Vec<ControlMessage>,
) -> ControlMessage {
    loop {
        if !inbox.is_empty() {
            return inbox.remove(0);
        }
        let mut buf = vec![0u8; 4096];
        let n = within("a control frame", recv.read(&mut buf))
            .await
            .unwrap()
            .expect("stream open");
        let mut bytes = Bytes::copy_from_slice(&buf[..n]);
        while let Some(Decoded::Message(m)) = reader.next_message(&mut bytes).unwrap() {
            inbox.push(m);
        }
    }
}

#[tokio::test]
async fn hello_join_and_media_over_webtransport() {
    let (cert, key) = identity();
    let hash = certificate_hash(&cert);
    let identity = Identity::new(
        CertificateChain::single(Certificate::from_der(cert).unwrap()),
        PrivateKey::from_der_pkcs8(key),
    );
    let config = ServerConfig::builder()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_identity(identity)
        .build();
    let server = Endpoint::server(config).unwrap();
    let addr = server.local_addr().unwrap();

    let mut client_config = config_for(addr, hash);
    client_config.transport = Transport::WebTransport;
    client_config.server_name = Some("localhost".into());

    let server_side = async {
        let request = within("a session request", server.accept())
            .await
            .await
            .unwrap();
        assert_eq!(request.path(), "/rtc");
        let conn = request.accept().await.unwrap();
        let (mut send, mut recv) = within("the control stream", conn.accept_bi())
            .await
            .unwrap();
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_SIZE);
        let mut inbox = Vec::new();
        let ControlMessage::ClientHello(hello) =
            read_message(&mut recv, &mut reader, &mut inbox).await
        else {
            panic!("expected ClientHello");
        };
        assert_eq!(hello.token, "test-token");
        let mut wire = Vec::new();
        encode_frame(
            &server_hello(3, "rt", false),
            DEFAULT_MAX_FRAME_SIZE,
            &mut wire,
        )
        .unwrap();
        send.write_all(&wire).await.unwrap();
        let ControlMessage::Join(join) = read_message(&mut recv, &mut reader, &mut inbox).await
        else {
            panic!("expected Join");
        };
        let mut wire = Vec::new();
        encode_frame(
            &joined(join.request, "room", 3),
            DEFAULT_MAX_FRAME_SIZE,
            &mut wire,
        )
        .unwrap();
        send.write_all(&wire).await.unwrap();
        (conn, send, recv)
    };
    let client_side = async {
        let session = Client::connect(client_config).await.unwrap();
        let room = session.join("room").await.unwrap();
        (session, room)
    };
    let ((session, room), (conn, _send, _recv)) = tokio::join!(client_side, server_side);
    assert_eq!(room.room.0, "room");
    assert_eq!(session.participant(), ParticipantId(3));

    // Media both ways in WebTransport datagrams.
    session.send_rtp(MediaId(4), &rtp(1, 50)).unwrap();
    let d = within("a datagram", conn.receive_datagram()).await.unwrap();
    let Datagram::Media { media, rtp: got } = datagram::parse_datagram(&d.payload()).unwrap()
    else {
        panic!("expected media");
    };
    assert_eq!((media, got.len()), (MediaId(4), 62));
    let mut buf = vec![0u8; 64];
    let n = datagram::write_media_datagram(MediaId(6), &rtp(2, 10), &mut buf).unwrap();
    conn.send_datagram(&buf[..n]).unwrap();
    let packet = within("media", session.recv_media()).await.unwrap();
    assert_eq!(packet.media, MediaId(6));

    // wtransport cannot rebind its socket.
    assert!(matches!(session.rebind(), Err(ClientError::Unsupported(_))));
}
