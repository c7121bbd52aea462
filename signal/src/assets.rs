//! The browser client, compiled into the binary so `treecast-signal` runs from anywhere.

/// `(name, content type, body)` of every file under `/assets/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "protocol.js",
        JS,
        include_str!("../../browser/src/protocol.js"),
    ),
    (
        "session.js",
        JS,
        include_str!("../../browser/src/session.js"),
    ),
    ("relay.js", JS, include_str!("../../browser/src/relay.js")),
    ("peer.js", JS, include_str!("../../browser/src/peer.js")),
    ("watch.js", JS, include_str!("../../browser/src/watch.js")),
    ("tree.js", JS, include_str!("../../browser/src/tree.js")),
    (
        "treeview.js",
        JS,
        include_str!("../../browser/src/treeview.js"),
    ),
    (
        "publish.js",
        JS,
        include_str!("../../browser/src/publish.js"),
    ),
    (
        "style.css",
        CSS,
        include_str!("../../browser/src/style.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page kinds served under `/{page}/{stream}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/watch/{stream}`.
    Watch,
    /// `/publish/{stream}`.
    Publish,
    /// `/tree/{stream}`.
    Tree,
    /// `/`.
    Index,
}

impl Page {
    /// The HTML of the page (the same for every stream: the script reads it from the URL).
    pub fn html(self) -> &'static str {
        match self {
            Page::Watch => include_str!("../../browser/pages/watch.html"),
            Page::Publish => include_str!("../../browser/pages/publish.html"),
            Page::Tree => include_str!("../../browser/pages/tree.html"),
            Page::Index => include_str!("../../browser/pages/index.html"),
        }
    }
}

/// The content type and body of `/assets/{name}`.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}
