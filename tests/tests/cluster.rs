//! A cluster of gateways on one real Redis (`redis-server`, started here on a Unix socket):
//! leases, placement of rooms, redirects, and what happens when a node stops or Redis goes
//! away. The nodes run in this process on 127.0.0.2–4 with compressed timings (heartbeat
//! 100 ms, lease 600 ms); the clients are real `strait-client` sessions that follow redirects.
//!
//! Its own test binary: the tests share no state, but their timings are short, so they should
//! not compete with the rest of the suite for the two cores.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_client::protocol::ErrorCode;
use strait_client::{Client, ClientError, Session, Transport};
use strait_tests::fixture::{TestGateway, WAIT, http_get};
use strait_tests::redis::{RedisServer, Timings, cluster_events, join_cluster};

const KEY_ID: &str = "cluster";
const SECRET: &str = "cluster-test-secret-0123456789abcdefghij";
const RESUME_SECRET: &str = "cluster-test-resume-secret-0123456789abc";
/// Compressed: a node is known gone 0.6 s after its last renewal.
const TIMINGS: Timings = Timings {
    heartbeat: Duration::from_millis(100),
    lease: Duration::from_millis(600),
    room_lease: Duration::from_millis(1500),
};

/// A node of the cluster on `ip`, named `id` (no WebRTC bridge).
async fn node(redis: &RedisServer, id: &str, ip: [u8; 4]) -> TestGateway {
    node_with(redis, id, ip, false).await
}

/// A node of the cluster on `ip`, named `id`, with the WebRTC bridge if `webrtc`.
async fn node_with(redis: &RedisServer, id: &str, ip: [u8; 4], webrtc: bool) -> TestGateway {
    let gateway = TestGateway::start_with(|c| {
        c.quic.listen = SocketAddr::from((ip, 0));
        c.http.listen = SocketAddr::from((ip, 0));
        c.webrtc.enabled = webrtc;
        c.webrtc.listen = SocketAddr::from((ip, 0));
        join_cluster(c, redis, id, (KEY_ID, SECRET, RESUME_SECRET), TIMINGS);
    })
    .await;
    gateway.wait_ready(true).await;
    gateway
}

/// Three nodes, `a`, `b` and `c`.
async fn three(redis: &RedisServer) -> Vec<TestGateway> {
    vec![
        node(redis, "a", [127, 0, 0, 2]).await,
        node(redis, "b", [127, 0, 0, 3]).await,
        node(redis, "c", [127, 0, 0, 4]).await,
    ]
}

