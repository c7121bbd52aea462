//! The server over real sockets on 127.0.0.1:0: WebSocket sessions, limits, the tree API,
//! metrics, WHIP checks and shutdown.
//!
//! The native root is the core's own `Agent`, driven by a task that plays the gossip client:
//! it reads the server's outbound channel and feeds the root's records and messages back
//! through the `Hub` handle.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Ws;
use treecast_signal::{Config, Hub, Limits, Outbound, Server};
use treecast_tree::{Agent, AgentConfig, Input, Node, NodeId, Output, Role, StreamId, Time};

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const ROOT: NodeId = NodeId(1);
const WAIT: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    hub: Hub,
    outbound: Option<tokio::sync::mpsc::Receiver<Outbound>>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), treecast_signal::Error>>,
}

async fn start(cfg: treecast_signal::ConfigBuilder) -> Running {
    let cfg = cfg
        .http(SocketAddr::from(([127, 0, 0, 1], 0)))
        .ice_servers(Vec::new())
        .build()
        .expect("config");
    let mut server = Server::bind(cfg).await.expect("bind");
    let addr = server.local_addr();
    let hub = server.hub();
    let outbound = server.take_outbound();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        hub,
        outbound,
        stop: Some(stop),
        done,
    }
}

/// Plays the gossip client with a real broadcaster `Agent` behind it.
fn spawn_native_root(r: &mut Running) {
    let mut outbound = r.outbound.take().expect("outbound");
    let hub = r.hub.clone();
    tokio::spawn(async move {
        let stream = StreamId::new("demo").expect("valid");
        let t0 = tokio::time::Instant::now();
        let now = || Time(t0.elapsed().as_micros() as u64);
        let mut cfg = AgentConfig::new(Node::new(ROOT, Role::Broadcaster, 4), stream.clone());
        cfg.root = Some(ROOT);
        let mut root = Agent::new(cfg, now());
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            while let Some(o) = root.poll_output() {
                match o {
                    Output::Publish(rec) => hub.record(rec).await,
                    Output::Send { to, msg } => {
                        hub.native_message(stream.clone(), ROOT, to, msg).await;
                    }
                    Output::Event(_) => {}
                }
            }
            tokio::select! {
                o = outbound.recv() => match o {
                    Some(Outbound::Publish(rec)) => root.handle(now(), Input::Record(rec)),
                    Some(Outbound::Message { from, to, msg, .. }) if to == ROOT => {
                        root.handle(now(), Input::Message { from, msg });
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = tick.tick() => {
                    if root.poll_timeout().is_some_and(|t| t <= now()) {
                        root.handle(now(), Input::Tick);
                    }
                }
            }
        }
    });
}

async fn connect(addr: SocketAddr) -> (Client, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/demo"))
        .await
        .expect("ws connect");
    let welcome = recv(&mut ws).await;
    (ws, welcome)
}

async fn recv(ws: &mut Client) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        if let Ws::Text(t) = frame {
            return serde_json::from_str(t.as_str()).expect("server sends JSON");
        }
    }
}

/// Receives until a message of type `ty`, skipping others (pings, status).
async fn recv_type(ws: &mut Client, ty: &str) -> Value {
    loop {
        let m = recv(ws).await;
        if m["type"] == ty {
            return m;
        }
    }
}

async fn send(ws: &mut Client, v: Value) {
    ws.send(Ws::Text(v.to_string().into())).await.expect("send");
}

fn join() -> Value {
    json!({"type": "join", "stream": "demo",
           "capabilities": {"relay": true, "uplink_kbps": 12000}})
}

/// A minimal HTTP/1.1 GET: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn request(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("tcp");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().expect("status");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

