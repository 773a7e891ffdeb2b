//! The HTTP port's accept loop: HTTP/1.1 connections served by hyper under a connection cap,
//! with a deadline for each request's headers and for its body.
//!
//! - **Cap** (`http.max_connections`): a connection beyond it is closed as soon as it is
//!   accepted, without an answer, and counted (`strait_refusals_total{reason="http_connections"}`).
//!   A connection holds its slot until it closes or is upgraded (a `/ws/rtc` session then counts
//!   against the session limits instead).
//! - **Headers** (`http.header_timeout`): from the moment a connection is ready for a request (when
//!   it opens, and after each answer on a kept-alive connection) its headers must be complete
//!   within the timeout, or it is closed. This is what frees the slots of idle connections and of
//!   clients that trickle their headers.
//! - **Bodies** (`http.body_timeout`): a request body not received in full within the timeout
//!   ends the request with 408.
//!
//! On shutdown the loop stops accepting and asks every connection to finish its request in
//! progress and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::metrics::{Metrics, RefusalReason};

/// How the HTTP port serves connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Connections at once.
    pub(crate) max_connections: usize,
    /// Time for a request's headers.
    pub(crate) header_timeout: Duration,
    /// Time for a request's body.
    pub(crate) body_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the connections finish
/// their requests in progress.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the loop goes on; a pause keeps an exhausted descriptor table from
                    // spinning it.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refuse(RefusalReason::HttpConnections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        let gauge = metrics.http_connections.clone();
        connections.spawn(async move {
            gauge.inc();
            // The peer address is what `/ws/rtc` admits WebSocket sessions by.
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().call(request)
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result, peer),
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await, peer);
                }
            }
            gauge.dec();
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "HTTP connection ended");
    }
}
