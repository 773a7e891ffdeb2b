//! The TURN core driven with injected time and no sockets: the flows, and every bad input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rtc_crypto::RTCCryptoProvider;
use rtc_stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS, AttrType,
};
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA,
    METHOD_REFRESH, METHOD_SEND, Message, MessageType, Method, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;

use super::*;

const SECRET: &[u8] = b"a shared secret for tests";
const T0: u64 = 1_800_000_000;

fn media() -> SocketAddr {
    "127.0.0.1:4478".parse().unwrap()
}

fn udp(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::from(([203, 0, 113, 9], port)),
        server: "127.0.0.1:3478".parse().unwrap(),
    }
}

/// A UDP client at `ip`.
fn udp_from(ip: IpAddr, port: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::new(ip, port),
        ..udp(port)
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        secrets: TurnSecrets::new(vec![TurnSecret::new(SECRET.to_vec())]),
        policy: PeerPolicy::new(vec![media()], Vec::new()),
        ..ServerConfig::default()
    }
}

/// A server, a clock, and a counter handing out relay ports.
struct Harness {
    server: Server,
    start: Instant,
    now: Instant,
    unix: u64,
    next_port: u16,
    crypto: Arc<dyn RTCCryptoProvider>,
}

/// A client's credential and the nonce it last saw.
#[derive(Clone)]
struct Auth {
    username: String,
    password: String,
    nonce: String,
}

struct Reply {
    msg: Message,
}

impl Reply {
    fn class(&self) -> rtc_stun::message::MessageClass {
        self.msg.typ.class
    }

    fn code(&self) -> Option<u16> {
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&self.msg).ok().map(|()| e.code.0)
    }

    fn text(&self, attr: AttrType) -> Option<String> {
        TextAttribute::get_from_as(&self.msg, attr)
            .ok()
            .map(|t| t.text)
    }

    fn addr(&self, attr: AttrType) -> Option<SocketAddr> {
        let mut a = XorMappedAddress::default();
        a.get_from_as(&self.msg, attr).ok()?;
        Some(SocketAddr::new(a.ip, a.port))
    }
}