#[tokio::test]
async fn a_flood_of_bogus_messages_gets_errors_and_hurts_nobody() {
    let r = start(Config::builder()).await;
    let (mut good, _) = connect(r.addr).await;
    send(&mut good, join()).await;
    let (mut bad, _) = connect(r.addr).await;
    let junk = [
        "{".to_owned(),
        "null".to_owned(),
        r#"{"type":"offer","to":"zz","sdp":""}"#.to_owned(),
        r#"{"type":"launch_missiles"}"#.to_owned(),
        format!(
            r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
            "x".repeat(70_000)
        ),
    ];
    for i in 0..300 {
        let frame = if i % 7 == 6 {
            Ws::Binary(vec![0xff; 16].into())
        } else {
            Ws::Text(junk[i % junk.len()].clone().into())
        };
        bad.send(frame).await.expect("send junk");
    }
    // The burst allowance gets one error reply each, then one rate_limited; the rest is
    // dropped (a few tokens refill while the flood is being sent). The codes say what was wrong.
    let mut codes = Vec::new();
    while !codes.iter().any(|c| c == "rate_limited") {
        let m = recv_type(&mut bad, "error").await;
        codes.push(m["code"].as_str().expect("code").to_owned());
        assert!(codes.len() < 100, "rate limit never reached: {codes:?}");
    }
    assert!(codes.len() >= 60, "the burst of 60 is answered");
    assert!(codes.iter().any(|c| c == "bad_message"));
    assert!(codes.iter().any(|c| c == "too_large"));
    assert!(codes.iter().any(|c| c == "binary"));
    // Both sessions are intact: the flooder once it slows down, the other at once.
    send(&mut good, json!({"type": "ping", "nonce": 5})).await;
    assert_eq!(recv_type(&mut good, "pong").await["nonce"], 5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&mut bad, json!({"type": "ping", "nonce": 6})).await;
    assert_eq!(recv_type(&mut bad, "pong").await["nonce"], 6);
    let (_, metrics) = get(r.addr, "/metrics").await;
    assert!(
        metrics.contains("treecast_viewers{stream=\"demo\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ten_browser_sessions_make_a_valid_tree() {
    let mut r = start(Config::builder()).await;
    spawn_native_root(&mut r);
    let mut clients = Vec::new();
    for _ in 0..10 {
        let (mut ws, welcome) = connect(r.addr).await;
        let id = welcome["node_id"].as_str().expect("id").to_owned();
        send(&mut ws, join()).await;
        clients.push((id, ws));
    }
    // Each browser answers child requests (as the page does) and reports where it is placed.
    let (placed_tx, mut placed_rx) = tokio::sync::mpsc::channel(64);
    for (id, mut ws) in clients {
        let placed_tx = placed_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Ws::Text(t) = frame else { continue };
                let m: Value = serde_json::from_str(t.as_str()).expect("json");
                match m["type"].as_str() {
                    Some("child_request") => {
                        send(
                            &mut ws,
                            json!({"type": "child_accepted", "child": m["child"]}),
                        )
                        .await;
                    }
                    Some("placed") => {
                        let _ = placed_tx.send((id.clone(), m)).await;
                    }
                    _ => {}
                }
            }
        });
    }
    let mut placed = std::collections::BTreeMap::new();
    while placed.len() < 10 {
        let (id, m) = tokio::time::timeout(WAIT, placed_rx.recv())
            .await
            .expect("all placed in time")
            .expect("open");
        placed.insert(id, m);
    }
    // The tree API shows them all, consistently.
    let tree = loop {
        let (status, body) = get(r.addr, "/api/streams/demo/tree").await;
        assert_eq!(status, 200);
        let tree: Value = serde_json::from_str(&body).expect("json");
        if tree["nodes"].as_array().map_or(0, Vec::len) == 11 {
            break tree;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let nodes = tree["nodes"].as_array().expect("nodes");
    let by_id: std::collections::BTreeMap<&str, &Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let roots: Vec<&&Value> = by_id.values().filter(|n| n["parent"].is_null()).collect();
    assert_eq!(roots.len(), 1, "one root");
    assert_eq!(roots[0]["id"], format!("{ROOT}"));
    assert_eq!(roots[0]["platform"], "native");
    for n in nodes {
        let children = n["children"].as_array().expect("children");
        assert!(children.len() <= 4);
        assert!(children.len() as u64 <= n["capacity"].as_u64().expect("capacity"));
        for c in children {
            let child = by_id[c.as_str().expect("id")];
            assert_eq!(child["parent"], n["id"], "parent and child agree");
            assert_eq!(child["depth"].as_u64(), n["depth"].as_u64().map(|d| d + 1));
        }
        if n["id"] != roots[0]["id"] {
            assert_eq!(n["platform"], "browser");
            assert!(n["via"].is_string(), "the server publishes for browsers");
            let p = &placed[n["id"].as_str().expect("id")];
            assert_eq!(p["parent"], n["parent"], "the browser was told its parent");
        }
    }
    let (_, streams) = get(r.addr, "/api/streams").await;
    let streams: Value = serde_json::from_str(&streams).expect("json");
    assert_eq!(streams[0]["stream"], "demo");
    assert_eq!(streams[0]["live"], true);
    assert_eq!(streams[0]["browsers"], 10);
    let (_, metrics) = get(r.addr, "/metrics").await;
    assert!(
        metrics.contains("treecast_joins_total{stream=\"demo\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("treecast_depth{stream=\"demo\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_broadcaster_the_stream_is_not_live() {
    let r = start(Config::builder()).await;
    let (mut ws, welcome) = connect(r.addr).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["live"], false);
    send(&mut ws, join()).await;
    let m = recv_type(&mut ws, "unplaced").await;
    assert_eq!(m["reason"], "not_live");
    let (status, body) = get(r.addr, "/api/streams/demo/tree").await;
    assert_eq!(status, 200);
    let tree: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(tree["live"], false);
    assert_eq!(tree["nodes"], json!([]));
    assert_eq!(get(r.addr, "/api/streams/other/tree").await.0, 404);
    assert_eq!(get(r.addr, "/api/streams/bad%20name/tree").await.0, 400);
}

#[tokio::test]
async fn pages_and_assets_are_served() {
    let r = start(Config::builder()).await;
    for path in [
        "/watch/demo",
        "/publish/demo",
        "/tree/demo",
        "/",
        "/assets/watch.js",
    ] {
        let (status, body) = get(r.addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty(), "{path}");
    }
    assert_eq!(get(r.addr, "/watch/bad%2Fname").await.0, 400);
    assert_eq!(get(r.addr, "/assets/nope.js").await.0, 404);
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let limits = Limits {
        connections_per_addr: 2,
        ..Limits::default()
    };
    let r = start(Config::builder().limits(limits)).await;
    let (_a, _) = connect(r.addr).await;
    let (_b, _) = connect(r.addr).await;
    let (_c, refused) = connect(r.addr).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "too_many_connections");
}

#[tokio::test]
async fn joins_per_address_are_limited() {
    let limits = Limits {
        joins_per_addr_per_minute: 1,
        ..Limits::default()
    };
    let r = start(Config::builder().limits(limits)).await;
    let (mut a, _) = connect(r.addr).await;
    send(&mut a, join()).await;
    let (mut b, _) = connect(r.addr).await;
    send(&mut b, join()).await;
    assert_eq!(recv_type(&mut b, "error").await["code"], "too_many_joins");
}

#[tokio::test]
async fn whip_checks_the_token() {
    let post = |token: &str, ctype: &str| {
        format!(
            "POST /whip/demo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: 3\r\n\r\nv=0"
        )
    };
    let off = start(Config::builder()).await;
    assert_eq!(
        request(off.addr, &post("t", "application/sdp")).await.0,
        403
    );
    let on = start(Config::builder().whip_token(Some("s3cret".into()))).await;
    assert_eq!(
        request(on.addr, &post("wrong", "application/sdp")).await.0,
        401
    );
    assert_eq!(request(on.addr, &post("s3cret", "text/plain")).await.0, 415);
    assert_eq!(
        request(on.addr, &post("s3cret", "application/sdp")).await.0,
        501
    );
}

#[tokio::test]
async fn shutdown_closes_sessions_and_returns() {
    let mut r = start(Config::builder()).await;
    let (mut ws, _) = connect(r.addr).await;
    let _ = r.stop.take().expect("stop").send(());
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Ws::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    tokio::time::timeout(WAIT, r.done)
        .await
        .expect("server stops")
        .expect("task")
        .expect("clean exit");
}

/// Reads what arrived within `ms`, answering child requests as the page does.
async fn pump(ws: &mut Client, ms: u64) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(ms), ws.next()).await
    {
        let Ws::Text(t) = frame else { continue };
        let m: Value = serde_json::from_str(t.as_str()).expect("json");
        if m["type"] == "child_request" {
            send(ws, json!({"type": "child_accepted", "child": m["child"]})).await;
        }
        got.push(m);
    }
    got
}

