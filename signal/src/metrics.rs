//! `/metrics` in the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Counters bumped by many tasks (bytes, messages) are atomics: lock-free, no task waits, and
//! none of them feeds a decision. Per-stream gauges are asked from the hub when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::broadcast::Broadcast;
use crate::tree::max_depth;

/// A per-stream series: name, kind, help, value.
struct PerStream(
    &'static str,
    &'static str,
    &'static str,
    fn(&StreamGauges) -> u64,
);

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    errors_sent: AtomicU64,
    refused: AtomicU64,
    slow_sessions: AtomicU64,
    outbound_dropped: AtomicU64,
    connections: AtomicU64,
}

/// One stream's numbers at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGauges {
    /// The stream.
    pub stream: String,
    /// Browsers connected.
    pub viewers: usize,
    /// Nodes known.
    pub nodes: usize,
    /// Deepest attached node.
    pub depth: u16,
    /// Whether live.
    pub live: bool,
    /// Joins so far.
    pub joins: u64,
    /// Repairs so far.
    pub repairs: u64,
}

impl StreamGauges {
    /// The gauges of one broadcast.
    pub fn of(b: &Broadcast) -> Self {
        let c = b.counters();
        StreamGauges {
            stream: b.stream().to_string(),
            viewers: b.browsers(),
            nodes: b.view().len(),
            depth: max_depth(b.view()),
            live: b.is_live(),
            joins: c.joins,
            repairs: c.repairs,
        }
    }
}

impl Metrics {
    /// A WebSocket frame of `n` bytes arrived.
    pub fn received(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket frame of `n` bytes left.
    pub fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An error reply was sent.
    pub fn error_sent(&self) {
        self.errors_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused by a limit.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A session was dropped because it did not read.
    pub fn slow_session(&self) {
        self.slow_sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// A message for native nodes was dropped (no gossip client, or it lags).
    pub fn outbound_dropped(&self) {
        self.outbound_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket opened (+1) or closed (-1).
    pub fn connection(&self, open: bool) {
        if open {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub fn render(&self, streams: &[StreamGauges]) -> String {
        let mut s = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            "treecast_signal_bytes_received_total",
            "counter",
            "WebSocket bytes received from browsers.",
            get(&self.bytes_in),
        );
        one(
            "treecast_signal_bytes_sent_total",
            "counter",
            "WebSocket bytes sent to browsers.",
            get(&self.bytes_out),
        );
        one(
            "treecast_signal_messages_received_total",
            "counter",
            "WebSocket messages received.",
            get(&self.messages_in),
        );
        one(
            "treecast_signal_errors_sent_total",
            "counter",
            "Error replies sent.",
            get(&self.errors_sent),
        );
        one(
            "treecast_signal_connections_refused_total",
            "counter",
            "Connections refused by a limit.",
            get(&self.refused),
        );
        one(
            "treecast_signal_slow_sessions_total",
            "counter",
            "Sessions dropped for not reading.",
            get(&self.slow_sessions),
        );
        one(
            "treecast_signal_outbound_dropped_total",
            "counter",
            "Messages for native nodes dropped.",
            get(&self.outbound_dropped),
        );
        one(
            "treecast_signal_connections",
            "gauge",
            "Open WebSocket connections.",
            get(&self.connections),
        );
        let per = [
            PerStream(
                "treecast_viewers",
                "gauge",
                "Browsers connected, per stream.",
                |g| g.viewers as u64,
            ),
            PerStream("treecast_nodes", "gauge", "Nodes known, per stream.", |g| {
                g.nodes as u64
            }),
            PerStream(
                "treecast_depth",
                "gauge",
                "Deepest attached node, per stream.",
                |g| u64::from(g.depth),
            ),
            PerStream(
                "treecast_live",
                "gauge",
                "1 when a broadcaster is known.",
                |g| u64::from(g.live),
            ),
            PerStream(
                "treecast_joins_total",
                "counter",
                "Browser joins, per stream.",
                |g| g.joins,
            ),
            PerStream(
                "treecast_repairs_total",
                "counter",
                "Parent losses repaired, per stream.",
                |g| g.repairs,
            ),
        ];
        for PerStream(name, kind, help, f) in per {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for g in streams {
                // Stream names are [A-Za-z0-9._-]: nothing to escape in a label value.
                let _ = writeln!(s, "{name}{{stream=\"{}\"}} {}", g.stream, f(g));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labels() {
        let m = Metrics::default();
        m.received(10);
        let text = m.render(&[StreamGauges {
            stream: "demo".into(),
            viewers: 3,
            nodes: 4,
            depth: 2,
            live: true,
            joins: 5,
            repairs: 1,
        }]);
        assert!(text.contains("treecast_signal_bytes_received_total 10\n"));
        assert!(
            text.contains("# TYPE treecast_viewers gauge\ntreecast_viewers{stream=\"demo\"} 3\n")
        );
        assert!(text.contains("treecast_repairs_total{stream=\"demo\"} 1\n"));
    }
}
