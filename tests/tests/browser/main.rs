//! Strait in a real browser: headless Chromium driven by the scripts of `web-demo/test/`
//! (playwright-core) against a gateway started in-process. One binary, a module per area:
//!
//! - `demo`: the web demo over WebTransport and over its WebRTC fallback, WebSocket signaling,
//!   and the demo's JavaScript codec against the golden vectors under node;
//! - `turn`: a page restricted to TURN relay candidates publishing through the embedded TURN
//!   server;
//! - `probe`: a plain WHEP player in Chromium whose link the gateway probes with RTX padding;
//! - `cluster`: the demo against two nodes of a cluster on one Redis, where a page of one node
//!   follows the redirect to the node that serves its room.
//!
//! They need node (≥ 20), Chromium at `/usr/bin/chromium` (or `STRAIT_CHROMIUM`) and `npm ci` run
//! in `web-demo/`, and `cluster` needs `redis-server`. `./scripts/test` installs them all; where one is missing a test fails and says
//! what to install — it never passes without having run.

mod cluster;
mod demo;
mod probe;
mod turn;

/// Held by the browser tests that load the machine most (four pages at once, or a 3 Mbit/s
/// stream with a probe's padding): two of them at once on two cores make every page's link
/// look congested, and the allocation then pauses video the test waits for.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
