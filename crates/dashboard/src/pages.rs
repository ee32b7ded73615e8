//! The pages: one HTML shell for every page (the scripts draw the page its path names),
//! the scripts and a style sheet, all compiled into the binary. Nothing here reads the
//! cluster: the scripts fetch it from the JSON API.

use axum::http::header;
use axum::response::IntoResponse;

const SHELL: &str = include_str!("../assets/dashboard.html");

/// The assets the shell loads: path, content type, body. The scripts share one global
/// scope: `dashboard.js` (helpers, polling) first, then one script per group of pages.
pub(crate) const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/assets/dashboard.js",
        JS,
        include_str!("../assets/dashboard.js"),
    ),
    ("/assets/status.js", JS, include_str!("../assets/status.js")),
    (
        "/assets/cluster.js",
        JS,
        include_str!("../assets/cluster.js"),
    ),
    ("/assets/graph.js", JS, include_str!("../assets/graph.js")),
    (
        "/assets/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../assets/dashboard.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// `/status`, `/workers`, `/devices`, `/graph`, `/task?key=…`: the shell.
pub(crate) fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SHELL,
    )
}

/// One of [`ASSETS`].
pub(crate) fn asset(ctype: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