impl Harness {
    fn new(config: ServerConfig) -> Harness {
        let now = Instant::now();
        Harness {
            server: Server::new(config, [7; 32]).unwrap(),
            start: now,
            now,
            unix: T0,
            next_port: 50_000,
            crypto: rtc_crypto::default_provider().unwrap(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.unix += d.as_secs();
        self.server.handle_timeout(self.now);
    }

    fn creds(&self, identity: &str) -> Auth {
        let c = self
            .server
            .config()
            .secrets
            .mint(identity, self.unix, Duration::from_secs(300))
            .unwrap();
        Auth {
            username: c.username,
            password: c.password,
            nonce: String::new(),
        }
    }

    fn feed(&mut self, from: FiveTuple, data: &[u8]) -> Result<(), DropReason> {
        let port = &mut self.next_port;
        let mut bind = |_: &FiveTuple| {
            *port += 1;
            Some(SocketAddr::from(([127, 0, 0, 1], *port)))
        };
        self.server
            .handle_client(from, data, self.now, self.unix, &mut bind)
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// Builds a request; `auth` adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
    fn message(
        &self,
        method: Method,
        class: rtc_stun::message::MessageClass,
        attrs: &[(AttrType, Vec<u8>)],
        auth: Option<&Auth>,
    ) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(MessageType::new(method, class));
        m.transaction_id = TransactionId::new();
        m.write_header();
        for (t, v) in attrs {
            m.add(*t, v);
        }
        if let Some(a) = auth {
            m.add(ATTR_USERNAME, a.username.as_bytes());
            m.add(ATTR_REALM, b"strait");
            m.add(ATTR_NONCE, a.nonce.as_bytes());
            let mi = MessageIntegrity::new_long_term_integrity_with_provider(
                a.username.clone(),
                "strait".into(),
                a.password.clone(),
                self.crypto.crypto(),
            )
            .unwrap();
            rtc_stun::message::Setter::add_to(&mi, &mut m).unwrap();
        }
        m.raw
    }

    /// Sends a request and returns the single reply to it.
    fn request(
        &mut self,
        from: FiveTuple,
        method: Method,
        attrs: &[(AttrType, Vec<u8>)],
        auth: Option<&Auth>,
    ) -> Reply {
        let bytes = self.message(method, CLASS_REQUEST, attrs, auth);
        self.feed(from, &bytes).expect("the request is answered");
        let mut out = self.transmits();
        assert_eq!(out.len(), 1, "one reply: {out:?}");
        let Some(Transmit::Client { to, data }) = out.pop() else {
            panic!("a reply to the client");
        };
        assert_eq!(to, from);
        let mut msg = Message::new();
        msg.raw.clear();
        msg.raw.extend_from_slice(&data);
        msg.decode().unwrap();
        Reply { msg }
    }

    /// The 401 round, then an authenticated Allocate. Returns the relay address.
    fn allocate(&mut self, from: FiveTuple, auth: &mut Auth) -> Reply {
        let challenge = self.request(from, METHOD_ALLOCATE, &[transport_udp()], None);
        assert_eq!(challenge.code(), Some(401));
        auth.nonce = challenge.text(ATTR_NONCE).unwrap();
        self.request(from, METHOD_ALLOCATE, &[transport_udp()], Some(auth))
    }

    fn allocated(&mut self, from: FiveTuple, auth: &mut Auth) -> SocketAddr {
        let reply = self.allocate(from, auth);
        assert_eq!(reply.class(), CLASS_SUCCESS_RESPONSE, "{:?}", reply.code());
        reply.addr(ATTR_XOR_RELAYED_ADDRESS).unwrap()
    }
}

fn transport_udp() -> (AttrType, Vec<u8>) {
    (
        rtc_stun::attributes::ATTR_REQUESTED_TRANSPORT,
        vec![17, 0, 0, 0],
    )
}

/// The value of a XOR-PEER-ADDRESS for a message with transaction id `tid` (IPv6 addresses are
/// XORed with the id).
fn peer_attr(tid: &TransactionId, peer: SocketAddr) -> (AttrType, Vec<u8>) {
    let mut m = Message::new();
    m.transaction_id = *tid;
    m.write_header();
    XorMappedAddress {
        ip: peer.ip(),
        port: peer.port(),
    }
    .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
    .unwrap();
    (ATTR_XOR_PEER_ADDRESS, m.attributes.0[0].value.clone())
}

fn channel_attr(number: u16) -> (AttrType, Vec<u8>) {
    let [a, b] = number.to_be_bytes();
    (ATTR_CHANNEL_NUMBER, vec![a, b, 0, 0])
}

impl Harness {
    /// A request with a XOR-PEER-ADDRESS (which depends on the transaction id).
    fn peer_request(
        &mut self,
        from: FiveTuple,
        method: Method,
        peer: SocketAddr,
        extra: &[(AttrType, Vec<u8>)],
        auth: &Auth,
    ) -> Reply {
        let tid = TransactionId::new();
        let mut attrs = vec![peer_attr(&tid, peer)];
        attrs.extend_from_slice(extra);
        let mut m = Message::new();
        m.set_type(MessageType::new(method, CLASS_REQUEST));
        m.transaction_id = tid;
        m.write_header();
        for (t, v) in &attrs {
            m.add(*t, v);
        }
        m.add(ATTR_USERNAME, auth.username.as_bytes());
        m.add(ATTR_REALM, b"strait");
        m.add(ATTR_NONCE, auth.nonce.as_bytes());
        let mi = MessageIntegrity::new_long_term_integrity_with_provider(
            auth.username.clone(),
            "strait".into(),
            auth.password.clone(),
            self.crypto.crypto(),
        )
        .unwrap();
        rtc_stun::message::Setter::add_to(&mi, &mut m).unwrap();
        self.feed(from, &m.raw).expect("answered");
        let mut out = self.transmits();
        assert_eq!(out.len(), 1, "{out:?}");
        let Some(Transmit::Client { data, .. }) = out.pop() else {
            panic!("a reply");
        };
        let mut msg = Message::new();
        msg.raw.clear();
        msg.raw.extend_from_slice(&data);
        msg.decode().unwrap();
        Reply { msg }
    }

    fn send_indication(&mut self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let tid = TransactionId::new();
        let mut m = Message::new();
        m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
        m.transaction_id = tid;
        m.write_header();
        let (t, v) = peer_attr(&tid, peer);
        m.add(t, &v);
        m.add(ATTR_DATA, payload);
        m.raw
    }
}

fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = number.to_be_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn peer_transmits(out: &[Transmit]) -> Vec<(SocketAddr, Vec<u8>)> {
    out.iter()
        .filter_map(|t| match t {
            Transmit::Peer { peer, data, .. } => Some((*peer, data.clone())),
            Transmit::Client { .. } => None,
        })
        .collect()
}

#[test]
fn binding_request_gets_the_reflexive_address_without_auth() {
    let mut h = Harness::new(config());
    let reply = h.request(udp(1000), METHOD_BINDING, &[], None);
    assert_eq!(reply.class(), CLASS_SUCCESS_RESPONSE);
    assert_eq!(
        reply.addr(rtc_stun::attributes::ATTR_XORMAPPED_ADDRESS),
        Some(udp(1000).client)
    );
}

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new(config());
    let reply = h.request(udp(1000), METHOD_ALLOCATE, &[transport_udp()], None);
    assert_eq!(reply.class(), CLASS_ERROR_RESPONSE);
    assert_eq!(reply.code(), Some(401));
    assert_eq!(reply.text(ATTR_REALM).as_deref(), Some("strait"));
    assert_eq!(reply.text(ATTR_NONCE).map(|n| n.len()), Some(32));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.stats().auth_failures(AuthFailure::Challenge), 1);
}

#[test]
fn a_full_relay_through_a_channel_to_the_media_address() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let relay = h.allocated(udp(1000), &mut auth);
    assert!(matches!(h.events()[..], [Event::Allocated { relay: r, .. }] if r == relay));

    let bound = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4001)],
        &auth,
    );
    assert_eq!(bound.class(), CLASS_SUCCESS_RESPONSE, "{:?}", bound.code());

    // Client to peer over the channel.
    h.feed(udp(1000), &channel_data(0x4001, b"hello")).unwrap();
    assert_eq!(
        peer_transmits(&h.transmits()),
        vec![(media(), b"hello".to_vec())]
    );

    // Peer to client: ChannelData, unpadded over UDP.
    h.server
        .handle_peer(relay, media(), b"pong!", h.now)
        .unwrap();
    let out = h.transmits();
    assert_eq!(
        out,
        vec![Transmit::Client {
            to: udp(1000),
            data: channel_data(0x4001, b"pong!")
        }]
    );

    // A Send indication reaches the peer too.
    let send = h.send_indication(media(), b"via send");
    h.feed(udp(1000), &send).unwrap();
    assert_eq!(
        peer_transmits(&h.transmits()),
        vec![(media(), b"via send".to_vec())]
    );
    let stats = h.server.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (2, 1));
}

