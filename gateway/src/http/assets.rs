//! The web demo (`web-demo/`), compiled into the binary so that `strait serve` serves it with no
//! files beside it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// One file of the web demo, compiled into the binary so that `strait serve` serves the demo
/// with no files beside it.
#[derive(Debug)]
pub(super) struct Asset {
    /// The URL path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

impl Asset {
    pub(crate) fn response(&'static self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                // The demo changes with the binary; a browser revalidates rather than mixing versions.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            self.body,
        )
            .into_response()
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The web demo's files (`web-demo/`): plain ES modules, no build step. A new module of the demo
/// needs a line here.
pub(super) const DEMO: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../../web-demo/index.html"),
    },
    Asset {
        path: "/index.html",
        content_type: HTML,
        body: include_bytes!("../../../web-demo/index.html"),
    },
    Asset {
        path: "/style.css",
        content_type: CSS,
        body: include_bytes!("../../../web-demo/style.css"),
    },
    Asset {
        path: "/app.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/app.js"),
    },
    Asset {
        path: "/session.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/session.js"),
    },
    Asset {
        path: "/media.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/media.js"),
    },
    Asset {
        path: "/rtp.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/rtp.js"),
    },
    Asset {
        path: "/fallback.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/fallback.js"),
    },
    Asset {
        path: "/signaling.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/signaling.js"),
    },
    Asset {
        path: "/protocol.js",
        content_type: JS,
        body: include_bytes!("../../../web-demo/protocol.js"),
    },
];
