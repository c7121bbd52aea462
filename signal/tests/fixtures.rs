//! Every file in `signal/fixtures/` is one wire message: `client.*.json` a [`ClientMessage`],
//! `server.*.json` a [`ServerMessage`]. Each must decode and encode back to the same JSON, and
//! every message type must have a fixture (the JS tests read the same files).

use std::collections::BTreeSet;
use std::path::PathBuf;

use treecast_signal::protocol::{ClientMessage, ServerMessage};

fn fixtures() -> Vec<(String, serde_json::Value, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        out.push((name, value, text));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn client_tag(m: &ClientMessage) -> &'static str {
    // Exhaustive on purpose: a new message type fails to compile here until it has a fixture.
    match m {
        ClientMessage::Join { .. } => "join",
        ClientMessage::Leave {} => "leave",
        ClientMessage::ChildAccepted { .. } => "child_accepted",
        ClientMessage::ChildRefused { .. } => "child_refused",
        ClientMessage::Offer { .. } => "offer",
        ClientMessage::Answer { .. } => "answer",
        ClientMessage::Candidate { .. } => "candidate",
        ClientMessage::Stats(_) => "stats",
        ClientMessage::ParentLost {} => "parent_lost",
        ClientMessage::ChildLost { .. } => "child_lost",
        ClientMessage::Ping { .. } => "ping",
        ClientMessage::Pong { .. } => "pong",
    }
}

const CLIENT_TAGS: &[&str] = &[
    "join",
    "leave",
    "child_accepted",
    "child_refused",
    "offer",
    "answer",
    "candidate",
    "stats",
    "parent_lost",
    "child_lost",
    "ping",
    "pong",
];

fn server_tag(m: &ServerMessage) -> &'static str {
    match m {
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Status { .. } => "status",
        ServerMessage::Placed { .. } => "placed",
        ServerMessage::Unplaced { .. } => "unplaced",
        ServerMessage::ChildRequest { .. } => "child_request",
        ServerMessage::ChildAdded { .. } => "child_added",
        ServerMessage::ChildRemoved { .. } => "child_removed",
        ServerMessage::Offer { .. } => "offer",
        ServerMessage::Answer { .. } => "answer",
        ServerMessage::Candidate { .. } => "candidate",
        ServerMessage::ParentLost { .. } => "parent_lost",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Ping { .. } => "ping",
        ServerMessage::Pong { .. } => "pong",
    }
}

const SERVER_TAGS: &[&str] = &[
    "welcome",
    "status",
    "placed",
    "unplaced",
    "child_request",
    "child_added",
    "child_removed",
    "offer",
    "answer",
    "candidate",
    "parent_lost",
    "error",
    "ping",
    "pong",
];

#[test]
fn every_fixture_round_trips() {
    let mut client = BTreeSet::new();
    let mut server = BTreeSet::new();
    for (name, value, text) in fixtures() {
        if name.starts_with("client.") {
            let m = ClientMessage::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(serde_json::to_value(&m).expect("encode"), value, "{name}");
            client.insert(client_tag(&m));
        } else if name.starts_with("server.") {
            let m: ServerMessage =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let back: serde_json::Value = serde_json::from_str(&m.encode()).expect("json");
            assert_eq!(back, value, "{name}");
            server.insert(server_tag(&m));
        } else {
            panic!("{name}: fixture names start with client. or server.");
        }
    }
    assert_eq!(
        client,
        CLIENT_TAGS.iter().copied().collect(),
        "client messages without fixture"
    );
    assert_eq!(
        server,
        SERVER_TAGS.iter().copied().collect(),
        "server messages without fixture"
    );
}