#[test]
fn recycled_buffers_carry_only_the_new_payload_both_ways() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let relay = h.allocated(udp(1000), &mut auth);
    let bound = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4001)],
        &auth,
    );
    assert_eq!(bound.class(), CLASS_SUCCESS_RESPONSE, "{:?}", bound.code());

    // Buffers handed back dirty, with room to spare: each relayed packet is exactly its own
    // bytes, whichever buffer it lands in.
    for _ in 0..3 {
        let mut dirty = vec![0xee; 1_500];
        dirty.reserve(100);
        h.server.recycle(dirty);
    }
    // One too large to keep is freed, not reused.
    h.server.recycle(Vec::with_capacity(64 * 1024));
    let payloads: [&[u8]; 4] = [b"a", &[7; 1_200], b"", &[9; 33]];
    for payload in payloads {
        h.feed(udp(1000), &channel_data(0x4001, payload)).unwrap();
        let out = h.transmits();
        assert_eq!(peer_transmits(&out), vec![(media(), payload.to_vec())]);
        let kept = out.into_iter().map(|t| match t {
            Transmit::Peer { data, .. } | Transmit::Client { data, .. } => data,
        });
        for data in kept {
            assert!(data.capacity() <= 2_048, "{}", data.capacity());
            h.server.recycle(data);
        }

        h.server
            .handle_peer(relay, media(), payload, h.now)
            .unwrap();
        let out = h.transmits();
        assert_eq!(
            out,
            vec![Transmit::Client {
                to: udp(1000),
                data: channel_data(0x4001, payload)
            }]
        );
        for t in out {
            if let Transmit::Client { data, .. } = t {
                h.server.recycle(data);
            }
        }
    }
    let stats = h.server.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (4, 4));
}

#[test]
fn peers_without_a_channel_get_data_indications() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let relay = h.allocated(udp(1000), &mut auth);
    let ok = h.peer_request(udp(1000), METHOD_CREATE_PERMISSION, media(), &[], &auth);
    assert_eq!(ok.class(), CLASS_SUCCESS_RESPONSE);
    h.server
        .handle_peer(relay, media(), b"data", h.now)
        .unwrap();
    let out = h.transmits();
    let [Transmit::Client { data, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    let mut msg = Message::new();
    msg.raw.clear();
    msg.raw.extend_from_slice(data);
    msg.decode().unwrap();
    assert_eq!(msg.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    assert_eq!(msg.get(ATTR_DATA).unwrap(), b"data");
    // A peer without a permission is dropped.
    let other: SocketAddr = "127.0.0.2:4478".parse().unwrap();
    assert_eq!(
        h.server.handle_peer(relay, other, b"x", h.now),
        Err(DropReason::NoPermission)
    );
}

#[test]
fn channel_data_to_stream_clients_is_padded() {
    let mut h = Harness::new(config());
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..udp(1000)
    };
    let mut auth = h.creds("42");
    let relay = h.allocated(tcp, &mut auth);
    h.peer_request(
        tcp,
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4FFF)],
        &auth,
    );
    h.server
        .handle_peer(relay, media(), b"12345", h.now)
        .unwrap();
    let out = h.transmits();
    let [Transmit::Client { data, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(data.len(), 12);
    assert_eq!(&data[..9], &channel_data(0x4FFF, b"12345")[..]);
}

#[test]
fn wrong_password_gets_401() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    auth.password = "not the password".into();
    let reply = h.allocate(udp(1000), &mut auth);
    assert_eq!(reply.code(), Some(401));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.server.stats().auth_failures(AuthFailure::WrongPassword),
        1
    );
}

#[test]
fn a_credential_from_another_secret_gets_401_and_rotation_accepts_the_old_one() {
    let mut h = Harness::new(config());
    let foreign = TurnSecrets::new(vec![TurnSecret::new(b"other".to_vec())])
        .mint("42", T0, Duration::from_secs(300))
        .unwrap();
    let mut auth = Auth {
        username: foreign.username,
        password: foreign.password,
        nonce: String::new(),
    };
    assert_eq!(h.allocate(udp(1000), &mut auth).code(), Some(401));

    let mut rotated = config();
    rotated.secrets = TurnSecrets::new(vec![
        TurnSecret::new(b"next".to_vec()),
        TurnSecret::new(SECRET.to_vec()),
    ]);
    let mut h2 = Harness::new(rotated);
    let old = TurnSecrets::new(vec![TurnSecret::new(SECRET.to_vec())])
        .mint("42", T0, Duration::from_secs(300))
        .unwrap();
    let mut auth = Auth {
        username: old.username,
        password: old.password,
        nonce: String::new(),
    };
    h2.allocated(udp(1000), &mut auth);
}

#[test]
fn secrets_replaced_while_running_rotate_with_an_overlap() {
    // The gateway keeps a clone of the server's secrets and replaces them on reload.
    let cfg = config();
    let handle = cfg.secrets.clone();
    let mut h = Harness::new(cfg);
    let minted_under = |secret: &[u8]| {
        let c = TurnSecrets::new(vec![TurnSecret::new(secret.to_vec())])
            .mint("42", T0, Duration::from_secs(300))
            .unwrap();
        Auth {
            username: c.username,
            password: c.password,
            nonce: String::new(),
        }
    };
    let mut old = minted_under(SECRET);
    let mut new = minted_under(b"the next secret");
    assert_eq!(h.allocate(udp(1000), &mut new.clone()).code(), Some(401));

    // The new secret first, the old one still listed: both are accepted, the new one mints.
    handle.replace(vec![
        TurnSecret::new(b"the next secret".to_vec()),
        TurnSecret::new(SECRET.to_vec()),
    ]);
    h.allocated(udp(1001), &mut new);
    h.allocated(udp(1002), &mut old.clone());
    assert_eq!(
        handle
            .mint("42", T0, Duration::from_secs(300))
            .unwrap()
            .password,
        minted_under(b"the next secret").password
    );

    // The old one dropped: its credentials are refused.
    handle.replace(vec![TurnSecret::new(b"the next secret".to_vec())]);
    assert_eq!(h.allocate(udp(1003), &mut old).code(), Some(401));
}

