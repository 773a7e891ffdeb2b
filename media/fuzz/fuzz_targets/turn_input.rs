//! Arbitrary bytes into the TURN server as a client datagram, as a stream (split into frames),
//! and as a peer datagram on an allocated relay. Refusals are fine; a panic is the failure.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_media::turn::framing::next_frame;
use strait_media::turn::{
    FiveTuple, PeerPolicy, Server, ServerConfig, Transport, TurnSecret, TurnSecrets,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let media: SocketAddr = "127.0.0.1:4478".parse().unwrap();
    let config = ServerConfig {
        secrets: TurnSecrets::new(vec![TurnSecret::new(b"fuzz".to_vec())]),
        policy: PeerPolicy::new(vec![media], Vec::new()),
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, [0; 32]).unwrap();
    let client = FiveTuple {
        transport: Transport::Udp,
        client: "203.0.113.1:1000".parse().unwrap(),
        server: "127.0.0.1:3478".parse().unwrap(),
    };
    let mut bind = |_: &FiveTuple| Some("127.0.0.1:50000".parse().unwrap());
    let _ = server.handle_client(client, data, now, 1_800_000_000, &mut bind);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..client
    };
    let mut rest = data;
    while let Ok(Some(frame)) = next_frame(rest) {
        assert!(frame.message_len() <= frame.consumed() && frame.consumed() <= rest.len());
        let _ = server.handle_client(tcp, &rest[..frame.message_len()], now, 1_800_000_000, &mut bind);
        rest = &rest[frame.consumed()..];
    }
    let _ = server.handle_peer("127.0.0.1:50000".parse().unwrap(), media, data, now);
    server.handle_timeout(now + Duration::from_secs(3_600));
    while server.poll_transmit().is_some() {}
    while server.poll_event().is_some() {}
});
