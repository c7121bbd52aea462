//! The refresh pace: with `refresh_per_node` set, an agent republishes an unchanged record less
//! often the more nodes its view holds, says so in its record, and receivers keep a record
//! for three of the intervals it declares.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use treecast_tree::*;

const ROOT: NodeId = NodeId(1);

/// What a root agent did while ticking every second until `until_s`: when it published (and
/// the interval each record declared, in tens of seconds), and how many relays its view still
/// held at each of `probes_s`.
struct Run {
    published: Vec<(u64, u8)>,
    left: Vec<usize>,
}

/// A root agent with the per-node refresh `per_node`, whose view holds itself and `others`
/// detached relays heard at time zero, each declaring `declared` tens of seconds.
fn run(others: u64, declared: u8, per_node: Duration, until_s: u64, probes_s: &[u64]) -> Run {
    let stream = StreamId::new("s").unwrap();
    let mut cfg = AgentConfig::new(Node::new(ROOT, Role::Broadcaster, 4), stream.clone());
    cfg.root = Some(ROOT);
    let mut agent = Agent::new(cfg, Time::ZERO);
    agent.handle(Time::ZERO, Input::SetRefreshPerNode(per_node));
    for i in 0..others {
        let mut node = Node::new(NodeId(100 + i), Role::Relay, 4);
        node.seq = 1;
        node.refresh_tens = declared;
        let record = NodeRecord {
            stream: stream.clone(),
            node,
        };
        agent.handle(Time::ZERO, Input::Record(record));
    }
    let mut r = Run {
        published: Vec::new(),
        left: Vec::new(),
    };
    for s in 0..=until_s {
        agent.handle(Time::from_secs(s), Input::Tick);
        while let Some(out) = agent.poll_output() {
            if let Output::Publish(rec) = out {
                r.published.push((s, rec.node.refresh_tens));
            }
        }
        if probes_s.contains(&s) {
            r.left.push(agent.view().len() - 1);
        }
    }
    r
}

/// Gaps between the publications within `from..=to` seconds.
fn gaps(r: &Run, from: u64, to: u64) -> Vec<u64> {
    let at: Vec<u64> = r
        .published
        .iter()
        .map(|&(s, _)| s)
        .filter(|&s| s >= from && s <= to)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn a_fixed_refresh_without_a_pace() {
    let r = run(99, 0, Duration::ZERO, 400, &[80, 100]);
    // Every 27 to 30 s (a tenth of jitter), each record saying 30 s.
    let g = gaps(&r, 1, 400);
    assert!(
        g.len() >= 12 && g.iter().all(|&g| (27..=30).contains(&g)),
        "{:?}",
        r.published
    );
    assert!(
        r.published.iter().all(|&(_, d)| d == 3),
        "{:?}",
        r.published
    );
    assert_eq!(
        r.left,
        vec![99, 0],
        "silent nodes that declare nothing: forgotten after 90 s"
    );
}

#[test]
fn a_record_is_kept_for_three_declared_intervals() {
    // Relays declaring 100 s: kept 300 s, not the 90 s of the root's own ttl.
    let r = run(99, 10, Duration::from_secs(1), 400, &[100, 280, 320]);
    assert_eq!(r.left, vec![99, 99, 0]);
    // Meanwhile the root paces its own refresh by its view: 90 to 100 s apart, declared.
    let g = gaps(&r, 31, 300);
    assert!(
        !g.is_empty() && g.iter().all(|&g| (90..=100).contains(&g)),
        "{:?}",
        r.published
    );
    assert!(
        r.published
            .iter()
            .filter(|&&(s, _)| (31..=300).contains(&s))
            .all(|&(_, d)| d == 10),
        "{:?}",
        r.published
    );
}

#[test]
fn the_pace_and_a_declared_interval_are_capped() {
    // An hour per node is capped at MAX_REFRESH; relays declaring 2,550 s are kept for three
    // times MAX_REFRESH, not three times 2,550 s.
    let cap = MAX_REFRESH.as_secs();
    let r = run(
        99,
        255,
        Duration::from_secs(3600),
        3 * cap + 60,
        &[3 * cap - 10, 3 * cap + 10],
    );
    let g = gaps(&r, 31, 3 * cap);
    assert!(
        !g.is_empty() && g.iter().all(|&g| g >= cap * 9 / 10 && g <= cap),
        "{:?}",
        r.published
    );
    assert_eq!(r.left, vec![99, 0]);
}

/// The times a detached relay agent published while told, each second for 20 s, the link
/// loss `loss(s)` with media arriving.
fn publications_under(loss: impl Fn(u64) -> u16) -> Vec<u64> {
    publications_with(|s| (loss(s), true))
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// The times a detached relay agent published, and whether each record said media arrives,
/// while told each second for 20 s the link loss and whether media arrives, `link(s)`.
fn publications_with(link: impl Fn(u64) -> (u16, bool)) -> Vec<(u64, bool)> {
    let stream = StreamId::new("s").unwrap();
    let cfg = AgentConfig::new(Node::new(NodeId(7), Role::Relay, 4), stream);
    let mut agent = Agent::new(cfg, Time::ZERO);
    let mut published = Vec::new();
    for s in 0..=20 {
        let (loss_permille, receiving) = link(s);
        let link = LinkStats {
            kbps: 300,
            loss_permille,
            rtt_ms: 20,
        };
        agent.handle(Time::from_secs(s), Input::SetLink { link, receiving });
        agent.handle(Time::from_secs(s), Input::Tick);
        while let Some(out) = agent.poll_output() {
            if let Output::Publish(record) = out {
                published.push((s, record.node.receiving));
            }
        }
    }
    published
}

#[test]
fn a_poor_link_is_published_once_it_holds() {
    // Steady heavy loss: one record (besides the first ones, which say media arrives) once
    // the verdict held 3 s.
    let steady = publications_under(|_| 250);
    assert_eq!(steady, vec![0, 0, 3], "{steady:?}");
    // Bursts every other second: the verdict never holds, nothing more is published.
    let bursts = publications_under(|s| if s % 2 == 0 { 250 } else { 0 });
    assert_eq!(bursts, vec![0, 0], "{bursts:?}");
}

#[test]
fn a_silence_is_published_once_it_holds_and_its_end_at_once() {
    // Two seconds without media (a repair, say): no record says so.
    let short = publications_with(|s| (0, !(5..7).contains(&s)));
    assert_eq!(short, vec![(0, false), (0, true)], "{short:?}");
    // Silence from 5 s to 12 s: published once it held 3 s, and its end at once.
    let long = publications_with(|s| (0, !(5..12).contains(&s)));
    assert_eq!(
        long,
        vec![(0, false), (0, true), (8, false), (12, true)],
        "{long:?}"
    );
}