#[test]
fn expired_credential_gets_401() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.advance(Duration::from_secs(301));
    let reply = h.allocate(udp(1000), &mut auth);
    assert_eq!(reply.code(), Some(401));
    assert_eq!(h.server.stats().auth_failures(AuthFailure::Expired), 1);
    // At exactly the expiry it is still accepted.
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.advance(Duration::from_secs(300));
    assert_eq!(
        h.allocate(udp(1000), &mut auth).class(),
        CLASS_SUCCESS_RESPONSE
    );
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_one() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let challenge = h.request(udp(1000), METHOD_ALLOCATE, &[transport_udp()], None);
    auth.nonce = challenge.text(ATTR_NONCE).unwrap();
    h.advance(Duration::from_secs(601));
    let mut auth = Auth {
        nonce: auth.nonce,
        ..h.creds("42")
    };
    let reply = h.request(udp(1000), METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(reply.code(), Some(438));
    let fresh = reply.text(ATTR_NONCE).unwrap();
    assert_ne!(fresh, auth.nonce);
    // A forged nonce is stale too, and so is one issued to another address.
    auth.nonce = format!("{:016x}{:016x}", h.unix, 0);
    let forged = h.request(udp(1000), METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(forged.code(), Some(438));
    auth.nonce = fresh.clone();
    let mut elsewhere = udp(1000);
    elsewhere.client = SocketAddr::from(([198, 51, 100, 1], 1000));
    let moved = h.request(elsewhere, METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(moved.code(), Some(438));
    // With the fresh nonce it succeeds.
    let ok = h.request(udp(1000), METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(ok.class(), CLASS_SUCCESS_RESPONSE);
    assert_eq!(h.server.stats().auth_failures(AuthFailure::StaleNonce), 3);
}

#[test]
fn every_denied_peer_form_gets_403_and_nothing_is_sent() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1000), &mut auth);
    let denied = [
        "[::ffff:127.0.0.1]:4478",
        "0.0.0.0:4478",
        "[::]:4478",
        "[::1]:4478",
        "169.254.169.254:80",
        "100.64.0.1:4478",
        "10.0.0.1:4478",
        "[fe80::1]:4478",
        "[::ffff:10.0.0.1]:4478",
        "127.0.0.2:4478",
        "192.168.1.1:4478",
        "8.8.8.8:53",
    ];
    for (i, peer) in denied.iter().enumerate() {
        let peer: SocketAddr = peer.parse().unwrap();
        let perm = h.peer_request(udp(1000), METHOD_CREATE_PERMISSION, peer, &[], &auth);
        assert_eq!(perm.code(), Some(403), "CreatePermission {peer}");
        let number = 0x4000 + i as u16;
        let bind = h.peer_request(
            udp(1000),
            METHOD_CHANNEL_BIND,
            peer,
            &[channel_attr(number)],
            &auth,
        );
        assert_eq!(bind.code(), Some(403), "ChannelBind {peer}");
        let send = h.send_indication(peer, b"leak?");
        assert!(h.feed(udp(1000), &send).is_err(), "Send {peer}");
        assert!(h.feed(udp(1000), &channel_data(number, b"leak?")).is_err());
        assert!(peer_transmits(&h.transmits()).is_empty(), "{peer}");
    }
    let s = h.server.stats();
    assert_eq!(s.to_peer_packets, 0);
    assert!(s.denials(Denial::Loopback) >= 6);
    assert!(s.denials(Denial::NotAllowed) >= 2);
}

#[test]
fn a_permission_for_the_media_ip_does_not_open_its_other_ports() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1000), &mut auth);
    let ok = h.peer_request(udp(1000), METHOD_CREATE_PERMISSION, media(), &[], &auth);
    assert_eq!(ok.class(), CLASS_SUCCESS_RESPONSE);
    let ssh: SocketAddr = "127.0.0.1:22".parse().unwrap();
    let send = h.send_indication(ssh, b"x");
    assert_eq!(h.feed(udp(1000), &send), Err(DropReason::Denied));
    let bind = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        ssh,
        &[channel_attr(0x4000)],
        &auth,
    );
    assert_eq!(bind.code(), Some(403));
    assert!(h.transmits().is_empty());
    assert_eq!(h.server.stats().denials(Denial::Loopback), 2);
}

#[test]
fn malformed_stun_is_dropped() {
    let mut h = Harness::new(config());
    let good = h.message(METHOD_BINDING, CLASS_REQUEST, &[], None);
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 0xff;
    let mut long_len = good.clone();
    long_len[3] = 8;
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 4]);
    let mut bad_attr = good.clone();
    bad_attr[3] = 8;
    bad_attr.extend_from_slice(&[0x80, 0x22, 0xff, 0xff, 0, 0, 0, 0]);
    for input in [
        &good[..19],
        &bad_cookie[..],
        &long_len[..],
        &trailing[..],
        &bad_attr[..],
        &[0x00, 0x01][..],
    ] {
        assert_eq!(
            h.feed(udp(1), input),
            Err(DropReason::MalformedStun),
            "{input:?}"
        );
    }
    assert_eq!(
        h.feed(udp(1), &[0xC0, 1, 2, 3]),
        Err(DropReason::UnknownKind)
    );
    assert_eq!(h.feed(udp(1), &[]), Err(DropReason::UnknownKind));
    // A success response from a client is not accepted.
    let response = h.message(METHOD_BINDING, CLASS_SUCCESS_RESPONSE, &[], None);
    assert_eq!(
        h.feed(udp(1), &response),
        Err(DropReason::UnexpectedMessage)
    );
    assert!(h.transmits().is_empty());
    assert_eq!(h.server.stats().drops(DropReason::MalformedStun), 6);
}

