//! A minimal HTTP/1.1 client for the WHIP/WHEP tests (they need no HTTP client crate): one
//! request per connection, every response bounded by [`WAIT`].

use std::time::Duration;

use strait_load::gateway::dechunk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixture::TestGateway;

/// Longest a response may take (answering an offer generates a DTLS certificate, slow in debug
/// builds on a loaded machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// A response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole response. The body is written
/// while the response is read, so a server that answers before reading everything (413) is
/// seen answering.
pub async fn http(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let addr = gw.http_addr();
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let (mut reader, mut writer) = stream.into_split();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no http response in time");
    drop(write.await);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an http response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The `Authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// POSTs an offer as `application/sdp` with `token`.
pub async fn post_offer(gw: &TestGateway, path: &str, token: &str, sdp: &str) -> HttpResponse {
    let auth = bearer(token);
    http(
        gw,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/sdp"),
        ],
        sdp.as_bytes(),
    )
    .await
}

/// DELETEs a resource with `token`.
pub async fn delete(gw: &TestGateway, path: &str, token: &str) -> HttpResponse {
    let auth = bearer(token);
    http(gw, "DELETE", path, &[("Authorization", &auth)], b"").await
}

/// PATCHes a resource with a trickle-ICE fragment, `token` and an optional `If-Match`.
pub async fn patch(
    gw: &TestGateway,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    fragment: &str,
) -> HttpResponse {
    let auth = bearer(token);
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
    ];
    if let Some(tag) = if_match {
        headers.push(("If-Match", tag));
    }
    http(gw, "PATCH", path, &headers, fragment.as_bytes()).await
}

/// `POST path` on `addr` with an SDP offer and a bearer token (the benchmarks' WHIP/WHEP
/// client, against a gateway they started as a process): the answer of a `201 Created`.
pub async fn post_sdp(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    sdp: &str,
) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .map_err(|_| anyhow::anyhow!("no WHIP/WHEP answer in time"))??;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end"))?;
    if !head.starts_with("HTTP/1.1 201") {
        anyhow::bail!("refused: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}