/// A client of `entry` for `room` (it pins `entry`'s certificate; a redirect brings the
/// owner's).
async fn join(entry: &TestGateway, room: &str, identity: &str) -> Result<Session, ClientError> {
    let token = entry.token(room, identity);
    let config = entry.client_config(Transport::Quic, token);
    let (session, _) = Client::connect_and_join(config, room).await?;
    Ok(session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_hold_leases_and_a_stopped_node_gives_back_its_lease_and_rooms() {
    let redis = RedisServer::start().await;
    let mut nodes = three(&redis).await;
    assert_eq!(
        redis.keys("{strait}:node:*").await,
        ["{strait}:node:a", "{strait}:node:b", "{strait}:node:c"]
    );
    let record = redis.get("{strait}:node:b").await.expect("b's record");
    assert!(record.contains("\"state\":\"serving\""), "{record}");
    assert!(
        record.contains(&format!("\"quic\":\"{}\"", nodes[1].quic_addr())),
        "{record}"
    );

    // `/v1/nodes` lists the serving nodes with what a client needs to reach each; outside a
    // cluster the list is empty.
    let nodes_of = async |gateway: &TestGateway| -> Vec<serde_json::Value> {
        let body = http_get(gateway.http_addr(), "/v1/nodes").await;
        let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        listed["nodes"].as_array().expect("a list").clone()
    };
    let listed = nodes_of(&nodes[2]).await;
    let ids: Vec<&str> = listed.iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(
        listed[1]["webtransport"],
        format!("https://{}/rtc", nodes[1].quic_addr())
    );
    assert_eq!(listed[1]["quic"], nodes[1].quic_addr().to_string());
    let b_hash = nodes[1].gateway.cert_fingerprint().to_hex();
    assert!(
        listed[1]["cert_hashes"]
            .as_array()
            .expect("hashes")
            .iter()
            .any(|h| h == b_hash.as_str()),
        "{listed:?}"
    );
    let alone = TestGateway::start().await;
    assert!(nodes_of(&alone).await.is_empty());
    alone.stop().await;

    // A room joined through `a` is placed on `a` (it is idle).
    let session = join(&nodes[0], "standup", "alice").await.expect("joins");
    assert_eq!(session.remote_address(), Some(nodes[0].quic_addr()));
    assert_eq!(
        redis.hget("{strait}:room:standup", "node").await.as_deref(),
        Some("a")
    );

    // Stopping `a` gives its room and its lease back at once (no lease to wait out). (Once
    // alice has left: a room with participants would be handed over to another node.)
    session.close().await;
    nodes[0]
        .wait_metric("strait_participants", |v| v == 0.0)
        .await;
    let a = nodes.remove(0);
    a.stop().await;
    assert_eq!(redis.get("{strait}:node:a").await, None);
    assert_eq!(redis.hget("{strait}:room:standup", "node").await, None);
    let ids: Vec<String> = nodes_of(&nodes[0])
        .await
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, ["b", "c"], "a stopped node is not listed");
    for node in nodes {
        node.stop().await;
    }
    assert!(redis.keys("{strait}:node:*").await.is_empty());
    assert!(redis.keys("{strait}:room:*").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_through_every_node_land_on_one_owner_after_at_most_one_redirect() {
    let redis = RedisServer::start().await;
    let nodes = three(&redis).await;
    let mut sessions = Vec::new();
    for (i, entry) in nodes.iter().enumerate() {
        let session = join(entry, "design-review", &format!("member-{i}"))
            .await
            .expect("joins through any node");
        sessions.push(session);
    }
    let owner = nodes[0].quic_addr();
    for session in &sessions {
        assert_eq!(session.remote_address(), Some(owner), "one owner");
    }
    // The first join placed the room at its entry, which then served all three; each other
    // entry redirected once.
    assert_eq!(cluster_events(&nodes[0], "placed_here").await, 3.0);
    assert_eq!(cluster_events(&nodes[0], "redirected").await, 0.0);
    assert_eq!(cluster_events(&nodes[1], "redirected").await, 1.0);
    assert_eq!(cluster_events(&nodes[2], "redirected").await, 1.0);
    // They are in one room: each sees the two others.
    let last = sessions.last().expect("three sessions");
    until_room(last, "the room's members meet", |s| {
        s.participants().len() >= 2
    })
    .await;
    for session in sessions {
        session.close().await;
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_joins_through_three_nodes_end_with_one_owner() {
    let redis = RedisServer::start().await;
    let nodes = std::sync::Arc::new(three(&redis).await);
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..50 {
        let nodes = nodes.clone();
        joins.spawn(async move {
            let session = join(&nodes[i % 3], "town-hall", &format!("guest-{i}"))
                .await
                .expect("joins");
            let at = session.remote_address();
            (session, at)
        });
    }
    let mut sessions = Vec::new();
    while let Some(joined) = joins.join_next().await {
        sessions.push(joined.expect("the join task"));
    }
    let owner = redis
        .hget("{strait}:room:town-hall", "node")
        .await
        .expect("the room has an owner");
    let owner_addr = nodes[usize::from(owner.as_bytes()[0] - b'a')].quic_addr();
    assert!(
        sessions.iter().all(|(_, at)| *at == Some(owner_addr)),
        "every session is on {owner} ({owner_addr})"
    );
    assert_eq!(
        redis.get("{strait}:epoch").await.as_deref(),
        Some("1"),
        "placed once: one epoch drawn in all"
    );
    for (session, _) in sessions {
        session.close().await;
    }
    let nodes = std::sync::Arc::into_inner(nodes).expect("no task holds the nodes");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_rooms_here_refuses_new_ones_and_heals_without_a_restart() {
    use strait_tests::fixture::{opus_spec, rtp};

    let mut redis = RedisServer::start().await;
    let nodes = three(&redis).await;
    let alice = join(&nodes[0], "ops", "alice").await.expect("joins");
    let listener = join(&nodes[0], "ops", "listener").await.expect("joins");
    let track = alice.publish(opus_spec()).await.expect("publishes");
    until_room(&listener, "the track shows", |s| !s.tracks().is_empty()).await;
    listener
        .subscribe(track.track, None)
        .await
        .expect("subscribes");
    // Media before, during and after the outage: one packet at a time, each waited for.
    let mut seq = 0u16;
    let mut forwarded = async || {
        seq += 1;
        let packet = rtp::opus(seq, u32::from(seq) * 960, 9, u32::from(seq));
        alice.send_rtp(track.media[0], &packet).expect("sends");
        let got = tokio::time::timeout(WAIT, listener.recv_media())
            .await
            .expect("media flows")
            .expect("the session is open");
        assert_eq!(rtp::index_at(&got.rtp, 12), u32::from(seq));
    };
    forwarded().await;

    redis.kill();
    let killed = Instant::now();
    // Alive throughout, unready once the lease could not be renewed for its length.
    let health_polls = std::sync::atomic::AtomicU32::new(0);
    let healthy_throughout = async {
        loop {
            assert_eq!(http_get(nodes[0].http_addr(), "/healthz").await, "ok\n");
            health_polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        () = nodes[0].wait_ready(false) => {}
        () = healthy_throughout => {}
    }
    eprintln!(
        "unready {:?} after Redis died (lease 600 ms; /healthz 200 at each of {} polls)",
        killed.elapsed(),
        health_polls.into_inner()
    );
    forwarded().await;
    // A room already here takes more participants; a new one is refused, retryably.
    let bob = join(&nodes[0], "ops", "bob")
        .await
        .expect("joins a room this node serves");
    match join(&nodes[0], "new-room", "carol").await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::UNAVAILABLE),
        other => panic!("a new room during the outage: {other:?}"),
    }
    forwarded().await;
    assert_eq!(http_get(nodes[0].http_addr(), "/healthz").await, "ok\n");

    // Redis comes back empty: every node registers again and `a` takes its room back.
    redis.restart().await;
    let back = Instant::now();
    for node in &nodes {
        node.wait_ready(true).await;
    }
    redis
        .wait_until("the room re-claimed by a", async |r: &RedisServer| {
            (r.hget("{strait}:room:ops", "node").await.as_deref() == Some("a")).then_some(())
        })
        .await;
    eprintln!("recovered {:?} after Redis came back", back.elapsed());
    assert!(cluster_events(&nodes[0], "reclaimed").await >= 1.0);
    forwarded().await;
    let carol = join(&nodes[1], "ops", "carol").await.expect("joins again");
    assert_eq!(carol.remote_address(), Some(nodes[0].quic_addr()));
    for session in [alice, listener, bob, carol] {
        session.close().await;
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Waits (at most [`WAIT`]) until `done` holds for `session`, woken by each change of its room
/// state.
async fn until_room(session: &Session, what: &str, done: impl Fn(&Session) -> bool) {
    let mut changes = session.room_changes();
    tokio::time::timeout(WAIT, async {
        while !done(session) {
            changes.changed().await.expect("the session is open");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited in vain: {what}"));
}

/// Waits until `key` is gone from Redis (an expired lease).
async fn gone(redis: &RedisServer, key: &str) {
    redis
        .wait_until(&format!("{key} gone"), async |r: &RedisServer| {
            r.get(key).await.is_none().then_some(())
        })
        .await;
}

/// The `strait` binary of this build (`scripts/test` builds it before the tests).
/// The settings of a node process named `id` (`redis`: of the cluster on it, or alone).
fn child_settings(redis: Option<&RedisServer>, id: &str) -> Vec<String> {
    let mut settings = vec![
        format!("auth.keys=[{{id=\"{KEY_ID}\",secret=\"{SECRET}\"}}]"),
        format!("auth.resume_secret={RESUME_SECRET}"),
        format!("cluster.node_id={id}"),
        "webrtc.enabled=false".into(),
    ];
    if let Some(redis) = redis {
        settings.extend([
            format!("cluster.redis_url={}", redis.url()),
            "cluster.heartbeat=100ms".into(),
            "cluster.lease=600ms".into(),
            "cluster.room_lease=1500ms".into(),
        ]);
    }
    settings
}

/// A node of the cluster as a process of its own (to kill or pause), once its lease is in
/// Redis.
async fn child_node(redis: &RedisServer, id: &str) -> strait_load::gateway::GatewayChild {
    let node = strait_load::gateway::GatewayChild::start(
        &strait_tests::fixture::strait_binary(),
        &child_settings(Some(redis), id),
    )
    .await
    .expect("the node process starts");
    let key = format!("{{strait}}:node:{id}");
    redis
        .wait_until("the node's lease", async |r: &RedisServer| {
            r.get(&key).await
        })
        .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_lease_expires_and_its_room_goes_to_a_live_node() {
    let redis = RedisServer::start().await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let k = child_node(&redis, "k").await;
    // A room joined through k is k's.
    let mut config = b.client_config(Transport::Quic, b.token("ward", "nurse"));
    config.server = k.quic;
    config.trust = strait_client::Trust::Hashes(vec![k.cert]);
    let (nurse, _) = Client::connect_and_join(config, "ward")
        .await
        .expect("joins at k");
    assert_eq!(nurse.remote_address(), Some(k.quic));
    assert_eq!(
        redis.hget("{strait}:room:ward", "node").await.as_deref(),
        Some("k")
    );

    // kill -9: nothing is released; the lease runs out on its own.
    k.stop().await;
    gone(&redis, "{strait}:node:k").await;
    // The room's record still names k, but k is not live: the next join takes it.
    let doctor = join(&b, "ward", "doctor")
        .await
        .expect("joins after the loss");
    assert_eq!(doctor.remote_address(), Some(b.quic_addr()));
    assert_eq!(
        redis.hget("{strait}:room:ward", "node").await.as_deref(),
        Some("b")
    );
    doctor.close().await;
    nurse.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_is_sent_to_its_node_while_it_lives_and_starts_afresh_after() {
    use strait_protocol::ControlMessage;
    use strait_tests::fixture::{RawSession, client_hello};

    let redis = RedisServer::start().await;
    let a = node(&redis, "a", [127, 0, 0, 2]).await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let (at_a, hello) = RawSession::hello(&a, "clinic", "pat").await;
    let resume: String = hello.resume_token.0.clone();

    // At b, the token of a's session is redirected to a (with a's hashes, no new token: the
    // resume token is what the client presents there).
    let mut at_b = RawSession::connect(&b).await;
    at_b.send_frame(&ControlMessage::ClientHello(client_hello(
        b.token("clinic", "pat"),
        Some(resume.clone()),
    )))
    .await;
    match at_b.expect_message().await {
        ControlMessage::GoAway(g) => {
            assert_eq!(g.code, ErrorCode::REDIRECT);
            assert_eq!(g.redirect, Some(a.quic_addr().to_string()));
            let a_hash: String = a
                .gateway
                .cert_fingerprint()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(g.cert_hashes.contains(&a_hash), "{:?}", g.cert_hashes);
            assert_eq!(g.token, None);
        }
        other => panic!("expected a redirect, got {other:?}"),
    }

    // a is gone: the token is worth nothing, and the session starts afresh at b.
    at_a.conn.close(0u32.into(), b"leaving");
    a.stop().await;
    let (fresh, hello) =
        RawSession::hello_with(&b, client_hello(b.token("clinic", "pat"), Some(resume))).await;
    assert!(!hello.resumed);
    fresh.conn.close(0u32.into(), b"leaving");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_offer_at_another_node_is_redirected_with_a_token_and_deleted_at_the_owner() {
    use std::sync::Arc;

    use strait_tests::bridge::{local_vp8_track, wait_for_leave, wait_for_participant};
    use strait_tests::http::{delete, http, post_offer};
    use strait_tests::webrtc_peer::Peer;
    use webrtc::media_stream::track_local::TrackLocal;

    let redis = RedisServer::start().await;
    let a = node_with(&redis, "a", [127, 0, 0, 2], true).await;
    let b = node_with(&redis, "b", [127, 0, 0, 3], true).await;
    // The room is a's: a native member joined there first.
    let host = join(&a, "stage", "host").await.expect("joins at a");

    let mut peer = Peer::new().await;
    peer.pc
        .add_track(local_vp8_track(0x5eed) as Arc<dyn TrackLocal>)
        .await
        .expect("a video track");
    let offer = peer.offer().await;
    let token = b.token("stage", "camera");
    let redirected = post_offer(&b, "/whip/stage", &token, &offer).await;
    assert_eq!(redirected.status, 307, "{redirected:?}");
    let location = redirected
        .header("location")
        .expect("a Location")
        .to_owned();
    let a_http = format!("http://{}", a.http_addr());
    let path = location
        .strip_prefix(&a_http)
        .unwrap_or_else(|| panic!("{location} is not at a ({a_http})"));
    assert!(path.starts_with("/whip/stage?access_token="), "{path}");

    // What a browser does: the same POST at the new URL, without `Authorization` (dropped
    // on a redirect to another origin): the token in the URL is enough.
    let answered = http(
        &a,
        "POST",
        path,
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    )
    .await;
    assert_eq!(answered.status, 201, "{answered:?}");
    let resource = answered.header("location").expect("a Location").to_owned();
    let resource_path = resource
        .strip_prefix(&a_http)
        .unwrap_or_else(|| panic!("{resource}: absolute, at a"));
    peer.finish(&answered.body).await;
    let camera = wait_for_participant(&host, "camera").await;

    // DELETE at the owner ends it.
    let deleted = delete(&a, resource_path, &token).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    wait_for_leave(&host, camera).await;
    host.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_at_another_node_gets_a_redirect_with_a_token_for_the_owner() {
    use strait_protocol::ControlMessage;
    use strait_tests::ws::WsClient;

    let redis = RedisServer::start().await;
    let a = node_with(&redis, "a", [127, 0, 0, 2], true).await;
    let b = node_with(&redis, "b", [127, 0, 0, 3], true).await;
    let host = join(&a, "lounge", "host").await.expect("joins at a");

    let mut at_b = WsClient::connect(&b, Some(&b.token("lounge", "legacy"))).await;
    let go_away = at_b
        .expect(|m| match m {
            ControlMessage::GoAway(g) => Some(g.clone()),
            _ => None,
        })
        .await;
    assert_eq!(go_away.code, ErrorCode::REDIRECT);
    assert_eq!(
        go_away.redirect,
        Some(format!("ws://{}/ws/rtc", a.http_addr()))
    );
    at_b.expect_closed_with(ErrorCode::REDIRECT).await;
    assert_eq!(at_b.closed.as_ref().map(|c| c.0), Some(1001), "going away");

    // The token it carries opens a session at the owner.
    let token = go_away.token.expect("a token for the owner");
    let mut at_a = WsClient::hello(&a, &token).await;
    at_a.join("lounge").await;
    strait_tests::bridge::wait_for_participant(&host, "legacy").await;
    at_a.leave().await;
    host.close().await;
    a.stop().await;
    b.stop().await;
}

/// Waits until `session` ends and returns why.
async fn ended(session: &Session) -> ClientError {
    tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("the session ends in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_rooms_over_and_sends_their_sessions_after_them() {
    const ROOMS: usize = 6;
    const MEMBERS: usize = 4;
    let redis = RedisServer::start().await;
    let mut nodes = three(&redis).await;
    let mut sessions = Vec::new();
    for r in 0..ROOMS {
        for m in 0..MEMBERS {
            let room = format!("drill-{r}");
            let session = join(&nodes[0], &room, &format!("member-{m}"))
                .await
                .expect("joins at a");
            sessions.push((room, session));
        }
    }
    for r in 0..ROOMS {
        assert_eq!(
            redis
                .hget(&format!("{{strait}}:room:drill-{r}"), "node")
                .await
                .as_deref(),
            Some("a")
        );
    }

    // One more member trusts every node's certificate: its session follows its room by itself
    // and publishes its track again there.
    let every_hash: Vec<[u8; 32]> = nodes
        .iter()
        .map(|n| *n.gateway.cert_fingerprint().as_bytes())
        .collect();
    let mut config = nodes[0].client_config(Transport::Quic, nodes[0].token("drill-0", "roamer"));
    config.trust = strait_client::Trust::Hashes(every_hash);
    let (roamer, _) = Client::connect_and_join(config, "drill-0")
        .await
        .expect("joins at a");
    let roaming = roamer
        .publish(strait_tests::fixture::opus_spec())
        .await
        .expect("publishes at a");

    let a = nodes.remove(0);
    let started = Instant::now();
    a.gateway.begin_shutdown();
    let mut followed = Vec::new();
    for (room, session) in &sessions {
        let ClientError::Redirected { redirect } = ended(session).await else {
            panic!("expected a redirect to the room's new node");
        };
        let to = redirect.redirect.clone().expect("where to");
        assert!(
            nodes.iter().any(|n| n.quic_addr().to_string() == to),
            "{to} is b or c"
        );
        // The application connects again where it was sent, with what it was given.
        let base = nodes[0].client_config(Transport::Quic, String::new());
        let config = base.follow(&redirect).expect("a usable redirect");
        let (again, _) = Client::connect_and_join(config, room)
            .await
            .expect("joins there");
        assert_eq!(again.remote_address().map(|a| a.to_string()), Some(to));
        followed.push(again);
    }
    let (room, tracks) = loop {
        let event = tokio::time::timeout(WAIT, roamer.next_event())
            .await
            .expect("the roamer moves in time")
            .expect("the roamer's session is open");
        match event {
            strait_client::SessionEvent::Rejoined { room, tracks } => break (room, tracks),
            strait_client::SessionEvent::RejoinFailed { error } => panic!("{error}"),
            _ => {}
        }
    };
    assert_eq!(room.room.0, "drill-0");
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].0, roaming.track);
    assert!(
        nodes
            .iter()
            .any(|n| roamer.remote_address() == Some(n.quic_addr())),
        "the roamer is at b or c"
    );
    assert_eq!(
        roamer.published()[0].media,
        roaming.media,
        "the same media ids"
    );
    a.gateway.stopped().await.expect("a stops");
    eprintln!(
        "drain of {} sessions in {ROOMS} rooms, all sent on and joined again: {:?}",
        sessions.len(),
        started.elapsed()
    );
    for r in 0..ROOMS {
        let owner = redis
            .hget(&format!("{{strait}}:room:drill-{r}"), "node")
            .await;
        assert!(matches!(owner.as_deref(), Some("b" | "c")), "{owner:?}");
    }
    assert_eq!(redis.get("{strait}:node:a").await, None);
    for session in followed {
        session.close().await;
    }
    roamer.close().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_that_lost_its_room_sends_its_sessions_to_the_new_owner() {
    let redis = RedisServer::start().await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let z = child_node(&redis, "z").await;
    let mut config = b.client_config(Transport::Quic, b.token("night", "owl"));
    config.server = z.quic;
    config.trust = strait_client::Trust::Hashes(vec![z.cert]);
    config.idle_timeout = Duration::from_secs(30);
    let (owl, _) = Client::connect_and_join(config, "night")
        .await
        .expect("joins at z");

    // z stops in its tracks (SIGSTOP): its lease runs out and b takes the room.
    signal(z.pid, "STOP");
    gone(&redis, "{strait}:node:z").await;
    let lark = join(&b, "night", "lark").await.expect("joins at b");
    assert_eq!(lark.remote_address(), Some(b.quic_addr()));

    // z comes back: its first renewal finds the room lost and sends its session to b.
    let resumed = Instant::now();
    signal(z.pid, "CONT");
    let ClientError::Redirected { redirect } = ended(&owl).await else {
        panic!("expected the zombie to redirect its session");
    };
    eprintln!(
        "zombie redirected its session {:?} after SIGCONT",
        resumed.elapsed()
    );
    assert_eq!(redirect.redirect, Some(b.quic_addr().to_string()));
    assert_eq!(
        redis.hget("{strait}:room:night", "node").await.as_deref(),
        Some("b"),
        "never a room on two nodes"
    );
    lark.close().await;
    z.stop().await;
    b.stop().await;
}

/// Sends `SIGSTOP`/`SIGCONT`… to `pid` with kill(1).
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_again_resets_the_connections_of_its_previous_run_at_once() {
    use std::sync::Arc;

    use strait_load::gateway::GatewayChild;

    let settings = child_settings(None, "r");
    let first = GatewayChild::start(&strait_tests::fixture::strait_binary(), &settings)
        .await
        .expect("the node starts");
    let quic = first.quic;

    // A bare QUIC connection that would wait 60 s before giving up on a silent server.
    let tls = strait_client::tls_client_config(
        &strait_client::Trust::Hashes(vec![first.cert]),
        strait_client::ALPN_STRAIT,
    )
    .expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("idle")));
    transport.keep_alive_interval(Some(Duration::from_millis(100)));
    client.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    endpoint.set_default_client_config(client);
    let conn = endpoint
        .connect(quic, "127.0.0.1")
        .expect("connect")
        .await
        .expect("handshake");

    // kill -9, and the node starts again on the same port.
    first.stop().await;
    let again = GatewayChild::start_on(&strait_tests::fixture::strait_binary(), quic, &settings)
        .await
        .expect("the node starts again");
    let started = Instant::now();
    let reason = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the old connection ends long before its idle timeout");
    assert!(
        matches!(reason, quinn::ConnectionError::Reset),
        "a stateless reset, got {reason:?}"
    );
    eprintln!(
        "old connection reset {:?} after the restart",
        started.elapsed()
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_a_token_for_every_room_is_placed_too() {
    use strait_gateway::auth::{AccessClaims, Grants};

    let redis = RedisServer::start().await;
    let a = node(&redis, "a", [127, 0, 0, 2]).await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let host = join(&a, "hall", "host").await.expect("joins at a");

    // An admin's token names no room: it is placed at its join, not at its hello.
    let mut claims = AccessClaims::new(
        "admin",
        "unused",
        Grants::admin(),
        std::time::SystemTime::now(),
        Duration::from_secs(600),
    );
    claims.room = None;
    let token = b.gateway.mint(&claims).expect("an admin token");
    let admin = Client::connect(b.client_config(Transport::Quic, token))
        .await
        .expect("connects at b");
    match admin.join("hall").await {
        Err(ClientError::Rejected { code, reason }) => {
            assert_eq!(code, ErrorCode::REDIRECT);
            assert!(reason.contains("node a"), "{reason}");
        }
        other => panic!("a join of a's room at b: {other:?}"),
    }
    // A room nobody serves is taken where the join lands.
    admin.join("annex").await.expect("a new room at b");
    assert_eq!(
        redis.hget("{strait}:room:annex", "node").await.as_deref(),
        Some("b")
    );
    admin.close().await;
    host.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flushall_every_node_registers_and_takes_its_rooms_back() {
    let redis = RedisServer::start().await;
    let nodes = three(&redis).await;
    let at_a = join(&nodes[0], "alpha", "x").await.expect("joins at a");
    let at_b = join(&nodes[1], "beta", "y").await.expect("joins at b");

    redis.flush_all().await;
    redis
        .wait_until("nodes and rooms rebuilt", async |r: &RedisServer| {
            let nodes_back = r.keys("{strait}:node:*").await.len() == 3;
            let alpha = r.hget("{strait}:room:alpha", "node").await;
            let beta = r.hget("{strait}:room:beta", "node").await;
            (nodes_back && alpha.as_deref() == Some("a") && beta.as_deref() == Some("b"))
                .then_some(())
        })
        .await;
    // Each room once: two placements drawn after the flush, one per room.
    assert_eq!(redis.get("{strait}:epoch").await.as_deref(), Some("2"));
    assert!(!at_a.is_closed() && !at_b.is_closed());

    // Rooms whose last participant left are given back: what stays is a key per node, the
    // index and the counter.
    at_a.close().await;
    at_b.close().await;
    redis
        .wait_until("rooms given back", async |r: &RedisServer| {
            r.keys("{strait}:room:*").await.is_empty().then_some(())
        })
        .await;
    assert_eq!(redis.keys("{strait}:*").await.len(), 3 + 2);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_node_dies_goes_on_through_another_node_and_joins_and_publishes_again() {
    use strait_client::SessionEvent;
    use strait_tests::fixture::{opus_spec, rtp};

    let redis = RedisServer::start().await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let k = child_node(&redis, "k").await;
    let config = strait_tests::redis::failover_client(&k, &b, b.token("clinic", "medic"));
    let (medic, _) = Client::connect_and_join(config, "clinic")
        .await
        .expect("joins at k");
    assert_eq!(medic.remote_address(), Some(k.quic));
    let published = medic.publish(opus_spec()).await.expect("publishes at k");
    let media = published.media[0];

    // k dies: the client loses it, cannot resume anywhere, goes on at b afresh, and joins its
    // room and publishes its track again there by itself.
    k.stop().await;
    let deadline = Instant::now() + 3 * WAIT;
    let (room, tracks) = loop {
        let event = tokio::time::timeout_at(deadline.into(), medic.next_event())
            .await
            .expect("the session goes on elsewhere in time")
            .expect("the session is open");
        match event {
            SessionEvent::Rejoined { room, tracks } => break (room, tracks),
            SessionEvent::RejoinFailed { error } => panic!("rejoining failed: {error}"),
            _ => {}
        }
    };
    assert_eq!(medic.remote_address(), Some(b.quic_addr()));
    assert_eq!(room.room.0, "clinic");
    assert_eq!(
        redis.hget("{strait}:room:clinic", "node").await.as_deref(),
        Some("b")
    );
    let [(old, new)] = tracks[..] else {
        panic!("one track published again: {tracks:?}");
    };
    assert_eq!(old, published.track);
    assert_eq!(medic.stats().resume_failures, 1);
    assert_eq!(medic.stats().rejoins, 1);

    // Someone at b hears the medic on the track published again, sent on the same media id.
    let nurse = join(&b, "clinic", "nurse").await.expect("joins at b");
    until_room(&nurse, "the medic's track", |s| {
        s.tracks().iter().any(|t| t.track == new)
    })
    .await;
    let sub = nurse.subscribe(new, None).await.expect("subscribes");
    let heard = async {
        for seq in 0..500u16 {
            medic
                .send_rtp(media, &rtp::opus(seq, u32::from(seq) * 960, 0x5eed, 0))
                .expect("sent on the old media id");
            if let Ok(Some(packet)) =
                tokio::time::timeout(Duration::from_millis(20), nurse.recv_media()).await
            {
                return packet;
            }
        }
        panic!("500 packets sent, none heard");
    };
    let packet = heard.await;
    assert_eq!(packet.media, sub.media);
    nurse.close().await;
    medic.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls_trusting_the_authority_they_are_given() {
    // A certificate authority and a certificate for 127.0.0.1 that it signed.
    let dir = tempfile::tempdir().expect("a directory");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("leaf params")
        .signed_by(&key, &ca)
        .expect("leaf");
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("redis.pem"),
        dir.path().join("redis.key"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let redis = RedisServer::start_tls(cert_pem, key_pem).await;
    let url = redis.tls_url().expect("a TLS port");

    let node = TestGateway::start_with(|c| {
        c.webrtc.enabled = false;
        join_cluster(c, &redis, "t", (KEY_ID, SECRET, RESUME_SECRET), TIMINGS);
        c.cluster.redis_url = Some(url.clone());
        c.cluster.redis_ca = Some(ca_pem.clone());
    })
    .await;
    node.wait_ready(true).await;
    let session = join(&node, "secure", "x").await.expect("joins");
    assert_eq!(
        redis.hget("{strait}:room:secure", "node").await.as_deref(),
        Some("t")
    );
    session.close().await;
    node.stop().await;

    // Without the authority, the system's roots do not know Redis's certificate: never ready.
    let untrusting = TestGateway::start_with(|c| {
        c.webrtc.enabled = false;
        join_cluster(c, &redis, "u", (KEY_ID, SECRET, RESUME_SECRET), TIMINGS);
        c.cluster.redis_url = Some(url);
    })
    .await;
    untrusting
        .wait_metric_where(
            "strait_cluster_events_total",
            "event=\"redis_error\"",
            |errors| errors >= 2.0,
        )
        .await;
    assert_ne!(http_get(untrusting.http_addr(), "/readyz").await, "ready\n");
    assert_eq!(redis.get("{strait}:node:u").await, None);
    untrusting.stop().await;
}