#[test]
fn unknown_required_attributes_get_420_and_unknown_methods_400() {
    let mut h = Harness::new(config());
    let reply = h.request(
        udp(1),
        METHOD_BINDING,
        &[(AttrType(0x0030), vec![0; 4])],
        None,
    );
    assert_eq!(reply.code(), Some(420));
    // Type 0x0022: class request, method 0x012 (unassigned).
    let mut unknown = h.message(METHOD_BINDING, CLASS_REQUEST, &[], None);
    unknown[0..2].copy_from_slice(&0x0022u16.to_be_bytes());
    h.feed(udp(1), &unknown).unwrap();
    let out = h.transmits();
    let [Transmit::Client { data, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    let mut msg = Message::new();
    msg.raw.clear();
    msg.raw.extend_from_slice(data);
    msg.decode().unwrap();
    assert_eq!(Reply { msg }.code(), Some(400));
}

#[test]
fn channel_data_with_a_wrong_length_is_dropped() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1000), &mut auth);
    h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4000)],
        &auth,
    );
    let mut longer = channel_data(0x4000, b"abcd");
    longer[3] = 9; // claims more than it carries
    let mut padded_too_much = channel_data(0x4000, b"abcd");
    padded_too_much.extend_from_slice(&[0; 4]);
    for input in [&longer[..], &padded_too_much[..], &[0x40, 0x00, 0x00][..]] {
        assert_eq!(
            h.feed(udp(1000), input),
            Err(DropReason::BadChannelDataLength),
            "{input:?}"
        );
    }
    // Up to three bytes of padding are fine over UDP.
    let mut padded = channel_data(0x4000, b"abc");
    padded.push(0);
    assert_eq!(h.feed(udp(1000), &padded), Ok(()));
    assert_eq!(
        peer_transmits(&h.transmits()),
        vec![(media(), b"abc".to_vec())]
    );
}

#[test]
fn channel_numbers_out_of_range_are_refused() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1000), &mut auth);
    for number in [0x0000, 0x3FFF, 0x5000, 0x7FFF] {
        let reply = h.peer_request(
            udp(1000),
            METHOD_CHANNEL_BIND,
            media(),
            &[channel_attr(number)],
            &auth,
        );
        assert_eq!(reply.code(), Some(400), "{number:#x}");
    }
    assert_eq!(
        h.feed(udp(1000), &channel_data(0x5000, b"x")),
        Err(DropReason::BadChannelNumber)
    );
    // In range but never bound.
    assert_eq!(
        h.feed(udp(1000), &channel_data(0x4002, b"x")),
        Err(DropReason::UnknownChannel)
    );
}

#[test]
fn one_channel_per_peer_and_one_peer_per_channel() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let mut c = config();
    let second: SocketAddr = "127.0.0.1:4479".parse().unwrap();
    c.policy = PeerPolicy::new(vec![media(), second], Vec::new());
    h.server = Server::new(c, [1; 32]).unwrap();
    h.allocated(udp(1000), &mut auth);
    let ok = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4000)],
        &auth,
    );
    assert_eq!(ok.class(), CLASS_SUCCESS_RESPONSE);
    let again = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4000)],
        &auth,
    );
    assert_eq!(again.class(), CLASS_SUCCESS_RESPONSE, "a refresh");
    let taken = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        second,
        &[channel_attr(0x4000)],
        &auth,
    );
    assert_eq!(taken.code(), Some(400));
    let rebound = h.peer_request(
        udp(1000),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4001)],
        &auth,
    );
    assert_eq!(rebound.code(), Some(400));
}

#[test]
fn allocation_quota_per_identity_gets_486_and_per_node_508() {
    let mut c = config();
    c.max_allocations_per_identity = 2;
    c.max_allocations = 3;
    let mut h = Harness::new(c);
    let mut auth = h.creds("42");
    h.allocated(udp(1), &mut auth);
    h.allocated(udp(2), &mut auth);
    let third = h.allocate(udp(3), &mut auth);
    assert_eq!(third.code(), Some(486));
    let mut other = h.creds("43");
    h.allocated(udp(4), &mut other);
    let full = h.allocate(udp(5), &mut other);
    assert_eq!(full.code(), Some(508));
    assert_eq!(h.server.stats().quota_refusals, 2);
    // Releasing one frees the credential's slot.
    let release = h.request(
        udp(1),
        METHOD_REFRESH,
        &[(rtc_stun::attributes::ATTR_LIFETIME, vec![0; 4])],
        Some(&auth),
    );
    assert_eq!(release.class(), CLASS_SUCCESS_RESPONSE);
    h.allocated(udp(3), &mut auth);
}