#[tokio::test]
async fn offers_answers_and_candidates_flow_between_browser_parent_and_child() {
    let mut r = start(Config::builder()).await;
    spawn_native_root(&mut r);
    let mut cs = Vec::new();
    for _ in 0..5 {
        let (mut ws, welcome) = connect(r.addr).await;
        send(&mut ws, join()).await;
        cs.push((welcome["node_id"].as_str().expect("id").to_owned(), ws));
    }
    let mut placed = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while placed.len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "placed: {placed:?}");
        for (id, ws) in cs.iter_mut() {
            for m in pump(ws, 10).await {
                if m["type"] == "placed" {
                    placed.insert(id.clone(), m["parent"].as_str().expect("parent").to_owned());
                }
            }
        }
    }
    // Four under the root, the fifth under a browser.
    let (child, parent) = placed
        .iter()
        .find(|(_, p)| placed.contains_key(*p))
        .map(|(c, p)| (c.clone(), p.clone()))
        .expect("one browser has a browser parent");
    let ci = cs.iter().position(|(id, _)| *id == child).expect("child");
    let pi = cs.iter().position(|(id, _)| *id == parent).expect("parent");
    let sibling = placed
        .keys()
        .find(|id| **id != child && **id != parent)
        .expect("x")
        .clone();

    send(
        &mut cs[ci].1,
        json!({"type": "offer", "to": parent, "sdp": "v=0 offer"}),
    )
    .await;
    let m = recv_type(&mut cs[pi].1, "offer").await;
    assert_eq!(
        (m["from"].as_str(), m["sdp"].as_str()),
        (Some(child.as_str()), Some("v=0 offer"))
    );
    send(
        &mut cs[pi].1,
        json!({"type": "answer", "to": child, "sdp": "v=0 answer"}),
    )
    .await;
    let m = recv_type(&mut cs[ci].1, "answer").await;
    assert_eq!(m["from"].as_str(), Some(parent.as_str()));
    let cand = json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_m_line_index": 0});
    send(
        &mut cs[ci].1,
        json!({"type": "candidate", "to": parent, "candidate": cand}),
    )
    .await;
    let m = recv_type(&mut cs[pi].1, "candidate").await;
    assert_eq!(m["candidate"], cand);
    // Not to a browser that is neither parent nor child.
    send(
        &mut cs[ci].1,
        json!({"type": "offer", "to": sibling, "sdp": "v=0"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut cs[ci].1, "error").await["code"],
        "not_your_peer"
    );
}
