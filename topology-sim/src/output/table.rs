//! The default output: a table people can read at a glance.

use std::fmt::Write;

use crate::metrics::Report;

/// The report as aligned lines of text.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<14} {value}");
    };
    row(
        "run",
        format!(
            "{:?} mode, seed {}, {} viewers, {:.0} s virtual, mix {}",
            r.mode, r.seed, r.viewers, r.duration_s, r.capacity_mix
        )
        .to_lowercase(),
    );
    row(
        "tree",
        format!(
            "{} attached, {} detached, root fan-out {}, capacity used {:.1}%",
            r.viewers_attached,
            r.viewers_detached,
            r.root_fanout,
            100.0 * r.capacity_utilisation
        ),
    );
    let optimum = r
        .optimal_depth
        .map_or("none (the mix cannot feed everyone)".into(), |o| {
            format!("{o} (max is {:+})", i32::from(r.max_depth) - i32::from(o))
        });
    row(
        "depth",
        format!(
            "max {}, mean {:.2}, p95 {}, optimum {optimum}",
            r.max_depth, r.mean_depth, r.p95_depth
        ),
    );
    let hist: Vec<String> = r
        .depth_histogram
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}:{c}", i + 1))
        .collect();
    row("per depth", hist.join(" "));
    row(
        "arrivals",
        format!(
            "{} joins ({} found no slot at first), {} leaves, {} crashes",
            r.joins, r.unplaced_joins, r.leaves, r.crashes
        ),
    );
    row(
        "repair",
        format!(
            "{} orphans re-attached, {} waited; p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            r.repairs, r.unrepaired, r.repair_ms.p50, r.repair_ms.p95, r.repair_ms.max
        ),
    );
    row(
        "no media",
        format!("{:.1} viewer-seconds", r.viewer_seconds_without_media),
    );
    row(
        "changes",
        format!("{} re-parents, {} promotions", r.reparents, r.promotions),
    );
    row(
        "control",
        format!(
            "{} publications ({} B), {} requests; per node/s: {:.3} msgs, {:.1} B; gossip relay {:.0} B/node/s",
            r.publications,
            r.publication_bytes,
            r.requests,
            r.control_msgs_per_node_s,
            r.control_bytes_per_node_s,
            r.gossip_relay_bytes_per_node_s
        ),
    );
    row(
        "invariants",
        format!(
            "{} violations ({} at the final settled check) in {} checks ({} of the whole view)",
            r.invariant_violations, r.settled_violations, r.invariant_checks, r.full_checks
        ),
    );
    for v in &r.first_violations {
        row("  violation", v.clone());
    }
    row("elapsed", format!("{} ms", r.elapsed_ms));
    out
}