/// Regression: the quota was keyed by the whole username, which embeds the expiry, so each
/// freshly minted credential of one identity came with a quota of its own.
#[test]
fn fresh_credentials_of_one_identity_share_its_allocation_quota() {
    let mut c = config();
    c.max_allocations_per_identity = 3;
    let mut h = Harness::new(c);
    // The nonce is bound to the client's IP: one challenge serves every port below.
    let challenge = h.request(udp(1), METHOD_ALLOCATE, &[transport_udp()], None);
    let nonce = challenge.text(ATTR_NONCE).unwrap();
    let fresh = |h: &Harness, identity: &str| Auth {
        nonce: nonce.clone(),
        ..h.creds(identity)
    };
    let release = |h: &mut Harness, from: FiveTuple, auth: &Auth| {
        let reply = h.request(
            from,
            METHOD_REFRESH,
            &[(rtc_stun::attributes::ATTR_LIFETIME, vec![0; 4])],
            Some(auth),
        );
        assert_eq!(reply.class(), CLASS_SUCCESS_RESPONSE, "{:?}", reply.code());
    };

    // 200 credentials for one identity, each minted a second after the last (a new expiry,
    // so a new username), each tried on a new 5-tuple: the first three allocate.
    let mut held = Vec::new();
    for i in 0..200u16 {
        h.advance(Duration::from_secs(1));
        let auth = fresh(&h, "alice");
        let from = udp(1_000 + i);
        let reply = h.request(from, METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
        if i < 3 {
            assert_eq!(reply.class(), CLASS_SUCCESS_RESPONSE, "{:?}", reply.code());
            held.push((from, auth));
        } else {
            assert_eq!(
                reply.code(),
                Some(486),
                "credential {i} ({}) of an identity holding its quota",
                auth.username
            );
        }
    }
    assert_eq!(h.server.allocation_count(), 3);
    assert_eq!(h.server.stats().quota_refusals, 197);

    // Another identity has its own quota.
    for i in 0..3u16 {
        let auth = fresh(&h, "bob");
        let reply = h.request(
            udp(2_000 + i),
            METHOD_ALLOCATE,
            &[transport_udp()],
            Some(&auth),
        );
        assert_eq!(reply.class(), CLASS_SUCCESS_RESPONSE, "{:?}", reply.code());
    }

    // Releasing one of alice's allocations (made with an older credential) frees one slot for
    // her, and only one.
    let (from, auth) = held.remove(0);
    release(&mut h, from, &auth);
    h.advance(Duration::from_secs(1));
    let again = h.request(
        udp(3_000),
        METHOD_ALLOCATE,
        &[transport_udp()],
        Some(&fresh(&h, "alice")),
    );
    assert_eq!(again.class(), CLASS_SUCCESS_RESPONSE, "{:?}", again.code());
    let over = h.request(
        udp(3_001),
        METHOD_ALLOCATE,
        &[transport_udp()],
        Some(&fresh(&h, "alice")),
    );
    assert_eq!(over.code(), Some(486));
    assert_eq!(h.server.stats().quota_refusals, 198);
    assert_eq!(h.server.allocation_count(), 6);
}

#[test]
fn a_second_allocate_on_the_same_5_tuple_gets_437() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1), &mut auth);
    let again = h.request(udp(1), METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(again.code(), Some(437));
    let refresh = h.request(udp(2), METHOD_REFRESH, &[], Some(&auth));
    assert_eq!(refresh.code(), Some(437));
}

#[test]
fn another_username_on_an_allocation_gets_441() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    h.allocated(udp(1), &mut auth);
    let mut other = h.creds("43");
    other.nonce = auth.nonce.clone();
    let refresh = h.request(udp(1), METHOD_REFRESH, &[], Some(&other));
    assert_eq!(refresh.code(), Some(441));
}

#[test]
fn allocate_checks_the_requested_transport() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let c = h.request(udp(1), METHOD_ALLOCATE, &[], None);
    auth.nonce = c.text(ATTR_NONCE).unwrap();
    let none = h.request(udp(1), METHOD_ALLOCATE, &[], Some(&auth));
    assert_eq!(none.code(), Some(400));
    let tcp = (
        rtc_stun::attributes::ATTR_REQUESTED_TRANSPORT,
        vec![6, 0, 0, 0],
    );
    let reply = h.request(udp(1), METHOD_ALLOCATE, &[tcp], Some(&auth));
    assert_eq!(reply.code(), Some(442));
}

#[test]
fn allocations_expire_and_lifetimes_are_capped() {
    let mut c = config();
    c.max_lifetime = Duration::from_secs(900);
    let mut h = Harness::new(c);
    let mut auth = h.creds("42");
    let challenge = h.request(udp(1), METHOD_ALLOCATE, &[transport_udp()], None);
    auth.nonce = challenge.text(ATTR_NONCE).unwrap();
    let day = (
        rtc_stun::attributes::ATTR_LIFETIME,
        86_400u32.to_be_bytes().to_vec(),
    );
    let reply = h.request(
        udp(1),
        METHOD_ALLOCATE,
        &[transport_udp(), day],
        Some(&auth),
    );
    assert_eq!(
        reply.msg.get(rtc_stun::attributes::ATTR_LIFETIME).unwrap(),
        900u32.to_be_bytes()
    );
    let relay = reply.addr(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    h.events();
    h.advance(Duration::from_secs(899));
    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.server.poll_timeout().is_some());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.events(),
        vec![Event::Closed {
            client: udp(1),
            relay,
            reason: CloseReason::Expired
        }]
    );
    assert_eq!(
        h.server.handle_peer(relay, media(), b"late", h.now),
        Err(DropReason::UnknownRelay)
    );
    let _ = h.start;
}

#[test]
fn permissions_expire_after_five_minutes() {
    let mut h = Harness::new(config());
    let mut auth = h.creds("42");
    let relay = h.allocated(udp(1), &mut auth);
    h.peer_request(udp(1), METHOD_CREATE_PERMISSION, media(), &[], &auth);
    h.advance(Duration::from_secs(301));
    assert_eq!(
        h.server.handle_peer(relay, media(), b"x", h.now),
        Err(DropReason::NoPermission)
    );
}

#[test]
fn closing_a_stream_connection_releases_its_allocation() {
    let mut h = Harness::new(config());
    let tls = FiveTuple {
        transport: Transport::Tls,
        ..udp(9)
    };
    let mut auth = h.creds("42");
    let relay = h.allocated(tls, &mut auth);
    h.events();
    h.server.handle_client_closed(&tls);
    assert_eq!(
        h.events(),
        vec![Event::Closed {
            client: tls,
            relay,
            reason: CloseReason::ConnectionClosed
        }]
    );
}

