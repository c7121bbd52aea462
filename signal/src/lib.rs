//! treecast-signal: the axum server for browsers (issue 5). Not built yet.
