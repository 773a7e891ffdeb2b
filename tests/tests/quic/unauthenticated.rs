//! What a peer that never says who it is can hold: the gateway's receive windows bound the stream
//! data it buffers for a connection before `ClientHello`, and a handshake that never completes
//! gives up its slot by the hello timeout.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures::FutureExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use strait_client::{Client, Transport};
use strait_tests::fixture::{RawSession, TestGateway, WAIT};

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Writes `chunk` into `stream` for as long as flow control takes it without waiting: the
/// credit the gateway granted, since nothing on the stream is read before a hello.
fn write_until_blocked(stream: &mut quinn::SendStream, chunk: &[u8]) -> u64 {
    let mut written = 0u64;
    loop {
        match stream.write(chunk).now_or_never() {
            Some(Ok(n)) if n > 0 => written += n as u64,
            Some(Ok(_)) | None => return written,
            Some(Err(e)) => panic!("write failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_written_full_before_a_hello_hold_less_than_a_mebibyte() {
    const CONNECTIONS: usize = 8;
    let gw = TestGateway::start().await;
    let chunk = vec![0x5a; 16 * 1024];
    let before = rss_kib();
    let mut held = Vec::new();
    let mut most = 0u64;
    for _ in 0..CONNECTIONS {
        // The first bidirectional stream is the control stream: left silent, no hello ever.
        let raw = RawSession::connect(&gw).await;
        let conn = raw.conn.clone();
        let mut accepted = 0u64;
        let mut streams = Vec::new();
        // Every other stream the gateway lets a client open, each written until it blocks.
        while let Some(Ok(mut send)) = conn.open_uni().now_or_never() {
            accepted += write_until_blocked(&mut send, &chunk);
            streams.push(send);
        }
        while let Some(Ok((mut send, recv))) = conn.open_bi().now_or_never() {
            accepted += write_until_blocked(&mut send, &chunk);
            streams.push(send);
            drop(recv);
        }
        assert!(streams.len() >= 16, "opened {} streams", streams.len());
        most = most.max(accepted);
        held.push((raw, streams));
    }
    // What the gateway must buffer is what its flow control accepted: the windows it granted.
    assert!(
        most < 1024 * 1024,
        "one connection without a hello got {most} bytes accepted"
    );
    // The connections are still open (the hello timeout has not passed): the data is held.
    for (raw, _) in &held {
        assert!(raw.is_open());
    }
    let after = rss_kib();
    eprintln!(
        "before a hello: at most {most} bytes accepted per connection; this process's RSS grew \
         {} KiB over {CONNECTIONS} connections (gateway and clients together)",
        after.saturating_sub(before)
    );
    for (raw, streams) in held {
        drop(streams);
        raw.close().await;
    }
    gw.stop().await;
}

/// A server certificate verifier that waits until told to go on (then refuses): a client whose
/// handshake stops after the server's first flight.
#[derive(Debug)]
struct Stall {
    go: Mutex<mpsc::Receiver<()>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Stall {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let _ = self.go.lock().expect("lock").recv();
        Err(rustls::Error::General("stalled on purpose".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("stalled on purpose".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("stalled on purpose".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_handshake_that_never_completes_frees_its_slot_by_the_hello_timeout() {
    // One session per source address, and an idle timeout far beyond the test's patience: only
    // the hello timeout can free the slot in time.
    let gw = TestGateway::start_with(|c| {
        c.limits.max_sessions_per_ip = 1;
        c.session.hello_timeout = Duration::from_secs(1);
        c.quic.idle_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = gw.quic_addr();

    // The stalled client runs on a thread of its own: its verifier blocks that thread.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (go, wait) = mpsc::channel();
    let stall = Stall {
        go: Mutex::new(wait),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(stall))
        .with_no_client_auth();
    tls.alpn_protocols = vec![strait_client::ALPN_STRAIT.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let stalled = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut endpoint =
                quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .expect("endpoint");
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let result = endpoint.connect(addr, "127.0.0.1").expect("connect").await;
            assert!(result.is_err(), "the stalled handshake cannot succeed");
        });
    });

    // The handshake is given up by the hello timeout (the idle timeout is two minutes away)...
    gw.wait_metric_where("strait_refusals_total", "reason=\"handshake\"", |n| {
        n >= 1.0
    })
    .await;
    // ...and the source's one slot is free: an honest client from the same address gets in.
    let mut config = gw.client_config(Transport::Quic, gw.token("slots", "honest"));
    config.auto_resume = false;
    let honest = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("an answer in time")
        .expect("the slot is free again");
    honest.join("slots").await.expect("join");

    go.send(()).expect("the stalled client is waiting");
    stalled.join().expect("the stalled client ends");
    honest.close().await;
    gw.stop().await;
}