#[test]
fn unauthorized_replies_are_rate_limited_per_source() {
    let mut c = config();
    c.unauthorized_per_second = 1;
    c.unauthorized_burst = 3;
    let mut h = Harness::new(c);
    let req = h.message(METHOD_ALLOCATE, CLASS_REQUEST, &[transport_udp()], None);
    for _ in 0..3 {
        assert_eq!(h.feed(udp(1), &req), Ok(()));
    }
    assert_eq!(h.feed(udp(1), &req), Err(DropReason::RateLimited));
    assert_eq!(h.transmits().len(), 3);
    // Another source has its own budget; the first gets one more a second later.
    let mut other = udp(1);
    other.client = SocketAddr::from(([198, 51, 100, 2], 1));
    assert_eq!(h.feed(other, &req), Ok(()));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.feed(udp(1), &req), Ok(()));
    assert_eq!(h.server.stats().drops(DropReason::RateLimited), 1);
}

/// A spoofed source: IPv4 addresses from 198.18.0.0/15 and IPv6 addresses each in a /64 of
/// its own, alternately.
fn spoofed(i: u32) -> FiveTuple {
    let ip = if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ))
    };
    udp_from(ip, 40_000)
}

/// Regression: once `max_tracked_sources` sources were tracked, a new source got no 401 at
/// all, so 10 000 spoofed sources kept every new client from ever allocating.
#[test]
fn spoofed_sources_filling_the_401_limit_do_not_lock_out_new_clients() {
    let mut h = Harness::new(config());
    let cap = h.server.config().max_tracked_sources;
    assert_eq!(cap, 10_000);
    let req = h.message(METHOD_ALLOCATE, CLASS_REQUEST, &[transport_udp()], None);
    for i in 0..cap as u32 {
        assert_eq!(h.feed(spoofed(i), &req), Ok(()), "spoofed source {i}");
    }
    assert_eq!(h.server.tracked_sources(), cap);
    // One reply per request, no more.
    assert_eq!(h.transmits().len(), cap);

    // A new client, on IPv4 and on IPv6, gets its challenge and allocates.
    let mut auth = h.creds("42");
    h.allocated(udp(1_000), &mut auth);
    let v6 = udp_from("2001:db8:ffff:1::7".parse().unwrap(), 1_001);
    let mut auth = h.creds("43");
    h.allocated(v6, &mut auth);
    assert_eq!(h.server.tracked_sources(), cap);

    // The flood goes on with new sources: the table stays at its cap, and clients still get in.
    for i in cap as u32..(cap as u32 + 2_000) {
        assert_eq!(h.feed(spoofed(i), &req), Ok(()), "spoofed source {i}");
        assert!(h.server.tracked_sources() <= cap);
    }
    h.transmits();
    let mut auth = h.creds("44");
    h.allocated(udp(1_002), &mut auth);
    assert_eq!(h.server.tracked_sources(), cap);
    assert_eq!(h.server.allocation_count(), 3);
    assert_eq!(h.server.stats().drops(DropReason::RateLimited), 0);
    // Each source new to a full table made room by forgetting one: the two clients and the
    // 2 000 later spoofed sources (the third client's address was still tracked).
    assert_eq!(h.server.stats().rate_limit_evictions, 2_002);
}

/// A host owns a /64: its addresses share one 401 budget, so rotating through them buys
/// nothing. IPv4 clients seen as IPv4-mapped addresses (a dual-stack socket) keep one each.
#[test]
fn ipv6_sources_of_one_64_share_a_401_budget() {
    let mut c = config();
    c.unauthorized_per_second = 1;
    c.unauthorized_burst = 3;
    let mut h = Harness::new(c);
    let req = h.message(METHOD_ALLOCATE, CLASS_REQUEST, &[transport_udp()], None);
    let host = |s: &str| udp_from(s.parse().unwrap(), 5_000);
    for addr in [
        "2001:db8:7:7::1",
        "2001:db8:7:7:a:b:c:d",
        "2001:db8:7:7:ffff::9",
    ] {
        assert_eq!(h.feed(host(addr), &req), Ok(()), "{addr}");
    }
    for addr in ["2001:db8:7:7::2", "2001:db8:7:7:1234:5678:9abc:def0"] {
        assert_eq!(
            h.feed(host(addr), &req),
            Err(DropReason::RateLimited),
            "{addr} is in a /64 whose burst is spent"
        );
    }
    // The next /64 over has its own budget.
    assert_eq!(h.feed(host("2001:db8:7:8::1"), &req), Ok(()));
    // IPv4-mapped addresses are keyed by their IPv4 address, not lumped into `::/64`.
    for addr in ["::ffff:198.51.100.1", "::ffff:198.51.100.2"] {
        for _ in 0..3 {
            assert_eq!(h.feed(host(addr), &req), Ok(()), "{addr}");
        }
    }
    assert_eq!(h.server.tracked_sources(), 4);
    assert_eq!(h.transmits().len(), 10);
    assert_eq!(h.server.stats().drops(DropReason::RateLimited), 2);
}

