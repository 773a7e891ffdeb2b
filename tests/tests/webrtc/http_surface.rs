//! The HTTP port under idle, slow and excess connections: thousands of connections that send
//! nothing or trickle a request's headers do not keep `/healthz` or a WHIP offer from being
//! answered, the header and body timeouts close them, and connections beyond the cap are closed
//! at once and counted.

use std::time::Duration;

use strait_tests::fixture::{TestGateway, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET /healthz` on a fresh connection, answered within a second.
async fn healthz_within_a_second(gw: &TestGateway) {
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        let mut stream = TcpStream::connect(gw.http_addr()).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: strait\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        answer
    })
    .await
    .expect("/healthz answers within a second");
    let answer = String::from_utf8_lossy(&answered);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Reads until the server closes `stream` (end of stream or reset); what it sent first.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the gateway closes the connection in time");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_and_slow_connections_leave_health_and_whip_answering() {
    const IDLE: usize = 1000;
    const SLOW: usize = 1000;
    let gw = TestGateway::start_with(|c| {
        c.http.header_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = gw.http_addr();

    // Connections that say nothing, and connections that start a request and never finish
    // its headers (they trickle a header line now and then, as a slow-loris client does).
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut stopped = stop.subscribe();
        slow.push(tokio::spawn(async move {
            if stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: strait\r\n")
                .await
                .is_err()
            {
                return stream;
            }
            // A header line every half second, until the gateway closes the connection or
            // the test ends (bounded by the test's own waits).
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            for n in 0u32..120 {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.recv() => break,
                }
                let line = format!("X-Slow-{i}-{n}: a\r\n");
                if stream.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            stream
        }));
    }

    // The gateway still answers health checks, and a WHIP publisher still gets in.
    healthz_within_a_second(&gw).await;
    let publisher = gw.whip_publisher("busy", "camera").await;
    healthz_within_a_second(&gw).await;

    // The header timeout closes every one of them; nothing was answered to the idle ones.
    for stream in &mut idle {
        let said = closed_by_server(stream).await;
        assert!(
            said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
            "an idle connection got {:?}",
            String::from_utf8_lossy(&said)
        );
    }
    for task in slow {
        let mut stream = tokio::time::timeout(WAIT, task)
            .await
            .expect("the slow writer stops once closed")
            .expect("the slow writer does not panic");
        closed_by_server(&mut stream).await;
    }
    drop(stop);
    publisher.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let gw = TestGateway::start_with(|c| {
        c.http.body_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(gw.http_addr()).await.expect("connect");
    // A WHIP offer that announces 2000 bytes and sends 20.
    let token = gw.token("slow-body", "camera");
    let head = format!(
        "POST /whip/slow-body HTTP/1.1\r\nHost: strait\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/sdp\r\nContent-Length: 2000\r\n\r\nv=0\r\no=- 0 0 IN IP4 0"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let said = closed_by_server(&mut stream).await;
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    healthz_within_a_second(&gw).await;
    gw.stop().await;
}

/// Sends `GET /healthz` on a kept-alive connection and reads its whole answer: the connection is
/// then accepted, served, and idle.
async fn served_once(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: strait\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    tokio::time::timeout(WAIT, async {
        // `ok\n` is the whole body.
        while !seen.ends_with(b"\r\n\r\nok\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("answered in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    const CAP: usize = 40;
    let gw = TestGateway::start_with(|c| {
        c.http.max_connections = CAP;
        c.http.header_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = gw.http_addr();
    // Every slot taken by a connection that was served and stays open.
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        served_once(&mut stream).await;
        held.push(stream);
    }

    // One more is closed without an answer.
    let mut extra = TcpStream::connect(addr).await.expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: strait\r\n\r\n")
        .await;
    let said = closed_by_server(&mut extra).await;
    assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));

    // A slot comes back when a connection closes: the next attempt after it is served.
    drop(held.pop());
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: strait\r\nConnection: close\r\n\r\n")
                .await;
            if !closed_by_server(&mut stream).await.is_empty() {
                return;
            }
        }
    })
    .await;
    served.expect("a freed slot serves the next connection");
    drop(held);
    // (The metrics request needs a slot too: polled until the dropped ones are free.)
    gw.wait_metric_where(
        "strait_refusals_total",
        "reason=\"http_connections\"",
        |n| n >= 1.0,
    )
    .await;
    healthz_within_a_second(&gw).await;
    gw.stop().await;
}