/// The limit exists so the server cannot be used to reflect 401s at a spoofed victim: making
/// room for new sources never hands a victim that is being hit a fresh burst.
#[test]
fn a_spoofed_victim_gets_no_fresh_burst_while_the_401_table_churns() {
    let mut c = config();
    c.unauthorized_per_second = 1;
    c.unauthorized_burst = 3;
    c.max_tracked_sources = 100;
    let mut h = Harness::new(c);
    let req = h.message(METHOD_ALLOCATE, CLASS_REQUEST, &[transport_udp()], None);
    let victim = udp_from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 53);
    let mut answered = 0;
    // Every request at the victim comes between requests from new sources: 5 000 of them, fifty
    // times the table's size.
    for i in 0..5_000 {
        answered += usize::from(h.feed(victim, &req).is_ok());
        assert_eq!(h.feed(spoofed(i), &req), Ok(()), "spoofed source {i}");
        assert!(h.server.tracked_sources() <= 100);
    }
    assert_eq!(answered, 3, "the victim's burst, once");
    // Once time passes, the victim's budget refills at its rate.
    h.advance(Duration::from_secs(2));
    assert_eq!(h.feed(victim, &req), Ok(()));
}

#[test]
fn bandwidth_per_allocation_is_enforced() {
    let mut c = config();
    c.bandwidth = 1_000;
    let mut h = Harness::new(c);
    let mut auth = h.creds("42");
    h.allocated(udp(1), &mut auth);
    h.peer_request(
        udp(1),
        METHOD_CHANNEL_BIND,
        media(),
        &[channel_attr(0x4000)],
        &auth,
    );
    let packet = channel_data(0x4000, &[0; 400]);
    assert_eq!(h.feed(udp(1), &packet), Ok(()));
    assert_eq!(h.feed(udp(1), &packet), Ok(()));
    assert_eq!(h.feed(udp(1), &packet), Err(DropReason::Bandwidth));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.feed(udp(1), &packet), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut h = Harness::new(config());
        let _ = h.feed(udp(1), &data);
        let _ = h.server.handle_peer("127.0.0.1:50001".parse().unwrap(), media(), &data, h.now);
        let _ = framing::next_frame(&data);
    }

    #[test]
    fn mutated_requests_never_panic(flip in 0usize..200, byte in any::<u8>()) {
        let mut h = Harness::new(config());
        let mut auth = h.creds("42");
        h.allocated(udp(1), &mut auth);
        let mut req = h.message(METHOD_CREATE_PERMISSION, CLASS_REQUEST, &[peer_attr(&TransactionId::default(), media())], Some(&auth));
        let i = flip % req.len();
        req[i] = byte;
        let _ = h.feed(udp(1), &req);
    }
}

/// A request on an allocation, through one 438 (stale nonce) round if the nonce aged out.
impl Harness {
    fn on_allocation(
        &mut self,
        from: FiveTuple,
        method: Method,
        peer: Option<SocketAddr>,
        extra: &[(AttrType, Vec<u8>)],
        auth: &mut Auth,
    ) -> Reply {
        for _ in 0..2 {
            let reply = match peer {
                Some(peer) => self.peer_request(from, method, peer, extra, auth),
                None => self.request(from, method, extra, Some(auth)),
            };
            if reply.code() != Some(438) {
                return reply;
            }
            auth.nonce = reply.text(ATTR_NONCE).unwrap();
        }
        panic!("a second 438 in a row");
    }
}

#[test]
fn an_allocation_outlives_its_credential_and_its_secret() {
    let cfg = config();
    let handle = cfg.secrets.clone();
    let mut h = Harness::new(cfg);
    let mut auth = h.creds("42");
    h.allocated(udp(1), &mut auth);
    let lifetime = (
        rtc_stun::attributes::ATTR_LIFETIME,
        600u32.to_be_bytes().to_vec(),
    );
    // Half an hour of a call whose credential was minted for five minutes: the allocation is
    // refreshed and its permission and channel renewed every four minutes.
    for round in 0..8u32 {
        h.advance(Duration::from_secs(240));
        let refresh = h.on_allocation(
            udp(1),
            METHOD_REFRESH,
            None,
            std::slice::from_ref(&lifetime),
            &mut auth,
        );
        assert_eq!(
            refresh.class(),
            CLASS_SUCCESS_RESPONSE,
            "Refresh, round {round}: {:?}",
            refresh.code()
        );
        let permission = h.on_allocation(
            udp(1),
            METHOD_CREATE_PERMISSION,
            Some(media()),
            &[],
            &mut auth,
        );
        assert_eq!(
            permission.class(),
            CLASS_SUCCESS_RESPONSE,
            "CreatePermission, round {round}: {:?}",
            permission.code()
        );
        let channel = h.on_allocation(
            udp(1),
            METHOD_CHANNEL_BIND,
            Some(media()),
            &[channel_attr(0x4000)],
            &mut auth,
        );
        assert_eq!(
            channel.class(),
            CLASS_SUCCESS_RESPONSE,
            "ChannelBind, round {round}: {:?}",
            channel.code()
        );
        if round == 3 {
            // The secret that minted the credential rotates out meanwhile.
            handle.replace(vec![TurnSecret::new(b"the next secret".to_vec())]);
        }
    }
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().auth_failures(AuthFailure::Expired), 0);

    // The expired credential opens nothing new: not a second allocation, not this one's requests
    // with a wrong password.
    let challenge = h.request(udp(2), METHOD_ALLOCATE, &[transport_udp()], None);
    auth.nonce = challenge.text(ATTR_NONCE).unwrap();
    let again = h.request(udp(2), METHOD_ALLOCATE, &[transport_udp()], Some(&auth));
    assert_eq!(again.code(), Some(401));
    assert_eq!(h.server.stats().auth_failures(AuthFailure::Expired), 1);
    let mut forged = Auth {
        password: "not the password".into(),
        ..auth.clone()
    };
    let refused = h.on_allocation(
        udp(1),
        METHOD_REFRESH,
        None,
        std::slice::from_ref(&lifetime),
        &mut forged,
    );
    assert_eq!(refused.code(), Some(401));
}
